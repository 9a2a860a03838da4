"""The chaos scenarios (issue: latency, partitions, outages), as library functions so meshcert's
own tests can run them against mutants. Each: steady-state hypothesis before and after, faults
undone in a finally, a journal in the report. Bounds that are part of a promise are asserted
with their margin written beside them.
"""

import time

from meshcert.chaos import scenario
from meshcert.checks import acl
from meshcert.checks.base import Probe, check_reachability
from meshcert.checks.sut import DEADLINE_S, LOCALAPI_BOUND_S, MARGIN_S, ep, mesh_spec
from meshcert.world import WorldError, wait_for

PRERUN_BOUND = DEADLINE_S + LOCALAPI_BOUND_S + MARGIN_S


def steady(world):
    """The hypothesis: the agent reaches what the guide allows, and its pre-run is ready."""
    acl.acl1(world)
    code, ans = world.sut("agent").prerun(mesh_spec(world), {"ssh": ep(world, "server", 22)}, deadline_s=3)
    assert code == 200 and ans["ready"], f"steady state: pre-run not ready: {ans.get('message')}"


def control_plane_outage(world, report_extra):
    with scenario(world, "control-plane outage", report_extra, steady) as (faults, j):
        faults.proxy_down("control")
        acl.acl1(world)
        j.log("established tailnet paths work during the outage")
        code, ans = world.sut("agent").prerun(mesh_spec(world), {"ssh": ep(world, "server", 22)}, deadline_s=3)
        j.log("pre-run during the outage", ready=ans.get("ready"), message=ans.get("message"))
        assert ans["ready"], f"pre-run must stay ready while only the control plane is down: {ans.get('message')}"
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


def control_plane_latency(world, report_extra, kind="latency", **attributes):
    from meshcert.world.topology import AGENT_TAG, AgentSpec
    with scenario(world, "control-plane latency", report_extra, steady) as (faults, j):
        attributes = attributes or {"latency": 500, "jitter": 100}
        for stream in ("downstream", "upstream"):
            faults.toxic("control", kind, stream, **attributes)
        acl.acl1(world)
        j.log(f"established paths work with {kind} {attributes} on the control connection")
        t0 = time.monotonic()
        try:
            world.add_pod(AgentSpec(name="agent-late", tags=(AGENT_TAG,)))
        except WorldError as e:
            world.remove_pod("agent-late")
            raise AssertionError(f"a new node could not register under control-plane {kind}: {e.message}") from None
        took = time.monotonic() - t0
        j.figures["new_node_running_s"] = round(took, 2)
        j.log("a new node registered and is Running", seconds=round(took, 2))
        try:
            # Bound: 90 s (about 15 s measured here; the margin covers a loaded 2-core machine).
            assert took < 90, f"a new node took {took:.1f} s to register under control-plane latency (bound 90 s)"
            check_reachability(world, "ACL-1", [Probe("agent-late", "server", 22, True, "the late node works")])
        finally:
            world.remove_pod("agent-late")


def sidecar_crash(world, report_extra):
    sut = world.sut("agent")
    with scenario(world, "sidecar crash and restart", report_extra, steady) as (faults, j):
        faults.kill("agent-tailscale")
        t0 = time.monotonic()
        code, ans = sut.prerun(mesh_spec(world), {"ssh": ep(world, "server", 22)}, deadline_s=DEADLINE_S)
        took = time.monotonic() - t0
        j.log("pre-run with the sidecar dead", seconds=round(took, 2), ready=ans.get("ready"),
              levels=[x.get("level") for x in ans.get("logs", [])])
        assert code == 200 and ans["ready"] is False
        assert any(x["level"] == "warning" and "sidecar" in x["msg"] for x in ans["logs"]), ans["logs"]
        # Bound: deadline + the 1 s sidecar check + 1.5 s margin: nothing hangs on a dead sidecar.
        assert took <= PRERUN_BOUND, f"pre-run took {took:.2f} s with the sidecar dead (bound {PRERUN_BOUND} s)"
    wait_for("pre-run ready again after the sidecar restarted", lambda: sut.prerun(
        mesh_spec(world), {"ssh": ep(world, "server", 22)}, deadline_s=3)[1]["ready"], 60)


def partition_one_target(world, report_extra):
    server_ip = world.address("server")
    with scenario(world, "partition agent | server", report_extra, steady) as (faults, j):
        faults.nft("agent-pause", f"  chain out {{ type filter hook output priority 0; ip daddr {server_ip} drop; }}",
                   f"drop everything from the agent pod to server ({server_ip})")
        code, ans = world.sut("agent").prerun(
            mesh_spec(world), {"ssh": ep(world, "server", 22), "db": ep(world, "database", 5432)},
            deadline_s=DEADLINE_S)
        j.log("pre-run during the partition", endpoints=ans.get("endpoints"))
        assert ans["endpoints"]["ssh"]["reachable"] is False, "the partitioned target must be reported unreachable"
        assert any("ssh" in line for line in ans["agent_context"]), "the agent must be told"
        assert ans["endpoints"]["db"]["reachable"] is True, "the other targets are unaffected"


SCENARIOS = {"control-plane outage": control_plane_outage, "control-plane latency": control_plane_latency,
             "sidecar crash": sidecar_crash, "partition": partition_one_target}


def slow_and_dead_endpoints_direct(world, report_extra, counts=(2, 10)):
    """Direct mode, targets behind toxiproxy on the cluster network: a dead endpoint (proxy
    disabled: refused), slow ones (their SYNs dropped by nftables in the agent pod -- a TCP proxy
    accepts every connect itself, so only a packet filter can make a connect hang). The pre-run
    marks them unreachable within the deadline, and its duration does not grow with their number."""
    tp = world.toxiproxy
    srv_ip, db_ip = world.nodes["server"].wan_ip, world.nodes["database"].wan_ip
    ok_proxy = tp.ensure_proxy("direct-ssh", "0.0.0.0:10022", f"{srv_ip}:22")
    dead_proxy = tp.ensure_proxy("direct-db", "0.0.0.0:15432", f"{db_ip}:5432")
    sut = world.sut("agent")
    bound = DEADLINE_S + MARGIN_S  # direct mode: no sidecar check; the margin covers HTTP + threads
    try:
        with scenario(world, "slow and dead endpoints (direct)", report_extra, steady) as (faults, j):
            faults.proxy_down("direct-db")
            faults.nft("agent-pause", f"  chain out {{ type filter hook output priority 0; ip daddr {tp.ip} "
                                      f"tcp dport 15500-15599 drop; }}", "drop SYNs to toxiproxy ports 15500-15599")
            for n in counts:
                eps = {"ssh": {"url": f"tcp://{tp.ip}:10022", "critical": True},
                       "db": {"url": f"tcp://{tp.ip}:15432", "critical": True}}
                eps.update({f"slow{i}": {"url": f"tcp://{tp.ip}:{15500 + i}", "critical": False} for i in range(n)})
                t0 = time.monotonic()
                code, ans = sut.prerun({"type": "direct"}, eps, deadline_s=DEADLINE_S)
                took = time.monotonic() - t0
                j.figures[f"prerun_s_with_{n}_slow"] = round(took, 2)
                j.log("pre-run", slow_endpoints=n, seconds=round(took, 2))
                got = ans["endpoints"]
                assert got["ssh"]["reachable"] is True, f"the live endpoint through toxiproxy: {got['ssh']}"
                assert got["db"]["reachable"] is False, f"the dead endpoint (proxy disabled): {got['db']}"
                assert all(got[f"slow{i}"]["reachable"] is False for i in range(n)), "slow endpoints unreachable"
                assert took <= bound, (f"pre-run with {n} slow endpoints took {took:.2f} s; bound {bound} s "
                                       f"(deadline {DEADLINE_S} s + margin {MARGIN_S} s), whatever their number")
    finally:
        ok_proxy.destroy()
        dead_proxy.destroy()


def derp_latency_visible(world, report_extra, latency_ms=40):
    """DERP only: direct UDP blocked in the agent pod, the DERP path (headscale behind toxiproxy)
    slowed by ``latency_ms``: the added latency shows in the connect latency measured from the pod."""
    from meshcert.checks.perf import measure
    from meshcert.world.extra import BLOCK_UDP
    host = world.address("server")
    with scenario(world, "DERP only, slowed", report_extra, steady) as (faults, j):
        faults.nft("agent-pause", BLOCK_UDP, "drop all UDP from/to the agent pod (no direct WireGuard path)")
        wait_for("agent -> server through DERP", lambda: world.dial("agent", [(host, 22)], timeout=2)[0]["ok"], 30)
        plain = measure(world, "agent", host, 22, n=15)
        faults.toxic("control", "latency", "downstream", latency=latency_ms, jitter=0)
        slowed = measure(world, "agent", host, 22, n=15)
        import statistics
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


SCENARIOS.update({"slow and dead endpoints": slow_and_dead_endpoints_direct, "derp latency": derp_latency_visible})
