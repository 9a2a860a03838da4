"""The headscale dialects (meshcert/world/headscale_versions.py): each difference between the
versions the matrix runs, as read in each version's source."""

import pytest

from meshcert.world.base import WorldError
from meshcert.world.headscale import Headscale
from meshcert.world.headscale_versions import dialect, routes_as_nodes


def test_each_version_speaks_what_its_source_declares():
    old, mid, pinned = dialect("v0.25.1"), dialect("v0.27.1"), dialect("v0.29.2")
    # preauthkeys --user: StringP (0.25), Uint64P required (0.27), Uint64P optional (0.29)
    assert (old.user_by, old.user_required) == ("name", True)
    assert (mid.user_by, mid.user_required) == ("id", True)
    assert (pinned.user_by, pinned.user_required) == ("id", False)
    # preauthkeys expire KEY (< 0.28) vs expire --id (0.28+)
    assert (old.expire_by, mid.expire_by, pinned.expire_by) == ("key", "key", "id")
    # routes: a table of their own before 0.26 (routes list / enable -r ROUTE_ID)
    assert (old.routes_table, mid.routes_table, pinned.routes_table) == (True, False, False)
    assert (old.policy_v1, mid.policy_v1) == (True, False)
    assert (old.route_change_needs_full_map, mid.route_change_needs_full_map) == (True, False)
    assert (old.split_tags, mid.split_tags, pinned.split_tags) == (True, True, False)
    # measured, not read: on v0.27.1 a router deleted and joined again never became primary
    assert (old.rejoined_router_never_primary, mid.rejoined_router_never_primary,
            pinned.rejoined_router_never_primary) == (False, True, False)
    # measured, not read: on v0.27.1 a control-plane outage of 4-8.5 s left every node offline
    assert (old.outage_can_leave_nodes_offline, mid.outage_can_leave_nodes_offline,
            pinned.outage_can_leave_nodes_offline) == (False, True, False)


def test_node_tags_read_the_fields_of_each_version():
    node = {"forced_tags": ["tag:a"], "valid_tags": ["tag:b"], "invalid_tags": ["tag:c"], "tags": ["tag:x"]}
    assert dialect("v0.27.1").node_tags(node) == ["tag:a", "tag:b"]  # invalid_tags are refused, not carried
    assert dialect("v0.29.2").node_tags(node) == ["tag:x"]


def test_a_v2_policy_is_written_in_v1_for_an_old_server():
    doc = {"tagOwners": {"tag:a": ["meshcert@"]}, "groups": {"group:g": ["alice@"]},
           "acls": [{"action": "accept", "src": ["meshcert@", "tag:a"], "dst": ["meshcert@:22", "tag:a:22",
                                                                               "10.0.0.0/24:22"]}]}
    v1 = dialect("v0.25.1").policy(doc)
    assert v1["tagOwners"] == {"tag:a": ["meshcert"]}
    assert v1["groups"] == {"group:g": ["alice"]}
    assert v1["acls"][0]["src"] == ["meshcert", "tag:a"]
    assert v1["acls"][0]["dst"] == ["meshcert:22", "tag:a:22", "10.0.0.0/24:22"]
    assert dialect("v0.27.1").policy(doc) is doc


def test_the_old_route_table_folds_into_node_fields():
    nodes = [{"id": "1", "given_name": "router"}, {"id": "2", "given_name": "agent"}]
    table = [{"id": "7", "node": {"id": "1", "given_name": "router"}, "prefix": "10.0.0.0/24", "advertised": True,
              "enabled": True, "is_primary": True},
             {"id": "8", "node": {"id": "1", "given_name": "router"}, "prefix": "10.1.0.0/24", "advertised": True}]
    got = {n["given_name"]: n for n in routes_as_nodes(table, nodes)}
    assert got["router"]["available_routes"] == ["10.0.0.0/24", "10.1.0.0/24"]
    assert got["router"]["approved_routes"] == ["10.0.0.0/24"]
    assert got["router"]["subnet_routes"] == ["10.0.0.0/24"]
    assert got["agent"]["approved_routes"] == []


def test_a_reset_restarts_headscale_only_where_an_outage_can_leave_the_tailnet_broken():
    """World.reset on headscale 0.26-0.27: when the routes or the peers do not come back (nodes
    left offline after a control-plane outage, the finding headscale-0.27-control-blip-leaves-
    nodes-offline), headscale is restarted; elsewhere a reset only waits for the routes, and a
    whole tailnet is never restarted."""
    from types import SimpleNamespace

    from meshcert.world.base import WorldError
    from meshcert.world.topology import guide_topology
    from meshcert.world.world import World

    def reset(version: str, whole: bool) -> list[str]:
        log: list[str] = []
        w = World.__new__(World)
        topo = guide_topology()
        router = topo.node("router")
        w.topology, w.pods, w.nodes, w.policy = topo, {}, {}, topo.policy
        w.headscale = SimpleNamespace(dialect=dialect(version), routes=lambda: [
            {"given_name": "router", "approved_routes": list(router.approve_routes)}])

        def seen(*a, **k):
            log.append("routes?")
            if not whole and "restart" not in log:
                raise WorldError("timed out")
        w.wait_routes_seen = seen
        w.wait_mesh = lambda timeout=60: log.append("mesh?")
        w.restart_control_plane = lambda: log.append("restart")
        try:
            w.reset()
        except WorldError:
            log.append("error")
        return log

    assert reset("v0.27.1", whole=True) == ["routes?", "mesh?"]
    assert reset("v0.27.1", whole=False) == ["routes?", "restart", "routes?"]
    assert reset("v0.29.2", whole=True) == ["routes?"]
    assert reset("v0.29.2", whole=False) == ["routes?", "error"], "no restart where the race is not known"


class _Box:
    """A headscale container whose CLI answers ``answer`` (after the answered exec: see
    tests/unit/test_answers.py for how a lost output is read again)."""

    def __init__(self, answer: str):
        self.answer = answer

    def exec(self, argv, answer=False):
        assert answer, "every `headscale -o json` is an answered exec"
        return 0, self.answer


def test_a_user_create_that_answers_no_user_is_one_clear_world_error():
    assert Headscale(_Box('{"id": 7, "name": "meshcert"}'), "10.0.0.1", "v0.29.2").create_user("meshcert") == 7
    with pytest.raises(WorldError, match="users create meshcert` answered no user"):
        Headscale(_Box(""), "10.0.0.1", "v0.29.2").create_user("meshcert")


def test_a_preauthkey_create_that_answers_no_key_is_one_clear_world_error():
    key = Headscale(_Box('{"id": 3, "key": "k" }'), "10.0.0.1", "v0.29.2").preauth_key(["tag:a"])
    assert key.reveal() == "k"
    for printed in ("", "{}", "[]"):
        with pytest.raises(WorldError, match="preauthkeys create` answered no key"):
            Headscale(_Box(printed), "10.0.0.1", "v0.29.2").preauth_key(["tag:a"])
