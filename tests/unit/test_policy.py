"""Unit tests for meshcert.policy: HuJSON parsing, validation, canonical JSON and editing."""

import json

import pytest

from meshcert.errors import InputError
from meshcert.policy import (
    ALL_PORTS,
    AliasKind,
    PortSet,
    guide_policy,
    load_policy,
    parse_policy,
    with_group,
    with_host,
    with_rule,
    with_tag_owner,
    without_rule,
)

RICH = """\
// A policy using every modelled section.
{
  "groups": {
    "group:eng": ["alice@", "bob@example.com"], // trailing comma next
  },
  "hosts": {
    "legacy-vlan": "10.20.0.0/16",
    "legacy-db": "10.20.5.7",
  },
  "tagOwners": {
    "tag:router": ["group:eng"],
    "tag:web": ["alice@", "tag:router"],
  },
  /* rules
     span lines */
  "acls": [
    {"action": "accept", "src": ["group:eng"], "dst": ["tag:web:80,443", "legacy-db:5432"]},
    {"action": "accept", "src": ["autogroup:member"], "proto": "udp", "dst": ["*:53"]},
    {"action": "accept", "src": ["100.64.0.0/10", "fd7a:115c:a1e0::1"], "dst": ["legacy-vlan:*"]},
  ],
  "autoApprovers": {
    "routes": {"10.20.0.0/16": ["tag:router"]},
    "exitNode": ["alice@"],
  },
  "ssh": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:web"], "users": ["root"]}],
  "tests": [{"src": "alice@", "accept": ["tag:web:80"]}],
}
"""


def error_of(text: str) -> str:
    with pytest.raises(InputError) as caught:
        parse_policy(text, "policy file t.hujson")
    return str(caught.value)


def policy_with_acl(*rule_lines: str, extra: str = "") -> str:
    """A small policy text; the rules start on line 8."""
    return (
        "{\n"
        '  "groups": {"group:eng": ["alice@"]},\n'
        '  "hosts": {"legacy-db": "10.20.5.7"},\n'
        '  "tagOwners": {\n'
        '    "tag:web": ["alice@"],\n'
        "  },\n"
        f"{extra}"
        '  "acls": [\n' + "".join(f"    {line}\n" for line in rule_lines) + "  ],\n}\n"
    )


# --- the Connectivity Guide policy ---------------------------------------------------------


def test_guide_policy_rules_and_tag_owners():
    policy = guide_policy()
    assert policy.acls is not None and len(policy.acls) == 2
    servers, databases = policy.acls
    assert [str(a) for a in servers.src] == ["tag:agent-runtime"]
    assert [str(d) for d in servers.dst] == ["tag:managed-servers:22"]
    assert databases.dst[0].alias.kind is AliasKind.TAG
    assert 5432 in databases.dst[0].ports and 3306 in databases.dst[0].ports
    assert 6379 not in databases.dst[0].ports
    assert set(policy.tag_owners) == {
        "tag:agent-runtime",
        "tag:managed-servers",
        "tag:managed-databases",
        "tag:subnet-router",
    }
    assert all([str(o) for o in owners] == ["meshcert@"] for owners in policy.tag_owners.values())


def test_guide_policy_to_json_is_plain_json_and_round_trips():
    policy = guide_policy()
    data = json.loads(policy.to_json())
    assert data["acls"][1] == {
        "action": "accept",
        "src": ["tag:agent-runtime"],
        "dst": ["tag:managed-databases:3306,5432"],
    }
    assert parse_policy(policy.to_json()) == policy


# --- HuJSON syntax -------------------------------------------------------------------------


def test_rich_policy_parses_comments_trailing_commas_and_all_sections():
    policy = parse_policy(RICH)
    assert policy.groups == {"group:eng": ("alice@", "bob@example.com")}
    assert str(policy.hosts["legacy-db"]) == "10.20.5.7/32"
    assert [str(o) for o in policy.tag_owners["tag:web"]] == ["alice@", "tag:router"]
    assert policy.acls is not None and policy.acls[1].proto == "udp"
    assert [str(r) for r in policy.auto_approvers.routes] == ["10.20.0.0/16"]
    assert [str(a) for a in policy.auto_approvers.exit_node] == ["alice@"]
    assert policy.tests == ({"src": "alice@", "accept": ["tag:web:80"]},)
    assert policy.passthrough["ssh"][0]["users"] == ["root"]


def test_rich_policy_round_trips_through_canonical_json():
    policy = parse_policy(RICH)
    again = parse_policy(policy.to_json())
    assert again == policy
    assert again.to_json() == policy.to_json()


def test_comment_markers_inside_strings_are_text():
    policy = parse_policy('{"hosts": {"h": "10.0.0.1"}, "tests": [{"note": "a // b /* c */"}]}')
    assert policy.tests == ({"note": "a // b /* c */"},)


def test_byte_order_mark_is_ignored():
    assert parse_policy("\ufeff{}").acls is None


@pytest.mark.parametrize(
    ("text", "location", "detail"),
    [
        ('{\n  "acls": [],\n  "groups": {}\n  "hosts": {}\n}', "line 3, column 15", "expected ','"),
        ('{\n  "acls": [\n    {"action": "accept",,}\n  ]\n}', "line 3, column 25", "quoted key"),
        ('{\n  "hosts": {"a": "10.0.0.1\n}}', "line 2, column 27", "line break inside a string"),
        ('{\n  /* never closed\n  "acls": []\n}', "line 2, column 3", "unterminated /* comment"),
        ('{"acls": []}\n}', "line 2, column 1", "after the end"),
        ('{\n  "acls": [tru]\n}', "line 2, column 12", "expected a value"),
        ('{\n  "acls": [],\n  "acls": []\n}', "line 3, column 3", "duplicate key 'acls'"),
        ('{"hosts": {"a": "\\q"}}', "line 1, column 18", "invalid string escape"),
        ("", "line 1, column 1", "expected a value, found end of input"),
    ],
)
def test_syntax_errors_name_line_and_column(text, location, detail):
    message = error_of(text)
    assert message.startswith("policy file t.hujson: ")
    assert location in message
    assert detail in message


# --- ports ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "inside", "outside"),
    [
        ("*", "*", [1, 22, 65535], []),
        ("22", "22", [22], [21, 23]),
        ("5432,3306", "3306,5432", [3306, 5432], [3307, 5000]),
        ("1000-2000", "1000-2000", [1000, 1500, 2000], [999, 2001]),
        ("443,1000-2000,80", "80,443,1000-2000", [80, 443, 1999], [81, 2001]),
        ("10-20,15-30,31", "10-31", [10, 31], [9, 32]),
        ("1-65535", "*", [1, 65535], []),
    ],
)
def test_port_sets(text, canonical, inside, outside):
    ports = PortSet.parse(text)
    assert str(ports) == canonical
    assert all(port in ports for port in inside)
    assert not any(port in ports for port in outside)


def test_port_set_all():
    assert PortSet.parse("*") == ALL_PORTS and ALL_PORTS.is_all
    assert not PortSet.parse("22").is_all


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("0", "port 0 out of range 1-65535"),
        ("65536", "port 65536 out of range 1-65535"),
        ("2000-1000", "lo > hi"),
        ("ssh", "invalid port 'ssh'"),
        ("22,", "invalid port ''"),
        ("22,*", "invalid port '*'"),
        ("1-2-3", "invalid port '2-3'"),
    ],
)
def test_bad_port_sets(text, detail):
    with pytest.raises(ValueError, match=detail):
        PortSet.parse(text)


# --- aliases and destinations ---------------------------------------------------------------


def test_source_alias_kinds():
    text = policy_with_acl(
        '{"action": "accept", "src": ["*", "tag:web", "alice@", "bob@example.com", "group:eng",'
        ' "legacy-db", "100.64.0.1", "10.20.5.7/16", "autogroup:member", "autogroup:tagged"],'
        ' "dst": ["*:*"]},'
    )
    policy = parse_policy(text)
    assert policy.acls is not None
    src = policy.acls[0].src
    assert [a.kind for a in src] == [
        AliasKind.WILDCARD,
        AliasKind.TAG,
        AliasKind.USER,
        AliasKind.USER,
        AliasKind.GROUP,
        AliasKind.HOST,
        AliasKind.PREFIX,
        AliasKind.PREFIX,
        AliasKind.AUTOGROUP,
        AliasKind.AUTOGROUP,
    ]
    assert str(src[5].network) == "10.20.5.7/32"
    assert str(src[6]) == "100.64.0.1"
    assert str(src[7]) == "10.20.0.0/16"  # host bits are masked, as headscale's IP sets do


@pytest.mark.parametrize(
    ("dst", "alias", "ports"),
    [
        ("tag:web:22", "tag:web", "22"),
        ("*:*", "*", "*"),
        ("alice@:8000-8100", "alice@", "8000-8100"),
        ("group:eng:22,80", "group:eng", "22,80"),
        ("legacy-db:5432", "legacy-db", "5432"),
        ("10.20.0.0/16:1-1024", "10.20.0.0/16", "1-1024"),
        ("fd7a:115c:a1e0::1:22", "fd7a:115c:a1e0::1", "22"),
        ("fd7a:115c:a1e0::/48:443,8443", "fd7a:115c:a1e0::/48", "443,8443"),
        ("[fd7a:115c:a1e0::1]:22", "fd7a:115c:a1e0::1", "22"),
        ("::1:5432", "::1", "5432"),
        ("autogroup:tagged:*", "autogroup:tagged", "*"),
    ],
)
def test_destinations_split_at_the_last_colon(dst, alias, ports):
    policy = parse_policy(
        policy_with_acl(f'{{"action": "accept", "src": ["*"], "dst": ["{dst}"]}},')
    )
    assert policy.acls is not None
    destination = policy.acls[0].dst[0]
    assert (str(destination.alias), str(destination.ports)) == (alias, ports)


def test_ipv6_destination_alias_is_a_prefix():
    policy = parse_policy(
        policy_with_acl('{"action": "accept", "src": ["*"], "dst": ["fd7a:115c:a1e0::1:22"]},')
    )
    assert policy.acls is not None
    alias = policy.acls[0].dst[0].alias
    assert alias.kind is AliasKind.PREFIX and str(alias.network) == "fd7a:115c:a1e0::1/128"


def test_proto_is_canonicalised():
    policy = parse_policy(
        policy_with_acl(
            '{"action": "accept", "src": ["*"], "proto": "6", "dst": ["*:22"]},',
            '{"action": "accept", "src": ["*"], "proto": "ICMP", "dst": ["*:*"]},',
            '{"action": "accept", "src": ["*"], "proto": "16", "dst": ["*:*"]},',
        )
    )
    assert policy.acls is not None
    assert [rule.proto for rule in policy.acls] == ["tcp", "icmp", "16"]


def test_missing_acls_section_is_none_and_empty_list_is_empty():
    assert parse_policy("{}").acls is None
    assert parse_policy('{"acls": []}').acls == ()
    assert "acls" not in json.loads(parse_policy("{}").to_json())
    assert json.loads(parse_policy('{"acls": []}').to_json())["acls"] == []


def test_hash_prefixed_rule_fields_are_ignored():
    policy = parse_policy(
        '{"acls": [{"#note": "x", "action": "accept", "src": ["*"], "dst": ["*:*"]}]}'
    )
    assert policy.acls is not None and policy.acls[0].to_data()["dst"] == ["*:*"]


# --- semantic errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "detail"),
    [
        (
            '{"action": "accept", "src": ["group:ops"], "dst": ["*:*"]}',
            "group 'group:ops' is not defined",
        ),
        (
            '{"action": "accept", "src": ["*"], "dst": ["tag:db:5432"]}',
            "tag 'tag:db' is not defined in tagOwners",
        ),
        (
            '{"action": "accept", "src": ["*"], "dst": ["tag:web:70000"]}',
            "port 70000 out of range 1-65535",
        ),
        ('{"action": "accept", "src": ["*"], "dst": ["tag:web:0"]}', "port 0 out of range"),
        ('{"action": "accept", "src": ["*"], "dst": ["tag:web:2000-1000"]}', "lo > hi"),
        ('{"action": "accept", "src": ["*"], "dst": ["tag:web"]}', "has no port"),
        ('{"action": "accept", "src": ["*"], "dst": ["10.0.0.1"]}', "has no port"),
        ('{"action": "accept", "src": ["*"], "dst": ["fd7a:115c:a1e0::1"]}', "has no port"),
        ('{"action": "accept", "src": ["*"], "dst": [":22"]}', "no alias before"),
        ('{"action": "accept", "src": ["*"], "dst": ["[10.0.0.1]:22"]}', "bracketed destination"),
        (
            '{"action": "accept", "src": ["*"], "dst": ["10.20.0.0/33:22"]}',
            "malformed IP address or CIDR",
        ),
        (
            '{"action": "accept", "src": ["10.300.0.1"], "dst": ["*:*"]}',
            "malformed IP address or CIDR",
        ),
        ('{"action": "accept", "src": ["nohost"], "dst": ["*:*"]}', "neither a user nor a host"),
        (
            '{"action": "accept", "src": ["*"], "dst": ["other-db:5432"]}',
            "neither a user nor a host",
        ),
        (
            '{"action": "accept", "src": ["autogroup:self"], "dst": ["*:*"]}',
            "not supported by meshcert",
        ),
        ('{"action": "accept", "src": ["tag:1web"], "dst": ["*:*"]}', "malformed tag"),
        ('{"action": "accept", "src": ["foo:bar"], "dst": ["*:*"]}', "is not an alias"),
        ('{"action": "deny", "src": ["*"], "dst": ["*:*"]}', "unknown action 'deny'"),
        ('{"action": "accept", "src": ["*"]}', "the rule has no 'dst'"),
        ('{"action": "accept", "src": "*", "dst": ["*:*"]}', "expected a list of strings"),
        (
            '{"action": "accept", "src": ["*"], "dst": ["*:*"], "ports": [22]}',
            "unknown rule field 'ports'",
        ),
        (
            '{"action": "accept", "src": ["*"], "proto": "icmp", "dst": ["*:22"]}',
            "protocol 'icmp' has no ports",
        ),
        (
            '{"action": "accept", "src": ["*"], "proto": "tcpp", "dst": ["*:22"]}',
            "unknown proto 'tcpp'",
        ),
        (
            '{"action": "accept", "src": ["*"], "proto": "06", "dst": ["*:22"]}',
            "unknown proto '06'",
        ),
    ],
)
def test_rule_errors_name_the_line_and_path(rule, detail):
    message = error_of(
        policy_with_acl('{"action": "accept", "src": ["*"], "dst": ["*:*"]},', rule + ",")
    )
    assert message.startswith("policy file t.hujson: line 9 (acls[1]")
    assert detail in message


def test_error_names_the_line_of_the_offending_string():
    text = (
        '{\n  "acls": [\n    {\n      "action": "accept",\n      "src": ["*"],\n'
        '      "dst": [\n        "*:22",\n        "group:missing:22",\n      ],\n    },\n  ],\n}\n'
    )
    assert "line 8 (acls[0].dst[1]): group 'group:missing' is not defined" in error_of(text)


def test_bare_username_error_has_a_fix_hint():
    with pytest.raises(InputError) as caught:
        parse_policy(policy_with_acl('{"action": "accept", "src": ["alice"], "dst": ["*:*"]},'))
    assert caught.value.message.startswith("line 8 (acls[0].src[0]): 'alice' is neither a user")
    assert "'alice@'" in caught.value.fix
    assert "(fix: write 'alice@' for the user 'alice'" in str(caught.value)


@pytest.mark.parametrize(
    ("section", "location", "detail"),
    [
        (
            '"groups": {"group:ops": ["carol"]},',
            'line 2 (groups["group:ops"][0])',
            "'carol' is not a user",
        ),
        (
            '"groups": {"group:ops": ["group:eng"]},',
            'line 2 (groups["group:ops"][0])',
            "cannot contain other groups",
        ),
        ('"groups": {"ops": ["carol@"]},', "line 2 (groups.ops)", "must look like 'group:<name>'"),
        (
            '"groups": {"group:ops": "carol@"},',
            'line 2 (groups["group:ops"])',
            "expected a list of strings",
        ),
        (
            '"hosts": {"lab": "10.1.0.0/99"},',
            "line 2 (hosts.lab)",
            "must map to an IP address or CIDR",
        ),
        (
            '"hosts": {"10.1.0.1": "10.1.0.1"},',
            'line 2 (hosts["10.1.0.1"])',
            "must be a plain name",
        ),
        (
            '"tagOwners": {"tag:db": ["group:ops"]},',
            'line 2 (tagOwners["tag:db"][0])',
            "group 'group:ops' is not defined",
        ),
        (
            '"tagOwners": {"tag:db": ["tag:nope"]},',
            'line 2 (tagOwners["tag:db"][0])',
            "tag 'tag:nope' is not defined",
        ),
        (
            '"tagOwners": {"tag:db": ["10.0.0.1"]},',
            'line 2 (tagOwners["tag:db"][0])',
            "cannot be a tag owner",
        ),
        ('"tagOwners": {"db": ["alice@"]},', "line 2 (tagOwners.db)", "malformed tag 'db'"),
        (
            '"autoApprovers": {"routes": {"10.0.0/8": ["alice@"]}},',
            'line 2 (autoApprovers.routes["10.0.0/8"])',
            "malformed route CIDR",
        ),
        (
            '"autoApprovers": {"exitNode": ["tag:nope"]},',
            "line 2 (autoApprovers.exitNode[0])",
            "tag 'tag:nope' is not defined",
        ),
        (
            '"autoApprovers": {"exit": []},',
            "line 2 (autoApprovers.exit)",
            "unknown autoApprovers field 'exit'",
        ),
        ('"ACLs": [],', "line 2 (ACLs)", "unknown section 'ACLs' (fix: write 'acls')"),
        ('"derpMap": {},', "line 2 (derpMap)", "unknown section 'derpMap'"),
        ('"grants": [],', "line 2 (grants)", "grants are valid for headscale but not modelled"),
        ('"tests": {},', "line 2 (tests)", "expected a list"),
    ],
)
def test_section_errors_name_the_line_and_path(section, location, detail):
    message = error_of("{\n  " + section + "\n}\n")
    assert f"policy file t.hujson: {location}: " in message
    assert detail in message


def test_top_level_must_be_an_object():
    assert "line 1 (top level): expected an object, found a list" in error_of("[]")


# --- load_policy -------------------------------------------------------------------------------


def test_load_policy_reads_a_file(tmp_path):
    path = tmp_path / "guide.hujson"
    path.write_text(RICH, encoding="utf-8")
    assert load_policy(path) == parse_policy(RICH)


def test_load_policy_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.hujson"
    path.write_text(
        '{\n  "acls": [\n    {"action": "accept", "src": ["bob"], "dst": ["*:*"]},\n  ],\n}\n'
    )
    with pytest.raises(InputError) as caught:
        load_policy(path)
    assert caught.value.what == f"policy file {path}"
    assert caught.value.message.startswith("line 3 (acls[0].src[0])")


def test_load_policy_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read it"):
        load_policy(tmp_path / "absent.hujson")


def test_load_policy_rejects_non_utf8(tmp_path):
    path = tmp_path / "latin1.hujson"
    path.write_bytes(b'{"hosts": {"caf\xe9": "10.0.0.1"}}')
    with pytest.raises(InputError, match="not UTF-8"):
        load_policy(path)


# --- editing -----------------------------------------------------------------------------------


def test_with_rule_returns_a_new_policy():
    guide = guide_policy()
    edited = with_rule(guide, "tag:agent-runtime", ["10.20.0.0/16:22", "tag:subnet-router:*"])
    assert guide.acls is not None and len(guide.acls) == 2
    assert edited.acls is not None and len(edited.acls) == 3
    assert [str(d) for d in edited.acls[2].dst] == ["10.20.0.0/16:22", "tag:subnet-router:*"]
    assert edited.acls[:2] == guide.acls
    assert edited.source == guide.source


def test_with_rule_proto_and_allow_all_policy():
    edited = with_rule(parse_policy("{}"), ["*"], "*:53", proto="udp")
    assert edited.acls is not None and edited.acls[0].proto == "udp"


def test_with_rule_validates_and_names_the_path():
    with pytest.raises(InputError) as caught:
        with_rule(guide_policy(), "tag:agent-runtime", ["tag:managed-servers:22", "tag:unknown:22"])
    assert caught.value.what == "Connectivity Guide policy"
    assert caught.value.message.startswith("acls[2].dst[1]: tag 'tag:unknown' is not defined")


def test_without_rule():
    guide = guide_policy()
    edited = without_rule(guide, 0)
    assert edited.acls is not None and guide.acls is not None
    assert edited.acls == guide.acls[1:]
    assert without_rule(without_rule(guide, -1), 0).acls == ()
    with pytest.raises(InputError, match=r"acls\[5\] does not exist"):
        without_rule(guide, 5)


def test_with_group_host_and_tag_owner():
    policy = with_group(guide_policy(), "group:ops", ["carol@", "dave@example.com"])
    policy = with_tag_owner(policy, "tag:legacy", ["group:ops"])
    policy = with_host(policy, "legacy-vlan", "10.20.0.0/16")
    policy = with_rule(policy, "group:ops", ["legacy-vlan:22", "tag:legacy:*"])
    assert policy.groups["group:ops"] == ("carol@", "dave@example.com")
    assert str(policy.hosts["legacy-vlan"]) == "10.20.0.0/16"
    assert policy.acls is not None and policy.acls[-1].dst[0].alias.kind is AliasKind.HOST
    with pytest.raises(InputError, match=r"groups\[\"group:bad\"\]\[0\]: 'carol' is not a user"):
        with_group(policy, "group:bad", ["carol"])
    with pytest.raises(
        InputError, match=r"hosts\.lab: host 'lab' must map to an IP address or CIDR"
    ):
        with_host(policy, "lab", "10.0.0.0/40")
