"""The mutant zoo: every deliberately broken SUT must be caught by the clause it breaks.

Each mutant runs in the real world (its pod, the real sidecar); the clause checks are the same
functions the conformance tests call. A mutant is killed when its clause fails; the mutation
score (killed/total) is printed and written to the report.
"""

import pytest

from meshcert.checks import ClauseFailure
from meshcert.checks.sut import SUT_CHECKS
from meshcert.sut.reference import MUTANTS

pytestmark = [pytest.mark.engine, pytest.mark.slow]

# mutant -> (the clause it breaks, the pod it runs in)
TARGETS = {
    "health-socket-exists": ("HEALTH-1", "agent"),
    "health-tcp-41112": ("HEALTH-1", "agent"),
    "health-ignores-state": ("HEALTH-1", "agent"),
    "sequential-dials": ("HEALTH-2", "agent"),
    "no-proxy": ("TYPE-6", "agent-us"),
    "sidecar-error-aborts": ("HEALTH-3", "agent"),
    "ignore-critical": ("HEALTH-4", "agent"),
    "noncritical-in-context": ("HEALTH-5", "agent"),
    "leak-authkey": ("CRED-1", "agent"),
    "omitted-is-error": ("TYPE-1", "agent"),
    "accept-unknown-type": ("TYPE-4", "agent"),
    "headscale-no-validation": ("TYPE-5", "agent"),
    "tailscale-requires-control": ("TYPE-3", "agent"),
    "direct-checks-sidecar": ("DIRECT-1", "agent"),
    "wrong-port": ("TYPE-6", "agent"),
    "headscale-strict-schema": ("TYPE-2", "agent"),
    "silent-missing-secret": ("TROUBLE-1", "agent"),
}


def test_every_mutant_has_a_target_clause():
    assert set(TARGETS) == set(MUTANTS), "a mutant without a target clause cannot be scored"
    assert {clause for clause, _ in TARGETS.values()} <= set(SUT_CHECKS)


@pytest.fixture(scope="module")
def scoreboard(report_extra):
    board = {}
    yield board
    killed = sum(1 for v in board.values() if v["killed"])
    print(f"\nmutation score: {killed}/{len(board)} killed")
    report_extra["mutants"] = board


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_mutant_is_killed_by_its_clause(steady_world, scoreboard, mutant):
    clause, pod = TARGETS[mutant]
    steady_world.start_sut(pod, mutant=mutant)
    try:
        SUT_CHECKS[clause](steady_world, pod)
    except ClauseFailure as e:
        scoreboard[mutant] = {"killed": e.clause == clause, "clauses": [e.clause]}
        assert e.clause == clause
        return
    scoreboard[mutant] = {"killed": False, "clauses": []}
    pytest.fail(f"mutant {mutant} ({MUTANTS[mutant]}) survived clause {clause}")


def test_reference_sut_passes_every_sut_clause(steady_world):
    """The other half of a kill: the faithful SUT passes the same checks (no check fails everyone)."""
    for clause, check in SUT_CHECKS.items():
        for pod in ("agent", "agent-us") if clause == "TYPE-6" else ("agent",):
            check(steady_world, pod)
