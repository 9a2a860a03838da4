"""The mutant zoo: every deliberately broken SUT must be caught by the clause it breaks.

Each mutant runs in the real world (its pod, the real sidecar); the clause checks are the same
functions the conformance tests call. A mutant is killed when every clause it targets fails with
a ClauseFailure of that clause (a scenario target: when the scenario fails after its steady state
held). The mutation score is computed by tests/conftest.py over every fault of tests/common/faults.py
(every mutant, broken world setting and broken chart), printed and written to the report.
"""

import pytest

from meshcert.chaos.experiment import SteadyStateBroken
from meshcert.checks.sut import SUT_CHECKS
from meshcert.sut.reference import MUTANTS
from meshcert.sut.reference.targets import CRED_SCENARIO_TARGETS, CRED_TARGETS, SCENARIO_TARGETS, TARGETS, clauses
from tests.common.faults import aims_at, kill_by_clauses, kill_by_scenario, mutant_params

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_every_mutant_has_a_target_clause():
    # CRED_TARGETS, CRED_SCENARIO_TARGETS: the run lifecycle's, on the credential world
    # (tests/engine/test_vault_world.py)
    assert set(TARGETS) | set(SCENARIO_TARGETS) | set(CRED_TARGETS) | set(CRED_SCENARIO_TARGETS) == set(MUTANTS), \
        "a mutant without a target cannot be scored"
    assert {c for m in TARGETS for c in clauses(m)} <= set(SUT_CHECKS)


@pytest.mark.parametrize("mutant", mutant_params(TARGETS))
def test_mutant_is_killed_by_its_clause(steady_world, caught, mutant):
    pod = TARGETS[mutant][1]
    steady_world.start_sut(pod, mutant=mutant)
    kill_by_clauses(mutant, {c: (lambda c=c: SUT_CHECKS[c](steady_world, pod)) for c in clauses(mutant)}, caught)


@pytest.mark.chaos
@pytest.mark.parametrize("mutant", mutant_params(SCENARIO_TARGETS))
def test_mutant_is_killed_by_its_scenario(steady_world, caught, mutant):
    from meshcert.chaos.scenarios import SCENARIOS
    name = SCENARIO_TARGETS[mutant]
    steady_world.start_sut("agent", mutant=mutant)
    kill_by_scenario(mutant, name, lambda: SCENARIOS[name](steady_world, {}), caught)


@pytest.mark.chaos
@pytest.mark.parametrize("mutant,name", [("sidecar-error-aborts", "sidecar crash"),
                                         ("ignore-critical", "partition"),
                                         ("sequential-dials", "slow and dead endpoints"),
                                         ("health-ignores-state", "expired key")])
def test_scenarios_also_catch_clause_mutants(steady_world, mutant, name):
    """Each scenario fails against a mutant it exists to catch (not only against clause checks),
    in its experiment: a failure of the steady state before any fault is not the scenario's."""
    from meshcert.chaos.scenarios import SCENARIOS
    steady_world.start_sut("agent", mutant=mutant)
    with pytest.raises(AssertionError) as e:
        SCENARIOS[name](steady_world, {})
    assert not isinstance(e.value, SteadyStateBroken), \
        f"{mutant} was caught by {e.value.clause} in the steady state before {name!r}, not by the scenario"


@pytest.mark.chaos
def test_a_steady_state_failure_names_its_clause_not_the_scenario(steady_world):
    """wrong-port dials port+1: the steady state's pre-run (server:22 through the mesh) already
    fails, before "slow and dead endpoints" injects anything -- the failure names TYPE-6."""
    from meshcert.chaos.scenarios import SCENARIOS
    steady_world.start_sut("agent", mutant="wrong-port")
    with pytest.raises(SteadyStateBroken) as e:
        SCENARIOS["slow and dead endpoints"](steady_world, {})
    assert e.value.clause == "TYPE-6" and e.value.scenario == "slow and dead endpoints (direct)"
    assert "steady state of scenario 'slow and dead endpoints (direct)' broken before any fault" in str(e.value)


@pytest.mark.slow(minutes=1.5)  # 92 s in bench/results/speed-2026-12-01-faebe0662a14.json
@aims_at("world", "control-plane-held-by-timeout-toxic", "scenario: control-plane latency",
         "a `timeout` toxic holds the control connection: no new node can register")
def test_control_plane_latency_scenario_fails_when_the_control_plane_is_cut(steady_world, caught):
    """A broken setting: a `timeout` toxic holds the control connection; no new node can register."""
    from meshcert.chaos.scenarios import control_plane_latency
    with pytest.raises(AssertionError, match="could not register") as e:
        control_plane_latency(steady_world, {}, kind="timeout", timeout=0)
    assert not isinstance(e.value, SteadyStateBroken)
    caught("scenario: control-plane latency")


@pytest.mark.slow(minutes=1.5)  # 62 s in bench/results/speed-2026-12-01-faebe0662a14.json
@pytest.mark.chaos
@aims_at("world", "standby-route-not-approved", "scenario: subnet router HA",
         "the standby router advertises the VLAN but its route is never approved")
def test_ha_scenario_fails_when_the_standby_route_is_not_approved(steady_world, caught):
    """A broken setting: the standby advertises the VLAN but its route is never approved, so
    nothing can take over when the primary dies; the failover bound must catch it."""
    from meshcert.chaos.scenarios import subnet_router_ha
    with pytest.raises(AssertionError, match="ROUTE HA: the legacy host must be reachable through router-b"):
        subnet_router_ha(steady_world, {}, approve_standby=False)
    caught("scenario: subnet router HA")


@pytest.mark.chaos
@aims_at("world", "direct-udp-not-blocked", "scenario: derp latency",
         "the DERP scenario run without its UDP block: it would measure the direct path")
def test_derp_scenario_fails_when_direct_udp_is_not_blocked(steady_world, caught):
    """A broken setting: without the UDP block the agent talks to server directly; the scenario
    must notice it is not measuring DERP at all."""
    from meshcert.chaos.scenarios import derp_latency_visible
    with pytest.raises(AssertionError, match="through DERP"):
        derp_latency_visible(steady_world, {}, block_udp=False)
    caught("scenario: derp latency")


@pytest.mark.slow(minutes=1.5)  # 80 s in bench/results/speed-2026-12-01-faebe0662a14.json
def test_reference_sut_passes_every_sut_clause(steady_world):
    """The other half of a kill: the faithful SUT passes the same checks (no check fails everyone)."""
    for clause, check in SUT_CHECKS.items():
        for pod in ("agent", "agent-us") if clause in ("TYPE-6", "DIRECT-1") else ("agent",):
            check(steady_world, pod)
