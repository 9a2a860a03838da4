"""Clauses about the tailnet the guide sets up (not the SUT): tags, routes to new hosts, and the
guide's errata against the current headscale."""

from __future__ import annotations

import ipaddress
import json

from ..world.topology import AGENT_TAG, HostSpec
from .base import Probe, check_reachability
from .sut import clause


def type7_agent_carries_its_tags(world) -> None:
    """TYPE-7: the agent node joins carrying tag:agent-runtime (the tags the ACLs match on)."""
    with clause(world, "TYPE-7") as e:
        nodes = {n.get("given_name") or n.get("name"): n for n in world.headscale.nodes()}
        for pod in world.topology.pods:
            tags = sorted(nodes.get(pod.name, {}).get("tags") or [])
            e.that(AGENT_TAG in tags, f"headscale lists {pod.name} with {AGENT_TAG}", tags or "no tags")
            st = world.nodes[pod.name].status().get("Self", {})
            e.that(AGENT_TAG in (st.get("Tags") or []), f"{pod.name}'s own status carries {AGENT_TAG}",
                   st.get("Tags"))


def route2_new_vlan_host_reachable(world) -> None:
    """ROUTE-2: a host added to the VLAN after the route was approved is reachable with no re-approval."""
    from ..world.extra import add_plain_host
    legacy = world.topology.hosts[0]
    net = ipaddress.ip_network(next(n.subnet for n in world.topology.networks if n.name == legacy.network))
    spec = HostSpec("legacy2", legacy.network, str(net.network_address + 11), banner_ports=(22,))
    add_plain_host(world, spec)
    try:
        check_reachability(world, "ROUTE-2", [
            Probe("agent", legacy.name, 22, True, "the host the route was approved with"),
            Probe("agent", spec.name, 22, True, "a second VLAN host, added after the approval", via="router")])
    finally:
        from ..world.extra import remove_plain_host
        remove_plain_host(world, spec.name)


def errata1_routes_enable_is_gone(world) -> None:
    """ERRATA-1: `headscale routes enable --route` (the guide) does not exist in headscale >= 0.26;
    `headscale nodes approve-routes -i ID -r CIDR` and `nodes list-routes` are the working equivalent."""
    vlan = world.topology.node("router").approve_routes[0]
    with clause(world, "ERRATA-1") as e:
        for cmd in (["headscale", "routes", "enable", "--route", vlan], ["headscale", "routes", "list"]):
            code, out = world.headscale.box.exec(cmd)
            e.that(code != 0, f"`{' '.join(cmd)}` (the guide's command) to fail on headscale 0.29", f"exit {code}")
        node_id = world.headscale.node_id("router")
        code, out = world.headscale.box.exec(["headscale", "nodes", "approve-routes", "-i", str(node_id),
                                              "-r", vlan, "-o", "json"])
        e.that(code == 0, "`headscale nodes approve-routes -i ID -r CIDR` to work", out[-300:])
        routes = {r.get("given_name") or r.get("name"): r for r in world.headscale.routes()}
        e.that(vlan in (routes.get("router", {}).get("approved_routes") or []),
               f"`headscale nodes list-routes` to show {vlan} approved on router", json.dumps(routes.get("router")))


def errata2_preauthkey_user_is_an_id(world) -> None:
    """ERRATA-2: `headscale preauthkeys create --user legator` (a name, as the guide writes) is
    rejected by headscale >= 0.26; `--user <numeric id>` works."""
    user = world.topology.user
    with clause(world, "ERRATA-2") as e:
        code, out = world.headscale.box.exec(["headscale", "preauthkeys", "create", "--user", user,
                                              "--expiration", "1m"])
        e.that(code != 0, f"`preauthkeys create --user {user}` (a name) to be rejected", f"exit {code}")
        code, out = world.headscale.box.exec(["headscale", "preauthkeys", "create", "--user", str(world.user_id),
                                              "--expiration", "1m", "-o", "json"])
        ok = code == 0
        if ok:
            from ..secrets import register
            try:
                register(json.loads(out)["key"])  # a real key now exists: never print it
            except (ValueError, KeyError):
                pass
        e.that(ok, f"`preauthkeys create --user {world.user_id}` (the numeric id) to work", f"exit {code}")


def errata3_guide_untagged_key_grants_nothing(world) -> None:
    """ERRATA-3: the guide's own setup (`preauthkeys create --user legator`, no tags) gives an agent
    node without tag:agent-runtime, which the guide's ACLs grant nothing; a key created with
    `--tags tag:agent-runtime` (the world's agents) makes them apply."""
    from ..world.topology import AgentSpec
    spec = AgentSpec(name="agent-guide", tags=())
    key = world.headscale.preauth_key((), user_id=world.user_id, expiration="1h")
    world.add_pod(spec, key)
    try:
        with clause(world, "ERRATA-3") as e:
            nodes = {n.get("given_name") or n.get("name"): n for n in world.headscale.nodes()}
            e.that(not (nodes.get(spec.name, {}).get("tags") or []),
                   "the node joined with the guide's untagged key carries no tag", nodes.get(spec.name))
        # Positive control for the new node: once a rule grants its user, it reaches the server.
        guide = world.policy
        grant = json.loads(json.dumps(guide))
        grant["acls"].append({"action": "accept", "src": [f"{world.topology.user}@"],
                              "dst": ["tag:managed-servers:22", "tag:managed-databases:5432"]})
        world.set_policy(grant)
        try:
            # the same paths the denials below are about, proven before the change
            check_reachability(world, "ERRATA-3", [
                Probe(spec.name, "server", 22, True, "positive control: a rule granting its user"),
                Probe(spec.name, "database", 5432, True, "positive control: a rule granting its user")])
        finally:
            world.set_policy(guide)
        check_reachability(world, "ERRATA-3", [
            Probe("agent", "server", 22, True, "tagged key: the guide's ACL applies"),
            Probe(spec.name, "server", 22, False, "the guide's untagged key: no ACL grants this node anything"),
            Probe(spec.name, "database", 5432, False, "the guide's untagged key: no ACL grants this node anything"),
            Probe("agent", "database", 5432, True, "tagged key: the guide's ACL applies")],
            proven=[(spec.name, "server"), (spec.name, "database")])
    finally:
        world.remove_pod(spec.name)
