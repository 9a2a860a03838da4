"""meshcert's own engine test of the property test: an oracle with one rule deliberately wrong
must be caught within the default example budget, and the replay file saved for the shrunk
example must reproduce the failure alone (without Hypothesis and without the oracle).

The flipped rule: port ranges are ignored -- a destination ``lo-hi`` matches only ``lo`` and
``hi`` (as a parser that split ``3306-5432`` like a list would). The real world lets a probe to a
port strictly inside a range through; the flipped oracle says denied; the property test must
see the difference.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.internal.conjecture import engine as hypothesis_engine

from meshcert.policy import Policy, PortSet, parse_policy
from meshcert.property.model import Shape
from meshcert.property.oracle import Node, Oracle
from meshcert.property.runner import PropertyMismatch, Runner, run_seed
from meshcert.property.strategies import examples
from meshcert.replay.model import load_replay
from meshcert.replay.run import run_replay

BUDGET = 50  # the property test's default max_examples
# Hypothesis stops shrinking after MAX_SHRINKING_SECONDS (300 s by default); on the live world a
# shrink step is a whole example (1-2 s), so this test spent 300 s shrinking: 366 s in the
# clean-clone CI of c498763, the longest test of the run. Every step of the shrink keeps a failing
# example, so a shorter shrink still yields a replay file that fails alone (asserted below); it
# is only less small. 60 s: at least ~30 shrink steps.
SHRINK_S = 60


def _range_ends_only(ports: PortSet) -> PortSet:
    if ports.is_all:
        return ports
    return PortSet.of(*(r for lo, hi in ports.ranges for r in ((lo, lo), (hi, hi))))


class IgnoresPortRanges(Oracle):
    """A deliberately wrong oracle: a port range matches only its two ends."""

    def __init__(self, policy: Policy, nodes, hosts=()):
        acls = None if policy.acls is None else tuple(
            dataclasses.replace(rule, dst=tuple(d._replace(ports=_range_ends_only(d.ports)) for d in rule.dst))
            for rule in policy.acls)
        super().__init__(dataclasses.replace(policy, acls=acls), nodes, hosts)


def test_the_flipped_oracle_really_differs():
    """Offline sanity: the flip changes a verdict (so catching it means something)."""
    pol = parse_policy('{"tagOwners": {"tag:a": ["u@"], "tag:b": ["u@"]},'
                       ' "acls": [{"action": "accept", "src": ["tag:a"], "dst": ["tag:b:5431-5433"]}]}')
    nodes = [Node("a", frozenset({"tag:a"}), None, ("100.64.0.1",)),
             Node("b", frozenset({"tag:b"}), None, ("100.64.0.2",))]
    assert Oracle(pol, nodes).allowed("a", "b", 5432).allowed
    assert not IgnoresPortRanges(pol, nodes).allowed("a", "b", 5432).allowed
    assert IgnoresPortRanges(pol, nodes).allowed("a", "b", 5433).allowed


@pytest.mark.engine
@pytest.mark.property
@pytest.mark.slow(minutes=2)  # 366 s in bench/results/speed-2026-12-02-c498763f1aa5.json, 300 of them shrinking (SHRINK_S)
@pytest.mark.timeout(1500)
def test_a_flipped_oracle_rule_is_caught_and_its_replay_fails_alone(steady_world, report_dir, report_extra,
                                                                     monkeypatch):
    monkeypatch.setattr(hypothesis_engine, "MAX_SHRINKING_SECONDS", SHRINK_S)
    world = steady_world
    shape = Shape.of(world.topology)
    run = run_seed()
    runner = Runner(world, report_dir / "replays-oracle-flip", oracle=IgnoresPortRanges, seed=run,
                    log_path=report_dir / "property-oracle-flip-examples.jsonl")

    @settings(max_examples=BUDGET, deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow])
    @seed(run)
    @given(ex=examples(shape))
    def property_with_the_flipped_oracle(ex):
        runner.check(ex)

    try:
        with pytest.raises(PropertyMismatch) as caught:
            property_with_the_flipped_oracle()
    finally:
        report_extra["property_oracle_flip"] = runner.figures()

    assert runner.first_failure_at is not None and runner.first_failure_at <= BUDGET, runner.figures()
    mismatch = caught.value
    assert mismatch.replay_path is not None and mismatch.replay_path.is_file(), \
        "the shrunk failing example was not saved as a replay file"
    shrunk = mismatch.outcome
    assert shrunk.differences
    # every difference is the flip: the flipped oracle said denied, the world let it through
    for d in shrunk.differences:
        assert not d.expected and d.observed.startswith("connected"), str(d)

    saved = load_replay(mismatch.replay_path)
    recorded = {(d["src"], d["dst"], d["port"]) for d in saved.recorded["differences"]}
    assert recorded == {tuple(d.pair) for d in shrunk.differences}

    # the replay file alone (its own expectations, no Hypothesis, no oracle) fails the same way:
    # every recorded pair differs again (a pair whose WireGuard session was cold in the recorded
    # run may now differ too -- still the flip's kind)
    alone = run_replay(mismatch.replay_path, world, check=False)
    assert not alone.ok, "the replay file did not reproduce the failure"
    assert recorded <= alone.differing_pairs(), (alone.differing_pairs(), recorded)
    for d in alone.differences:
        assert not d.expected and d.observed.startswith("connected"), str(d)

    # and judged by the documented semantics instead, the same example holds in the world
    truth = run_replay(mismatch.replay_path, world, oracle=Oracle, check=False)
    assert truth.ok, truth.outcome.summary()
