"""The guide's troubleshooting failure modes, surfaced by the SUT."""

import pytest

from meshcert.checks import sut as c

pytestmark = [pytest.mark.engine, pytest.mark.sut]


@pytest.mark.clause("TROUBLE-1")
def test_missing_auth_key_secret_is_named(steady_world):
    c.trouble1_missing_secret(steady_world)


@pytest.mark.route
@pytest.mark.clause("TROUBLE-3")
def test_unapproved_route_is_reported_as_a_routing_problem(steady_world):
    c.trouble3_unapproved_route_points_at_routing(steady_world)


@pytest.mark.acl
@pytest.mark.clause("TROUBLE-4")
def test_acl_denied_target_is_told_apart_from_a_missing_one(world):
    c.trouble4_acl_deny_told_apart(world)


@pytest.mark.clause("TROUBLE-5")
def test_target_not_on_the_tailnet_is_said_so(world):
    c.trouble5_not_on_tailnet(world)


@pytest.mark.clause("TROUBLE-2")
def test_expired_preauth_key_is_reported_with_the_daemon_state(steady_world):
    c.trouble2_expired_key(steady_world)
