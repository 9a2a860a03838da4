"""The chaos scenarios (issue: latency, partitions, outages), as library functions so meshcert's
own tests can run them against mutants and broken settings. Each: steady-state hypothesis before
and after, faults as data (undone in a finally, replayable), a journal in the report. Bounds
that are part of a promise are asserted with their margin written beside them.
"""

from __future__ import annotations

import concurrent.futures
import statistics
import time

from meshcert.chaos.experiment import scenario
from meshcert.checks import acl
from meshcert.checks.base import Probe, check_reachability
from meshcert.checks.perf import _peer, measure
from meshcert.checks.sut import BOUND_DEADLINE_S, DEADLINE_S, LOCALAPI_BOUND_S, clause, ep, mesh_spec, prerun_bound
from meshcert.world import WorldError, wait_for
from meshcert.world.extra import BLOCK_UDP
from meshcert.world.topology import AGENT_TAG, AgentSpec

# Pre-runs whose duration a scenario asserts use BOUND_DEADLINE_S, so that a pre-run whose dials
# wait twice their deadline cannot pass (checks/sut.py gives the reason of every term).
# A sidecar that is dead or logged out answers (or refuses) its socket at once:
PRERUN_BOUND = prerun_bound(BOUND_DEADLINE_S)
# A frozen sidecar holds the LocalAPI read for the SUT's own timeout before the dials start:
FROZEN_PRERUN_BOUND = prerun_bound(BOUND_DEADLINE_S, LOCALAPI_BOUND_S)
# Subnet-router failover: headscale's HA probe (every 5 s, 3 s timeout, set in the world's
# config) marks the dead primary unhealthy, the standby becomes primary, the new netmap reaches
# the agent, WireGuard handshakes with the standby. Measured here: 11-12 s. Bound 45 s: the probe
# may just have run (5 s + 3 s), one missed probe on a loaded 2-core machine, the map push and a
# lost first handshake (WireGuard re-sends after 5 s), then a wide margin for load.
FAILOVER_BOUND_S = 45.0
# A new agent pod registers and reaches Running under control-plane latency (500 +- 100 ms both
# ways): measured 13-21 s here (bench/results/scenario-runs.json, 10 runs; scenarios.json). Bound
# 60 s, about three times the slowest: the margin covers a loaded 2-core machine. It is also the
# pod's `tailscale up --timeout`, so a control plane that never answers is caught at the bound
# (it was caught at 90 s, the world's default join timeout, with a bound of 90 s).
LATE_NODE_BOUND_S = 60.0


def ssh(world, name: str = "ssh") -> dict:
    return {name: {"url": "tcp://${ip:server}:22", "critical": True}}


def steady(world) -> None:
    """The hypothesis: the agent pods reach what the guide allows (ACL-1), and the agent's pre-run
    through the mesh is ready with server:22 reachable (TYPE-6: its dials travel the mesh). Each
    part fails as a ClauseFailure naming its clause, so a broken steady state is attributed to it."""
    acl.acl1(world)
    code, ans = world.sut("agent").prerun(mesh_spec(world), {"ssh": ep(world, "server", 22)}, deadline_s=3)
    with clause(world, "TYPE-6") as e:
        e.that(code == 200 and ans.get("ready") is True and
               ((ans.get("endpoints") or {}).get("ssh") or {}).get("reachable") is True,
               "the agent's pre-run through the mesh ready with server:22 reachable (steady state)",
               f"HTTP {code}, ready={ans.get('ready')}, ssh={(ans.get('endpoints') or {}).get('ssh')}, "
               f"message={ans.get('message')!r}")


def steady_with_vlan(world) -> None:
    """The hypothesis of the routing scenarios: also the legacy host through the subnet router."""
    steady(world)
    check_reachability(world, "ROUTE-1", [Probe("agent", "legacy", 22, True, "through the subnet router",
                                                via="router")])


def acl1_probes(world) -> list[Probe]:
    return [Probe(s, d, p, True, "allowed by the guide's ACL") for s, d, p in sorted(acl.allowed_triples(world))]


# ------------------------------------------------------------------------------------ 1. control-plane latency

def control_plane_latency(world, report_extra, kind="latency", **attributes):
    attributes = attributes or {"latency": 500, "jitter": 100}
    with scenario(world, "control-plane latency", report_extra, steady) as (faults, j):
        for stream in ("downstream", "upstream"):
            faults.inject("toxic", f"{kind} on the control connection", proxy="control", type=kind, stream=stream,
                          attributes=attributes)
        faults.expect_reachable("ACL-1", acl1_probes(world))
        t0 = time.monotonic()
        try:
            world.add_pod(AgentSpec(name="agent-late", tags=(AGENT_TAG,)), up_timeout=f"{LATE_NODE_BOUND_S:.0f}s")
        except WorldError as e:
            world.remove_pod("agent-late")
            raise AssertionError(f"a new node could not register under control-plane {kind} within "
                                 f"{LATE_NODE_BOUND_S:.0f} s: {e.message}") from None
        took = time.monotonic() - t0
        j.figures["new_node_running_s"] = round(took, 2)
        j.log("a new node registered and is Running", seconds=round(took, 2))
        try:
            assert took < LATE_NODE_BOUND_S, (f"a new node took {took:.1f} s to register under control-plane "
                                              f"latency (bound {LATE_NODE_BOUND_S:.0f} s)")
            check_reachability(world, "ACL-1", [Probe("agent-late", "server", 22, True, "the late node works")])
        finally:
            world.remove_pod("agent-late")


# ------------------------------------------------------------------------------------ 2. control-plane outage

def control_plane_outage(world, report_extra):
    with scenario(world, "control-plane outage", report_extra, steady) as (faults, j):
        t0 = time.monotonic()
        faults.inject("proxy_down", "the control plane unreachable (connections refused, sessions cut)", proxy="control")
        # The outage is real once headscale has lost the nodes' map sessions (it marks them offline).
        wait_for("headscale to see the agent offline (its control session cut)",
                 lambda: not _online(world, "agent"), 60,
                 describe=lambda: f"headscale lists agent online={_online(world, 'agent')}")
        j.figures["control_session_lost_s"] = round(time.monotonic() - t0, 2)
        j.log("headscale sees the agent offline", seconds=j.figures["control_session_lost_s"])
        faults.expect_reachable("ACL-1", acl1_probes(world))
        faults.expect_prerun({"pod": "agent", "endpoints": ssh(world), "expect": {"ready": True}},
                             "pre-run during the outage (must stay ready)")
    # After restore: a policy change propagates to every node (World.set_policy waits on each
    # node's packet filter; its bound is 30 s).
    t0 = time.monotonic()
    changed = dict(world.topology.policy, acls=world.topology.policy["acls"] + [
        {"action": "accept", "src": ["tag:agent-runtime"], "dst": ["tag:managed-servers:80"]}])
    world.set_policy(changed)
    try:
        check_reachability(world, "ACL-1", [Probe("agent", "server", 80, True, "the new rule, after the outage")])
        report_extra["scenarios"]["control-plane outage"]["figures"]["policy_propagation_s"] = \
            round(time.monotonic() - t0, 2)
    finally:
        world.set_policy(world.topology.policy)


def _online(world, name: str) -> bool:
    return any((n.get("given_name") or n.get("name")) == name and n.get("online") for n in world.headscale.nodes())


# ------------------------------------------------------------------------------------ 3. DERP only

def derp_latency_visible(world, report_extra, latency_ms=40, block_udp=True):
    """DERP only: direct UDP blocked in the agent pod; the status shows the relay; the DERP path
    (headscale behind toxiproxy) slowed by ``latency_ms`` shows in the connect latency measured
    from the pod. ``block_udp=False`` is the broken setting this scenario must catch."""
    host = world.address("server")
    with scenario(world, "DERP only, slowed", report_extra, steady) as (faults, j):
        if block_udp:
            faults.inject("nft", "drop all UDP from/to the agent pod (no direct WireGuard path)",
                          netns="agent-pause", rules=BLOCK_UDP)
        faults.expect_reachable("ACL-1", [Probe("agent", "server", 22, True, "through DERP")],
                                positive_deadline=30)
        peer = _peer(world, "agent", "server")
        path = {"relay": peer.get("Relay") or "", "direct": peer.get("CurAddr") or ""}
        j.log("agent's path to server", **path)
        assert path["relay"] and not path["direct"], \
            f"with direct UDP blocked the agent must reach server through DERP: status shows {path}"
        plain = measure(world, "agent", host, 22, n=15)
        faults.inject("toxic", f"{latency_ms} ms on the DERP path", proxy="control", type="latency",
                      stream="downstream", attributes={"latency": latency_ms, "jitter": 0})
        slowed = measure(world, "agent", host, 22, n=15)
        p50_plain, p50_slow = statistics.median(plain), statistics.median(slowed)
        j.figures.update(derp_p50_ms=round(p50_plain, 2), derp_p50_slowed_ms=round(p50_slow, 2))
        j.log("measured", derp_p50_ms=round(p50_plain, 2), slowed_p50_ms=round(p50_slow, 2))
        # The SYN-ACK crosses the slowed downstream at least once: p50 must rise by >= latency_ms.
        assert p50_slow - p50_plain >= latency_ms, (
            f"DERP connect p50 {p50_plain:.1f} ms -> {p50_slow:.1f} ms with {latency_ms} ms on the DERP path: "
            f"the added latency must show (>= {latency_ms} ms)")
    report_extra.setdefault("latency", []).append(
        {"path": "derp + toxiproxy latency", "target": f"server:22 (+{latency_ms} ms on DERP)",
         "p50_ms": round(p50_slow, 3), "p95_ms": round(sorted(slowed)[int(0.95 * (len(slowed) - 1))], 3),
         "n": len(slowed)})


# ------------------------------------------------------------------------------------ 4. slow and dead (direct)

def slow_and_dead_endpoints_direct(world, report_extra, counts=(2, 10)):
    """Direct mode, targets behind toxiproxy on the cluster network: a dead endpoint (proxy
    disabled: refused), slow ones (their SYNs dropped by nftables in the agent pod -- a TCP proxy
    accepts every connect itself, so only a packet filter can make a connect hang). The pre-run
    marks them unreachable within the deadline, and its duration does not grow with their number."""
    tp = world.toxiproxy
    srv_ip, db_ip = world.nodes["server"].wan_ip, world.nodes["database"].wan_ip
    ok_proxy = tp.ensure_proxy("direct-ssh", "0.0.0.0:10022", f"{srv_ip}:22")
    dead_proxy = tp.ensure_proxy("direct-db", "0.0.0.0:15432", f"{db_ip}:5432")
    bound = PRERUN_BOUND  # direct mode: no sidecar check at all
    try:
        with scenario(world, "slow and dead endpoints (direct)", report_extra, steady) as (faults, j):
            faults.inject("proxy_down", "the database endpoint dead (refused)", proxy="direct-db")
            faults.inject("nft", "drop SYNs to toxiproxy ports 15500-15599 (slow endpoints)", netns="agent-pause",
                          rules="  chain out { type filter hook output priority 0; ip daddr ${wan:toxiproxy} "
                                "tcp dport 15500-15599 drop; }")
            for n in counts:
                eps = {"ssh": {"url": "tcp://${wan:toxiproxy}:10022", "critical": True},
                       "db": {"url": "tcp://${wan:toxiproxy}:15432", "critical": True}}
                eps.update({f"slow{i}": {"url": f"tcp://${{wan:toxiproxy}}:{15500 + i}", "critical": False}
                            for i in range(n)})
                want = {"ssh": True, "db": False, **{f"slow{i}": False for i in range(n)}}
                # within_s: prerun_bound(deadline), whatever the number of endpoints
                _, took = faults.expect_prerun({"pod": "agent", "connectivity": "direct",
                                                "deadline_s": BOUND_DEADLINE_S,
                                                "endpoints": eps,
                                                "expect": {"reachable": want, "within_s": bound}},
                                               f"pre-run with {n} slow endpoints")
                j.figures[f"prerun_with_{n}_slow_s"] = round(took, 2)
    finally:
        ok_proxy.destroy()
        dead_proxy.destroy()


# ------------------------------------------------------------------------------------ 5. sidecar crash

IN_FLIGHT_DEADLINE_S = 3.0


def sidecar_crash(world, report_extra):
    """The sidecar is killed while a pre-run is in flight (its dials held by a blackholed
    endpoint): that pre-run still answers within its bound. While the sidecar is down a new
    pre-run warns and is not ready; after the restart the pod is ready again (steady state)."""
    sut = world.sut("agent")
    eps = {**{"ssh": ep(world, "server", 22)}, "blackhole": ep(world, "server", 80, critical=False)}
    # Bound for the pre-run in flight: prerun_bound(its deadline). No sidecar wait: the kernel
    # closes a killed sidecar's socket at once, so a LocalAPI read in flight ends then.
    in_flight_bound = prerun_bound(IN_FLIGHT_DEADLINE_S)
    with scenario(world, "sidecar crash and restart", report_extra, steady) as (faults, j):
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
            t0 = time.monotonic()
            pending = ex.submit(lambda: (sut.prerun(mesh_spec(world), eps, deadline_s=IN_FLIGHT_DEADLINE_S),
                                         time.monotonic() - t0))
            j.log("a pre-run in flight (a blackholed endpoint holds it for its deadline)")
            faults.inject("kill", "the agent pod's tailscale sidecar killed", container="agent-tailscale")
            try:
                (code, ans), took = pending.result(timeout=in_flight_bound + 10)
            except concurrent.futures.TimeoutError:
                raise AssertionError(f"a pre-run in flight when the sidecar died has not answered after "
                                     f"{in_flight_bound + 10:.1f} s: it hangs") from None
        j.figures["prerun_in_flight_s"] = round(took, 2)
        j.log("the pre-run in flight answered", seconds=round(took, 2), code=code, ready=ans.get("ready"))
        assert code == 200, f"the pre-run in flight when the sidecar died answered HTTP {code}: {ans}"
        assert took <= in_flight_bound, (f"the pre-run in flight when the sidecar died took {took:.2f} s "
                                         f"(bound {in_flight_bound:.2f} s: prerun_bound(deadline))")
        # Bound: prerun_bound(deadline): a dead sidecar's socket refuses at once; nothing hangs on it.
        _, took = faults.expect_prerun({"pod": "agent", "endpoints": ssh(world), "deadline_s": BOUND_DEADLINE_S,
                                        "expect": {"ready": False, "warning": "sidecar", "within_s": PRERUN_BOUND}},
                                       "pre-run with the sidecar dead")
        j.figures["prerun_sidecar_dead_s"] = round(took, 2)
    # The rollback restarted the sidecar and waited until it was Running (its seconds are in the
    # journal); the steady state after the experiment includes a ready pre-run.


def sidecar_frozen(world, report_extra):
    """The sidecar frozen (its socket still accepts, nothing answers): the pre-run must not wait
    on it beyond its own LocalAPI timeout -- it warns, is not ready, and ends within its bound."""
    with scenario(world, "sidecar frozen", report_extra, steady) as (faults, j):
        faults.inject("freeze", "the agent pod's tailscale sidecar frozen (docker pause)", container="agent-tailscale")
        # Bound: prerun_bound(deadline, the 1 s sidecar check a frozen sidecar costs).
        _, took = faults.expect_prerun({"pod": "agent", "endpoints": ssh(world), "deadline_s": BOUND_DEADLINE_S,
                                        "expect": {"ready": False, "sidecar_ready": False, "warning": "sidecar",
                                                   "within_s": FROZEN_PRERUN_BOUND}},
                                       "pre-run with the sidecar frozen")
        j.figures["prerun_sidecar_frozen_s"] = round(took, 2)


# ------------------------------------------------------------------------------------ 6. partition

def partition_one_target(world, report_extra):
    with scenario(world, "partition agent | server", report_extra, steady) as (faults, j):
        # the path the partition cuts, proven before the change: the negative below is judged live
        check_reachability(world, "ACL-1", [Probe("agent", "server", 22, True, "before the partition")])
        faults.inject("nft", "drop everything from the agent pod to server", netns="agent-pause",
                      rules="  chain out { type filter hook output priority 0; ip daddr ${ip:server} drop; }")
        faults.expect_reachable("ACL-1", [
            Probe("agent", "server", 22, False, "partitioned"),
            Probe("agent", "database", 5432, True, "the other targets are unaffected"),
            Probe("agent-us", "server", 22, True, "server itself is up: another pod reaches it")],
            proven=[("agent", "server")])
        faults.expect_prerun({"pod": "agent", "deadline_s": DEADLINE_S,
                              "endpoints": {**ssh(world), "db": {"url": "tcp://${ip:database}:5432", "critical": True}},
                              "expect": {"ready": False, "reachable": {"ssh": False, "db": True}, "context": ["ssh"]}},
                             "pre-run during the partition")


# ------------------------------------------------------------------------------------ 7. expired key / node

def expired_key(world, report_extra):
    """An agent pod whose pre-auth key expired before it joined, and one whose node headscale
    expired after it joined: neither sidecar is on the tailnet, each pre-run says not ready and
    names the daemon's state (NeedsLogin); the other pods are unaffected."""
    with scenario(world, "expired key and expired node", report_extra, steady) as (faults, j):
        for name, key in (("agent-expkey", "expired-preauth-key"), ("agent-expnode", "expired-node")):
            faults.inject("extra_pod", f"an agent pod with key {key}", name=name, key=key)
            state = world.nodes[name].backend_state()
            j.log(f"{name}'s sidecar", state=state)
            assert state == "NeedsLogin", f"{name} ({key}): the sidecar must need a login; its state is {state}"
            faults.expect_prerun({"pod": name, "endpoints": ssh(world), "deadline_s": BOUND_DEADLINE_S,
                                  "expect": {"ready": False, "sidecar_ready": False, "message": "NeedsLogin",
                                             "within_s": PRERUN_BOUND}},
                                 f"pre-run in {name} ({key})")
        faults.expect_reachable("ACL-1", acl1_probes(world))


# ------------------------------------------------------------------------------------ 8. subnet router HA

def subnet_router_ha(world, report_extra, approve_standby=True):
    """A standby router advertises the VLAN too; the primary is killed; the legacy host is
    reachable again through the standby within FAILOVER_BOUND_S. ``approve_standby=False`` is
    the broken setting (the standby's route never approved) this scenario must catch."""
    vlan = next(n.subnet for n in world.topology.networks if n.name == "vlan")
    with scenario(world, "subnet router HA failover", report_extra, steady_with_vlan) as (faults, j):
        faults.inject("standby_router", "a second router advertising the VLAN", name="router-b",
                      approve=approve_standby)
        world.wait_routes_seen({"router": {vlan}, "router-b": set()})
        j.log("the agent sees router primary, router-b standing by")
        t0 = time.monotonic()
        faults.inject("kill", "the primary subnet router killed", container="router")
        legacy = world.address("legacy")
        try:
            last: dict = {}
            wait_for("the legacy host through the standby router",
                     lambda: last.update(world.dial("agent", [(legacy, 22)], timeout=1.5)[0]) or last["ok"],
                     FAILOVER_BOUND_S, describe=lambda: f"last dial: {last.get('error') or 'none answered'}; "
                                                        f"agent's primary routes: {_primary_routes(world, 'agent')}")
        except WorldError as e:
            raise AssertionError(f"ROUTE HA: the legacy host must be reachable through router-b within "
                                 f"{FAILOVER_BOUND_S:.0f} s of the primary's death; {e.message}") from None
        took = time.monotonic() - t0
        j.figures["failover_s"] = round(took, 2)
        routes = _primary_routes(world, "agent")
        j.log("legacy reachable again", seconds=round(took, 2), primary_routes=routes)
        assert vlan in routes.get("router-b", []), f"router-b must now be the VLAN's primary; agent sees {routes}"
        faults.expect_reachable("ROUTE-1", [Probe("agent", "legacy", 22, True, "through the standby router")])


def _primary_routes(world, src: str) -> dict:
    return {p.get("HostName"): p.get("PrimaryRoutes") or [] for p in
            (world.nodes[src].status().get("Peer") or {}).values()}


SCENARIOS = {
    "control-plane latency": control_plane_latency,
    "control-plane outage": control_plane_outage,
    "derp latency": derp_latency_visible,
    "slow and dead endpoints": slow_and_dead_endpoints_direct,
    "sidecar crash": sidecar_crash,
    "sidecar frozen": sidecar_frozen,
    "partition": partition_one_target,
    "expired key": expired_key,
    "subnet router HA": subnet_router_ha,
}
