"""Subnet routing: the legacy host on the VLAN runs no tailscale; the router advertises the VLAN."""

import pytest

from meshcert.checks import route
from meshcert.world.topology import GUIDE_VLAN

pytestmark = [pytest.mark.route, pytest.mark.engine]


@pytest.mark.clause("ROUTE-1")
def test_legacy_host_reachable_with_route_approved_and_accepted(world):
    route.legacy_reachable(world)


@pytest.mark.clause("ROUTE-1")
def test_legacy_host_unreachable_when_agent_does_not_accept_routes(steady_world):
    route.legacy_unreachable(steady_world, "ROUTE-1", "acceptRoutes off on the agent",
                             lambda: steady_world.nodes["agent"].set_accept_routes(False))


@pytest.mark.clause("ROUTE-1")
def test_legacy_host_unreachable_when_route_not_approved(steady_world):
    route.legacy_unreachable(steady_world, "ROUTE-1", f"route {GUIDE_VLAN} advertised but not approved",
                             lambda: steady_world.set_route_approval("router", []))


@pytest.mark.clause("ROUTE-3")
def test_guide_routes_enable_works_on_an_old_headscale(steady_world):
    route.route3_guide_routes_enable_works(steady_world)
