"""Headscale (v0.29, policy v2) / Tailscale ACL policies: HuJSON parsing, validation, editing.

A policy is HuJSON: JSON plus ``//`` and ``/* */`` comments and trailing commas. Syntax errors
name the line and column of the original text; semantic errors name the line where the
offending value appears and its JSON path (``acls[1].dst[0]``), or only the path for a policy
built in memory by the editing helpers. All errors are :class:`meshcert.errors.InputError`.

Sections modelled: ``acls``, ``groups``, ``tagOwners``, ``hosts``, ``autoApprovers`` and
``tests`` (kept raw). ``ssh``, ``sshTests``, ``nodeAttrs`` and ``randomizeClientPort`` are
accepted and passed through unvalidated (they do not change who can reach what). ``grants``
are rejected: they change reachability and the oracle does not model them. Any other section
is rejected, as headscale does (it decodes with unknown members rejected). Section and field
names must be spelt exactly (headscale also accepts other letter cases; meshcert's canonical
output never needs them).

Validation follows headscale v0.29's policy v2 rules:

* users are written ``name@`` or ``name@domain``; a bare word is a host alias and must be
  defined under ``hosts``;
* groups contain only users (no nested groups);
* every ``tag:`` used in acls, tagOwners or autoApprovers must be a key of ``tagOwners``, and a
  tag name starts with a letter;
* ``autogroup:member`` and ``autogroup:tagged`` are the only autogroups modelled (others,
  valid for headscale, are rejected as not modelled);
* a destination is ``<alias>:<ports>`` split at the LAST colon (``fd7a:115c:a1e0::1:22``),
  or ``[<ipv6>]:<ports>``; ports are ``*``, a port, a range ``lo-hi`` or a comma list of
  those, each port in 1-65535 (meshcert also rejects the ``0`` headscale tolerates in ranges);
* ``proto`` is an IANA name or number; protocols other than tcp, udp and sctp take only
  the ``*`` port;
* a policy without an ``acls`` section is valid and headscale then allows all traffic
  (``Policy.acls is None``); an empty ``acls`` list denies everything.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from meshcert.errors import InputError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
JsonPath = tuple[str | int, ...]

_HUJSON_FIX = (
    "correct the syntax there (HuJSON is JSON plus // and /* */ comments and trailing commas)"
)

# ---------------------------------------------------------------------------------------------
# HuJSON


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS: tuple[tuple[str, Any], ...] = (("true", True), ("false", False), ("null", None))


class _HuJSONParser:
    """Recursive-descent HuJSON parser that records the line of every value by JSON path."""

    def __init__(self, text: str, what: str):
        self.text = text
        self.what = what
        self.pos = 0
        self.lines: dict[JsonPath, int] = {}
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def parse(self) -> Any:
        value = self._value(())
        self._skip()
        if self.pos < len(self.text):
            raise self._fail(f"unexpected {self._found()} after the end of the policy object")
        return value

    def _location(self, pos: int) -> tuple[int, int]:
        index = bisect_right(self._line_starts, pos) - 1
        return index + 1, pos - self._line_starts[index] + 1

    def _fail(self, message: str, pos: int | None = None) -> InputError:
        line, column = self._location(self.pos if pos is None else pos)
        return InputError(self.what, f"line {line}, column {column}: {message}", _HUJSON_FIX)

    def _peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def _found(self) -> str:
        return repr(self._peek()) if self.pos < len(self.text) else "end of input"

    def _skip(self) -> None:
        text = self.text
        while self.pos < len(text):
            if text[self.pos] in " \t\r\n":
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self._fail("unterminated /* comment")
                self.pos = end + 2
            else:
                return

    def _value(self, path: JsonPath) -> Any:
        self._skip()
        self.lines.setdefault(path, self._location(self.pos)[0])
        char = self._peek()
        if char == "{":
            return self._object(path)
        if char == "[":
            return self._array(path)
        if char == '"':
            return self._string()
        for literal, value in _LITERALS:
            if self.text.startswith(literal, self.pos):
                self.pos += len(literal)
                return value
        number = _NUMBER.match(self.text, self.pos)
        if number:
            self.pos = number.end()
            token = number.group()
            return float(token) if any(c in token for c in ".eE") else int(token)
        raise self._fail(f"expected a value, found {self._found()}")

    def _separator(self, closer: str, value_end: int) -> bool:
        """Consume ``,`` (True: more may follow) or the closer (False) after a member."""
        self._skip()
        char = self._peek()
        if char == ",":
            self.pos += 1
            return True
        if char == closer:
            self.pos += 1
            return False
        found_line = self._location(self.pos)[0]
        found = f"{self._found()} on line {found_line}"
        raise self._fail(f"expected ',' or {closer!r} after this value, found {found}", value_end)

    def _object(self, path: JsonPath) -> dict[str, Any]:
        self.pos += 1
        result: dict[str, Any] = {}
        while True:
            self._skip()
            if self._peek() == "}":
                self.pos += 1
                return result
            if self._peek() != '"':
                raise self._fail(f"expected a quoted key or '}}', found {self._found()}")
            key_pos = self.pos
            key = self._string()
            if key in result:
                raise self._fail(f"duplicate key {key!r}", key_pos)
            self.lines[(*path, key)] = self._location(key_pos)[0]
            self._skip()
            if self._peek() != ":":
                raise self._fail(f"expected ':' after key {key!r}, found {self._found()}")
            self.pos += 1
            result[key] = self._value((*path, key))
            if not self._separator("}", self.pos):
                return result

    def _array(self, path: JsonPath) -> list[Any]:
        self.pos += 1
        result: list[Any] = []
        while True:
            self._skip()
            if self._peek() == "]":
                self.pos += 1
                return result
            result.append(self._value((*path, len(result))))
            if not self._separator("]", self.pos):
                return result

    def _string(self) -> str:
        start = self.pos
        index = start + 1
        text = self.text
        while True:
            if index >= len(text):
                raise self._fail("unterminated string", start)
            char = text[index]
            if char == '"':
                break
            if char == "\\":
                index += 2
                continue
            if char < " ":
                raise self._fail("control character or line break inside a string", index)
            index += 1
        self.pos = index + 1
        try:
            value: str = json.loads(text[start : index + 1])
        except json.JSONDecodeError as exc:
            raise self._fail(f"invalid string escape ({exc.msg})", start + exc.pos) from None
        return value


# ---------------------------------------------------------------------------------------------
# Policy model


class AliasKind(Enum):
    WILDCARD = "wildcard"
    USER = "user"
    GROUP = "group"
    TAG = "tag"
    AUTOGROUP = "autogroup"
    HOST = "host alias"
    PREFIX = "IP or CIDR"


@dataclass(frozen=True)
class Alias:
    """One policy alias as written (normalised); ``network`` is set for HOST and PREFIX."""

    kind: AliasKind
    name: str
    network: Network | None = None

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class PortSet:
    """A set of ports as sorted, merged, inclusive ranges within 1-65535."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, *ranges: tuple[int, int]) -> PortSet:
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        return cls(tuple(merged))

    @classmethod
    def parse(cls, text: str) -> PortSet:
        """Parse ``*``, ``22``, ``1000-2000`` or a comma list; raise ValueError with the reason."""
        if text == "*":
            return ALL_PORTS
        ranges = []
        for part in text.split(","):
            lo_text, dash, hi_text = part.partition("-")
            lo = _port(lo_text, part)
            hi = _port(hi_text, part) if dash else lo
            if lo > hi:
                raise ValueError(f"port range {part!r} has lo > hi ({lo} > {hi})")
            ranges.append((lo, hi))
        return cls.of(*ranges)

    @property
    def is_all(self) -> bool:
        return self == ALL_PORTS

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and any(lo <= port <= hi for lo, hi in self.ranges)

    def __str__(self) -> str:
        if self.is_all:
            return "*"
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)


def _port(text: str, part: str) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError(f"invalid port {text!r} in {part!r} (use *, 22, 1000-2000 or 22,443)")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range 1-65535")
    return port


ALL_PORTS = PortSet(((1, 65535),))


class Destination(NamedTuple):
    alias: Alias
    ports: PortSet

    def __str__(self) -> str:
        return f"{self.alias}:{self.ports}"


@dataclass(frozen=True)
class Rule:
    """An ``accept`` rule; ``proto`` is a canonical IANA name or number, None for the default."""

    src: tuple[Alias, ...]
    dst: tuple[Destination, ...]
    proto: str | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"action": "accept", "src": [str(a) for a in self.src]}
        if self.proto is not None:
            data["proto"] = self.proto
        data["dst"] = [str(d) for d in self.dst]
        return data


@dataclass(frozen=True)
class AutoApprovers:
    routes: Mapping[Network, tuple[Alias, ...]] = field(default_factory=dict)
    exit_node: tuple[Alias, ...] = ()

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.routes:
            data["routes"] = {
                str(net): [str(a) for a in owners]
                for net, owners in sorted(self.routes.items(), key=lambda item: str(item[0]))
            }
        if self.exit_node:
            data["exitNode"] = [str(a) for a in self.exit_node]
        return data


@dataclass(frozen=True)
class Policy:
    """A validated policy. ``acls is None`` means no acls section: headscale allows everything."""

    acls: tuple[Rule, ...] | None
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tag_owners: Mapping[str, tuple[Alias, ...]] = field(default_factory=dict)
    hosts: Mapping[str, Network] = field(default_factory=dict)
    auto_approvers: AutoApprovers = field(default_factory=AutoApprovers)
    tests: tuple[Any, ...] = ()
    passthrough: Mapping[str, Any] = field(default_factory=dict)
    source: str = field(default="<policy>", compare=False)

    def to_data(self) -> dict[str, Any]:
        """Canonical plain JSON: fixed section order, sorted map keys, empty sections omitted."""
        data: dict[str, Any] = {}
        if self.groups:
            data["groups"] = {name: list(self.groups[name]) for name in sorted(self.groups)}
        if self.tag_owners:
            data["tagOwners"] = {
                tag: [str(a) for a in self.tag_owners[tag]] for tag in sorted(self.tag_owners)
            }
        if self.hosts:
            data["hosts"] = {name: _network_text(self.hosts[name]) for name in sorted(self.hosts)}
        if self.acls is not None:
            data["acls"] = [rule.to_data() for rule in self.acls]
        auto = self.auto_approvers.to_data()
        if auto:
            data["autoApprovers"] = auto
        data.update(self.passthrough)
        if self.tests:
            data["tests"] = list(self.tests)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_data(), indent=2) + "\n"


# ---------------------------------------------------------------------------------------------
# Validation


_MODELLED_SECTIONS = ("groups", "hosts", "tagOwners", "acls", "autoApprovers", "tests")
_PASSTHROUGH_SECTIONS = ("ssh", "sshTests", "nodeAttrs", "randomizeClientPort")
_RULE_FIELDS = ("action", "src", "dst", "proto")
_AUTO_APPROVER_FIELDS = ("routes", "exitNode")
_AUTOGROUPS = ("autogroup:member", "autogroup:tagged")
_TAG = re.compile(r"tag:[A-Za-z][A-Za-z0-9_.-]*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IP_LIKE = re.compile(r"(?=.*[0-9])[0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]*(/.*)?|[0-9]+/.*")
_PROTOCOLS = {
    "icmp": 1,
    "igmp": 2,
    "ipv4": 4,
    "ip-in-ip": 4,
    "tcp": 6,
    "egp": 8,
    "igp": 9,
    "udp": 17,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "ipv6-icmp": 58,
    "sctp": 132,
    "fc": 133,
}
_PROTOCOL_NAMES = {number: name for name, number in reversed(_PROTOCOLS.items())}
_PORT_PROTOCOLS = ("tcp", "udp", "sctp")
_ALL_KINDS = frozenset(AliasKind)
_OWNER_KINDS = frozenset({AliasKind.USER, AliasKind.GROUP, AliasKind.TAG})


def _format_path(path: JsonPath) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text or "top level"


def _network_text(network: Network) -> str:
    """A single address prints bare (``10.0.0.1``), a wider prefix as CIDR."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _parse_network(text: str) -> Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Located:
    """Builds InputErrors that name the input, the line (when known) and the JSON path."""

    what: str
    lines: Mapping[JsonPath, int]

    def error(self, path: JsonPath, message: str, fix: str = "") -> InputError:
        where = _format_path(path)
        for depth in range(len(path), -1, -1):
            line = self.lines.get(path[:depth])
            if line is not None:
                return InputError(self.what, f"line {line} ({where}): {message}", fix)
        return InputError(self.what, f"{where}: {message}", fix)

    def object(
        self, path: JsonPath, value: Any, fields: Sequence[str], noun: str
    ) -> dict[str, Any]:
        """Check a JSON object whose keys (``noun``s) must be among ``fields``."""
        if not isinstance(value, dict):
            raise self.error(path, f"expected an object, found {_json_type(value)}")
        for key in value:
            if key not in fields:
                spelt = [name for name in fields if name.lower() == key.lower()]
                fix = f"write {spelt[0]!r}" if spelt else f"use only {', '.join(fields)}"
                raise self.error((*path, key), f"unknown {noun} {key!r}", fix)
        return value

    def mapping(self, path: JsonPath, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"expected an object, found {_json_type(value)}")
        return value

    def strings(self, path: JsonPath, value: Any) -> list[str]:
        if not isinstance(value, list):
            raise self.error(path, f"expected a list of strings, found {_json_type(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error((*path, index), f"expected a string, found {_json_type(item)}")
        return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"the number {value}"


@dataclass(frozen=True)
class _Scope:
    """Names an alias may refer to."""

    groups: frozenset[str]
    tags: frozenset[str]
    hosts: Mapping[str, Network]


def _syntactic_kind(token: str) -> AliasKind:
    """The kind of a token that is not an IP address or CIDR."""
    if token == "*":
        return AliasKind.WILDCARD
    for prefix, kind in (
        ("tag:", AliasKind.TAG),
        ("group:", AliasKind.GROUP),
        ("autogroup:", AliasKind.AUTOGROUP),
    ):
        if token.startswith(prefix):
            return kind
    return AliasKind.USER if "@" in token else AliasKind.HOST


def _kinds_text(kinds: frozenset[AliasKind]) -> str:
    return ", ".join(kind.value for kind in AliasKind if kind in kinds)


def _alias(
    loc: _Located, path: JsonPath, raw: str, scope: _Scope, role: str, kinds: frozenset[AliasKind]
) -> Alias:
    """Parse and check one alias ``raw`` used as ``role`` (e.g. "an ACL source")."""
    token = raw.strip()
    network = _parse_network(token)
    kind = AliasKind.PREFIX if network is not None else _syntactic_kind(token)
    if kind is AliasKind.HOST and token not in scope.hosts:
        if _IP_LIKE.fullmatch(token):
            raise loc.error(
                path,
                f"malformed IP address or CIDR {token!r}",
                "write an address like 10.20.5.7 or fd7a:115c:a1e0::1, or a CIDR like 10.20.0.0/16",
            )
        if ":" in token:
            raise loc.error(
                path,
                f"{token!r} is not an alias: expected *, tag:, group:, autogroup:, user@, "
                "a host name, an IP address or a CIDR",
            )
        if AliasKind.HOST in kinds:
            message = f"{token!r} is neither a user nor a host defined in hosts"
            fix = f"write {token + '@'!r} for the user {token!r}, or define {token!r} under hosts"
        else:
            message = f"{token!r} is not a user"
            fix = f"write {token + '@'!r} for the user {token!r}"
        raise loc.error(path, f"{message} (policy v2 users end with '@')", fix)
    if kind not in kinds:
        raise loc.error(
            path, f"{token!r} ({kind.value}) cannot be {role}; allowed: {_kinds_text(kinds)}"
        )
    if network is not None:
        name = _network_text(network) if "/" in token else str(network.network_address)
        return Alias(kind, name, network)
    if kind is AliasKind.HOST:
        return Alias(kind, token, scope.hosts[token])
    if kind is AliasKind.TAG and not _TAG.fullmatch(token):
        raise loc.error(
            path,
            f"malformed tag {token!r}: the name after 'tag:' must start with a letter "
            "and contain only letters, digits, '-', '_' and '.'",
        )
    if kind is AliasKind.TAG and token not in scope.tags:
        raise loc.error(
            path,
            f"tag {token!r} is not defined in tagOwners (headscale rejects such policies)",
            f'add "{token}": ["<owner>@"] to tagOwners',
        )
    if kind is AliasKind.GROUP and token not in scope.groups:
        raise loc.error(
            path, f"group {token!r} is not defined in groups", f"define {token!r} under groups"
        )
    if kind is AliasKind.AUTOGROUP and token not in _AUTOGROUPS:
        raise loc.error(
            path,
            f"{token!r} is not supported by meshcert's model",
            f"use one of {', '.join(_AUTOGROUPS)}",
        )
    return Alias(kind, token)


def _parse_groups(loc: _Located, raw: Any) -> dict[str, tuple[str, ...]]:
    groups: dict[str, tuple[str, ...]] = {}
    no_names = _Scope(frozenset(), frozenset(), {})
    for name, members in loc.mapping(("groups",), raw).items():
        path: JsonPath = ("groups", name)
        if not name.startswith("group:") or name == "group:":
            raise loc.error(path, f"group name {name!r} must look like 'group:<name>'")
        checked = []
        for index, member in enumerate(loc.strings(path, members)):
            if member.strip().startswith("group:"):
                raise loc.error((*path, index), f"groups cannot contain other groups ({member!r})")
            alias = _alias(
                loc, (*path, index), member, no_names, "a group member", frozenset({AliasKind.USER})
            )
            checked.append(alias.name)
        groups[name] = tuple(checked)
    return groups


def _parse_hosts(loc: _Located, raw: Any) -> dict[str, Network]:
    hosts: dict[str, Network] = {}
    for name, value in loc.mapping(("hosts",), raw).items():
        path: JsonPath = ("hosts", name)
        if not name or "@" in name or ":" in name or _parse_network(name) is not None:
            raise loc.error(
                path, f"host name {name!r} must be a plain name (no '@' or ':', not an IP)"
            )
        network = _parse_network(value) if isinstance(value, str) else None
        if network is None:
            raise loc.error(
                path,
                f"host {name!r} must map to an IP address or CIDR, found {_json_type(value)}",
                "write an address like 10.20.5.7 or a CIDR like 10.20.0.0/16",
            )
        hosts[name] = network
    return hosts


def _parse_owners(
    loc: _Located, path: JsonPath, raw: Any, scope: _Scope, role: str
) -> tuple[Alias, ...]:
    return tuple(
        _alias(loc, (*path, index), owner, scope, role, _OWNER_KINDS)
        for index, owner in enumerate(loc.strings(path, raw))
    )


def _parse_tag_owners(loc: _Located, raw: Any, scope: _Scope) -> dict[str, tuple[Alias, ...]]:
    owners: dict[str, tuple[Alias, ...]] = {}
    for tag, value in loc.mapping(("tagOwners",), raw).items():
        path: JsonPath = ("tagOwners", tag)
        if not _TAG.fullmatch(tag):
            raise loc.error(
                path,
                f"malformed tag {tag!r}: must be 'tag:<name>' with a name starting with a letter",
            )
        owners[tag] = _parse_owners(loc, path, value, scope, "a tag owner")
    return owners


def _parse_proto(loc: _Located, path: JsonPath, raw: Any) -> str:
    if not isinstance(raw, str):
        raise loc.error(path, f"proto must be a string, found {_json_type(raw)}")
    proto = raw.lower()
    if proto in _PROTOCOLS:
        return proto
    if re.fullmatch(r"[1-9][0-9]{0,2}", proto) and int(proto) <= 255:
        return _PROTOCOL_NAMES.get(int(proto), proto)
    raise loc.error(
        path,
        f"unknown proto {raw!r}",
        f"use an IANA protocol number 1-255 (no leading zeros) or one of {', '.join(_PROTOCOLS)}",
    )


def _parse_destination(loc: _Located, path: JsonPath, raw: str, scope: _Scope) -> Destination:
    token = raw.strip()
    if token.startswith("["):
        inner, bracket, rest = token[1:].partition("]")
        ipv6 = "/" not in inner and isinstance(_parse_network(inner), ipaddress.IPv6Network)
        if not (bracket and ipv6) or rest[:1] not in (":", "/"):
            raise loc.error(
                path,
                f"bracketed destination {raw!r} must be '[<IPv6 address>]:<ports>'",
                "brackets are only valid around an IPv6 address",
            )
        token = inner + rest
    alias_text, colon, ports_text = token.rpartition(":")
    if colon and not alias_text:
        raise loc.error(path, f"destination {raw!r} has no alias before the ':'")
    whole = _parse_network(token)
    no_port = not colon or (
        whole is not None and ":" in alias_text and _parse_network(alias_text) is None
    )
    if no_port or alias_text in ("tag", "group", "autogroup"):
        raise loc.error(
            path,
            f"destination {raw!r} has no port (the ports follow the last ':')",
            f"write {raw.strip() + ':*'!r} for all ports or {raw.strip() + ':22'!r} for one",
        )
    try:
        ports = PortSet.parse(ports_text)
    except ValueError as exc:
        raise loc.error(path, f"destination {raw!r}: {exc}") from None
    return Destination(
        _alias(loc, path, alias_text, scope, "an ACL destination", _ALL_KINDS), ports
    )


def _parse_rule(loc: _Located, path: JsonPath, raw: Any, scope: _Scope) -> Rule:
    if isinstance(raw, dict):  # headscale ignores "#"-prefixed fields (headscale-admin metadata)
        raw = {key: value for key, value in raw.items() if not key.startswith("#")}
    fields = loc.object(path, raw, _RULE_FIELDS, "rule field")
    for required in ("action", "src", "dst"):
        if required not in fields:
            raise loc.error(path, f"the rule has no {required!r}")
    if fields["action"] != "accept":
        raise loc.error(
            (*path, "action"),
            f"unknown action {fields['action']!r}",
            'use "accept": ACLs only grant access, everything else is denied',
        )
    src = tuple(
        _alias(loc, (*path, "src", index), token, scope, "an ACL source", _ALL_KINDS)
        for index, token in enumerate(loc.strings((*path, "src"), fields["src"]))
    )
    dst = tuple(
        _parse_destination(loc, (*path, "dst", index), token, scope)
        for index, token in enumerate(loc.strings((*path, "dst"), fields["dst"]))
    )
    proto = _parse_proto(loc, (*path, "proto"), fields["proto"]) if "proto" in fields else None
    if proto is not None and proto not in _PORT_PROTOCOLS:
        for index, destination in enumerate(dst):
            if not destination.ports.is_all:
                raise loc.error(
                    (*path, "dst", index),
                    f"protocol {proto!r} has no ports, so {str(destination)!r} is invalid",
                    f"write {destination.alias.name + ':*'!r}",
                )
    return Rule(src, dst, proto)


def _parse_auto_approvers(loc: _Located, raw: Any, scope: _Scope) -> AutoApprovers:
    fields = loc.object(("autoApprovers",), raw, _AUTO_APPROVER_FIELDS, "autoApprovers field")
    routes: dict[Network, tuple[Alias, ...]] = {}
    for prefix, owners in loc.mapping(
        ("autoApprovers", "routes"), fields.get("routes", {})
    ).items():
        path: JsonPath = ("autoApprovers", "routes", prefix)
        network = _parse_network(prefix)
        if network is None:
            raise loc.error(
                path, f"malformed route CIDR {prefix!r}", "write a CIDR like 10.20.0.0/16"
            )
        routes[network] = _parse_owners(loc, path, owners, scope, "an auto approver")
    exit_node = _parse_owners(
        loc, ("autoApprovers", "exitNode"), fields.get("exitNode", []), scope, "an auto approver"
    )
    return AutoApprovers(routes, exit_node)


def _build(data: Any, what: str, lines: Mapping[JsonPath, int]) -> Policy:
    loc = _Located(what, lines)
    if isinstance(data, dict) and "grants" in data:
        raise loc.error(
            ("grants",),
            "grants are valid for headscale but not modelled by meshcert",
            "express the access as acls rules",
        )
    top = loc.object((), data, _MODELLED_SECTIONS + _PASSTHROUGH_SECTIONS, "section")
    groups = _parse_groups(loc, top.get("groups", {}))
    hosts = _parse_hosts(loc, top.get("hosts", {}))
    tag_names = frozenset(loc.mapping(("tagOwners",), top.get("tagOwners", {})))
    scope = _Scope(frozenset(groups), tag_names, hosts)
    tag_owners = _parse_tag_owners(loc, top.get("tagOwners", {}), scope)
    acls = None
    if "acls" in top:
        if not isinstance(top["acls"], list):
            raise loc.error(("acls",), f"expected a list of rules, found {_json_type(top['acls'])}")
        acls = tuple(
            _parse_rule(loc, ("acls", i), rule, scope) for i, rule in enumerate(top["acls"])
        )
    auto_approvers = _parse_auto_approvers(loc, top.get("autoApprovers", {}), scope)
    tests = top.get("tests", [])
    if not isinstance(tests, list):
        raise loc.error(("tests",), f"expected a list, found {_json_type(tests)}")
    passthrough = {name: top[name] for name in _PASSTHROUGH_SECTIONS if name in top}
    return Policy(acls, groups, tag_owners, hosts, auto_approvers, tuple(tests), passthrough, what)


# ---------------------------------------------------------------------------------------------
# Public entry points


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate HuJSON policy ``text``; ``source`` names it in errors."""
    parser = _HuJSONParser(text.removeprefix("\ufeff"), source)
    data = parser.parse()
    return _build(data, source, parser.lines)


def load_policy(path: str | os.PathLike[str]) -> Policy:
    what = f"policy file {os.fspath(path)}"
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise InputError(what, f"cannot read it: {exc.strerror}", "check the path") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            what, f"not UTF-8 text ({exc.reason} at byte {exc.start})", "save it as UTF-8"
        ) from None
    return parse_policy(text, what)


_GUIDE_POLICY = """\
// Connectivity Guide policy: the agent runtime reaches managed servers over SSH and managed
// databases over PostgreSQL and MySQL. Everything else is denied.
{
  "tagOwners": {
    "tag:agent-runtime": ["meshcert@"],
    "tag:managed-servers": ["meshcert@"],
    "tag:managed-databases": ["meshcert@"],
    "tag:subnet-router": ["meshcert@"],
  },
  "acls": [
    {"action": "accept", "src": ["tag:agent-runtime"], "dst": ["tag:managed-servers:22"]},
    {"action": "accept", "src": ["tag:agent-runtime"], "dst": ["tag:managed-databases:5432,3306"]},
  ],
}
"""


def guide_policy() -> Policy:
    """The Connectivity Guide's policy with the tagOwners headscale needs to accept it."""
    return parse_policy(_GUIDE_POLICY, "Connectivity Guide policy")


# ---------------------------------------------------------------------------------------------
# Editing: each helper returns a new, re-validated Policy (errors name JSON paths).


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _rebuilt(policy: Policy, data: dict[str, Any]) -> Policy:
    return _build(data, policy.source, {})


def with_rule(
    policy: Policy, src: str | Sequence[str], dst: str | Sequence[str], proto: str | None = None
) -> Policy:
    """Append ``{"action": "accept", "src": src, "dst": dst[, "proto": proto]}``."""
    rule: dict[str, Any] = {"action": "accept", "src": _as_list(src), "dst": _as_list(dst)}
    if proto is not None:
        rule["proto"] = proto
    data = policy.to_data()
    data["acls"] = [*data.get("acls", []), rule]
    return _rebuilt(policy, data)


def without_rule(policy: Policy, index: int) -> Policy:
    """Remove ``acls[index]`` (an empty acls list stays: it denies everything)."""
    data = policy.to_data()
    rules = list(data.get("acls", []))
    if not -len(rules) <= index < len(rules):
        raise InputError(
            policy.source, f"acls[{index}] does not exist (the policy has {len(rules)} rules)"
        )
    del rules[index]
    data["acls"] = rules
    return _rebuilt(policy, data)


def with_group(policy: Policy, name: str, members: Sequence[str]) -> Policy:
    """Define or replace group ``name``."""
    data = policy.to_data()
    data["groups"] = {**data.get("groups", {}), name: list(members)}
    return _rebuilt(policy, data)


def with_tag_owner(policy: Policy, tag: str, owners: Sequence[str]) -> Policy:
    """Define or replace the owners of ``tag``."""
    data = policy.to_data()
    data["tagOwners"] = {**data.get("tagOwners", {}), tag: list(owners)}
    return _rebuilt(policy, data)


def with_host(policy: Policy, name: str, address: str) -> Policy:
    """Define or replace host alias ``name`` (an IP address or CIDR)."""
    data = policy.to_data()
    data["hosts"] = {**data.get("hosts", {}), name: address}
    return _rebuilt(policy, data)
