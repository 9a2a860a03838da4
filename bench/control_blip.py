#!/usr/bin/env python3
"""Benchmark: how often a control-plane blip, or a subnet router deleted and joined again, leaves
the tailnet without a node or a route -- counted per trial, never asserted (the measurement
behind the findings about headscale 0.27 in fixtures/replays/findings/ and
meshcert/world/headscale_versions.py).

A world of the guide topology is built (MESHCERT_HEADSCALE picks headscale, MESHCERT_VLAN the
VLAN). Trials, one after another in that world:

- ``blip`` (``--down S ...``, ``--trials N`` each): toxiproxy's ``control`` proxy (the nodes' only
  way to headscale) is disabled for S seconds (its connections cut, new ones refused), then
  enabled. The trial waits until headscale's grace for a reconnect has passed for every cut
  session (v0.27.1 hscontrol/poll.go: a map session that ends is marked offline, and its node's
  primary routes cleared, after 10 one-second ticks without a new session; 12 s after the cut),
  then up to ``--settle`` seconds for the steady state: headscale lists every node online, the
  router's route primary (``subnet_routes``), and the agent sees the router's primary route
  with every peer online. ``held``: it came; ``lost``: it did not (what was missing is kept).
- ``rejoin`` (``--rejoins N``): the router removed (its container, then its headscale node) and
  joined again, its route approved through headscale (the router_rejoined fault); same check.

After a ``lost`` trial, headscale is restarted (World.restart_control_plane: its in-memory
session and primary-route state rebuilt) and the steady state awaited, so trials are
independent. Written to bench/results/control-blip-<headscale>-<date>-<commit>.{json,md},
stamped with the commit and the machine (bench/stamp.py) and the load average around it.

Rerun: `MESHCERT_HEADSCALE=v0.27.1 .venv/bin/python bench/control_blip.py --down 5 8.5 --trials 10 --rejoins 3`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stamp import RESULTS, describe, stamp, write_result  # noqa: E402
from meshcert.chaos.faults import FAULT_HANDLERS  # noqa: E402
from meshcert.secrets import redact  # noqa: E402
from meshcert.toolchain import components, progress  # noqa: E402
from meshcert.world import World  # noqa: E402
from meshcert.world.base import WorldError  # noqa: E402
from meshcert.world.topology import guide_topology  # noqa: E402

GRACE_S = 12.0  # headscale v0.27.1 poll.go: 10 ticks of 1 s before a session that ended counts; +2 s


def observe(world: World) -> dict:
    """What headscale and the agent say now: nodes offline in headscale, the router's approved and
    primary routes there, and what the agent sees of its peers (offline ones, the router's
    primary routes)."""
    nodes = world.headscale.nodes()
    offline = sorted(n.get("given_name") or n.get("name") for n in nodes if not n.get("online"))
    router = next((r for r in world.headscale.routes() if r.get("given_name", r.get("name")) == "router"), {})
    st = world.nodes["agent"].status()
    peers = list((st.get("Peer") or {}).values())
    seen = next((p for p in peers if p.get("HostName") == "router"), {})
    return {"headscale_offline": offline, "router_approved": sorted(router.get("approved_routes") or []),
            "router_primary": sorted(router.get("subnet_routes") or []),
            "agent_sees_offline": sorted(p.get("HostName") for p in peers if not p.get("Online")),
            "agent_sees_router_primary": sorted(seen.get("PrimaryRoutes") or [])}


def session_log(world: World, since: float) -> list[str]:
    """headscale's log lines about map sessions (connected / disconnected) since the Unix time
    ``since``, trimmed: the order of a node's new session and its old session's Disconnect."""
    text = world.headscale.box.container.logs(since=int(since)).decode(errors="replace")
    keep = ("connected", "Connected", "disconnected", "Disconnected")
    return [redact(line.strip())[:220] for line in text.splitlines() if any(k in line for k in keep)][-60:]


def steady(o: dict, vlan: str) -> bool:
    return (not o["headscale_offline"] and o["router_primary"] == [vlan] and not o["agent_sees_offline"]
            and o["agent_sees_router_primary"] == [vlan])


def settle(world: World, vlan: str, timeout: float) -> tuple[bool, dict, float]:
    """(steady, the last observation, seconds waited): polled every 0.5 s up to ``timeout``."""
    t0 = time.monotonic()
    while True:
        o = observe(world)
        if steady(o, vlan) or time.monotonic() - t0 >= timeout:
            return steady(o, vlan), o, round(time.monotonic() - t0, 1)
        time.sleep(0.5)  # a poll interval, not a wait for something


def blip(world: World, down_s: float) -> float:
    """The control plane unreachable for ``down_s`` seconds; returns the monotonic time of the cut."""
    control = world.toxiproxy.client().get_proxy("control")
    cut = time.monotonic()
    control.disable()
    try:
        time.sleep(down_s)  # the length of the outage is the trial's parameter
    finally:
        control.enable()
    return cut


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--down", type=float, nargs="*", default=[5.0, 8.5], help="outage lengths, seconds")
    ap.add_argument("--trials", type=int, default=10, help="blips per outage length")
    ap.add_argument("--rejoins", type=int, default=3, help="router rejoin trials")
    ap.add_argument("--settle", type=float, default=30.0, help="seconds a trial waits for the steady state")
    a = ap.parse_args()
    vlan_env = os.environ.get("MESHCERT_VLAN")
    topo = guide_topology(vlan_env) if vlan_env else guide_topology()
    topo.headscale = os.environ.get("MESHCERT_HEADSCALE") or None
    hs = topo.headscale or components.COMPONENTS["headscale"].version
    ts = components.COMPONENTS["tailscale"].version
    vlan = next(s for s in topo.nodes if s.name == "router").approve_routes[0]
    world = World(topology=topo)
    trials: list[dict] = []
    load0 = os.getloadavg()
    try:
        world.start()
        ok, o, _ = settle(world, vlan, 60)
        if not ok:
            raise SystemExit(f"the world never reached its steady state before the trials: {o}")

        def record(kind: str, param, t_from: float, wall_from: float) -> None:
            held, o, waited = settle(world, vlan, a.settle)
            trials.append({"kind": kind, "param": param, "outcome": "held" if held else "lost",
                           "steady_after_s": round(time.monotonic() - t_from, 1) if held else None,
                           "observed": o, "headscale_sessions": session_log(world, wall_from - 1)})
            progress.say(f"{kind} {param}: {'held' if held else 'lost'} {'' if held else json.dumps(o)}")
            if not held:
                try:
                    world.restart_control_plane()
                    world.wait_routes_seen(timeout=60)
                except WorldError as e:
                    raise SystemExit(f"the world did not recover after a lost trial: {e}") from None

        for down in a.down:
            for _ in range(a.trials):
                wall = time.time()
                cut = blip(world, down)
                left = cut + GRACE_S - time.monotonic()
                if left > 0:
                    time.sleep(left)  # headscale's own grace timer (10 ticks of 1 s) must have run out
                record("blip", down, cut, wall)
        for _ in range(a.rejoins):
            t, wall = time.monotonic(), time.time()
            undo = FAULT_HANDLERS["router_rejoined"](world, {"kind": "router_rejoined", "router": "router"})
            held, o, waited = settle(world, vlan, a.settle)
            trials.append({"kind": "rejoin", "param": None, "outcome": "held" if held else "lost",
                           "steady_after_s": round(time.monotonic() - t, 1) if held else None, "observed": o,
                           "headscale_sessions": session_log(world, wall - 1)})
            progress.say(f"rejoin: {'held' if held else 'lost'} {'' if held else json.dumps(o)}")
            undo()  # restarts headscale where the deleted router stays primary, then approves
            world.wait_routes_seen(timeout=60)
    finally:
        world.stop()
    load1 = os.getloadavg()
    s = stamp("bench/control_blip.py " + " ".join(sys.argv[1:]))
    summary: dict[str, dict] = {}
    for t in trials:
        key = f"{t['kind']} {t['param']} s" if t["kind"] == "blip" else "rejoin"
        row = summary.setdefault(key, {"trials": 0, "lost": 0})
        row["trials"] += 1
        row["lost"] += t["outcome"] == "lost"
    result = {**s, "headscale": hs, "tailscale": ts, "grace_s": GRACE_S, "settle_s": a.settle,
              "loadavg_1m_before_after": [round(load0[0], 2), round(load1[0], 2)], "summary": summary,
              "trials": trials}
    stem = f"control-blip-{hs}-{s['generated'][:10]}-{s['commit']}"
    lines = [f"# Control-plane blips and a rejoined router on headscale {hs} (tailscale {ts})", "",
             f"{describe(s)}; load average 1 min {result['loadavg_1m_before_after'][0]} before, "
             f"{result['loadavg_1m_before_after'][1]} after. Written by `{s['command']}`. A trial is lost when, "
             f"{GRACE_S:g} s after the cut (blip) or after the rejoin, {a.settle:g} s more did not bring every node "
             "online in headscale, the router's route primary there, and the agent seeing that route with every "
             "peer online.", "",
             "| trial | trials | lost |", "|---|---|---|"]
    lines += [f"| {k} | {v['trials']} | {v['lost']} |" for k, v in summary.items()]
    lost = [t for t in trials if t["outcome"] == "lost"]
    if lost:
        lines += ["", "What a lost trial left (first of each kind):", ""]
        for k in summary:
            first = next((t for t in lost if (f"{t['kind']} {t['param']} s" if t["kind"] == "blip" else "rejoin") == k),
                         None)
            if first:
                lines.append(f"- {k}: {json.dumps(first['observed'])}")
    write_result(RESULTS, stem, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
