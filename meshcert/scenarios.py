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
