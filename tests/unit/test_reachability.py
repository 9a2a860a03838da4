"""check_reachability judges a denial only after a positive control between the same two nodes
connected (a fake world, no engine: the real-world proof is tests/test_world_breaks.py)."""

import pytest

from meshcert.checks.base import ClauseFailure, Probe, check_reachability
from tests.common.fakeworld import CutPathsWorld

PROBES = [Probe("agent", "server", 22, True), Probe("agent", "server", 80, False, "default deny"),
          Probe("server", "agent", 5000, False, "target -> agent")]


def test_denials_are_dialled_only_after_their_control_connected():
    w = CutPathsWorld()
    check_reachability(w, "ACL-2", PROBES)
    assert w.rounds[0] == ("agent", [("server", 22)]), "the first round dials the control alone"
    assert sorted(w.rounds[1:]) == [("agent", [("server", 80)]), ("server", [("agent", 5000)])]


def test_a_denial_whose_control_never_connects_cannot_pass():
    w = CutPathsWorld(cut=[("agent", "server")])
    with pytest.raises(ClauseFailure) as e:
        check_reachability(w, "ACL-2", PROBES, positive_deadline=1)
    unjudged = [p for p in e.value.problems if "cannot judge" in p]
    assert len(unjudged) == 2 and all("no positive control between" in p for p in unjudged)
    assert not any(d == [("server", 80)] for _, d in w.rounds[:-2]), "the denial is not dialled before the end"


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


def test_every_negative_is_dialled_in_one_round_after_the_controls():
    """A proven negative (no control needed) is not dialled beside the controls: it waits for the
    round of the controlled negatives, so a check pays one negative timeout, not two."""
    w = CutPathsWorld()
    probes = [*PROBES, Probe("agent", "database", 6379, False, "proven before a change")]
    check_reachability(w, "ACL-2", probes, proven=[("agent", "database")])
    assert w.rounds[0] == ("agent", [("server", 22)]), "the first round dials the control alone"
    assert sorted(w.rounds[1:]) == [("agent", [("server", 80), ("database", 6379)]), ("server", [("agent", 5000)])]


def test_only_proven_negatives_are_dialled_at_once():
    w = CutPathsWorld()
    check_reachability(w, "ACL-2", [Probe("agent", "database", 6379, False)], proven=[("agent", "database")])
    assert w.rounds == [("agent", [("database", 6379)])]
