"""Clauses about the tailnet the guide sets up (not the SUT): tags, routes to new hosts, and the
guide's errata against the current headscale."""

from __future__ import annotations

import html
import ipaddress
import json
import re
import time

from meshcert.checks.base import Probe, check_reachability
from meshcert.checks.sut import clause
from meshcert.report.catalog import load_catalog
from meshcert.report.render import render_html, render_markdown, summarize
from meshcert.secrets import Secret, register
from meshcert.world.extra import add_plain_host, remove_plain_host
from meshcert.world.topology import AGENT_TAG, AgentSpec, HostSpec


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
    legacy = world.topology.hosts[0]
    net = ipaddress.ip_network(next(n.subnet for n in world.topology.networks if n.name == legacy.network))
    spec = HostSpec("legacy2", legacy.network, str(net.network_address + 11), banner_ports=(22,))
    add_plain_host(world, spec)
    try:
        check_reachability(world, "ROUTE-2", [
            Probe("agent", legacy.name, 22, True, "the host the route was approved with"),
            Probe("agent", spec.name, 22, True, "a second VLAN host, added after the approval", via="router")])
    finally:
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
        # the CLI's own listing (the clause is about the CLI; routes() may go over the REST API)
        routes = {r.get("given_name") or r.get("name"): r for r in world.headscale.cli("nodes", "list-routes") or []}
        e.that(vlan in (routes.get("router", {}).get("approved_routes") or []),
               f"`headscale nodes list-routes` to show {vlan} approved on router", json.dumps(routes.get("router")))


# What naming the ERRATA-1 erratum takes: the guide's two commands and their working equivalents.
ERRATA1_NAMES = ("headscale routes enable", "headscale routes list", "headscale nodes approve-routes",
                 "headscale nodes list-routes")


def _errata_entry(text: str, head: str, cid: str) -> str:
    """The entry for ``cid`` in the errata section (from ``head`` on) of a report, as plain text;
    "" when there is none."""
    if head not in text:
        return ""
    section = text[text.index(head):]
    chunk = next((c for c in re.split(r"\n(?=- )|<li>", section) if cid in c), "")
    return html.unescape(re.sub(r"<[^>]+>", "", chunk))


def errata1_report_names_it(world, results: dict | None = None) -> None:
    """ERRATA-1, its last sentence: the report (report.md and report.html, rendered as the session
    end renders them, from this run's results with ERRATA-1 in them) names the erratum -- its
    errata section has an entry for ERRATA-1 naming the guide's commands and what replaces them."""
    catalog = load_catalog()
    clauses = dict((results or {}).get("clauses") or {})
    clauses.setdefault("ERRATA-1", {"outcome": "passed", "tests": []})
    summary = summarize({"finished": time.time(), "clauses": clauses}, catalog)
    md, page = render_markdown(summary, catalog), render_html(summary, catalog)
    entries = {"report.md": _errata_entry(md, "\n## Guide errata\n", "ERRATA-1"),
               "report.html": _errata_entry(page, '<h2 id="errata">', "ERRATA-1")}
    with clause(world, "ERRATA-1") as e:
        for fmt, entry in entries.items():
            if e.that(bool(entry), f"{fmt}: an entry for ERRATA-1 in its Guide errata section", "none"):
                for name in ERRATA1_NAMES:
                    e.that(name in entry, f"{fmt}: the ERRATA-1 entry names `{name}`", entry[:400])


# `tailscale up` (15 s) has returned when this starts: a sidecar with a good key is Running at
# once on this machine; the rest is margin for a loaded 2-core machine.
JOIN_BOUND_S = 30.0


def errata2_preauthkey_user_is_an_id(world, *, expire_before_join: bool = False) -> None:
    """ERRATA-2: `headscale preauthkeys create --user legator` (a name, as the guide writes) is
    rejected by headscale >= 0.26; `--user <numeric id>` works, and a sidecar joins with its key:
    an extra agent pod joined with it reaches Running and shows in headscale's node list (then
    it is removed and the year-long key expired). ``expire_before_join``: a broken setting (the
    key expired before the pod uses it) that this check must fail."""
    user = world.topology.user

    def create(by: str) -> tuple[int, Secret | None, str]:
        code, out = world.headscale.box.exec(["headscale", "preauthkeys", "create", "--user", by,
                                              "--expiration", "8760h", "-o", "json"], answer=True)
        if code != 0:
            return code, None, out
        try:
            doc = json.loads(out)
            key = Secret(doc["key"], "pre-auth key (ERRATA-2)")  # a real key now exists: never print it
        except (ValueError, KeyError, TypeError):
            return code, None, "no key in its JSON"
        world.headscale.remember_key(key, int(doc.get("id") or 0), by)
        return code, key, ""

    with clause(world, "ERRATA-2") as e:
        code, out = world.headscale.box.exec(["headscale", "preauthkeys", "create", "--user", user,
                                              "--expiration", "8760h"])  # the guide's command, verbatim
        if code == 0:  # accepted after all: whatever it printed may be a key, never print it
            for token in out.split():
                if len(token) >= 20:  # a key is far longer than any word headscale prints
                    register(token)
        e.that(code != 0, f"`preauthkeys create --user {user} --expiration 8760h` (the guide's, a name) to be "
               f"rejected", f"exit {code}")
        code, key, why = create(str(world.user_id))
        e.that(key is not None, f"`preauthkeys create --user {world.user_id} --expiration 8760h` (the ID of "
               f"{user}) to make a key", f"exit {code} {why[-300:]}")
    spec = AgentSpec(name="agent-errata2", tags=())
    try:
        if expire_before_join:
            world.headscale.expire_preauth_key(key)
        node = world.add_pod(spec, key, expect_join=False)
        with clause(world, "ERRATA-2") as e:
            deadline, state = time.monotonic() + JOIN_BOUND_S, node.backend_state()
            while state != "Running" and time.monotonic() < deadline:
                time.sleep(0.5)
                state = node.backend_state()
            e.that(state == "Running", f"a sidecar joined with the --user {world.user_id} key reaches BackendState "
                   f"Running within {JOIN_BOUND_S:.0f} s", state)
            nodes = {n.get("given_name") or n.get("name"): n for n in world.headscale.nodes()}
            listed = nodes.get(spec.name)
            e.that(listed is not None and (listed.get("user") or {}).get("name") == user,
                   f"headscale's node list shows {spec.name}, owned by user {user}",
                   {k: (v.get("user") or {}).get("name") for k, v in nodes.items()})
    finally:
        world.remove_pod(spec.name)
        world.headscale.expire_preauth_key(key)


def errata3_guide_untagged_key_grants_nothing(world) -> None:
    """ERRATA-3: the guide's own setup (`preauthkeys create --user legator`, no tags) gives an agent
    node without tag:agent-runtime, which the guide's ACLs grant nothing; a key created with
    `--tags tag:agent-runtime` (the world's agents) makes them apply."""
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
