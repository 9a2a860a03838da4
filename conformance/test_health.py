"""The pre-run health check, against the SUT in its pod and the real sidecar."""

import pytest

from meshcert.checks import sut as c

pytestmark = [pytest.mark.engine, pytest.mark.sut]


@pytest.mark.clause("HEALTH-1")
def test_sidecar_ready_iff_backend_state_running(steady_world):
    c.health1_running_means_ready(steady_world)


@pytest.mark.clause("HEALTH-2")
def test_endpoints_dialled_concurrently_each_with_its_deadline(world):
    c.health2_concurrent_deadlines(world)


@pytest.mark.clause("HEALTH-3")
def test_not_ready_sidecar_is_a_warning_and_the_run_goes_on(steady_world):
    c.health3_not_ready_is_a_warning(steady_world)


@pytest.mark.clause("HEALTH-4")
def test_unreachable_critical_endpoint_is_told_to_the_agent(world):
    c.health4_critical_told_to_agent(world)


@pytest.mark.clause("HEALTH-5")
def test_unreachable_noncritical_endpoint_is_only_logged(world):
    c.health5_noncritical_only_logged(world)
