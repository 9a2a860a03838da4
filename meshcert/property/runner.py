"""Property-based differential testing of ACLs and routes: the live world against the oracle.

Hypothesis draws an :class:`~meshcert.property.model.Example` (:mod:`meshcert.property.strategies`);
:func:`run_example` applies it to the running world and probes the whole matrix
(:mod:`meshcert.property.live`), and compares every pair with
:class:`meshcert.property.oracle.Oracle`. A pair where the two disagree is a
:class:`~meshcert.property.model.Difference`. :class:`Runner` runs the drawn examples of one
Hypothesis test, keeps the figures, and saves the shrunk failing example as a replay file
(:mod:`meshcert.replay.model`), which keeps the symbols, so it reruns in any world built from
the same topology.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis.control import current_build_context

from meshcert.errors import InputError
from meshcert.policy import parse_policy
from meshcert.property.live import Applied, Observation, apply_example, live_nodes, probe
from meshcert.property.model import (
    NEGATIVE_TIMEOUT,
    RETRY_WINDOW,
    Difference,
    Example,
    Outcome,
    Pair,
    Shape,
    probe_matrix,
)
from meshcert.property.oracle import Oracle, Verdict
from meshcert.replay.model import Replay, save_replay

OracleFactory = Callable[..., Oracle]


def compare(verdicts: Mapping[Pair, Verdict], observations: Mapping[Pair, Observation]) -> list[Difference]:
    diffs = []
    for pair, v in verdicts.items():
        o = observations[pair]
        if v.allowed and not o.reached(pair):
            diffs.append(Difference(pair, True, v.reason, o.describe()))
        elif not v.allowed and o.ok:
            diffs.append(Difference(pair, False, v.reason, o.describe()))
    return diffs


def judge(world, applied: Applied, pairs: Iterable[Pair], oracle: OracleFactory = Oracle) -> dict[Pair, Verdict]:
    """The oracle's verdict for each pair, from the live world's nodes and the applied settings."""
    nodes, hosts = live_nodes(world, applied.approved)
    o = oracle(parse_policy(json.dumps(applied.policy), "drawn policy"), nodes, hosts)
    return {p: o.allowed(p.src, world.address(p.dst), p.port) for p in pairs}


def run_example(world, example: Example, *, oracle: OracleFactory = Oracle,
                pairs: list[Pair] | None = None, expectations: Mapping[Pair, Verdict] | None = None,
                timeout: float = NEGATIVE_TIMEOUT, retry_window: float = RETRY_WINDOW,
                patient: Iterable[Pair] = (), while_applied: Callable[[], None] | None = None) -> Outcome:
    """Apply ``example`` to the live world, probe ``pairs`` (default: the matrix), compare.

    Expectations come from ``oracle`` unless given (a replay file carries its own);
    ``patient`` pairs are retried like allowed ones (see :func:`meshcert.property.live.probe`).
    ``while_applied`` runs after the settings hold and before probing (e.g. injecting faults).
    """
    t0 = time.monotonic()
    applied = apply_example(world, example)
    pairs = probe_matrix(Shape.of(world.topology)) if pairs is None else list(pairs)
    verdicts = dict(expectations) if expectations is not None else judge(world, applied, pairs, oracle)
    if while_applied is not None:
        while_applied()
    addresses = {n: world.address(n) for n in sorted({p.dst for p in pairs} | {p.src for p in pairs})}
    t1 = time.monotonic()
    observations = probe(world, pairs, {p: v.allowed for p, v in verdicts.items()}, timeout=timeout,
                         retry_window=retry_window, patient=patient)
    seconds = {**applied.seconds, "probe": time.monotonic() - t1, "total": time.monotonic() - t0}
    return Outcome(example, applied.policy, applied.approved, applied.accept_routes, verdicts, observations,
                   compare(verdicts, observations), addresses, seconds)


class PropertyMismatch(AssertionError):
    """The live world and the oracle disagree on some pairs of an example."""

    def __init__(self, outcome: Outcome, replay_path: os.PathLike | None = None, seed: int | None = None):
        self.outcome = outcome
        self.replay_path = replay_path
        where = f"\nreplay file: {replay_path} (rerun alone: MESHCERT_REPLAY={replay_path} pytest " \
                f"conformance/test_property.py::test_replay_file)" if replay_path else ""
        run = f"\nhypothesis seed {seed} (MESHCERT_PROPERTY_SEED={seed} reruns this search)" if seed is not None else ""
        super().__init__(outcome.summary() + where + run)


def run_seed() -> int:
    """This run's Hypothesis seed: MESHCERT_PROPERTY_SEED, else a fresh random one (printed)."""
    env = os.environ.get("MESHCERT_PROPERTY_SEED")
    if env:
        try:
            return int(env)
        except ValueError:
            raise InputError("MESHCERT_PROPERTY_SEED", f"{env!r} is not an integer") from None
    return random.SystemRandom().randrange(2 ** 32)


def _final_run() -> bool:
    """True while Hypothesis replays the shrunk failing example for its report."""
    try:
        return bool(current_build_context().is_final)
    except Exception:
        return False


@dataclass
class Runner:
    """Runs drawn examples against one world for a Hypothesis test and keeps the figures.

    ``check(example)`` raises :class:`PropertyMismatch` when the world and the oracle differ;
    on Hypothesis' final run of the shrunk example it first saves the replay file in
    ``replay_dir`` (shrinking steps save nothing).
    """
    world: Any
    replay_dir: os.PathLike
    oracle: OracleFactory = Oracle
    seed: int | None = None
    topology: str = "guide"
    examples: int = 0
    failing: int = 0
    first_failure_at: int | None = None
    seconds: list[float] = field(default_factory=list)
    replay_path: os.PathLike | None = None
    started: float = field(default_factory=time.monotonic)
    phases: dict[str, list[float]] = field(default_factory=dict)
    log_path: os.PathLike | None = None   # one JSON line per example run (figures, retries, differences)
    retry_window: float = RETRY_WINDOW
    retried_examples: int = 0
    retried_pairs: int = 0
    recovered_pairs: int = 0
    denials_judged: int = 0     # denied pairs dialled after a positive control between the same nodes
    denials_unjudged: int = 0   # denied pairs whose WireGuard control never answered (see probe())
    slowest_handshake_s: float = 0.0  # the latest an allowed pair first connected (after_s of a retried pair)
    connect_ms_max: float = 0.0  # the slowest connect of an allowed pair at its first dial (a live session)

    def __repr__(self) -> str:  # Hypothesis prints the test's arguments: keep it to one line
        return f"Runner(oracle={getattr(self.oracle, '__name__', self.oracle)}, seed={self.seed})"

    def check(self, example: Example) -> Outcome:
        outcome = run_example(self.world, example, oracle=self.oracle, retry_window=self.retry_window)
        self.examples += 1
        self.seconds.append(outcome.seconds["total"])
        for k, v in outcome.seconds.items():
            self.phases.setdefault(k, []).append(v)
        retried = [p for p, o in outcome.observations.items() if o.attempts > 1]
        # connect latency of the allowed pairs that connected at their first dial (a live session):
        # what the negative timeout (model.NEGATIVE_TIMEOUT) must stay far above
        first_ms = [o.latency_ms for p, o in outcome.observations.items()
                    if outcome.verdicts[p].allowed and o.attempts == 1 and o.reached(p) and o.latency_ms is not None]
        if first_ms:
            self.connect_ms_max = max(self.connect_ms_max, max(first_ms))
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(json.dumps({"n": self.examples, "seconds": {k: round(v, 2) for k, v in outcome.seconds.items()},
                                    "policy": outcome.policy, "approved": outcome.approved,
                                    "accept_routes": outcome.accept_routes,
                                    "retried": {str(p): [o.attempts, o.after_s, o.describe()] for p, o in
                                                ((p, outcome.observations[p]) for p in retried)},
                                    "connect_ms_max": max(first_ms) if first_ms else None,
                                    "differences": [str(d) for d in outcome.differences]}) + "\n")
        for p, o in outcome.observations.items():
            if not outcome.verdicts[p].allowed:
                if o.judged:
                    self.denials_judged += 1
                else:
                    self.denials_unjudged += 1
            elif o.attempts > 1 and o.reached(p):
                self.slowest_handshake_s = max(self.slowest_handshake_s, o.after_s)
        if retried:
            self.retried_examples += 1
            self.retried_pairs += len(retried)
            self.recovered_pairs += sum(1 for p in retried if outcome.observations[p].reached(p))
        if not outcome.differences:
            return outcome
        self.failing += 1
        if self.first_failure_at is None:
            self.first_failure_at = self.examples
        path = None
        if _final_run():
            replay = Replay.from_outcome(outcome, topology=self.topology, seed=self.seed,
                                         description=f"shrunk failing example of the property test "
                                                     f"(oracle {getattr(self.oracle, '__name__', self.oracle)})")
            path = self.replay_path = save_replay(replay, self.replay_dir)
        raise PropertyMismatch(outcome, path, self.seed)

    def figures(self) -> dict[str, Any]:
        s = sorted(self.seconds)
        return {"seed": self.seed, "examples_run": self.examples, "failing_runs": self.failing,
                "first_failure_at": self.first_failure_at,
                "wall_s": round(time.monotonic() - self.started, 1),
                "example_s_median": round(s[len(s) // 2], 2) if s else None,
                "example_s_max": round(s[-1], 2) if s else None,
                "phase_s_median": {k: round(sorted(v)[len(v) // 2], 2) for k, v in self.phases.items()},
                "retried_examples": self.retried_examples, "retried_pairs": self.retried_pairs,
                "recovered_on_retry": self.recovered_pairs,
                "denials_judged_live": self.denials_judged, "denials_unjudged": self.denials_unjudged,
                "slowest_first_connect_s": self.slowest_handshake_s,
                "connect_ms_max": round(self.connect_ms_max, 1),
                "replay": os.fspath(self.replay_path) if self.replay_path else None}
