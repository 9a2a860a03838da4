"""meshcert's own tests on a real world: a broken world setting must make the clauses fail,
with a message naming the clause, the pair, the expected and the observed."""

import copy
import dataclasses

import pytest

from meshcert.checks import ClauseFailure, acl, route
from meshcert.world.topology import DB_TAG, SERVER_TAG, guide_topology
from tests.common.engine import free_vlan, own_world
from tests.common.faults import aims_at

pytestmark = [pytest.mark.engine]


def _flip(policy: dict, old: str, new: str) -> dict:
    p = copy.deepcopy(policy)
    for rule in p["acls"]:
        rule["dst"] = [new if d == old else d for d in rule["dst"]]
    assert p != policy, f"{old} not found in the policy"
    return p


@pytest.mark.slow  # 63 s in bench/results/speed-2026-12-01-faebe0662a14.json
@aims_at("world", "servers-acl-line-flipped", ("ACL-1", "ACL-2"), "the ACL grants servers:80 instead of :22")
def test_flipping_the_servers_acl_line_fails_acl1_and_acl2(steady_world, caught):
    w = steady_world
    w.set_policy(_flip(w.topology.policy, f"{SERVER_TAG}:22", f"{SERVER_TAG}:80"))
    with pytest.raises(ClauseFailure) as e1:
        acl.acl1(w)
    msg = str(e1.value)
    assert "[ACL-1]" in msg and "agent -> server" in msg and ":22" in msg
    assert "expected reachable" in msg and "observed not reachable" in msg
    assert "container logs saved in" in msg and e1.value.logs.is_dir()
    with pytest.raises(ClauseFailure) as e2:
        acl.acl2(w)
    msg = str(e2.value)
    assert "[ACL-2]" in msg and "agent -> server" in msg and ":80" in msg
    assert "expected unreachable" in msg and "observed reachable" in msg
    caught(e1.value.clause, e2.value.clause)


@aims_at("world", "redis-opened", "ACL-2", "the ACL also grants databases:6379")
def test_opening_redis_fails_acl2_only(steady_world, caught):
    w = steady_world
    w.set_policy(_flip(w.topology.policy, f"{DB_TAG}:5432,3306", f"{DB_TAG}:5432,3306,6379"))
    acl.acl1(w)  # still holds
    with pytest.raises(ClauseFailure) as e:
        acl.acl2(w)
    pods = [p.name for p in w.topology.pods]
    assert len(e.value.problems) == len(pods), e.value.problems
    for pod, problem in zip(sorted(pods), sorted(e.value.problems)):
        assert problem.startswith(f"{pod} -> database") and ":6379" in problem
    caught(e.value.clause)


@aims_at("world", "agent-to-server-path-cut", "ACL-2",
         "every packet from the agent pod to server's tailnet address dropped: denials there prove nothing")
def test_acl2_cannot_pass_denials_on_a_path_that_is_cut(steady_world, caught):
    """A broken world: everything from the agent pod to server's tailnet address dropped (nftables
    in the pod's namespace). The old ACL-2 dialled the denials in its first round and counted
    "agent -> server:80 unreachable" (and server -> agent) as held; a denial on a path that never
    worked proves nothing, so ACL-2 must fail naming the missing positive control."""
    from meshcert.world.extra import netns_heal, netns_nft
    w = steady_world
    netns_nft(w, "agent-pause", "  chain out { type filter hook output priority 0; "
                                f"ip daddr {w.address('server')} drop; }}")
    try:
        with pytest.raises(ClauseFailure) as e:
            acl.acl2(w)
    finally:
        netns_heal(w, "agent-pause")
    assert e.value.clause == "ACL-2"
    unjudged = [p for p in e.value.problems if "cannot judge" in p and "no positive control between" in p]
    assert any(p.startswith("agent -> server") and ":80:" in p and "between agent and server" in p
               for p in unjudged), e.value.problems
    assert any(p.startswith("server -> agent ") and "between server and agent" in p for p in unjudged), \
        e.value.problems
    caught(e.value.clause)


@aims_at("world", "route-in-fact-usable", "ROUTE-1",
         "the ROUTE-1 negative asserted while the route is approved and accepted (nothing changed)")
def test_route_negative_fails_when_the_route_is_in_fact_usable(world, caught):
    """The unapproved-route assertion is not vacuous: in the steady state it fails."""
    with pytest.raises(ClauseFailure) as e:
        route.legacy_unreachable(world, "ROUTE-1", "pretend the route is not approved", lambda: None)
    assert "agent -> legacy" in str(e.value) and "observed reachable" in str(e.value)
    caught(e.value.clause)


def test_secrets_never_in_failure_messages(steady_world):
    w = steady_world
    keys = [k.reveal() for k in w.keys.values()]
    assert keys, "the world should hold pre-auth keys"
    w.set_policy(_flip(w.topology.policy, f"{SERVER_TAG}:22", f"{SERVER_TAG}:80"))
    with pytest.raises(ClauseFailure) as e:
        acl.acl1(w)
    saved = "".join(p.read_text() for p in e.value.logs.iterdir())
    for k in keys:
        assert k not in str(e.value) and k not in saved


@aims_at("world", "vlan-route-not-approved", "ROUTE-2", "the router's VLAN route is not approved")
def test_route2_fails_when_the_vlan_route_is_not_approved(steady_world, caught):
    from meshcert.checks import world_clauses
    steady_world.set_route_approval("router", [])
    with pytest.raises(ClauseFailure) as e:
        world_clauses.route2_new_vlan_host_reachable(steady_world)
    assert e.value.clause == "ROUTE-2" and "legacy2" in str(e.value)
    assert "legacy2" not in steady_world.boxes, "the added host must be removed even when the clause fails"
    caught(e.value.clause)


@aims_at("world", "agent-retagged", "TYPE-7", "the agent node retagged tag:managed-servers")
def test_type7_fails_when_the_agent_is_retagged(steady_world, caught):
    from meshcert.checks import world_clauses
    from meshcert.world import wait_for
    from meshcert.world.topology import AGENT_TAG
    w = steady_world
    hs, node = w.headscale, w.nodes["agent"]
    agent_id = hs.node_id("agent")
    hs.cli("nodes", "tag", "-i", str(agent_id), "-t", SERVER_TAG)
    try:
        wait_for("agent's own status to show the new tag",
                 lambda: SERVER_TAG in (node.status().get("Self", {}).get("Tags") or []), 30)
        with pytest.raises(ClauseFailure) as e:
            world_clauses.type7_agent_carries_its_tags(w)
        assert e.value.clause == "TYPE-7" and AGENT_TAG in str(e.value)
        caught(e.value.clause)
    finally:
        hs.cli("nodes", "tag", "-i", str(agent_id), "-t", AGENT_TAG)
        wait_for("agent's tag restored", lambda: node.status().get("Self", {}).get("Tags") == [AGENT_TAG], 30)


class _OldHeadscale:
    """A headscale box whose CLI accepts everything, as one before 0.26 would accept the guide's commands."""

    def __init__(self, box):
        self._box = box

    def exec(self, cmd, *a, **k):
        if cmd[:2] == ["headscale", "routes"] or (cmd[:3] == ["headscale", "preauthkeys", "create"]
                                                   and "-o" not in cmd):
            return 0, ""
        return self._box.exec(cmd, *a, **k)


@pytest.mark.parametrize("check,clause_id", [
    pytest.param("errata1_routes_enable_is_gone", "ERRATA-1", id="ERRATA-1", marks=aims_at(
        "world", "headscale-takes-routes-enable", "ERRATA-1", "a headscale whose CLI still takes `routes enable`")),
    pytest.param("errata2_preauthkey_user_is_an_id", "ERRATA-2", id="ERRATA-2", marks=aims_at(
        "world", "headscale-takes-user-name", "ERRATA-2", "a headscale that still takes `preauthkeys --user NAME`"))])
def test_errata_clauses_fail_on_a_headscale_that_still_takes_the_guide_commands(world, monkeypatch, caught, check,
                                                                               clause_id):
    from meshcert.checks import world_clauses
    monkeypatch.setattr(world.headscale, "box", _OldHeadscale(world.headscale.box))
    with pytest.raises(ClauseFailure) as e:
        getattr(world_clauses, check)(world)
    assert e.value.clause == clause_id
    caught(e.value.clause)


@aims_at("world", "policy-grants-guide-user", "ERRATA-3", "the policy grants the guide's untagged user")
def test_errata3_fails_when_the_policy_grants_the_guide_user(steady_world, caught):
    """If the policy granted the guide's untagged (user-owned) agent, the erratum would not hold."""
    from meshcert.checks import world_clauses
    w = steady_world
    granted = copy.deepcopy(w.topology.policy)
    granted["acls"].append({"action": "accept", "src": [f"{w.topology.user}@"], "dst": [f"{SERVER_TAG}:22"]})
    w.set_policy(granted)
    with pytest.raises(ClauseFailure) as e:
        world_clauses.errata3_guide_untagged_key_grants_nothing(w)
    assert e.value.clause == "ERRATA-3" and "agent-guide -> server" in str(e.value)
    assert "agent-guide" not in w.pods, "the extra pod must be removed even when the clause fails"
    caught(e.value.clause)


@aims_at("world", "derp-cut", "PERF-3", "the DERP relay (headscale behind toxiproxy) cut")
def test_perf3_fails_when_derp_is_unreachable(steady_world, caught):
    """With the DERP (served by headscale behind toxiproxy) cut, blocking direct UDP leaves no path."""
    from meshcert.checks import perf
    w = steady_world
    proxy = w.toxiproxy.client().get_proxy("control")
    proxy.disable()
    try:
        with pytest.raises(ClauseFailure) as e:
            perf.perf3_derp_fallback(w, {})
        assert e.value.clause == "PERF-3" and "through DERP" in str(e.value)
        caught(e.value.clause)
    finally:
        proxy.enable()


@aims_at("world", "id-key-expired-before-join", "ERRATA-2", "the `--user ID` key expired before the pod joins with it")
def test_errata2_fails_when_the_id_key_cannot_join(steady_world, caught):
    """A broken setting: the `--user <ID>` key is made (all the old check looked at) but expired
    before the pod uses it; the sidecar never joins, so "a key the sidecar can join with" fails."""
    from meshcert.checks import world_clauses
    with pytest.raises(ClauseFailure) as e:
        world_clauses.errata2_preauthkey_user_is_an_id(steady_world, expire_before_join=True)
    assert e.value.clause == "ERRATA-2"
    assert "key reaches BackendState Running" in str(e.value) and "NeedsLogin" in str(e.value)
    assert "agent-errata2" not in steady_world.pods, "the extra pod must be removed even when the clause fails"
    caught(e.value.clause)


class _HeadscaleIgnoringEnable:
    """A headscale < 0.26 box whose `routes enable` answers success and enables nothing."""

    def __init__(self, box):
        self._box = box

    def exec(self, cmd, *a, **k):
        if cmd[:3] == ["headscale", "routes", "enable"] and "/" not in cmd[-1]:  # the ID form; the CIDR one runs
            return 0, ""
        return self._box.exec(cmd, *a, **k)


@pytest.fixture(scope="module")
def old_headscale_world(tmp_path_factory):
    """A world on headscale v0.25.1 (ROUTE-3 holds only before 0.26), built for this module."""
    with own_world(dataclasses.replace(guide_topology(free_vlan()), headscale="v0.25.1"), tmp_path_factory,
                   "old-headscale-logs") as w:
        yield w


@aims_at("world", "headscale-ignores-routes-enable", "ROUTE-3",
         "a headscale < 0.26 whose `routes enable --route ID` answers success but enables nothing")
def test_route3_fails_when_routes_enable_enables_nothing(old_headscale_world, monkeypatch, caught):
    w = old_headscale_world
    monkeypatch.setattr(w.headscale, "box", _HeadscaleIgnoringEnable(w.headscale.box))
    with pytest.raises(ClauseFailure) as e:
        route.route3_guide_routes_enable_works(w)
    msg = str(e.value)
    assert e.value.clause == "ROUTE-3" and "to show" in msg and "enabled on router" in msg, msg
    caught(e.value.clause)
