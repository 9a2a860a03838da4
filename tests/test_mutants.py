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

# mutant -> (the clause(s) it breaks -- each must fail --, the pod it runs in)
TARGETS = {
    "health-socket-exists": ("HEALTH-1", "agent"),
    "health-tcp-41112": ("HEALTH-1", "agent"),
    "health-ignores-state": (("HEALTH-1", "TROUBLE-2"), "agent"),
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
    "generic-errors": (("TROUBLE-3", "TROUBLE-4", "TROUBLE-5"), "agent"),
    "transcript-shows-credential": ("CRED-2", "agent"),
    "double-deadline": ("HEALTH-2", "agent"),  # i10-reach
    "no-latency": ("HEALTH-2", "agent"),  # i10-reach
    "no-error": ("HEALTH-2", "agent"),  # i10-reach
    "socks-no-reply": ("TYPE-6", "agent-us"),  # i10-reach
    "ipv4-only-urls": ("TYPE-6", "agent"),  # i10-reach
    "ip-literals-only": ("TYPE-6", "agent-us"),  # i10-reach
}


def _clauses(mutant: str) -> tuple[str, ...]:
    c = TARGETS[mutant][0]
    return (c,) if isinstance(c, str) else c


# mutant -> the chaos scenario that exists to catch it (meshcert/scenarios.py)
SCENARIO_TARGETS = {
    "health-dials-control": "control-plane outage",
    "localapi-no-timeout": "sidecar frozen",
}


def test_every_mutant_has_a_target_clause():
    assert set(TARGETS) | set(SCENARIO_TARGETS) == set(MUTANTS), "a mutant without a target cannot be scored"
    assert {c for m in TARGETS for c in _clauses(m)} <= set(SUT_CHECKS)


@pytest.fixture(scope="module")
def scoreboard(report_extra):
    board = {}
    yield board
    killed = sum(1 for v in board.values() if v["killed"])
    print(f"\nmutation score: {killed}/{len(board)} killed")
    report_extra["mutants"] = board


@pytest.mark.parametrize("mutant", sorted(TARGETS))
def test_mutant_is_killed_by_its_clause(steady_world, scoreboard, mutant):
    pod = TARGETS[mutant][1]
    steady_world.start_sut(pod, mutant=mutant)
    failed, survived = [], []
    for clause in _clauses(mutant):
        try:
            SUT_CHECKS[clause](steady_world, pod)
            survived.append(clause)
        except ClauseFailure as e:
            failed.append(e.clause)
    scoreboard[mutant] = {"killed": not survived, "clauses": failed}
    assert not survived, f"mutant {mutant} ({MUTANTS[mutant]}) survived clause(s) {survived}"


@pytest.mark.chaos
@pytest.mark.parametrize("mutant", sorted(SCENARIO_TARGETS))
def test_mutant_is_killed_by_its_scenario(steady_world, scoreboard, mutant):
    from meshcert.scenarios import SCENARIOS
    name = SCENARIO_TARGETS[mutant]
    steady_world.start_sut("agent", mutant=mutant)
    try:
        SCENARIOS[name](steady_world, {})
    except AssertionError as e:  # ClauseFailure is one too
        scoreboard[mutant] = {"killed": True, "clauses": [f"scenario: {name}"]}
        print(f"\n{mutant} killed by scenario {name}: {str(e).splitlines()[0]}")
        return
    scoreboard[mutant] = {"killed": False, "clauses": []}
    pytest.fail(f"mutant {mutant} ({MUTANTS[mutant]}) survived scenario {name}")


@pytest.mark.chaos
@pytest.mark.parametrize("mutant,name", [("sidecar-error-aborts", "sidecar crash"),
                                         ("ignore-critical", "partition"),
                                         ("sequential-dials", "slow and dead endpoints"),
                                         ("wrong-port", "slow and dead endpoints"),
                                         ("health-ignores-state", "expired key")])
def test_scenarios_also_catch_clause_mutants(steady_world, mutant, name):
    """Each scenario fails against a mutant it exists to catch (not only against clause checks)."""
    from meshcert.scenarios import SCENARIOS
    steady_world.start_sut("agent", mutant=mutant)
    with pytest.raises(AssertionError):
        SCENARIOS[name](steady_world, {})


def test_control_plane_latency_scenario_fails_when_the_control_plane_is_cut(steady_world):
    """A broken setting: a `timeout` toxic holds the control connection; no new node can register."""
    from meshcert.scenarios import control_plane_latency
    with pytest.raises(AssertionError, match="could not register"):
        control_plane_latency(steady_world, {}, kind="timeout", timeout=0)


@pytest.mark.chaos
def test_ha_scenario_fails_when_the_standby_route_is_not_approved(steady_world):
    """A broken setting: the standby advertises the VLAN but its route is never approved, so
    nothing can take over when the primary dies; the failover bound must catch it."""
    from meshcert.scenarios import subnet_router_ha
    with pytest.raises(AssertionError, match="ROUTE HA: the legacy host must be reachable through router-b"):
        subnet_router_ha(steady_world, {}, approve_standby=False)


@pytest.mark.chaos
def test_derp_scenario_fails_when_direct_udp_is_not_blocked(steady_world):
    """A broken setting: without the UDP block the agent talks to server directly; the scenario
    must notice it is not measuring DERP at all."""
    from meshcert.scenarios import derp_latency_visible
    with pytest.raises(AssertionError, match="through DERP"):
        derp_latency_visible(steady_world, {}, block_udp=False)


def test_reference_sut_passes_every_sut_clause(steady_world):
    """The other half of a kill: the faithful SUT passes the same checks (no check fails everyone)."""
    for clause, check in SUT_CHECKS.items():
        for pod in ("agent", "agent-us") if clause == "TYPE-6" else ("agent",):
            check(steady_world, pod)
