"""The faults meshcert must catch -- the mutation score's denominator, derived, never typed.

Three kinds, each with the target whose assertion must fail (a clause id, or ``scenario: NAME``):

- ``mutant:<name>``: every entry of the reference SUT's ``MUTANTS`` (runtime.py); its target comes
  from ``TARGETS`` / ``SCENARIO_TARGETS`` in meshcert/sut/reference/targets.py (a mutant with none is still
  counted, as not killed: "no target");
- ``world:<name>``: every broken world setting, declared where its test is with :func:`aims_at`
  (tests/test_world_breaks.py, the broken-setting tests of tests/test_mutants.py);
- ``chart:<name>``: every broken chart of fixtures/charts/*.patch (``VARIANTS`` in
  tests/test_chart_variants.py) and the charts built by its tests, declared with :func:`aims_at`.

A test aimed at a fault carries ``@pytest.mark.fault(NAME)`` and calls the ``caught`` fixture
with the clause(s) or scenario whose assertion failed. tests/conftest.py scores every fault of
:func:`registry`: killed only when its test passed and what caught it covers its target; a
fault whose test failed, errored, was skipped, deselected or not collected counts as not
killed, with the reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pytest

from meshcert.chaos.experiment import SteadyStateBroken
from meshcert.checks import ClauseFailure
from meshcert.sut.reference import MUTANTS
from meshcert.sut.reference.targets import CRED_SCENARIO_TARGETS, CRED_TARGETS, SCENARIO_TARGETS, TARGETS, clauses

KINDS = {"mutant": "mutants of the reference SUT", "world": "broken world settings", "chart": "broken charts"}


@dataclass(frozen=True)
class Fault:
    name: str                 # kind:short-name
    kind: str                 # mutant | world | chart
    target: tuple[str, ...]   # every one of these must be what caught it (clause ids or "scenario: NAME")
    about: str

    @property
    def short(self) -> str:
        return self.name.split(":", 1)[1]


_DECLARED: dict[str, Fault] = {}


def declare(kind: str, short: str, target: str | tuple[str, ...], about: str) -> str:
    """Register a fault (module import time); returns its name for ``pytest.mark.fault``."""
    assert kind in KINDS, kind
    name = f"{kind}:{short}"
    target = (target,) if isinstance(target, str) else tuple(target)
    fault = Fault(name, kind, target, about)
    if _DECLARED.get(name, fault) != fault:
        raise ValueError(f"fault {name} declared twice, differently")
    _DECLARED[name] = fault
    return name


def aims_at(kind: str, short: str, target: str | tuple[str, ...], about: str) -> Callable:
    """Decorator of the test that must show ``kind:short`` caught by ``target``."""
    return pytest.mark.fault(declare(kind, short, target, about))


def param(value, kind: str, short: str, target: str | tuple[str, ...], about: str):
    """A ``pytest.param`` aimed at a fault (for parametrized kill tests)."""
    return pytest.param(value, marks=pytest.mark.fault(declare(kind, short, target, about)), id=str(value))


def mutant_params(names: Iterable[str]) -> list:
    """One ``pytest.param`` per mutant, aimed at ``mutant:<name>`` (its target is derived in
    :func:`registry`)."""
    return [pytest.param(m, marks=pytest.mark.fault(f"mutant:{m}"), id=m) for m in sorted(names)]


def kill_by_clauses(mutant: str, checks: dict[str, Callable[[], None]], caught: Callable[..., None]) -> None:
    """The kill rule of a clause-targeted mutant, in one place: ``checks`` maps each clause the
    mutant targets to a call of that clause's check; the mutant is killed only when every one
    failed with a :class:`ClauseFailure` of THAT clause (another clause failing is a survival,
    named as such). Reports the kill to ``caught``."""
    failed, survived = [], []
    for clause, check in checks.items():
        try:
            check()
            survived.append(clause)
        except ClauseFailure as e:
            if e.clause == clause:
                failed.append(clause)
                print(f"\n{mutant} killed by {clause}: {str(e).splitlines()[0]}")
            else:
                survived.append(f"{clause} (failed as {e.clause})")
    assert not survived, f"mutant {mutant} ({MUTANTS[mutant]}) survived clause(s) {survived}"
    caught(*failed)


def kill_by_scenario(mutant: str, name: str, run: Callable[[], None], caught: Callable[..., None]) -> None:
    """The kill rule of a scenario-targeted mutant: scenario ``name`` (``run``) must fail in its
    experiment; a broken steady state (before any fault was injected) is not the scenario's kill."""
    try:
        run()
    except SteadyStateBroken as e:
        pytest.fail(f"mutant {mutant} was caught by {e.clause} in the steady state before scenario {name!r} "
                    f"injected anything, not by the scenario: {str(e).splitlines()[0]}")
    except AssertionError as e:  # ClauseFailure is one too
        print(f"\n{mutant} killed by scenario {name}: {str(e).splitlines()[0]}")
        caught(f"scenario: {name}")
        return
    pytest.fail(f"mutant {mutant} ({MUTANTS[mutant]}) survived scenario {name}")


# The test modules that declare faults beside the tests that kill them. They import this module,
# so the registry imports them by name when asked (not at this module's top).
DECLARING_MODULES = ("tests.unit.test_chart_variants", "tests.engine.test_chart_pods",
                     "tests.engine.test_mutants", "tests.engine.test_world_breaks", "tests.engine.test_vault_world")


def registry() -> dict[str, Fault]:
    """Every fault meshcert must catch, from the sources above (imports the test modules that
    declare them, so a module that is not collected still counts)."""
    for name in DECLARING_MODULES:  # they declare their faults with aims_at/param when imported
        importlib.import_module(name)
    out: dict[str, Fault] = {}
    for m, about in MUTANTS.items():
        if m in TARGETS or m in CRED_TARGETS:
            target = clauses(m)
        elif m in SCENARIO_TARGETS or m in CRED_SCENARIO_TARGETS:
            target = (f"scenario: {SCENARIO_TARGETS.get(m) or CRED_SCENARIO_TARGETS[m]}",)
        else:
            target = ()
        out[f"mutant:{m}"] = Fault(f"mutant:{m}", "mutant", target, about)
    out.update(_DECLARED)
    return dict(sorted(out.items()))
