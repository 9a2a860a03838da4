"""The property test's live side: set an example on the running world, wait until it holds, probe.

:func:`apply_example` applies an :class:`~meshcert.property.model.Example` to the running world
with no container restarts (``tailscale set``, ``headscale nodes approve-routes`` and a live
policy set, each waited for on the real state), after resolving its ``${...}`` symbols against
that world (:func:`resolve`). :func:`probe` dials the probe matrix from inside the nodes.

Probing: each source dials all its targets concurrently (one node-agent call per source, all
sources at once). A denied TCP connection to a tailnet node is dropped silently, so every
negative costs its full ``timeout`` (model.NEGATIVE_TIMEOUT by default). A pair the oracle allows that did not
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
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshcert.checks.base import BANNER
from meshcert.errors import InputError
from meshcert.policy import parse_policy
from meshcert.property.model import (
    NEGATIVE_TIMEOUT,
    RETRY_TIMEOUT,
    RETRY_WINDOW,
    SYMBOL,
    TAILNET_V4,
    Example,
    Pair,
    RouteSettings,
)
from meshcert.property.oracle import Host, Node
from meshcert.world.base import WorldError, wait_for

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

def _approved_now(world, ids: dict[str, int] | None = None) -> dict[str, set[str]]:
    """Each node's approved routes as headscale lists them; ``ids`` gets each node's id (the same
    list has them: no second `nodes list` to find the router's)."""
    routes = world.headscale.routes()
    if ids is not None:
        ids.update({r.get("given_name", r.get("name")): int(r["id"]) for r in routes if r.get("id")})
    return {r.get("given_name", r.get("name")): set(r.get("approved_routes") or []) for r in routes}


def apply_routes(world, routes: RouteSettings) -> dict[str, tuple[str, ...]]:
    """Set acceptRoutes and route approvals as ``routes`` says (only what differs).

    Returns every node's approved routes as headscale now shows them (routers the settings do
    not name keep theirs). Approval goes straight to headscale (``approve-routes``)
    rather than through World.set_route_approval: that method waits until every accepting node
    sees the router's route, which never happens when the example's policy hides the router from
    a node or reduces its routes; :func:`wait_routes_settled` waits on what must hold instead.
    """
    for pod in routes.accept_routes:
        if pod not in world.nodes:
            raise InputError("route settings", f"acceptRoutes for {pod!r}: the world has no such node")
    resolved = {r: tuple(resolve(c, world) for c in cidrs) for r, cidrs in routes.approved.items()}
    for router in resolved:
        if router not in world.nodes:
            raise InputError("route settings", f"approved routes for {router!r}: the world has no such node")
    ids: dict[str, int] = {}
    # the pods' acceptRoutes prefs (their own node agents) and headscale's approvals (one exec)
    # are independent: read and set all at once
    flips = [world.nodes[pod] for pod, on in routes.accept_routes.items() if world.nodes[pod].accept_routes is not on]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1 + len(flips)) as ex:
        now_f = ex.submit(_approved_now, world, ids)
        for f in [ex.submit(n.set_accept_routes, routes.accept_routes[n.name]) for n in flips]:
            f.result()
        now = now_f.result()
    after, reread = dict(now), False
    for router, cidrs in resolved.items():
        if now.get(router, set()) != set(cidrs):
            # approve-routes answers with the node as headscale now holds it (an empty list is
            # left out of its JSON): no second listing; a handle that answers nothing is re-read
            node = world.headscale.approve_routes(ids[router] if router in ids else world.headscale.node_id(router),
                                                  cidrs)
            if isinstance(node, dict) and node.get("id"):
                after[router] = set(node.get("approved_routes") or [])
            else:
                reread = True
    if reread:
        after = _approved_now(world)
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

    nodes = list(world.nodes.values())  # every node at once, polled every 50 ms
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(nodes))) as ex:
        list(ex.map(lambda n: wait_for(f"{n.name} to drop routes that are no longer approved", lambda: not stale(n),
                                       timeout, interval=0.05, describe=lambda: ", ".join(stale(n))), nodes))


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
    # `ip -4 -o route get` in the node's namespace, by its node agent (no docker exec)
    got = {a: " dev tailscale0 " in line + " " for a, line in node.api.routes(sorted(expect)).items()}
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


def restore(world) -> None:
    """Back to the topology's policy, approvals and acceptRoutes (no container restarts)."""
    world.reset()


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
    keys = list(dict.fromkeys((p.src, addr[p.dst]) for p in pairs))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(8, len(keys)))) as ex:
        peer_of = dict(zip(keys, ex.map(lambda k: world.wireguard_peer(*k), keys)))
    deadline = time.monotonic() + window

    def control(src: str, ip: str) -> str | None:
        while True:
            seen = world.tsmp_ping(src, ip, TSMP_TIMEOUT)
            if seen is None or time.monotonic() >= deadline:
                return None if seen is None else f"TSMP ping {src} -> {ip} never answered ({seen})"
            time.sleep(0.3)  # poll interval of a condition wait

    # one ping per two nodes: a WireGuard session is one for both directions, and two pings
    # crossing would start two handshakes that cross (see _one_way_first)
    name_of = {n.ts_ip: name for name, n in world.nodes.items()}
    session = {(src, ip): frozenset((src, name_of.get(ip, ip))) for (src, _), ip in peer_of.items() if ip}
    wanted: dict[frozenset[str], tuple[str, str]] = {}
    for k in sorted(session):
        wanted.setdefault(session[k], k)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(8, len(wanted)))) as ex:
        futs = {key: ex.submit(control, *k) for key, k in wanted.items()}
        seen = {key: f.result() for key, f in futs.items()}
    return {p: (None if peer_of[(p.src, addr[p.dst])] is None else seen[session[(p.src, peer_of[(p.src, addr[p.dst])])]])
            for p in pairs}


def _one_way_first(wanted: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    """The allowed pairs split in two rounds: where both directions between two nodes are to be
    dialled, the direction from the node that sorts first leads and the other follows.

    Both nodes dialling each other at once start two WireGuard handshakes that cross: each side
    consumes the other's initiation and then drops the answer to its own, and neither tries again
    before REKEY_TIMEOUT (5 s). Measured on this machine (tailscale v1.102.3): an example that
    first related two nodes in both directions lost those 5 s in 7 of 8 tries with every dial at
    once. One direction first, the session it opens carries the other at once."""
    dirs = {(p.src, p.dst) for p in wanted}
    follows = {p for p in wanted if (p.dst, p.src) in dirs and p.dst < p.src}
    return [p for p in wanted if p not in follows], [p for p in wanted if p in follows]


def probe(world, pairs: list[Pair], expect: Mapping[Pair, bool], *, timeout: float = NEGATIVE_TIMEOUT,
          retry_window: float = RETRY_WINDOW, retry_timeout: float = RETRY_TIMEOUT,
          patient: Iterable[Pair] = ()) -> dict[Pair, Observation]:
    """Dial every pair from inside its source; all sources at once, each source's dials at once.

    Pairs expected allowed that failed are retried (only those) until ``retry_window`` ends;
    so are the ``patient`` pairs (a replay names the pairs it saw connect against expectation:
    in a fresh world their first dial may meet a cold WireGuard session, see below).
    Why 25 s and not 2: a WireGuard handshake that fails is re-sent only after REKEY_TIMEOUT =
    5 s. Measured on this machine over ~190 examples, with every allowed pair dialled at once:
    about one example in six had pairs that connected only 5.1-7.7 s after the first dial, and
    4 examples only after 16-17 s (three initiations). Their cause, found later: two nodes
    dialling each other at once, whose handshakes cross (:func:`_one_way_first`); dialled one
    way first, none was slow in 50 examples (seed 1464183477) nor in 8 tries of an example that
    lost 5 s in 7 of 8 before. The window stays for what is left (a handshake lost otherwise, a
    replay's patient pairs in a fresh world). A pair that works costs nothing extra; only a real
    difference (oracle allows, world denies) pays the whole window.

    Allowed pairs go in two rounds when both directions between two nodes are dialled: one
    direction first, the reverse over the session it opened, in the round of the denials.

    Denied pairs are judged live: a denied pair with a positive control (an allowed pair between
    the same two nodes) is dialled once, ``timeout`` s, only in the round after an allowed pair
    between the two connected -- their WireGuard session is then up, so a handshake still in
    flight cannot pass for a denial. One whose control never connects is not dialled (the
    control is a difference already). A denied pair the example allows nothing between is dialled in the round after the
    allowed pairs', once its WireGuard control (:func:`wireguard_controls`) answered or showed
    there is no tailnet path at all; one whose control never answered is still dialled (a connection is a
    difference) but marked unjudged (``Observation.judged``) and counted in the test's figures.
    """
    addr = {d: world.address(d) for d in {p.dst for p in pairs}}
    results: dict[Pair, Observation] = {}
    t0 = time.monotonic()
    patient = set(patient)
    control = {p: c for p, c in controls(pairs, expect).items() if p not in patient}
    uncontrolled = [p for p, c in control.items() if c is None]
    unjudged: set[Pair] = set()

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

    wanted = [p for p in pairs if expect[p] or p in patient]
    lead, follow = _one_way_first(wanted)
    connected: set[frozenset[str]] = set()  # node pairs with an allowed pair connected: a live session

    def ready(p: Pair) -> bool:  # a controlled negative not yet dialled, its session proven live
        return p not in results and control[p] is not None and frozenset((p.src, p.dst)) in connected

    # First the allowed pairs alone, one direction per two nodes (over live sessions they connect
    # in milliseconds), the WireGuard controls of the uncontrolled denials meanwhile; then the
    # reverse directions and every denial that may be judged, in one round: an example pays one
    # negative timeout, not one per kind of control.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        wg_future = ex.submit(wireguard_controls, world, uncontrolled, addr, retry_window)
        round_([(p, timeout) for p in lead])
        wg = wg_future.result()
    unjudged.update(p for p, why in wg.items() if why)
    first = list(uncontrolled) + follow
    deadline = time.monotonic() + retry_window
    while True:
        connected.update(frozenset((p.src, p.dst)) for p in wanted if p in results and results[p].reached(p))
        # retries end with the window; a pair due (never dialled yet) is dialled whatever the time
        again = [p for p in wanted if p in results and not results[p].reached(p)] \
            if time.monotonic() < deadline else []
        due = first + [p for p in control if ready(p)]
        first = []
        if not again and not due:
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
