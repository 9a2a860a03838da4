"""What differs between the headscale versions the version matrix runs (issue 14), in one place.

The Headscale handle (headscale.py) asks :func:`dialect` for its server's version and speaks
that dialect; nothing else in meshcert branches on a headscale version. Every row below was
read in that version's own source (the Go module cache: ``go env GOMODCACHE``/github.com/
juanfont/headscale@<v>/cmd/headscale/cli/*.go for the CLI, gen/openapiv2/headscale/v1/
headscale.swagger.json for the REST API, hscontrol/policy for the policy format), not guessed:

=====================  ==========================  ==========================  ==========================
                       v0.25.1                     v0.27.1                     v0.29.2 (pinned)
=====================  ==========================  ==========================  ==========================
preauthkeys --user     a user NAME, required       a user ID, required         a user ID, optional
                       (StringP, MarkPersistent-   (Uint64P, required)         (tagged keys need none)
                       FlagRequired)
preauthkeys expire     ``expire KEY --user NAME``  ``expire KEY --user ID``    ``expire --id ID``
REST expire body       {user, key}                 {user, key}                 {id}
node tags (JSON)       forced_tags + valid_tags    forced_tags + valid_tags    tags
                       (+ invalid_tags)            (+ invalid_tags)
routes                 a table of their own:       node fields: ``nodes        as v0.27.1
                       ``routes list``, ``routes   list-routes``, ``nodes
                       enable -r ROUTE_ID``;       approve-routes -i ID -r
                       REST GET /routes, POST      CIDR``; REST POST /node/
                       /routes/{id}/enable         {id}/approve_routes
policy format          v1 (users without ``@``)    v2 (users end in ``@``)     v2
route enabled -> the   no (StatePeerChanged of     yes                         yes
router's new peers     the router itself only)
router rejoined ->     yes                         no (measured, a finding)    yes
primary again
a short control-plane  not measured                yes with tailscale v1.102.3 no (measured)
outage -> reconnected                              (a finding); 1 run of 3
nodes stay offline                                 with v1.80.3
=====================  ==========================  ==========================  ==========================

A version between two rows speaks the older row's dialect up to the version where the change
landed (0.26.0: routes as node fields, --user an ID, policy v2; 0.28.0: tags, --id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def _v(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("-")[0])[:3])


ROUTES_ARE_NODE_FIELDS = (0, 26, 0)   # `routes` table gone; approve-routes; policy v2; --user an ID
TAGS_ARE_IDENTITY = (0, 28, 0)        # one `tags` field; preauthkeys expire --id; --user optional


@dataclass(frozen=True)
class Dialect:
    version: str
    user_by: str            # what preauthkeys --user takes: "name" or "id"
    user_required: bool     # every pre-auth key needs --user (tagged ones too)
    expire_by: str          # how a pre-auth key is expired: "key" (expire KEY --user U) or "id" (--id ID)
    split_tags: bool        # node JSON carries forced_tags/valid_tags/invalid_tags, not tags
    routes_table: bool      # routes are their own table (routes list/enable -r ROUTE_ID; REST /routes)
    policy_v1: bool         # policy v1: users are written without the trailing "@"
    # enabling a route sends the router no new peers (v0.25.1: EnableRoute notifies a
    # StatePeerChanged naming the router only, and a node's own map session drops itself from
    # the changed peers), so the route carries nothing until the router's next full map
    route_change_needs_full_map: bool
    # a subnet router removed (its headscale node deleted) and joined again under its name has
    # its route approved but is never made primary (v0.27.1 with tailscale v1.102.3, 6 runs of
    # 6, and v1.80.3, 4 of 4: fixtures/replays/findings/headscale-0.27-rejoined-router-never-primary.yaml;
    # bench/results/control-blip-v0.27.1-*: headscale's own API lists the route approved, not
    # primary; v0.25.1 and v0.29.2 do not). Read in v0.27.1's source: the primary-route table
    # (hscontrol/routes/primary.go, in memory, by node ID) keeps the deleted node -- DeleteNode
    # leaves it there and its old session's Disconnect returns "node not found" first -- and a
    # primary that still lists the prefix is kept, so the new node (a new ID) never is; only a
    # restart of headscale empties it (the router_rejoined fault's undo restarts it). The version
    # matrix then builds a world per tailscale version instead of switching one (which rejoins
    # every node). Not the same cause as the control-plane blip on v0.27.1 (every node offline,
    # the route cleared: fixtures/replays/findings/headscale-0.27-control-blip-leaves-nodes-
    # offline.yaml), a race in poll.go: a session's cleanup waits 10 one-second ticks for a new
    # session, then calls State.Disconnect (node offline, its primary routes cleared) without
    # looking again, so a node that reconnected in the last second stays offline without routes.
    rejoined_router_never_primary: bool
    # a control-plane outage of a few seconds can leave every node offline and the router's
    # route cleared although each reconnected (the poll.go race above; v0.27.1 with tailscale
    # v1.102.3: 12 trials of 12 for outages of 4 and 8.5 s, bench/results/control-blip-v0.27.1-*;
    # v0.29.2: none of 18; with tailscale v1.80.3 the finding's replay 1 run of 3 and HEALTH-1's
    # outage left the tailnet whole in the one matrix run, while with v1.102.3 it broke ROUTE-1/2
    # and TROUBLE-4 after it). World.reset then restarts headscale when the routes or the peers do
    # not come back, so a clause after HEALTH-1's outage is judged in a whole tailnet; the
    # finding itself stays a strict xfail (fixtures/replays/findings/).
    outage_can_leave_nodes_offline: bool

    def node_tags(self, node: dict) -> list[str]:
        """The tags a node carries (its identity for the ACLs), whatever fields this version uses:
        v0.29's ``tags``; before v0.28 the tags headscale forces (the pre-auth key's) and the
        ones the node asked for that the policy let it own (``valid_tags``) -- ``invalid_tags``
        are refused, not carried."""
        if not self.split_tags:
            return list(node.get("tags") or [])
        return sorted(set(node.get("forced_tags") or []) | set(node.get("valid_tags") or []))

    def policy(self, doc: dict) -> dict:
        """``doc`` (a v2 policy, as meshcert writes them) in this version's format: v1 names a
        user without the trailing ``@`` (``meshcert@`` -> ``meshcert``) in tagOwners, groups and
        acl sources/destinations; everything else the world writes reads the same in v1."""
        if not self.policy_v1:
            return doc

        def user(s):
            return s[:-1] if isinstance(s, str) and s.endswith("@") and not s.startswith(("tag:", "group:")) else s

        def dst(s):
            if not isinstance(s, str) or "@:" not in s:
                return s
            who, port = s.rsplit(":", 1)
            return f"{user(who)}:{port}"

        out = dict(doc)
        if "tagOwners" in doc:
            out["tagOwners"] = {t: [user(o) for o in owners] for t, owners in doc["tagOwners"].items()}
        if "groups" in doc:
            out["groups"] = {g: [user(m) for m in members] for g, members in doc["groups"].items()}
        out["acls"] = [{**a, "src": [user(s) for s in a.get("src", [])], "dst": [dst(d) for d in a.get("dst", [])]}
                       for a in doc.get("acls", [])]
        return out


def dialect(version: str) -> Dialect:
    """The dialect of headscale ``version`` (``vX.Y.Z``)."""
    v = _v(version)
    old_routes = v < ROUTES_ARE_NODE_FIELDS
    before_tags = v < TAGS_ARE_IDENTITY
    return Dialect(version=version, user_by="name" if old_routes else "id", user_required=before_tags,
                   expire_by="key" if before_tags else "id", split_tags=before_tags, routes_table=old_routes,
                   policy_v1=old_routes, route_change_needs_full_map=old_routes,
                   rejoined_router_never_primary=not old_routes and before_tags,
                   outage_can_leave_nodes_offline=not old_routes and before_tags)


def routes_as_nodes(routes: list[dict], nodes: list[dict]) -> list[dict]:
    """Headscale < 0.26's route table (``GET /api/v1/routes``: one row per advertised prefix with
    its node, ``advertised``, ``enabled``, ``is_primary``) folded into the node fields v0.26+
    lists (``available_routes``: advertised; ``approved_routes``: enabled; ``subnet_routes``:
    enabled and primary, the ones the node serves), each node keyed like ``nodes list``."""
    by_id = {str(n.get("id")): dict(n, available_routes=[], approved_routes=[], subnet_routes=[]) for n in nodes}
    for r in routes:
        node = r.get("node") or {}
        n = by_id.setdefault(str(node.get("id")), dict(node, available_routes=[], approved_routes=[],
                                                       subnet_routes=[]))
        prefix = r.get("prefix")
        if r.get("advertised"):
            n["available_routes"].append(prefix)
        if r.get("enabled"):
            n["approved_routes"].append(prefix)
            if r.get("is_primary"):
                n["subnet_routes"].append(prefix)
    return list(by_id.values())
