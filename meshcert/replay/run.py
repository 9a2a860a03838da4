"""The replay runner: rerun a replay file alone in a world (``meshcert replay FILE`` runs it).

``run_replay(path, world)`` applies the file's settings and faults, dials its probes and
compares with the file's expectations (or with a given oracle's), then runs its pre-runs with
the faults held. The file format is :mod:`meshcert.replay.model`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshcert.chaos.experiment import prerun_problems
from meshcert.chaos.faults import FAULT_HANDLERS, FaultHandler
from meshcert.errors import InputError
from meshcert.property.model import RETRY_WINDOW, Outcome, Shape
from meshcert.property.runner import run_example
from meshcert.replay.model import TOPOLOGIES, Replay, load_replay


class ReplayMismatch(AssertionError):
    """The world does not do what a replay file expects (or what the given oracle says)."""

    def __init__(self, result: ReplayResult, against: str = "the replay file's expectations"):
        self.result = result
        text = result.outcome.summary(against) if result.outcome.differences or not result.prerun_problems \
            else "the probes held"
        for p in result.prerun_problems:
            text += f"\n  prerun: {p}"
        super().__init__(f"replay {result.replay.name} ({result.replay.source}): " + text)


@dataclass
class ReplayResult:
    replay: Replay
    outcome: Outcome
    prerun_problems: list[str] = field(default_factory=list)

    @property
    def differences(self):
        return self.outcome.differences

    @property
    def ok(self) -> bool:
        return not self.outcome.differences and not self.prerun_problems

    def differing_pairs(self) -> set[tuple[str, str, int]]:
        return {tuple(d.pair) for d in self.outcome.differences}


def check_topology(replay: Replay, world) -> None:
    want = Shape.of(TOPOLOGIES[replay.topology]())
    problems = want.same_as(Shape.of(world.topology))
    if problems:
        raise InputError(replay.source, f"the world is not built from topology {replay.topology!r}: "
                         + "; ".join(problems), "replay it in a world of that topology")


def run_replay(path: str | os.PathLike | Replay, world, *, oracle=None,
               fault_handlers: Mapping[str, FaultHandler] | None = None, check: bool = True,
               restore: bool = True, retry_window: float = RETRY_WINDOW) -> ReplayResult:
    """Rerun a replay file alone in ``world``.

    Sets the file's routes and policy (waiting until they hold), applies its faults, dials its
    probes and compares with its expectations -- or, when ``oracle`` (an Oracle class) is given,
    with that oracle's verdicts in this world. ``fault_handlers`` maps a fault kind to a function
    ``(world, fault) -> undo`` (default: every kind of :data:`meshcert.chaos.faults.FAULTS`); a file with
    a fault kind that has no handler is refused before the world is touched. The file's pre-runs
    run after the probes, with the faults still held. ``check``: raise :class:`ReplayMismatch` on any difference. ``restore``:
    return the world to its topology's steady state afterwards (World.reset).
    """
    replay = path if isinstance(path, Replay) else load_replay(path)
    check_topology(replay, world)
    handlers = dict(FAULT_HANDLERS if fault_handlers is None else fault_handlers)
    missing = sorted({f["kind"] for f in replay.faults} - set(handlers))
    if missing:
        raise InputError(replay.source, f"faults of kind {', '.join(missing)} have no handler here",
                         "run it from a chaos scenario that provides them")
    undo: list[Callable[[], None]] = []

    def inject() -> None:
        for f in replay.faults:
            undo.append(handlers[f["kind"]](world, f))

    try:
        kwargs: dict[str, Any] = {"pairs": [p.pair for p in replay.probes], "while_applied": inject,
                                  "retry_window": retry_window, "patient": replay.seen_connecting()}
        if oracle is None:
            kwargs["expectations"] = replay.expectations
        else:
            kwargs["oracle"] = oracle
        outcome = run_example(world, replay.example, **kwargs)
        problems = [f"prerun[{i}] (pod {x.get('pod', 'agent')}): {p}" for i, x in enumerate(replay.prerun)
                    for p in prerun_problems(world, x)[2]]
    finally:
        for u in reversed(undo):
            u()
        if restore:
            world.reset()
    result = ReplayResult(replay, outcome, problems)
    if check and not result.ok:
        raise ReplayMismatch(result, "the replay file's expectations" if oracle is None
                             else f"oracle {getattr(oracle, '__name__', oracle)}")
    return result
