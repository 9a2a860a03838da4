"""ROUTE-1: a subnet router's VLAN is reachable only with the route advertised, approved and
accepted (acceptRoutes) -- each of the three its own case."""

from __future__ import annotations

from collections.abc import Callable

from meshcert.checks.base import Probe, check_reachability

CONTROLS = [Probe("agent", "server", 22, True, "positive control: the agent's tailnet path works"),
            Probe("router", "legacy", 22, True, "positive control: the legacy host is up on the VLAN")]
LEGACY = Probe("agent", "legacy", 22, True, "route advertised + approved, acceptRoutes on", via="router")


def legacy_reachable(world) -> None:
    check_reachability(world, "ROUTE-1", [*CONTROLS, LEGACY])


def legacy_unreachable(world, clause: str, why: str, change: Callable[[], None]) -> None:
    """The legacy host unreachable after ``change`` (acceptRoutes off, the route unapproved).

    The negative is judged live: the same path (agent -> legacy:22 through the router) must
    connect BEFORE the change -- its positive control -- and the tailnet and VLAN controls must
    hold after it; only then is the denial dialled."""
    check_reachability(world, clause, [*CONTROLS, Probe(
        "agent", "legacy", 22, True, f"positive control before the change ({why}): the route works")])
    change()
    check_reachability(world, clause, [*CONTROLS, Probe("agent", "legacy", 22, False, why)],
                       proven=[("agent", "legacy")])
