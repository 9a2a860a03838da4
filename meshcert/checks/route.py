"""ROUTE-1: a subnet router's VLAN is reachable only with the route advertised, approved and
accepted (acceptRoutes) -- each of the three its own case."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable

from meshcert.checks.base import Probe, check_reachability
from meshcert.checks.sut import clause

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


# headscale batches route changes to the nodes within a second (tuning: 50 ms here); a loaded
# 2-core machine has stretched a route's arrival at every node to ~10 s (wait_routes_seen's 30 s
# default is the world's bound for the same wait).
GUIDE_ENABLE_BOUND_S = 30.0


def route3_guide_routes_enable_works(world) -> None:
    """ROUTE-3 (headscale < 0.26, where routes are a table of their own): the guide's order and
    commands. The subnet router joins advertising its VLAN with the route not enabled (the
    legacy host proven unreachable, after a positive control on the same path); then
    `headscale routes list` lists the route, disabled; the guide's literal `headscale routes
    enable --route CIDR` is rejected (on these versions --route takes the route's numeric ID);
    `headscale routes enable --route ID` (ID from `routes list`) succeeds and `routes list`
    shows it enabled; then the agent's tailscaled lists the VLAN as the router's primary route
    within GUIDE_ENABLE_BOUND_S, with nothing else done. (That the VLAN then carries traffic is
    ROUTE-1's promise; on v0.25.1 it does not until the router's next full map: the recorded
    finding, a strict xfail.)"""
    spec = world.topology.node("router")
    vlan = spec.approve_routes[0]
    hs = world.headscale

    def listed() -> tuple[int, dict | None, str]:
        code, out = hs.box.exec(["headscale", "routes", "list", "-o", "json"], answer=True)
        try:
            rows = json.loads(out) if code == 0 else []
        except json.JSONDecodeError:
            rows = []
        row = next((r for r in rows or [] if r.get("prefix") == vlan
                    and ((r.get("node") or {}).get("given_name") or (r.get("node") or {}).get("name")) == "router"), None)
        return code, row, out.strip()[-300:]

    def rejoin_unapproved() -> None:
        world.remove_node("router")
        world.add_node(dataclasses.replace(spec, approve_routes=()))

    try:
        legacy_unreachable(world, "ROUTE-3", f"the router joined again advertising {vlan}, the route not enabled",
                           rejoin_unapproved)
        with clause(world, "ROUTE-3") as e:
            code, row, out = listed()
            e.that(code == 0 and row is not None and not row.get("enabled"),
                   f"`headscale routes list` (the guide's) to list router's {vlan}, disabled", out if row is None else row)
            cmd = ["headscale", "routes", "enable", "--route", vlan]
            code, out = hs.box.exec(cmd)
            e.that(code != 0, f"`{' '.join(cmd)}` (the guide's, a CIDR) to be rejected: --route takes a route ID "
                   f"on headscale {hs.version}", f"exit {code}")
            if row is not None:
                cmd = ["headscale", "routes", "enable", "--route", str(row["id"])]
                code, out = hs.box.exec(cmd)
                e.that(code == 0, f"`{' '.join(cmd)}` (the guide's command, the route's ID) to succeed",
                       f"exit {code} {out.strip()[-300:]}")
                code, row, out = listed()
                e.that(row is not None and bool(row.get("enabled")),
                       f"`headscale routes list` to show {vlan} enabled on router", out if row is None else row)
        with clause(world, "ROUTE-3") as e:
            deadline, seen = time.monotonic() + GUIDE_ENABLE_BOUND_S, []
            while time.monotonic() < deadline:
                seen = [p.get("PrimaryRoutes") or [] for p in (world.nodes["agent"].status().get("Peer") or {}).values()
                        if p.get("HostName") == "router"]
                if any(vlan in r for r in seen):
                    break
                time.sleep(0.5)
            e.that(any(vlan in r for r in seen), f"the agent's tailscaled to list {vlan} as the router's primary route "
                   f"within {GUIDE_ENABLE_BOUND_S:.0f} s of the guide's `routes enable`", seen or "no peer router")
    finally:
        if "router" not in world.nodes:
            world.add_node(spec)
        world.set_route_approval("router", spec.approve_routes)
