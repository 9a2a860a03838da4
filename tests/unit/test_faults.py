"""The mutation score cannot flatter: its denominator is the whole registry of faults, and a fault
counts as killed only when its test ran, passed and named the target that caught it. Also: a
run that tested nothing never exits 0 (no engine needed)."""

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from meshcert.chaos.experiment import SteadyStateBroken
from meshcert.checks import ClauseFailure
from meshcert.sut.reference import MUTANTS
from meshcert.sut.reference.targets import TARGETS
from tests import conftest as board_mod
from tests.common import faults as F
from tests.common.charts import VARIANTS
from tests.common.faults import kill_by_clauses, kill_by_scenario


def test_the_registry_holds_every_mutant_world_break_and_chart():
    reg = F.registry()
    assert {n for n, f in reg.items() if f.kind == "mutant"} == {f"mutant:{m}" for m in MUTANTS}
    assert {f"chart:{v}" for v in VARIANTS} <= {n for n, f in reg.items() if f.kind == "chart"}
    worlds = {n for n, f in reg.items() if f.kind == "world"}
    assert {"world:agent-to-server-path-cut", "world:servers-acl-line-flipped",
            "world:standby-route-not-approved"} <= worlds
    assert all(f.target for n, f in reg.items() if f.kind != "mutant"), "a declared fault names its target"


def _config(seen: dict) -> SimpleNamespace:
    config = SimpleNamespace(stash=pytest.Stash())
    config.stash[board_mod.FAULTS] = seen
    return config


def test_scoreboard_counts_what_did_not_run_as_not_killed():
    reg = F.registry()
    name = "world:redis-opened"
    board = board_mod.scoreboard(_config({}))
    assert len(board) == len(reg) and not any(v["killed"] for v in board.values())
    assert board[name]["why"] == "its test was not collected in this session"
    for status, why in (("skipped", "its test was skipped: x"), ("error", "its test errored in setup: y"),
                        ("failed", "its test failed (survived): z"), ("deselected", "its test was deselected")):
        b = board_mod.scoreboard(_config({name: {"test": "t", "status": status, "why": why, "caught_by": []}}))
        assert not b[name]["killed"] and b[name]["why"] == why


def test_a_kill_counts_only_when_its_target_caught_it():
    name = "world:servers-acl-line-flipped"  # target ACL-1 and ACL-2

    def one(caught):
        return board_mod.scoreboard(_config({name: {"test": "t", "status": "passed", "why": "",
                                                    "caught_by": caught}}))[name]
    assert one(["ACL-1", "ACL-2"])["killed"] and one(["ACL-1", "ACL-2"])["clauses"] == ["ACL-1", "ACL-2"]
    assert not one([])["killed"] and "without naming" in one([])["why"]
    assert not one(["ACL-1"])["killed"] and "not by its target ACL-1, ACL-2" in one(["ACL-1"])["why"]


def test_the_score_line_has_the_full_denominator():
    board = board_mod.scoreboard(_config({}))
    line = board_mod.score_line(board)
    assert line.startswith(f"mutation score: 0/{len(F.registry())} faults killed (0%)")
    assert f"mutants of the reference SUT 0/{len(MUTANTS)}" in line


def test_an_all_skipped_run_does_not_exit_0(tmp_path):
    (tmp_path / "test_only_skips.py").write_text(textwrap.dedent("""
        import pytest
        pytest.skip("cannot run here", allow_module_level=True)
    """))
    (tmp_path / "test_skips.py").write_text("import pytest\n\ndef test_x():\n    pytest.skip('no')\n")
    for target in ("test_only_skips.py", "test_skips.py"):
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", target,
                            "--report-dir", str(tmp_path / "r")], cwd=tmp_path, capture_output=True, text=True)
        assert p.returncode == 5, (target, p.returncode, p.stdout[-800:])
        assert "skipped" in p.stdout
    (tmp_path / "test_one_passes.py").write_text("def test_y():\n    pass\n")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", ".",
                        "--report-dir", str(tmp_path / "r")], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-800:]


# tests of these modules that show a fault caught but are not themselves a fault of the registry
NOT_A_FAULT = {
    "test_world_breaks": {"test_secrets_never_in_failure_messages"},  # a property of every failure message
}


def test_every_world_break_test_is_a_registered_fault():
    """A broken-setting test added to test_world_breaks.py must be in the denominator: it carries
    ``@aims_at(...)`` (or is listed in NOT_A_FAULT with the reason)."""
    from tests.engine import test_world_breaks as mod
    unmarked = []
    for name, fn in vars(mod).items():
        if not name.startswith("test_") or not callable(fn) or name in NOT_A_FAULT["test_world_breaks"]:
            continue
        marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "fault"]
        params = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        in_params = any(any(mk.name == "fault" for mk in getattr(v, "marks", ())) for m in params
                        for v in m.args[1])
        if not marks and not in_params:
            unmarked.append(name)
    assert not unmarked, f"broken-setting tests not in the fault registry (add @aims_at): {unmarked}"


# ------------------------------------------------------------------ the kill rule (one place)

def _fails(clause):
    def check():
        raise ClauseFailure(clause, ["observed"], None)
    return check


def _mutant():
    return sorted(TARGETS)[0]


def test_a_kill_counts_only_when_the_targeted_clause_fails():
    got = []
    kill_by_clauses(_mutant(), {"ACL-1": _fails("ACL-1"), "ACL-2": _fails("ACL-2")}, lambda *c: got.extend(c))
    assert got == ["ACL-1", "ACL-2"]


def test_another_clause_failing_is_a_survival_named_as_such():
    with pytest.raises(AssertionError, match=r"survived clause\(s\) \['ACL-1 \(failed as ACL-2\)'\]"):
        kill_by_clauses(_mutant(), {"ACL-1": _fails("ACL-2")}, lambda *c: pytest.fail("no kill to report"))


def test_a_clause_that_holds_is_a_survival():
    with pytest.raises(AssertionError, match="survived clause"):
        kill_by_clauses(_mutant(), {"ACL-1": _fails("ACL-1"), "ACL-2": lambda: None},
                        lambda *c: pytest.fail("no kill to report"))


def test_a_scenario_kill_needs_its_steady_state_to_have_held():
    got = []
    kill_by_scenario(_mutant(), "partition", _fails("HEALTH-1"), lambda *c: got.extend(c))
    assert got == ["scenario: partition"]

    def steady_broken():
        raise SteadyStateBroken("partition", ClauseFailure("HEALTH-1", ["down"], None))
    with pytest.raises(pytest.fail.Exception, match="in the steady state before scenario 'partition'"):
        kill_by_scenario(_mutant(), "partition", steady_broken, lambda *c: pytest.fail("no kill"))
    with pytest.raises(pytest.fail.Exception, match="survived scenario partition"):
        kill_by_scenario(_mutant(), "partition", lambda: None, lambda *c: pytest.fail("no kill"))
