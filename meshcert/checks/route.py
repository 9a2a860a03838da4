"""ROUTE-1: a subnet router's VLAN is reachable only with the route advertised, approved and
accepted (acceptRoutes) -- each of the three its own case."""

from __future__ import annotations

from .base import Probe, check_reachability

CONTROLS = [Probe("agent", "server", 22, True, "positive control: the agent's tailnet path works"),
            Probe("router", "legacy", 22, True, "positive control: the legacy host is up on the VLAN")]


def legacy_reachable(world) -> None:
    check_reachability(world, "ROUTE-1", [*CONTROLS, Probe("agent", "legacy", 22, True,
                                                          "route advertised + approved, acceptRoutes on")])


def legacy_unreachable(world, clause: str, why: str) -> None:
    check_reachability(world, clause, [*CONTROLS, Probe("agent", "legacy", 22, False, why)])
