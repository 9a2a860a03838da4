"""Property-based differential testing of ACLs and routes: the live world against the oracle.

Hypothesis draws an :class:`Example` -- an ACL policy (0-4 rules; sources among the world's tags,
the user that owns them, autogroup:tagged/member, ``*``, node addresses, the tailnet range, the
VLAN and the legacy host; destinations the same aliases with ports drawn around the served
banner ports as a single port, a list, a range or ``*``) plus route settings (the agent pods'
``acceptRoutes`` and the subnet router's approved routes). :func:`run_example` applies it to the
running world (no container restarts: ``tailscale set``, ``headscale nodes approve-routes`` and
a live policy set, each waited for on the real state), dials the whole probe matrix from inside
the nodes, and compares every pair with :class:`meshcert.property.oracle.Oracle`. A pair where the two
disagree is a :class:`Difference`.

A policy without an ``acls`` section (allow-all in headscale) is never drawn: World.set_policy
appends its sentinel rule to ``acls``, which would turn it into a one-rule policy.

Policies are drawn *symbolically*: world addresses are written as ``${...}`` symbols and resolved
against the live world just before the policy is set, because headscale hands out tailnet
addresses in join order, which varies from one world to the next. A replay file (see
:mod:`meshcert.replay`) keeps the symbols, so it reruns in any world built from the same
topology. Symbols:

``${ip:NAME}``       tailnet IPv4 of node NAME, or the address of plain host NAME (the VLAN host)
``${net:NAME}``      the CIDR of topology network NAME (``${net:vlan}``: the router's VLAN)
``${net:NAME/LEN}``  the prefix of length LEN that contains that network's first address
``${tailnet}``       headscale's IPv4 range, 100.64.0.0/10

The probe matrix is every tailnet node and pod as source x every served (node, port) as target
(a node is not probed against itself) + every plain host's ports (the legacy host's 22, reached
only through the subnet router).

Probing: each source dials all its targets concurrently (one node-agent call per source, all
sources at once). A denied TCP connection to a tailnet node is dropped silently, so every
negative costs its full ``timeout`` (1.5 s by default). A pair the oracle allows that did not
connect is retried alone, until ``retry_window`` seconds have passed, before it counts as a
difference (a peer that just became visible may need its first WireGuard handshake).
Denials are judged live: a pair the oracle denies is dialled only after a pair it allows between
the same two nodes connected (their WireGuard session is up). A denied pair the example allows
nothing between gets a WireGuard control instead: a TSMP ping from its source to the peer its
packets would take (the target, or the subnet router carrying it), which the peer's tailscaled
answers ahead of its packet filter, so a pong proves the session is up whatever the ACL says;
or, when the source's netmap holds no such peer at all, the denial is structural (there is no
tailnet path to hold a handshake). A denial whose TSMP control never answered within the retry
window is still dialled (a connection is a difference) and counted as unjudged in the figures:
seen once, in an example whose policy related no nodes at all, where the netmaps still listed
the peers but no TSMP ping was answered (not yet explained).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import os
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from hypothesis import strategies as st

from meshcert.checks.base import BANNER
from meshcert.errors import InputError
from meshcert.property.oracle import Host, Node, Oracle, Verdict
from meshcert.policy import parse_policy
from meshcert.world.topology import AGENT_TAG, DB_TAG, ROUTER_TAG, SERVER_TAG, Topology

TAGS = (AGENT_TAG, SERVER_TAG, DB_TAG, ROUTER_TAG)
TAILNET_V4 = "100.64.0.0/10"
OWNER = "meshcert@"
SYMBOL = re.compile(r"\$\{([a-z]+)(?::([A-Za-z0-9_.-]+)(?:/([0-9]{1,2}))?)?\}")

# s: one dial of a pair the oracle denies (a drop costs all of it). Dialled after an allowed pair
# between the same two nodes connected (probe()): over a live WireGuard session an allowed
# connection completes in milliseconds, so 1.5 s is not racing a handshake.
NEGATIVE_TIMEOUT = 1.5
RETRY_WINDOW = 25.0      # s: how long a pair the oracle allows is retried before it differs (see probe())
RETRY_TIMEOUT = 2.0      # s: one retry dial


# ------------------------------------------------------------------------------------ shape

@dataclass(frozen=True)
class Shape:
    """What the strategies draw from: names, tags and served ports of a topology.

    Addresses are not part of it (they are symbols), so the same strategies serve every world
    built from the topology, whatever its VLAN and whatever tailnet addresses headscale gives.
    """

    nodes: tuple[str, ...]                     # tailnet nodes and pods: the sources
    pods: tuple[str, ...]                      # agent pods: their acceptRoutes is drawn
    hosts: tuple[str, ...]                     # plain hosts (no tailscale)
    tags: Mapping[str, tuple[str, ...]]
    served: Mapping[str, tuple[int, ...]]      # node or host -> banner ports
    routers: Mapping[str, tuple[str, ...]]     # router -> its approved routes in the topology (symbols)
    networks: tuple[str, ...]                  # topology networks with a fixed subnet

    @classmethod
    def of(cls, topology: Topology) -> Shape:
        nets = {n.name: n.subnet for n in topology.networks if n.subnet}

        def symbolic(cidr: str) -> str:
            for name, subnet in nets.items():
                if ipaddress.ip_network(cidr) == ipaddress.ip_network(subnet):
                    return f"${{net:{name}}}"
            return cidr

        return cls(
            nodes=tuple(n.name for n in (*topology.nodes, *topology.pods)),
            pods=tuple(p.name for p in topology.pods),
            hosts=tuple(h.name for h in topology.hosts),
            tags={n.name: tuple(n.tags) for n in (*topology.nodes, *topology.pods)},
            served={n.name: tuple(n.banner_ports) for n in (*topology.nodes, *topology.pods, *topology.hosts)},
            routers={n.name: tuple(symbolic(r) for r in n.approve_routes)
                     for n in topology.nodes if n.advertise_routes},
            networks=tuple(nets),
        )

    @property
    def served_ports(self) -> tuple[int, ...]:
        return tuple(sorted({p for ports in self.served.values() for p in ports}))

    def same_as(self, other: Shape) -> list[str]:
        """What differs between two shapes (empty: a replay/strategy of one fits the other)."""
        problems = []
        for f in ("nodes", "pods", "hosts", "tags", "served", "routers", "networks"):
            if getattr(self, f) != getattr(other, f):
                problems.append(f"{f}: {getattr(self, f)!r} != {getattr(other, f)!r}")
        return problems


class Pair(NamedTuple):
    """One probe of the matrix: ``src`` dials ``dst`` (a node or host name) on ``port``."""
    src: str
    dst: str
    port: int

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst}:{self.port}"


def probe_matrix(shape: Shape) -> list[Pair]:
    """Every tailnet node/pod x every served (node, port), self excluded, + every host's ports."""
    targets = [(d, p) for d in (*shape.nodes, *shape.hosts) for p in shape.served.get(d, ())]
    return [Pair(s, d, p) for s in shape.nodes for d, p in targets if d != s]


# ------------------------------------------------------------------------------------ examples

@dataclass(frozen=True)
class RouteSettings:
    """Route state an example sets: approved routes per router, acceptRoutes per pod."""
    approved: Mapping[str, tuple[str, ...]]    # router -> approved CIDRs (symbols allowed)
    accept_routes: Mapping[str, bool]          # pod -> acceptRoutes

    def to_data(self) -> dict[str, Any]:
        return {"approved": {r: list(c) for r, c in sorted(self.approved.items())},
                "accept_routes": dict(sorted(self.accept_routes.items()))}


@dataclass(frozen=True)
class Example:
    """A drawn policy (with ``${...}`` symbols) and route settings."""
    policy: dict
    routes: RouteSettings


def _port_specs(served: tuple[int, ...]) -> st.SearchStrategy[str]:
    """Ports around the served ones: single, list, range, or ``*``."""
    near = st.builds(lambda p, d: min(65535, max(1, p + d)), st.sampled_from(served), st.sampled_from((0, 1, -1)))

    def around(p: int, below: int, above: int) -> str:
        return f"{max(1, p - below)}-{min(65535, p + above)}"

    def between(a: int, b: int, inset: int) -> str:
        lo, hi = sorted((a, b))
        return f"{lo + inset}-{hi - inset}" if hi - lo > 2 * inset else f"{lo}-{hi}"

    ranges = st.one_of(
        st.builds(around, st.sampled_from(served), st.sampled_from((1, 0, 2, 100)),
                  st.sampled_from((1, 0, 2, 100))).filter(lambda r: r.split("-")[0] != r.split("-")[1]),
        st.builds(between, st.sampled_from(served), st.sampled_from(served), st.sampled_from((0, 1)))
        .filter(lambda r: r.split("-")[0] != r.split("-")[1]),
    )
    lists = st.lists(st.one_of(near.map(str), ranges), min_size=2, max_size=3, unique=True).map(",".join)
    return st.one_of(near.map(str), lists, ranges, st.just("*"))


# Identity aliases: the tags first (shrinking goes there), then the user every tag belongs to and
# the autogroups -- tagged nodes are owned by their tags, not by that user (headscale >= 0.28).
IDENTITIES = (*TAGS, OWNER, "autogroup:tagged", "autogroup:member")


def _sources(shape: Shape) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(IDENTITIES),
        st.just("*"),
        st.sampled_from([f"${{ip:{n}}}" for n in shape.nodes]),
        st.sampled_from([f"${{net:{n}}}" for n in shape.networks] + ["${tailnet}"]
                        + [f"${{ip:{h}}}" for h in shape.hosts]),
    )


def _destinations(shape: Shape) -> st.SearchStrategy[str]:
    aliases = st.one_of(
        st.sampled_from(IDENTITIES),
        st.just("*"),
        st.sampled_from([f"${{ip:{n}}}" for n in shape.nodes if shape.served.get(n)]),
        st.sampled_from([f"${{net:{n}}}" for n in shape.networks] + [f"${{ip:{h}}}" for h in shape.hosts]
                        + ["${tailnet}"]),
    )
    return st.builds(lambda a, p: f"{a}:{p}", aliases, _port_specs(shape.served_ports))


def rules(shape: Shape) -> st.SearchStrategy[dict]:
    return st.builds(
        lambda s, d: {"action": "accept", "src": s, "dst": d},
        st.lists(_sources(shape), min_size=1, max_size=2, unique=True),
        st.lists(_destinations(shape), min_size=1, max_size=3, unique=True),
    )


def policies(shape: Shape, max_rules: int = 4) -> st.SearchStrategy[dict]:
    """Policies with tagOwners for the world's tags (owned by meshcert@) and 0..max_rules rules.

    Always with an ``acls`` list (an empty one denies everything): a policy without ``acls``
    allows all in headscale, but World.set_policy adds its sentinel rule to ``acls``, which
    would turn such a policy into a deny-all one, so that case cannot be drawn here.
    """
    return st.builds(lambda acls: {"tagOwners": {t: [OWNER] for t in TAGS}, "acls": acls},
                     st.lists(rules(shape), min_size=0, max_size=max_rules))


def route_settings(shape: Shape) -> st.SearchStrategy[RouteSettings]:
    """acceptRoutes of each pod; per router: its topology approval, none, or a covering prefix.

    Choices shrink towards the topology's own setting (acceptRoutes on, route approved).
    """
    def approvals(router: str) -> st.SearchStrategy[tuple[str, ...]]:
        own = shape.routers[router]
        # a prefix covering the advertised one: headscale approves only what is announced
        wider = tuple(s.replace("}", "/16}") for s in own if s.startswith("${net:"))
        return st.sampled_from([own, (), *([wider] if wider else [])])

    return st.builds(
        lambda approved, accept: RouteSettings(approved, accept),
        st.fixed_dictionaries({r: approvals(r) for r in shape.routers}),
        st.fixed_dictionaries({p: st.sampled_from((True, False)) for p in shape.pods}),
    )


def examples(shape: Shape) -> st.SearchStrategy[Example]:
    return st.builds(Example, policies(shape), route_settings(shape))


def edge_examples(shape: Shape) -> list[Example]:
    """Hand-picked examples on the documented semantics most likely to be got wrong; the property
    test runs them on every run before the drawn ones (Hypothesis ``@example``)."""
    owners = {t: [OWNER] for t in TAGS}
    routed = RouteSettings(dict(shape.routers), {p: True for p in shape.pods})

    def ex(acls: list[dict], routes: RouteSettings = routed) -> Example:
        return Example({"tagOwners": owners, "acls": acls}, routes)

    rule = lambda src, dst: {"action": "accept", "src": src, "dst": dst}  # noqa: E731
    lan = f"${{net:{shape.networks[0]}}}" if shape.networks else "${tailnet}"
    wider = RouteSettings({r: tuple(c.replace("}", "/16}") for c in cidrs) for r, cidrs in shape.routers.items()},
                          {p: True for p in shape.pods})
    return [
        # the guide's own policy (+ the VLAN rule its subnet-router section needs)
        ex([rule([AGENT_TAG], [f"{SERVER_TAG}:22"]), rule([AGENT_TAG], [f"{DB_TAG}:5432,3306"]),
            rule([AGENT_TAG], [f"{lan}:22"])]),
        # a router's tag names the router, never the network behind it
        ex([rule([AGENT_TAG], [f"{ROUTER_TAG}:*"])]),
        # an approval must match the advertised route exactly: a covering prefix approves nothing
        ex([rule(["*"], ["*:*"])], wider),
        # "*" includes approved subnet routes; a source CIDR matches packet sources, not routes
        ex([rule(["*"], ["*:22"]), rule([lan], ["*:*"])]),
        # port ranges and lists at their edges
        ex([rule([AGENT_TAG], [f"{DB_TAG}:3307-5431,6379", f"{SERVER_TAG}:21-22"])]),
    ]


# ------------------------------------------------------------------------------------ symbols

def resolve(text: str, world) -> str:
    """Replace every ``${...}`` symbol in ``text`` by the live world's address or prefix."""
    nets = {n.name: n.subnet for n in world.topology.networks if n.subnet}

    def one(m: re.Match) -> str:
        kind, name, length = m.group(1), m.group(2), m.group(3)
        if kind == "tailnet" and not name:
            return TAILNET_V4
        if kind == "ip" and name and not length:
            try:
                return world.address(name)
            except KeyError:
                raise InputError("policy symbol", f"{m.group(0)}: the world has no node or host {name!r}") from None
        if kind == "net" and name:
            if name not in nets:
                raise InputError("policy symbol", f"{m.group(0)}: the topology has no network {name!r} "
                                 f"with a fixed subnet (it has {', '.join(sorted(nets)) or 'none'})")
            net = ipaddress.ip_network(nets[name])
            if length:
                return str(ipaddress.ip_network(f"{net.network_address}/{length}", strict=False))
            return str(net)
        raise InputError("policy symbol", f"{m.group(0)} is not a known symbol",
                         "use ${ip:NAME}, ${net:NAME}, ${net:NAME/LEN} or ${tailnet}")

    out = SYMBOL.sub(one, text)
    if "${" in out:
        raise InputError("policy symbol", f"malformed symbol in {text!r}",
                         "use ${ip:NAME}, ${net:NAME}, ${net:NAME/LEN} or ${tailnet}")
    return out


def resolve_data(data: Any, world) -> Any:
    """``resolve`` applied to every string of a JSON-like value."""
    if isinstance(data, str):
        return resolve(data, world)
    if isinstance(data, list):
        return [resolve_data(x, world) for x in data]
    if isinstance(data, dict):
        return {resolve(k, world): resolve_data(v, world) for k, v in data.items()}
    return data


# ------------------------------------------------------------------------------------ applying

def _approved_now(world) -> dict[str, set[str]]:
    return {r.get("given_name", r.get("name")): set(r.get("approved_routes") or [])
            for r in world.headscale.routes()}


def apply_routes(world, routes: RouteSettings) -> dict[str, tuple[str, ...]]:
    """Set acceptRoutes and route approvals as ``routes`` says (only what differs).

    Returns every node's approved routes as headscale now shows them (routers the settings do
    not name keep theirs). Approval goes straight to headscale (``approve-routes``)
    rather than through World.set_route_approval: that method waits until every accepting node
    sees the router's route, which never happens when the example's policy hides the router from
    a node or reduces its routes; :func:`wait_routes_settled` waits on what must hold instead.
    """
    from meshcert.world import WorldError
    for pod, on in routes.accept_routes.items():
        if pod not in world.nodes:
            raise InputError("route settings", f"acceptRoutes for {pod!r}: the world has no such node")
        if world.nodes[pod].accept_routes is not on:
            world.nodes[pod].set_accept_routes(on)
    resolved = {r: tuple(resolve(c, world) for c in cidrs) for r, cidrs in routes.approved.items()}
    now = _approved_now(world)
    changed = False
    for router, cidrs in resolved.items():
        if router not in world.nodes:
            raise InputError("route settings", f"approved routes for {router!r}: the world has no such node")
        if now.get(router, set()) != set(cidrs):
            world.headscale.approve_routes(world.headscale.node_id(router), cidrs)
            changed = True
    after = _approved_now(world) if changed else now
    for router, cidrs in resolved.items():
        if after.get(router, set()) != set(cidrs):
            raise WorldError(f"headscale shows {router} approved for {sorted(after.get(router, set()))}, "
                             f"not {sorted(cidrs)}")
    return {node: tuple(sorted(cidrs)) for node, cidrs in after.items() if cidrs}


def wait_routes_settled(world, approved: Mapping[str, Iterable[str]], timeout: float = 15) -> None:
    """No node may still hold a route of a router that is not approved any more.

    A node sees a router's primary routes only when the policy lets it reach them, so a route
    may rightly be absent; but a route that is no longer approved must be gone everywhere.
    """
    from meshcert.world import wait_for
    allowed = {r: {ipaddress.ip_network(c) for c in cidrs} for r, cidrs in approved.items()}

    def stale(node) -> list[str]:
        out = []
        for peer in (node.status().get("Peer") or {}).values():
            host = peer.get("HostName")
            if host in allowed:
                for c in peer.get("PrimaryRoutes") or []:
                    net = ipaddress.ip_network(c)
                    if not any(net.subnet_of(a) for a in allowed[host] if a.version == net.version):
                        out.append(f"{host}:{c}")
        return out

    for node in world.nodes.values():
        wait_for(f"{node.name} to drop routes that are no longer approved", lambda n=node: not stale(n),
                 timeout, describe=lambda n=node: ", ".join(stale(n)))


def _route_check(node, host_addresses: Mapping[str, str]) -> list[str]:
    """What a kernel-mode node does not yet route as its netmap says (empty: all in place)."""
    st = node.status()
    peers = list((st.get("Peer") or {}).values())
    via_ts = {ip for p in peers for ip in (p.get("TailscaleIPs") or []) if ":" not in ip}
    primary = [ipaddress.ip_network(c) for p in peers for c in (p.get("PrimaryRoutes") or []) if ":" not in c]
    expect = {a: True for a in via_ts}
    for addr in host_addresses.values():
        ip = ipaddress.ip_address(addr)
        expect[addr] = bool(node.accept_routes) and any(ip in net for net in primary)
    if not expect:
        return []
    script = "; ".join(f"echo {a} $(ip -4 -o route get {a} 2>&1)" for a in sorted(expect))
    code, out = node.ts_box.exec(["sh", "-c", script])
    got = {line.split(" ", 1)[0]: " dev tailscale0 " in line + " " for line in out.splitlines() if line.strip()}
    return [f"{a} {'not yet' if want else 'still'} routed via tailscale0"
            for a, want in expect.items() if got.get(a) is not want]


def wait_datapath(world, timeout: float = 15) -> None:
    """Every kernel-mode node's OS routes match its netmap: each peer via tailscale0, each plain
    host via tailscale0 exactly when an accepted primary route covers it.

    tailscaled installs a new packet filter a moment before it reprograms the OS routes. A dial
    in between escapes the tailnet or, worse, leaves with another source address: the subnet
    router then dials peers from its VLAN address, and a policy granting that VLAN lets it in
    (seen: router -> agent:5000 connected under a policy that allowed only the VLAN). Userspace
    nodes have no OS routes (their dialer is reprogrammed in the same step) and are skipped.
    """
    from meshcert.world import wait_for
    kernel = [n for n in world.nodes.values() if not n.socks5]

    def settled(node) -> bool:
        return not _route_check(node, world.host_addresses)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(kernel))) as ex:
        list(ex.map(lambda n: wait_for(f"{n.name}'s OS routes to follow its netmap", lambda: settled(n), timeout,
                                       interval=0.1,
                                       describe=lambda: "; ".join(_route_check(n, world.host_addresses))),
                    kernel))


def live_nodes(world, approved: Mapping[str, Iterable[str]]) -> tuple[list[Node], list[Host]]:
    """Oracle nodes from the live world: tags, tailnet IPv4, routes, acceptRoutes."""
    nodes = [Node(name, frozenset(n.tags), None if n.tags else world.topology.user, (n.ts_ip,),
                  advertised_routes=tuple(n.advertise_routes), approved_routes=tuple(approved.get(name, ())),
                  accept_routes=bool(n.accept_routes))
             for name, n in world.nodes.items()]
    hosts = [Host(name, addr) for name, addr in world.host_addresses.items()]
    return nodes, hosts


# ------------------------------------------------------------------------------------ probing

@dataclass
class Observation:
    ok: bool
    banner: str | None
    error: str | None
    latency_ms: float | None
    attempts: int = 1
    after_s: float = 0.0      # seconds from the first dial of the example to this (last) result
    judged: bool = True       # False: a denial with no live positive control between the two nodes

    def reached(self, pair: Pair) -> bool:
        if not self.ok:
            return False
        m = BANNER.search(self.banner or "")
        return bool(m) and m.group(1) == pair.dst and int(m.group(2)) == pair.port

    def describe(self) -> str:
        if self.ok:
            return f"connected, banner {self.banner!r}"
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        unjudged = "" if self.judged else " (unjudged: no positive control between the two nodes)"
        return f"not reachable ({self.error}){tries}{unjudged}"


def controls(pairs: Iterable[Pair], expect: Mapping[Pair, bool]) -> dict[Pair, Pair | None]:
    """Each denied pair's positive control: an allowed pair between the same two nodes (either
    direction, another port; same direction first), or None when the example allows nothing
    between them (such a denial cannot be proven live: see :func:`probe`)."""
    pairs = list(pairs)
    out: dict[Pair, Pair | None] = {}
    for p in pairs:
        if expect[p]:
            continue
        same = sorted((q for q in pairs if expect[q] and {q.src, q.dst} == {p.src, p.dst}),
                      key=lambda q: (q.src != p.src, q.port))
        out[p] = same[0] if same else None
    return out


TSMP_TIMEOUT = 2.0  # one TSMP ping; an up session answers in milliseconds (a lost first
                    # handshake is re-sent by WireGuard after 5 s, so the control is retried
                    # across the whole retry window, not judged on one ping)


def wireguard_controls(world, pairs: Iterable[Pair], addr: Mapping[str, str],
                       window: float = 0.0) -> dict[Pair, str | None]:
    """For denials the example allows nothing between: None when the denial may be judged now
    (a TSMP ping from its source to the WireGuard peer on its path answered, or the source has
    no tailnet peer on that path at all), else why it cannot be (the ping never answered within
    ``window`` s). Pings run concurrently, one per (source, peer), retried until the window ends."""
    pairs = list(pairs)
    if not pairs:
        return {}
    peer_of = {(p.src, addr[p.dst]): None for p in pairs}
    for key in peer_of:
        peer_of[key] = world.wireguard_peer(*key)
    deadline = time.monotonic() + window

    def control(src: str, ip: str) -> str | None:
        while True:
            seen = world.tsmp_ping(src, ip, TSMP_TIMEOUT)
            if seen is None or time.monotonic() >= deadline:
                return None if seen is None else f"TSMP ping {src} -> {ip} never answered ({seen})"
            time.sleep(0.3)  # poll interval of a condition wait

    wanted = {(src, ip) for (src, _), ip in peer_of.items() if ip}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(8, len(wanted)))) as ex:
        futs = {k: ex.submit(control, *k) for k in wanted}
        seen = {k: f.result() for k, f in futs.items()}
    return {p: (None if peer_of[(p.src, addr[p.dst])] is None else seen[(p.src, peer_of[(p.src, addr[p.dst])])])
            for p in pairs}


def probe(world, pairs: list[Pair], expect: Mapping[Pair, bool], *, timeout: float = NEGATIVE_TIMEOUT,
          retry_window: float = RETRY_WINDOW, retry_timeout: float = RETRY_TIMEOUT,
          patient: Iterable[Pair] = ()) -> dict[Pair, Observation]:
    """Dial every pair from inside its source; all sources at once, each source's dials at once.

    Pairs expected allowed that failed are retried (only those) until ``retry_window`` ends;
    so are the ``patient`` pairs (a replay names the pairs it saw connect against expectation:
    in a fresh world their first dial may meet a cold WireGuard session, see below).
    Why 25 s and not 2: right after a policy change makes two nodes peers, the first WireGuard
    handshake initiation between them is often lost (the receiver is still reconfiguring), and
    WireGuard re-sends it only after REKEY_TIMEOUT = 5 s. Measured on this machine over ~190
    examples: about one example in six had such pairs; they connected 5.1-7.7 s after the first
    dial, and in 4 examples only after 16-17 s (three initiations). A pair that works costs
    nothing extra; only a real difference (oracle allows, world denies) pays the whole window.

    Denied pairs are judged live: a denied pair with a positive control (an allowed pair between
    the same two nodes) is dialled once, ``timeout`` s, only in the round after its control
    connected -- their WireGuard session is then up, so a handshake still in flight cannot pass
    for a denial. One whose control never connects is not dialled (the control is a difference
    already). A denied pair the example allows nothing between is dialled in the first round,
    after its WireGuard control (:func:`wireguard_controls`) answered or showed there is no
    tailnet path at all; one whose control never answered is still dialled (a connection is a
    difference) but marked unjudged (``Observation.judged``) and counted in the test's figures.
    """
    addr = {d: world.address(d) for d in {p.dst for p in pairs}}
    results: dict[Pair, Observation] = {}
    t0 = time.monotonic()
    patient = set(patient)
    control = {p: c for p, c in controls(pairs, expect).items() if p not in patient}
    wg = wireguard_controls(world, [p for p, c in control.items() if c is None], addr, retry_window)
    unjudged = {p for p, why in wg.items() if why}

    def round_(todo: list[tuple[Pair, float]]) -> None:
        by_src: dict[tuple[str, float], list[Pair]] = defaultdict(list)
        for p, t in todo:
            by_src[(p.src, t)].append(p)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(by_src))) as ex:
            futs = {k: ex.submit(world.dial, k[0], [(addr[p.dst], p.port) for p in ps], k[1])
                    for k, ps in by_src.items()}
            for k, ps in by_src.items():
                for p, r in zip(ps, futs[k].result()):
                    prev = results.get(p)
                    results[p] = Observation(r["ok"], r.get("banner"), r.get("error"), r.get("latency_ms"),
                                             (prev.attempts + 1) if prev else 1, round(time.monotonic() - t0, 2),
                                             judged=p not in unjudged)

    def ready(p: Pair) -> bool:  # a controlled negative not yet dialled whose control has connected
        c = control[p]
        return p not in results and c is not None and c in results and results[c].reached(c)

    wanted = [p for p in pairs if expect[p] or p in patient]
    round_([(p, timeout) for p in pairs if p not in control or control[p] is None])
    deadline = time.monotonic() + retry_window
    while True:
        again = [p for p in wanted if not results[p].reached(p)]
        due = [p for p in control if ready(p)]
        if (not again and not due) or time.monotonic() >= deadline:
            break
        started = time.monotonic()
        round_([(p, min(retry_timeout, max(0.2, deadline - time.monotonic()))) for p in again] +
               [(p, timeout) for p in due])
        if time.monotonic() - started < 0.3:
            time.sleep(0.3)  # poll interval of a condition wait (a fast refusal must not spin)
    for p, c in control.items():
        if p not in results:
            results[p] = Observation(False, None, f"not dialled: its control {c} never connected", None, 0,
                                     round(time.monotonic() - t0, 2), judged=False)
    return results


# ------------------------------------------------------------------------------------ comparing

@dataclass(frozen=True)
class Difference:
    pair: Pair
    expected: bool
    reason: str
    observed: str

    def __str__(self) -> str:
        exp = "allowed" if self.expected else "denied"
        return f"{self.pair}: oracle says {exp} ({self.reason}); observed {self.observed}"


@dataclass
class Outcome:
    """One example run against the world."""
    example: Example
    policy: dict                                  # resolved, as set on headscale
    approved: dict[str, tuple[str, ...]]          # resolved approvals
    accept_routes: dict[str, bool]
    verdicts: dict[Pair, Verdict]
    observations: dict[Pair, Observation]
    differences: list[Difference]
    addresses: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self, against: str = "the oracle") -> str:
        lines = [f"{len(self.differences)} of {len(self.verdicts)} pairs differ from {against}:"]
        lines += [f"  - {d}" for d in self.differences]
        lines.append("policy (symbols as drawn):")
        lines.append(_indent(json.dumps(self.example.policy, indent=2)))
        lines.append("policy as set on headscale:")
        lines.append(_indent(json.dumps(self.policy, indent=2)))
        lines.append(f"approved routes: {json.dumps(self.approved)}; acceptRoutes: {json.dumps(self.accept_routes)}")
        lines.append(f"addresses: {json.dumps(self.addresses)}")
        return "\n".join(lines)


def _indent(text: str, by: str = "    ") -> str:
    return "\n".join(by + line for line in text.splitlines())


def compare(verdicts: Mapping[Pair, Verdict], observations: Mapping[Pair, Observation]) -> list[Difference]:
    diffs = []
    for pair, v in verdicts.items():
        o = observations[pair]
        if v.allowed and not o.reached(pair):
            diffs.append(Difference(pair, True, v.reason, o.describe()))
        elif not v.allowed and o.ok:
            diffs.append(Difference(pair, False, v.reason, o.describe()))
    return diffs


OracleFactory = Callable[..., Oracle]


@dataclass
class Applied:
    """An example's settings as they now hold in the world."""
    policy: dict                         # resolved, as set on headscale
    approved: dict[str, tuple[str, ...]]
    accept_routes: dict[str, bool]
    seconds: dict[str, float]


def apply_example(world, example: Example) -> Applied:
    """Set the example's routes and policy on the live world and wait until they hold."""
    t0 = time.monotonic()
    policy = resolve_data(example.policy, world)
    parse_policy(json.dumps(policy), "drawn policy")  # a clear error before anything changes
    approved = apply_routes(world, example.routes)
    t1 = time.monotonic()
    world.set_policy(policy)
    t2 = time.monotonic()
    wait_routes_settled(world, approved)
    wait_datapath(world)
    return Applied(policy, {r: tuple(c) for r, c in approved.items()},
                   {n: bool(world.nodes[n].accept_routes) for n in example.routes.accept_routes},
                   {"routes": t1 - t0, "policy": t2 - t1, "settle": time.monotonic() - t2})


def judge(world, applied: Applied, pairs: Iterable[Pair], oracle: OracleFactory = Oracle) -> dict[Pair, Verdict]:
    """The oracle's verdict for each pair, from the live world's nodes and the applied settings."""
    nodes, hosts = live_nodes(world, applied.approved)
    o = oracle(parse_policy(json.dumps(applied.policy), "drawn policy"), nodes, hosts)
    return {p: o.allowed(p.src, world.address(p.dst), p.port) for p in pairs}


def run_example(world, example: Example, *, oracle: OracleFactory = Oracle,
                pairs: list[Pair] | None = None, expectations: Mapping[Pair, Verdict] | None = None,
                timeout: float = NEGATIVE_TIMEOUT, retry_window: float = RETRY_WINDOW,
                patient: Iterable[Pair] = (), while_applied: Callable[[], None] | None = None) -> Outcome:
    """Apply ``example`` to the live world, probe ``pairs`` (default: the matrix), compare.

    Expectations come from ``oracle`` unless given (a replay file carries its own);
    ``patient`` pairs are retried like allowed ones (see :func:`probe`).
    ``while_applied`` runs after the settings hold and before probing (e.g. injecting faults).
    """
    t0 = time.monotonic()
    applied = apply_example(world, example)
    pairs = probe_matrix(Shape.of(world.topology)) if pairs is None else list(pairs)
    verdicts = dict(expectations) if expectations is not None else judge(world, applied, pairs, oracle)
    if while_applied is not None:
        while_applied()
    addresses = {n: world.address(n) for n in sorted({p.dst for p in pairs} | {p.src for p in pairs})}
    t1 = time.monotonic()
    observations = probe(world, pairs, {p: v.allowed for p, v in verdicts.items()}, timeout=timeout,
                         retry_window=retry_window, patient=patient)
    seconds = {**applied.seconds, "probe": time.monotonic() - t1, "total": time.monotonic() - t0}
    return Outcome(example, applied.policy, applied.approved, applied.accept_routes, verdicts, observations,
                   compare(verdicts, observations), addresses, seconds)


class PropertyMismatch(AssertionError):
    """The live world and the oracle disagree on some pairs of an example."""

    def __init__(self, outcome: Outcome, replay_path: os.PathLike | None = None, seed: int | None = None):
        self.outcome = outcome
        self.replay_path = replay_path
        where = f"\nreplay file: {replay_path} (rerun alone: MESHCERT_REPLAY={replay_path} pytest " \
                f"conformance/test_property.py::test_replay_file)" if replay_path else ""
        run = f"\nhypothesis seed {seed} (MESHCERT_PROPERTY_SEED={seed} reruns this search)" if seed is not None else ""
        super().__init__(outcome.summary() + where + run)


def restore(world) -> None:
    """Back to the topology's policy, approvals and acceptRoutes (no container restarts)."""
    world.reset()


def run_seed() -> int:
    """This run's Hypothesis seed: MESHCERT_PROPERTY_SEED, else a fresh random one (printed)."""
    env = os.environ.get("MESHCERT_PROPERTY_SEED")
    if env:
        try:
            return int(env)
        except ValueError:
            raise InputError("MESHCERT_PROPERTY_SEED", f"{env!r} is not an integer") from None
    return random.SystemRandom().randrange(2 ** 32)


def _final_run() -> bool:
    """True while Hypothesis replays the shrunk failing example for its report."""
    try:
        from hypothesis.control import current_build_context
        return bool(current_build_context().is_final)
    except Exception:
        return False


@dataclass
class Runner:
    """Runs drawn examples against one world for a Hypothesis test and keeps the figures.

    ``check(example)`` raises :class:`PropertyMismatch` when the world and the oracle differ;
    on Hypothesis' final run of the shrunk example it first saves the replay file in
    ``replay_dir`` (shrinking steps save nothing).
    """
    world: Any
    replay_dir: os.PathLike
    oracle: OracleFactory = Oracle
    seed: int | None = None
    topology: str = "guide"
    examples: int = 0
    failing: int = 0
    first_failure_at: int | None = None
    seconds: list[float] = field(default_factory=list)
    replay_path: os.PathLike | None = None
    started: float = field(default_factory=time.monotonic)
    phases: dict[str, list[float]] = field(default_factory=dict)
    log_path: os.PathLike | None = None   # one JSON line per example run (figures, retries, differences)
    retry_window: float = RETRY_WINDOW
    retried_examples: int = 0
    retried_pairs: int = 0
    recovered_pairs: int = 0
    denials_judged: int = 0     # denied pairs dialled after a positive control between the same nodes
    denials_unjudged: int = 0   # denied pairs whose WireGuard control never answered (see probe())
    slowest_handshake_s: float = 0.0  # the latest an allowed pair first connected (after_s of a retried pair)

    def __repr__(self) -> str:  # Hypothesis prints the test's arguments: keep it to one line
        return f"Runner(oracle={getattr(self.oracle, '__name__', self.oracle)}, seed={self.seed})"

    def check(self, example: Example) -> Outcome:
        outcome = run_example(self.world, example, oracle=self.oracle, retry_window=self.retry_window)
        self.examples += 1
        self.seconds.append(outcome.seconds["total"])
        for k, v in outcome.seconds.items():
            self.phases.setdefault(k, []).append(v)
        retried = [p for p, o in outcome.observations.items() if o.attempts > 1]
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(json.dumps({"n": self.examples, "seconds": {k: round(v, 2) for k, v in outcome.seconds.items()},
                                    "policy": outcome.policy, "approved": outcome.approved,
                                    "accept_routes": outcome.accept_routes,
                                    "retried": {str(p): [o.attempts, o.after_s, o.describe()] for p, o in
                                                ((p, outcome.observations[p]) for p in retried)},
                                    "differences": [str(d) for d in outcome.differences]}) + "\n")
        for p, o in outcome.observations.items():
            if not outcome.verdicts[p].allowed:
                if o.judged:
                    self.denials_judged += 1
                else:
                    self.denials_unjudged += 1
            elif o.attempts > 1 and o.reached(p):
                self.slowest_handshake_s = max(self.slowest_handshake_s, o.after_s)
        if retried:
            self.retried_examples += 1
            self.retried_pairs += len(retried)
            self.recovered_pairs += sum(1 for p in retried if outcome.observations[p].reached(p))
        if not outcome.differences:
            return outcome
        self.failing += 1
        if self.first_failure_at is None:
            self.first_failure_at = self.examples
        path = None
        if _final_run():
            from meshcert.replay.run import Replay, save_replay
            replay = Replay.from_outcome(outcome, topology=self.topology, seed=self.seed,
                                         description=f"shrunk failing example of the property test "
                                                     f"(oracle {getattr(self.oracle, '__name__', self.oracle)})")
            path = self.replay_path = save_replay(replay, self.replay_dir)
        raise PropertyMismatch(outcome, path, self.seed)

    def figures(self) -> dict[str, Any]:
        s = sorted(self.seconds)
        return {"seed": self.seed, "examples_run": self.examples, "failing_runs": self.failing,
                "first_failure_at": self.first_failure_at,
                "wall_s": round(time.monotonic() - self.started, 1),
                "example_s_median": round(s[len(s) // 2], 2) if s else None,
                "example_s_max": round(s[-1], 2) if s else None,
                "phase_s_median": {k: round(sorted(v)[len(v) // 2], 2) for k, v in self.phases.items()},
                "retried_examples": self.retried_examples, "retried_pairs": self.retried_pairs,
                "recovered_on_retry": self.recovered_pairs,
                "denials_judged_live": self.denials_judged, "denials_unjudged": self.denials_unjudged,
                "slowest_first_connect_s": self.slowest_handshake_s,
                "replay": os.fspath(self.replay_path) if self.replay_path else None}
