"""Unit tests for meshcert.oracle: expected reachability from a policy, nodes and routes."""

from dataclasses import replace

import pytest

from meshcert.errors import InputError
from meshcert.policy import guide_policy, parse_policy, with_host, with_rule, without_rule
from meshcert.property.oracle import Host, Node, Oracle, Verdict

AGENT = Node(
    "agent",
    frozenset({"tag:agent-runtime"}),
    None,
    ("100.64.0.1", "fd7a:115c:a1e0::1"),
    accept_routes=True,
)
SERVER = Node(
    "server", frozenset({"tag:managed-servers"}), None, ("100.64.0.2", "fd7a:115c:a1e0::2")
)
DATABASE = Node("db", frozenset({"tag:managed-databases"}), None, ("100.64.0.3",))
ROUTER = Node(
    "router",
    frozenset({"tag:subnet-router"}),
    None,
    ("100.64.0.4",),
    advertised_routes=("10.20.0.0/16",),
    approved_routes=("10.20.0.0/16",),
)
LEGACY = Host("legacy", "10.20.5.7")
GUIDE_NODES = (AGENT, SERVER, DATABASE, ROUTER)
TO_LEGACY_SUBNET = ("tag:agent-runtime", "10.20.0.0/16:22")


def guide_oracle(policy=None, nodes=GUIDE_NODES):
    return Oracle(guide_policy() if policy is None else policy, nodes, [LEGACY])


def with_node(nodes, node):
    return tuple(node if n.name == node.name else n for n in nodes)


# --- the Connectivity Guide ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dst", "port", "rule"),
    [
        ("server", 22, "acls[0] allows tag:agent-runtime -> tag:managed-servers:22"),
        ("100.64.0.2", 22, "acls[0]"),
        ("fd7a:115c:a1e0::2", 22, "acls[0]"),  # a tag covers all of the node's addresses
        ("db", 5432, "acls[1] allows tag:agent-runtime -> tag:managed-databases:3306,5432"),
        ("db", 3306, "acls[1]"),
    ],
)
def test_guide_allows_agent_to_servers_and_databases(dst, port, rule):
    verdict = guide_oracle().allowed("agent", dst, port)
    assert verdict.allowed
    assert rule in verdict.reason


@pytest.mark.parametrize(
    ("src", "dst", "port"),
    [
        ("agent", "server", 80),
        ("agent", "db", 6379),
        ("agent", "db", 22),
        ("agent", "router", 22),
        ("server", "agent", 22),  # ACLs are directional
        ("db", "agent", 5432),
        ("server", "db", 5432),
    ],
)
def test_guide_denies_everything_else(src, dst, port):
    verdict = guide_oracle().allowed(src, dst, port)
    assert not verdict.allowed
    assert verdict.reason.startswith("no rule matches")


def test_reasons_name_the_flow():
    verdict = guide_oracle().allowed("agent", "db", 6379)
    assert verdict == Verdict(False, "no rule matches agent -> db (100.64.0.3) port 6379/tcp")


# --- the legacy host behind the subnet router --------------------------------------------------


def test_legacy_host_reachable_with_rule_route_and_accept_routes():
    verdict = guide_oracle(with_rule(guide_policy(), *TO_LEGACY_SUBNET)).allowed(
        "agent", "legacy", 22
    )
    assert verdict.allowed
    assert verdict.reason == (
        "acls[2] allows tag:agent-runtime -> 10.20.0.0/16:22 via 10.20.0.0/16 on router (approved)"
    )
    assert (
        guide_oracle(with_rule(guide_policy(), *TO_LEGACY_SUBNET))
        .allowed("agent", "10.20.5.7", 22)
        .allowed
    )


def test_legacy_host_denied_without_acl_rule():
    verdict = guide_oracle().allowed("agent", "legacy", 22)
    assert not verdict.allowed
    assert verdict.reason.startswith("no rule matches agent -> legacy (10.20.5.7) port 22/tcp")


def test_legacy_host_denied_when_route_not_approved():
    nodes = with_node(GUIDE_NODES, replace(ROUTER, approved_routes=()))
    verdict = guide_oracle(with_rule(guide_policy(), *TO_LEGACY_SUBNET), nodes).allowed(
        "agent", "legacy", 22
    )
    assert not verdict.allowed
    assert verdict.reason.startswith("route advertised but not approved: 10.20.0.0/16 by router")


def test_legacy_host_denied_when_source_does_not_accept_routes():
    nodes = with_node(GUIDE_NODES, replace(AGENT, accept_routes=False))
    verdict = guide_oracle(with_rule(guide_policy(), *TO_LEGACY_SUBNET), nodes).allowed(
        "agent", "legacy", 22
    )
    assert not verdict.allowed
    assert verdict.reason.startswith("source does not accept routes: agent has accept_routes=False")


def test_legacy_host_denied_when_no_route_is_advertised():
    nodes = with_node(GUIDE_NODES, replace(ROUTER, advertised_routes=()))
    verdict = guide_oracle(with_rule(guide_policy(), *TO_LEGACY_SUBNET), nodes).allowed(
        "agent", "legacy", 22
    )
    assert not verdict.allowed
    assert verdict.reason.startswith("no approved route covers legacy (10.20.5.7)")


def test_address_outside_every_route_is_unreachable():
    verdict = guide_oracle(parse_policy("{}")).allowed("agent", "192.168.1.1", 22)
    assert not verdict.allowed
    assert verdict.reason.startswith("no approved route covers 192.168.1.1")


def test_legacy_host_denied_when_router_offline():
    nodes = with_node(GUIDE_NODES, replace(ROUTER, online=False))
    verdict = guide_oracle(with_rule(guide_policy(), *TO_LEGACY_SUBNET), nodes).allowed(
        "agent", "legacy", 22
    )
    assert verdict == Verdict(False, "no online router for legacy (10.20.5.7): router offline")


def test_rule_port_applies_behind_the_router():
    oracle = guide_oracle(with_rule(guide_policy(), *TO_LEGACY_SUBNET))
    assert not oracle.allowed("agent", "legacy", 80).allowed


def test_router_tag_does_not_grant_the_network_behind_it():
    oracle = guide_oracle(with_rule(guide_policy(), "tag:agent-runtime", "tag:subnet-router:22"))
    assert oracle.allowed("agent", "router", 22).allowed
    verdict = oracle.allowed("agent", "legacy", 22)
    assert not verdict.allowed
    assert verdict.reason.startswith("no rule matches")
    assert (
        "acls[2] allows tag:agent-runtime -> tag:subnet-router:22 only reaches the router itself"
        in verdict.reason
    )


def test_host_alias_grants_the_subnet():
    policy = with_host(guide_policy(), "legacy-vlan", "10.20.0.0/16")
    oracle = guide_oracle(with_rule(policy, "tag:agent-runtime", "legacy-vlan:22"))
    assert oracle.allowed("agent", "legacy", 22).allowed


def test_single_ip_rule_covers_only_that_host():
    oracle = guide_oracle(with_rule(guide_policy(), "tag:agent-runtime", "10.20.5.7:22"))
    assert oracle.allowed("agent", "10.20.5.7", 22).allowed
    assert not oracle.allowed("agent", "10.20.5.8", 22).allowed


def test_wildcard_destination_includes_approved_routes():
    oracle = guide_oracle(with_rule(guide_policy(), "tag:agent-runtime", "*:22"))
    assert oracle.allowed("agent", "legacy", 22).allowed
    assert oracle.allowed("agent", "router", 22).allowed
    assert not oracle.allowed("agent", "legacy", 23).allowed


AUTO_APPROVED = """\
{
  "tagOwners": {"tag:agent-runtime": ["meshcert@"], "tag:subnet-router": ["meshcert@"]},
  "autoApprovers": {"routes": {"10.0.0.0/8": ["tag:subnet-router"]}},
  "acls": [{"action": "accept", "src": ["tag:agent-runtime"], "dst": ["10.20.0.0/16:22"]}],
}
"""


def test_auto_approvers_approve_routes_of_matching_routers():
    unapproved = replace(ROUTER, approved_routes=())
    nodes = with_node(GUIDE_NODES, unapproved)
    verdict = guide_oracle(parse_policy(AUTO_APPROVED), nodes).allowed("agent", "legacy", 22)
    assert verdict.allowed
    assert verdict.reason.endswith("(auto-approved by autoApprovers.routes[10.0.0.0/8])")
    untagged = with_node(nodes, replace(unapproved, tags=frozenset({"tag:agent-runtime"})))
    verdict = guide_oracle(parse_policy(AUTO_APPROVED), untagged).allowed("agent", "legacy", 22)
    assert verdict.reason.startswith("route advertised but not approved")


def test_most_specific_online_route_serves():
    backup = Node(
        "backup",
        frozenset({"tag:subnet-router"}),
        None,
        ("100.64.0.5",),
        advertised_routes=("10.0.0.0/8",),
        approved_routes=("10.0.0.0/8",),
    )
    policy = with_rule(guide_policy(), *TO_LEGACY_SUBNET)
    nodes = (*GUIDE_NODES, backup)
    assert (
        "via 10.20.0.0/16 on router"
        in guide_oracle(policy, nodes).allowed("agent", "legacy", 22).reason
    )
    failover = with_node(nodes, replace(ROUTER, online=False))
    assert (
        "via 10.0.0.0/8 on backup"
        in guide_oracle(policy, failover).allowed("agent", "legacy", 22).reason
    )


def test_exit_routes_are_not_subnet_routes():
    exit_node = Node(
        "exit",
        frozenset({"tag:subnet-router"}),
        None,
        ("100.64.0.6",),
        advertised_routes=("0.0.0.0/0", "::/0"),
        approved_routes=("0.0.0.0/0", "::/0"),
    )
    oracle = guide_oracle(parse_policy("{}"), (*GUIDE_NODES, exit_node))
    assert oracle.allowed("agent", "192.0.2.1", 443).reason.startswith("no approved route covers")


def test_router_reaches_its_own_subnet_directly():
    verdict = guide_oracle().allowed("router", "legacy", 22)
    assert verdict.allowed
    assert verdict.reason.startswith("router itself advertises 10.20.0.0/16")


# --- users, groups, tags ------------------------------------------------------------------------

PEOPLE_POLICY = """\
{
  "groups": {"group:eng": ["alice@", "bob@example.com"]},
  "tagOwners": {"tag:web": ["alice@"]},
  "acls": [
    {"action": "accept", "src": ["group:eng"], "dst": ["tag:web:443"]},
    {"action": "accept", "src": ["alice@"], "dst": ["carol@:22"]},
    {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:tagged:80"]},
    {"action": "accept", "src": ["autogroup:tagged"], "dst": ["autogroup:member:8080"]},
  ],
}
"""
ALICE = Node("alice-laptop", frozenset(), "alice", ("100.64.1.1",))
BOB = Node("bob-laptop", frozenset(), "bob@example.com", ("100.64.1.2",))
CAROL = Node("carol-laptop", frozenset(), "carol", ("100.64.1.3",))
ALICE_TAGGED = Node("alice-ci", frozenset({"tag:web"}), "alice", ("100.64.1.4",))
WEB = Node("web", frozenset({"tag:web"}), None, ("100.64.1.5",))


def people_oracle():
    return Oracle(parse_policy(PEOPLE_POLICY), [ALICE, BOB, CAROL, ALICE_TAGGED, WEB])


@pytest.mark.parametrize(
    ("src", "dst", "port", "allowed", "reason"),
    [
        ("alice-laptop", "web", 443, True, "acls[0] allows group:eng -> tag:web:443"),
        ("bob-laptop", "web", 443, True, "acls[0]"),  # group member by email
        ("carol-laptop", "web", 443, False, "no rule matches"),
        ("alice-ci", "web", 443, False, "no rule matches"),  # tagged: not alice, not in group:eng
        ("alice-laptop", "carol-laptop", 22, True, "acls[1] allows alice@ -> carol@:22"),
        ("alice-ci", "carol-laptop", 22, False, "no rule matches"),
        ("bob-laptop", "carol-laptop", 22, False, "no rule matches"),
        (
            "carol-laptop",
            "alice-ci",
            80,
            True,
            "acls[2] allows autogroup:member -> autogroup:tagged:80",
        ),
        ("carol-laptop", "alice-laptop", 80, False, "no rule matches"),
        (
            "web",
            "alice-laptop",
            8080,
            True,
            "acls[3] allows autogroup:tagged -> autogroup:member:8080",
        ),
        ("web", "alice-ci", 8080, False, "no rule matches"),
    ],
)
def test_users_groups_and_tagged_nodes(src, dst, port, allowed, reason):
    verdict = people_oracle().allowed(src, dst, port)
    assert verdict.allowed is allowed
    assert reason in verdict.reason


# --- ports, protocols, addresses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "allowed"),
    [
        (443, True),
        (999, False),
        (1000, True),
        (1500, True),
        (2000, True),
        (2001, False),
        (22, False),
    ],
)
def test_port_ranges_and_lists(port, allowed):
    policy = with_rule(
        without_rule(guide_policy(), 0), "tag:agent-runtime", "tag:managed-servers:443,1000-2000"
    )
    oracle = guide_oracle(policy)
    assert oracle.allowed("agent", "server", port).allowed is allowed


def test_proto_restricts_a_rule():
    policy = with_rule(
        without_rule(guide_policy(), 0), "tag:agent-runtime", "tag:managed-servers:53", proto="udp"
    )
    oracle = guide_oracle(policy)
    assert oracle.allowed("agent", "server", 53, proto="udp").allowed
    assert not oracle.allowed("agent", "server", 53).allowed
    assert (
        guide_oracle().allowed("agent", "server", 22, proto="udp").allowed
    )  # no proto: TCP and UDP
    assert not guide_oracle().allowed("agent", "server", 22, proto="sctp").allowed


def test_address_aliases_match_only_that_address_family():
    policy = with_rule(guide_policy(), "100.64.0.1", "100.64.0.2:80")
    oracle = guide_oracle(policy)
    assert oracle.allowed("agent", "100.64.0.2", 80).allowed
    assert not oracle.allowed("agent", "fd7a:115c:a1e0::2", 80).allowed  # dst: literal address only
    ipv6 = guide_oracle(with_rule(guide_policy(), "100.64.0.1", "fd7a:115c:a1e0::2:80"))
    assert not ipv6.allowed(
        "agent", "fd7a:115c:a1e0::2", 80
    ).allowed  # src: the packet leaves from ::1


def test_ipv6_rule_destination():
    policy = with_rule(guide_policy(), "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2:8443")
    verdict = guide_oracle(policy).allowed("agent", "fd7a:115c:a1e0::2", 8443)
    assert verdict.allowed
    assert "acls[2] allows fd7a:115c:a1e0::1 -> fd7a:115c:a1e0::2:8443" in verdict.reason


def test_source_without_an_address_of_the_destination_family():
    verdict = guide_oracle(parse_policy("{}")).allowed("db", "fd7a:115c:a1e0::2", 22)
    assert verdict == Verdict(
        False, "source db has no IPv6 address to reach server (fd7a:115c:a1e0::2)"
    )


def test_wildcard_rule_allows_all_nodes():
    oracle = guide_oracle(
        parse_policy('{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}')
    )
    assert oracle.allowed("server", "agent", 12345).allowed
    assert oracle.allowed("agent", "legacy", 5432).allowed


def test_node_always_reaches_itself():
    oracle = guide_oracle(parse_policy('{"acls": []}'))
    verdict = oracle.allowed("server", "fd7a:115c:a1e0::2", 9999)
    assert verdict == Verdict(
        True, "server (fd7a:115c:a1e0::2) is server itself: a node always reaches itself"
    )
    assert not oracle.allowed("server", "agent", 9999).allowed


def test_policy_without_acls_allows_everything_but_still_needs_routes():
    oracle = guide_oracle(parse_policy("{}"))
    assert oracle.allowed("server", "agent", 1).reason == (
        "the policy has no acls section: headscale allows all traffic"
    )
    assert oracle.allowed("agent", "legacy", 22).allowed
    nodes = with_node(GUIDE_NODES, replace(AGENT, accept_routes=False))
    assert not guide_oracle(parse_policy("{}"), nodes).allowed("agent", "legacy", 22).allowed


def test_offline_nodes():
    nodes = with_node(GUIDE_NODES, replace(SERVER, online=False))
    assert guide_oracle(nodes=nodes).allowed("agent", "server", 22) == Verdict(
        False, "destination node server is offline"
    )
    assert guide_oracle(nodes=nodes).allowed("server", "agent", 22) == Verdict(
        False, "source server is offline"
    )


def test_matrix():
    probes = [("agent", "server", 22), ("agent", "db", 6379), ("server", "agent", 22)]
    result = guide_oracle().matrix(probes)
    assert list(result) == probes
    assert [verdict.allowed for verdict in result.values()] == [True, False, False]


# --- invalid topology and probes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "hosts", "detail"),
    [
        ((AGENT, AGENT), (), "node 'agent' is defined twice"),
        ((replace(AGENT, addresses=("100.64.0.300",)),), (), "'100.64.0.300' is not an IP address"),
        ((replace(AGENT, addresses=()),), (), "has no address"),
        (
            (AGENT, replace(SERVER, addresses=("100.64.0.1",))),
            (),
            "100.64.0.1 also belongs to agent",
        ),
        ((replace(AGENT, tags=frozenset()),), (), "has neither tags nor a user"),
        ((replace(AGENT, tags=frozenset({"agent"})),), (), "tag 'agent' must start with 'tag:'"),
        (
            (replace(ROUTER, advertised_routes=("10.20.5.7/16",)),),
            (),
            "route '10.20.5.7/16' is not a CIDR",
        ),
        ((AGENT,), (Host("agent", "10.0.0.1"),), "host 'agent': the name is already used"),
        ((AGENT,), (Host("h", "100.64.0.1"),), "100.64.0.1 also belongs to agent"),
    ],
)
def test_invalid_topology(nodes, hosts, detail):
    with pytest.raises(InputError, match="oracle topology") as caught:
        Oracle(guide_policy(), nodes, hosts)
    assert detail in str(caught.value)


@pytest.mark.parametrize(
    ("probe", "detail"),
    [
        (("nobody", "server", 22), "unknown source node 'nobody'"),
        (
            ("agent", "nowhere", 22),
            "destination 'nowhere' is neither a node, a host nor an IP address",
        ),
        (("agent", "server", 0), "port 0 out of range 1-65535"),
        (("agent", "server", 70000), "port 70000 out of range"),
    ],
)
def test_invalid_probes(probe, detail):
    with pytest.raises(InputError, match="oracle probe") as caught:
        guide_oracle().allowed(*probe)
    assert detail in str(caught.value)


def test_invalid_probe_protocol():
    with pytest.raises(InputError, match="unsupported protocol 'icmp'"):
        guide_oracle().allowed("agent", "server", 22, proto="icmp")
