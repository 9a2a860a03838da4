"""Expected reachability ("the oracle") for a policy, a set of tailnet nodes and their routes.

``Oracle(policy, nodes, hosts).allowed(src, dst, port)`` says whether a connection from tailnet
node ``src`` to ``dst`` (an address, a node name or a ``Host`` name) on ``port`` should succeed,
with a human-readable reason.

Semantics implemented
---------------------
* **Default deny, first match explains.** A flow is allowed iff some ``accept`` rule matches
  it; the reason names the first such rule (``acls[1] allows tag:a -> tag:b:5432``). A policy
  without an ``acls`` section (``Policy.acls is None``) allows everything: headscale installs
  an allow-all filter when a policy has neither acls nor grants. An empty list denies all.
* **Directional.** A rule ``A -> B:port`` lets A open connections to B; replies on that
  connection are not separate flows, but B -> A needs its own rule.
* **Protocols.** Probes are tcp (default), udp or sctp. A rule without ``proto`` covers TCP and
  UDP (and ICMP, which is not probed); a rule with ``proto`` covers only that protocol.
* **Sources** are tailnet nodes. Identity aliases match a node: ``tag:x`` nodes carrying the
  tag; ``user@`` and ``group:g`` only *untagged* nodes of that user / of users in the group (a
  tagged node is owned by its tags and has no user identity: headscale >= 0.28);
  ``autogroup:member`` untagged nodes; ``autogroup:tagged`` tagged nodes; ``*`` any node.
  Address aliases (IP, CIDR, host alias) match the packet's source address, i.e. the node's
  address of the destination's IP family (a node with no such address cannot send).
* **Destinations that are tailnet node addresses.** Identity aliases match the node (all its
  addresses); address aliases match only the destination address itself (headscale resolves
  them to the literal prefix, never to the node's other addresses); ``*`` matches. The node
  must be online. A node always reaches its own addresses without any rule.
* **Other destinations** are reachable only through a subnet route, checked in this order:
  1. some other node advertises a route containing the address, else "no approved route
     covers <addr>";
  2. that route is approved: exactly listed in the router's ``approved_routes``, or
     auto-approved because a prefix of ``autoApprovers.routes`` contains it and lists the
     router's tag / user / group; else "route advertised but not approved";
  3. a router serving it is online (most specific online route wins, as in client routing);
  4. the source has ``accept_routes=True`` (``tailscale set --accept-routes``), else "source
     does not accept routes";
  5. a rule allows the source to the address by IP, CIDR, host alias or ``*`` (``*`` includes
     approved subnet routes). Identity aliases of the router (``tag:subnet-router:22``) cover
     only the router's own addresses, never the network behind it; else "no rule matches".
  Exit routes (``0.0.0.0/0``, ``::/0``) are not subnet routes and are ignored. A router reaches
  addresses inside its own advertised routes directly on its LAN, without the tailnet policy.

Sources relied on: Tailscale's documentation — "Manage permissions using ACLs"
(https://tailscale.com/kb/1018/acls: default deny, directional rules), "Tailnet policy file
syntax" (https://tailscale.com/kb/1337/policy-syntax: src/dst aliases, ports, proto, hosts,
groups, tagOwners, autoApprovers, ``*`` including subnet routes), "Subnet routers"
(https://tailscale.com/kb/1019/subnets: advertise + approve + --accept-routes, ACLs must grant
the subnet addresses) and "Tags" (https://tailscale.com/kb/1068/tags: tagged devices lose their
user identity) — recalled, not re-fetched; and headscale v0.29.2's own docs (docs/ref/routes.md,
docs/ref/tags.md) and policy v2 code read from the Go module cache (allow-all without acls,
approval as exact match of announced and approved routes, auto-approval of sub-prefixes,
address aliases resolving to the literal prefix).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from meshcert.errors import InputError
from meshcert.policy import Alias, AliasKind, Network, Policy

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Probe = tuple[str, str, int]

_DEFAULT_PROTOCOLS = ("tcp", "udp")
_PROBE_PROTOCOLS = ("tcp", "udp", "sctp")
_TOPOLOGY = "oracle topology"
_PROBE = "oracle probe"


@dataclass(frozen=True)
class Node:
    """A tailnet node. ``user`` is the headscale user name or email; ignored when tagged."""

    name: str
    tags: frozenset[str]
    user: str | None
    addresses: tuple[str, ...]
    advertised_routes: tuple[str, ...] = ()
    approved_routes: tuple[str, ...] = ()
    accept_routes: bool = False
    online: bool = True


@dataclass(frozen=True)
class Host:
    """A machine outside the tailnet, e.g. a legacy host on a VLAN behind a subnet router."""

    name: str
    address: str


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str


@dataclass(frozen=True)
class _Route:
    prefix: Network
    router: Node
    approval: str | None  # how the route was approved; None: advertised but not approved


def _covers(alias: Alias, address: Address) -> bool:
    return alias.network is not None and address in alias.network


def _same_user(token: str, user: str | None) -> bool:
    return user is not None and token.removesuffix("@") == user.removesuffix("@")


def _proto_matches(rule_proto: str | None, proto: str) -> bool:
    return proto in _DEFAULT_PROTOCOLS if rule_proto is None else rule_proto == proto


def _address(text: str, what: str) -> Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InputError(_TOPOLOGY, f"{what}: {text!r} is not an IP address") from None


def _prefix(text: str, what: str) -> Network:
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        raise InputError(_TOPOLOGY, f"{what}: route {text!r} is not a CIDR ({exc})") from None


class Oracle:
    def __init__(self, policy: Policy, nodes: Iterable[Node], hosts: Iterable[Host] = ()):
        self.policy = policy
        self.nodes: dict[str, Node] = {}
        self._addresses: dict[str, tuple[Address, ...]] = {}
        self._names: dict[Address, str] = {}
        self._node_at: dict[Address, Node] = {}
        self._hosts: dict[str, Address] = {}
        for node in nodes:
            self._add_node(node)
        for host in hosts:
            self._add_host(host)
        self._approved = {
            node.name: frozenset(_prefix(r, f"node {node.name!r}") for r in node.approved_routes)
            for node in self.nodes.values()
        }
        self._routes = [
            _Route(prefix, node, self._approval(node, prefix))
            for node in self.nodes.values()
            for prefix in (_prefix(r, f"node {node.name!r}") for r in node.advertised_routes)
            if prefix.prefixlen > 0
        ]

    def _add_node(self, node: Node) -> None:
        what = f"node {node.name!r}"
        if node.name in self.nodes:
            raise InputError(_TOPOLOGY, f"{what} is defined twice")
        for tag in node.tags:
            if not tag.startswith("tag:"):
                raise InputError(_TOPOLOGY, f"{what}: tag {tag!r} must start with 'tag:'")
        if not node.tags and not node.user:
            raise InputError(_TOPOLOGY, f"{what} has neither tags nor a user", "give it one")
        if not node.addresses:
            raise InputError(_TOPOLOGY, f"{what} has no address")
        addresses = tuple(_address(a, what) for a in node.addresses)
        for address in addresses:
            if address in self._names:
                raise InputError(
                    _TOPOLOGY, f"{what}: {address} also belongs to {self._names[address]}"
                )
            self._names[address] = node.name
            self._node_at[address] = node
        self.nodes[node.name] = node
        self._addresses[node.name] = addresses

    def _add_host(self, host: Host) -> None:
        what = f"host {host.name!r}"
        if host.name in self.nodes or host.name in self._hosts:
            raise InputError(_TOPOLOGY, f"{what}: the name is already used")
        address = _address(host.address, what)
        if address in self._names:
            raise InputError(_TOPOLOGY, f"{what}: {address} also belongs to {self._names[address]}")
        self._names[address] = host.name
        self._hosts[host.name] = address

    def _approval(self, router: Node, prefix: Network) -> str | None:
        if prefix in self._approved[router.name]:
            return "approved"
        for approved, approvers in self.policy.auto_approvers.routes.items():
            if (
                approved.version == prefix.version
                and prefix.subnet_of(approved)  # type: ignore[arg-type]
                and any(self._is(alias, router) for alias in approvers)
            ):
                return f"auto-approved by autoApprovers.routes[{approved}]"
        return None

    def _is(self, alias: Alias, node: Node) -> bool:
        """Whether the identity alias ``alias`` designates ``node``."""
        match alias.kind:
            case AliasKind.WILDCARD:
                return True
            case AliasKind.TAG:
                return alias.name in node.tags
            case AliasKind.USER:
                return not node.tags and _same_user(alias.name, node.user)
            case AliasKind.GROUP:
                members = self.policy.groups[alias.name]
                return not node.tags and any(_same_user(m, node.user) for m in members)
            case AliasKind.AUTOGROUP:
                return (alias.name == "autogroup:tagged") == bool(node.tags)
            case _:
                return False

    def _label(self, address: Address) -> str:
        name = self._names.get(address)
        return f"{name} ({address})" if name else str(address)

    def _target(self, dst: str) -> Address:
        if dst in self.nodes:
            return self._addresses[dst][0]
        if dst in self._hosts:
            return self._hosts[dst]
        try:
            return ipaddress.ip_address(dst)
        except ValueError:
            raise InputError(
                _PROBE, f"destination {dst!r} is neither a node, a host nor an IP address"
            ) from None

    def _first_rule(
        self,
        node: Node,
        src_addresses: tuple[Address, ...],
        port: int,
        proto: str,
        dst_matches: Callable[[Alias], bool],
    ) -> str | None:
        """Describe the first rule allowing ``node`` to a destination that ``dst_matches``."""
        for index, rule in enumerate(self.policy.acls or ()):
            if not _proto_matches(rule.proto, proto):
                continue
            src = next(
                (
                    alias
                    for alias in rule.src
                    if self._is(alias, node) or any(_covers(alias, a) for a in src_addresses)
                ),
                None,
            )
            dst = next((d for d in rule.dst if port in d.ports and dst_matches(d.alias)), None)
            if src is not None and dst is not None:
                return f"acls[{index}] allows {src} -> {dst}"
        return None

    def allowed(self, src: str, dst: str, port: int, proto: str = "tcp") -> Verdict:
        """Whether node ``src`` can open a ``proto`` connection to ``dst`` on ``port``.

        ``dst`` is an IP address, a node name (meaning its first address) or a Host name.
        """
        node = self.nodes.get(src)
        if node is None:
            raise InputError(
                _PROBE,
                f"unknown source node {src!r}",
                f"use one of {', '.join(sorted(self.nodes))}",
            )
        if not 1 <= port <= 65535:
            raise InputError(_PROBE, f"port {port} out of range 1-65535")
        if proto not in _PROBE_PROTOCOLS:
            raise InputError(
                _PROBE,
                f"unsupported protocol {proto!r}",
                f"use one of {', '.join(_PROBE_PROTOCOLS)}",
            )
        target = self._target(dst)
        label = self._label(target)
        if not node.online:
            return Verdict(False, f"source {src} is offline")
        if target in self._addresses[src]:
            return Verdict(True, f"{label} is {src} itself: a node always reaches itself")
        src_addresses = tuple(a for a in self._addresses[src] if a.version == target.version)
        if not src_addresses:
            return Verdict(
                False, f"source {src} has no IPv{target.version} address to reach {label}"
            )
        dst_node = self._node_at.get(target)
        if dst_node is None:
            return self._through_route(node, src_addresses, target, port, proto)
        if not dst_node.online:
            return Verdict(False, f"destination node {dst_node.name} is offline")
        return self._decide(
            node,
            src_addresses,
            target,
            port,
            proto,
            lambda alias: self._is(alias, dst_node) or _covers(alias, target),
        )

    def _decide(
        self,
        node: Node,
        src_addresses: tuple[Address, ...],
        target: Address,
        port: int,
        proto: str,
        dst_matches: Callable[[Alias], bool],
        via: str = "",
    ) -> Verdict:
        if self.policy.acls is None:
            return Verdict(
                True, f"the policy has no acls section: headscale allows all traffic{via}"
            )
        rule = self._first_rule(node, src_addresses, port, proto, dst_matches)
        if rule is not None:
            return Verdict(True, rule + via)
        flow = f"{node.name} -> {self._label(target)} port {port}/{proto}"
        return Verdict(False, f"no rule matches {flow}{via}")

    def _through_route(
        self, node: Node, src_addresses: tuple[Address, ...], target: Address, port: int, proto: str
    ) -> Verdict:
        label = self._label(target)
        covering = [route for route in self._routes if target in route.prefix]
        own = [route for route in covering if route.router is node]
        if own:
            return Verdict(
                True,
                f"{node.name} itself advertises {own[0].prefix}: it reaches {label} on its own "
                "network, outside the tailnet policy",
            )
        if not covering:
            return Verdict(
                False,
                f"no approved route covers {label}: it is not a tailnet address and no node "
                "advertises a route to it",
            )
        approved = [route for route in covering if route.approval]
        if not approved:
            routes = ", ".join(f"{r.prefix} by {r.router.name}" for r in covering)
            return Verdict(False, f"route advertised but not approved: {routes} (covers {label})")
        serving = sorted(
            (route for route in approved if route.router.online),
            key=lambda route: route.prefix.prefixlen,
            reverse=True,
        )
        if not serving:
            routers = ", ".join(sorted({route.router.name for route in approved}))
            return Verdict(False, f"no online router for {label}: {routers} offline")
        route = serving[0]
        if not node.accept_routes:
            return Verdict(
                False,
                f"source does not accept routes: {node.name} has accept_routes=False, so it "
                f"ignores {route.prefix} advertised by {route.router.name}",
            )
        verdict = self._decide(
            node,
            src_addresses,
            target,
            port,
            proto,
            lambda alias: alias.kind is AliasKind.WILDCARD or _covers(alias, target),
            f" via {route.prefix} on {route.router.name} ({route.approval})",
        )
        if verdict.allowed:
            return verdict
        router_rule = self._first_rule(
            node, src_addresses, port, proto, lambda alias: self._is(alias, route.router)
        )
        if router_rule is None:
            return verdict
        return Verdict(
            False,
            f"{verdict.reason}; {router_rule} only reaches the router itself, not the "
            "network behind it",
        )

    def matrix(self, probes: Iterable[Probe]) -> dict[Probe, Verdict]:
        """The verdict for each ``(src, dst, port)`` probe (TCP)."""
        return {probe: self.allowed(*probe) for probe in probes}
