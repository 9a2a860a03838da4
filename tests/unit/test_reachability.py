"""The probe engine (check_reachability, and reach: its coroutine, every probe a task of one
event loop) judges a denial only after a positive control between the same two nodes connected
(fake worlds, no engine: the real-world proof is tests/engine/test_world_breaks.py). The async
tests run on pytest-asyncio's loop."""

import asyncio

import pytest

from meshcert.checks.base import ClauseFailure, Probe, check_reachability, reach
from tests.common.fakeworld import CutPathsWorld, TimedCutPathsWorld

PROBES = [Probe("agent", "server", 22, True), Probe("agent", "server", 80, False, "default deny"),
          Probe("server", "agent", 5000, False, "target -> agent")]


def test_denials_are_dialled_only_after_their_control_connected():
    w = CutPathsWorld()
    check_reachability(w, "ACL-2", PROBES)
    assert w.rounds[0] == ("agent", [("server", 22)]), "the first round dials the control alone"
    assert sorted(w.rounds[1:]) == [("agent", [("server", 80)]), ("server", [("agent", 5000)])]


def test_a_denial_whose_control_never_connects_cannot_pass():
    w = TimedCutPathsWorld(cut=[("agent", "server")])
    with pytest.raises(ClauseFailure) as e:
        check_reachability(w, "ACL-2", PROBES, positive_deadline=1, negative_timeout=0.2)
    unjudged = [p for p in e.value.problems if "cannot judge" in p]
    assert len(unjudged) == 2 and all("no positive control between" in p for p in unjudged)
    negs = [d for d in w.dials if d[4] != 22]
    assert len(negs) == 2 and all(d[0] >= 1.0 for d in negs), f"the denials are dialled at the deadline: {negs}"


def test_a_denial_that_connects_fails_as_reachable_even_without_its_control():
    w = CutPathsWorld(open_ports=(80,))  # the control (22) is closed, the denial (80) open: a connection is proof
    with pytest.raises(ClauseFailure) as e:
        check_reachability(w, "ACL-2", PROBES, positive_deadline=1)
    assert any(p.startswith("agent -> server (server):80: expected unreachable") and "observed reachable" in p
               for p in e.value.problems), e.value.problems


def test_a_denial_that_connects_fails():
    with pytest.raises(ClauseFailure, match="expected unreachable.*observed reachable"):
        check_reachability(CutPathsWorld(open_ports=(22, 80)), "ACL-2", PROBES[:2])


def test_a_denial_without_any_control_is_refused():
    with pytest.raises(ValueError, match="no positive control between agent and database"):
        check_reachability(CutPathsWorld(), "ACL-2", [Probe("agent", "database", 6379, False)])
    # the same path proven before a change is a control
    check_reachability(CutPathsWorld(), "ROUTE-1", [Probe("agent", "database", 6379, False)],
                       proven=[("agent", "database")])


@pytest.mark.asyncio
async def test_each_negative_waits_on_its_own_control_and_the_negatives_overlap():
    """The engine's event loop: a proven negative (no control needed) is dialled at once, beside
    the controls; each controlled negative as soon as its own control connected; the dropped
    negatives of a check overlap, so the check pays about one negative timeout, not one each."""
    w = TimedCutPathsWorld(answer_s=0.05)
    probes = [*PROBES, Probe("agent", "database", 6379, False, "proven before a change")]
    loop = asyncio.get_running_loop()
    t = loop.time()
    await reach(w, "ACL-2", probes, proven=[("agent", "database")], negative_timeout=0.4)
    wall = loop.time() - t
    when = {(src, h, p): (start, end) for start, end, src, h, p in w.dials}
    control_end = when[("agent", "server", 22)][1]
    assert when[("agent", "database", 6379)][0] < 0.1, "the proven negative waits for nothing"
    for n in (("agent", "server", 80), ("server", "agent", 5000)):
        assert control_end <= when[n][0] < control_end + 0.2, (n, when)  # 0.2: a loaded 2-core loop
    assert 0.4 <= wall < 0.4 + 0.05 + 0.3, f"negatives overlap: one timeout (0.4 s) and the control, not {wall:.2f} s"


@pytest.mark.asyncio
async def test_a_negative_does_not_wait_for_a_slow_positive_elsewhere():
    """A positive on a cut path is retried until the deadline; a negative of another pair whose
    control connected is judged long before that (rounds of dials made it wait for every retry)."""
    w = TimedCutPathsWorld(cut=[("agent", "database")])
    probes = [*PROBES[:2], Probe("agent", "database", 22, True, "cut: retried until the deadline")]
    with pytest.raises(ClauseFailure, match="agent -> database"):
        await reach(w, "ACL-1", probes, positive_deadline=2.0, negative_timeout=0.2)
    neg = next(d for d in w.dials if d[2:] == ("agent", "server", 80))
    retries = [d for d in w.dials if d[2:] == ("agent", "database", 22)]
    assert neg[1] < 0.5 and len(retries) >= 3 and retries[-1][0] >= 1.5, (neg, retries)


def test_only_proven_negatives_are_dialled_at_once():
    w = CutPathsWorld()
    check_reachability(w, "ACL-2", [Probe("agent", "database", 6379, False)], proven=[("agent", "database")])
    assert w.rounds == [("agent", [("database", 6379)])]


def test_a_dial_that_fails_is_raised_as_itself_not_as_a_group():
    """A node agent that does not answer is an error of the world, raised as the blocking engine
    raised it: the first failure alone, not an ExceptionGroup of the event loop's tasks."""
    from meshcert.world.base import WorldError

    class Broken(TimedCutPathsWorld):
        async def adial(self, src, targets, timeout):
            raise WorldError(f"{src}: node agent POST http://x:9999/dial: connection refused")

    with pytest.raises(WorldError, match="node agent POST"):
        check_reachability(Broken(), "ACL-2", PROBES)
