"""The in-memory stand-ins for the World, for engine-free unit tests (the replay runner, the
chaos library): the guide's topology (VLAN 10.20.9.0/24), its nodes on tailnet addresses
100.64.0.N and WAN addresses 172.18.0.N+4 in topology order (server, database, router, agent,
agent-us), headscale and toxiproxy on the WAN, a SUT answering every pre-run with one canned
answer, and dials that succeed exactly where the oracle allows -- except the pairs in ``wrong``.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from meshcert.policy import parse_policy
from meshcert.property.oracle import Host, Node, Oracle
from meshcert.world.topology import guide_topology

VLAN = "10.20.9.0/24"


class FakeNode:
    def __init__(self, world, name, tags, ip, wan_ip, accept, routes=()):
        self.world, self.name, self.tags, self.ts_ip, self.wan_ip = world, name, tags, ip, wan_ip
        self.accept_routes, self.advertise_routes = accept, routes

    def set_accept_routes(self, on):
        self.world.log.append(f"accept {self.name} {on}")
        self.accept_routes = on

    socks5 = None  # "kernel mode": meshcert.property.wait_datapath asks its OS routes

    def status(self):
        return {"Peer": {}}

    @property
    def ts_box(self):
        return self

    @property
    def api(self):  # the node agent: the same fake answers
        return self

    def routes(self, addrs):  # `ip -4 -o route get` of the addresses asked for: nothing goes via tailscale0 here
        return {a: f"{a} dev eth0 src 172.20.0.2 uid 0" for a in addrs}


class FakeHeadscale:
    ip = "172.18.0.2"

    def __init__(self, world):
        self.world = world
        self.approved = {"router": [VLAN]}

    def routes(self):
        return [{"given_name": r, "approved_routes": list(c)} for r, c in self.approved.items()]

    def node_id(self, name):
        return 4

    def approve_routes(self, node_id, cidrs):
        self.world.log.append(f"approve {list(cidrs)}")
        self.approved["router"] = list(cidrs)


class FakeToxiproxy:
    ip = "172.18.0.20"


class FakeSut:
    """Answers every pre-run with (code, answer) and records the calls."""

    def __init__(self, answer: dict | None, code: int = 200):
        self.answer, self.code, self.calls = answer, code, []

    def prerun(self, conn, eps, deadline_s):
        self.calls.append((conn, eps, deadline_s))
        return self.code, self.answer


class FakeWorld:
    """Behaves exactly as the oracle says, except for pairs listed in ``wrong`` (flipped);
    its SUT (every pod's) answers pre-runs with ``answer`` and HTTP ``code``."""

    def __init__(self, wrong=(), answer: dict | None = None, code: int = 200):
        self.topology = guide_topology(VLAN)
        self.log: list[str] = []
        self.wrong = set(wrong)
        self.headscale = FakeHeadscale(self)
        self.toxiproxy = FakeToxiproxy()
        self.nodes = {}
        for i, spec in enumerate((*self.topology.nodes, *self.topology.pods), start=1):
            self.nodes[spec.name] = FakeNode(self, spec.name, spec.tags, f"100.64.0.{i}", f"172.18.0.{i + 4}",
                                             spec.accept_routes, getattr(spec, "advertise_routes", ()))
        self.host_addresses = {h.name: h.address for h in self.topology.hosts}
        self.policy = self.topology.policy
        self.connectivity_spec = None
        self._sut = FakeSut(answer, code)

    def sut(self, pod):
        return self._sut

    def login_server(self):
        return "https://control:8443"

    def address(self, name):
        return self.nodes[name].ts_ip if name in self.nodes else self.host_addresses[name]

    def set_policy(self, policy):
        self.log.append("policy")
        self.policy = policy

    def reset(self):
        self.log.append("reset")

    def wireguard_peer(self, src, address):
        return address if address in {n.ts_ip for n in self.nodes.values()} else None

    def tsmp_ping(self, src, peer_ip, timeout):
        return None  # every session of the fake world is up: a denial may be judged at once

    def _oracle(self) -> Oracle:
        nodes = [Node(n.name, frozenset(n.tags), None, (n.ts_ip,), tuple(n.advertise_routes),
                      tuple(self.headscale.approved.get(n.name, ())), n.accept_routes) for n in self.nodes.values()]
        key = json.dumps([self.policy, [repr(n) for n in nodes]])
        if getattr(self, "_cached", (None,))[0] != key:
            hosts = [Host(h, a) for h, a in self.host_addresses.items()]
            self._cached = (key, Oracle(parse_policy(json.dumps(self.policy)), nodes, hosts))
        return self._cached[1]

    def dial(self, src, targets, timeout):
        o = self._oracle()
        names = {self.address(n): n for n in (*self.nodes, *self.host_addresses)}
        out = []
        for addr, port in targets:
            ok = o.allowed(src, addr, port).allowed != ((src, names[addr], port) in self.wrong)
            out.append({"ok": ok, "banner": f"meshcert-banner host={names[addr]} port={port}" if ok else None,
                        "error": None if ok else "TimeoutError: timed out", "latency_ms": 1.0 if ok else None})
        return out


# Narrow stand-ins for one method each, for tests of one mechanism:

class CutPathsWorld:
    """Port 22 answers with its banner on every path not cut; every other port is dropped. A
    blocking ``dial`` (the probe engine runs it in a thread), each call kept in ``rounds``."""

    def __init__(self, cut=(), open_ports=(22,)):
        self.cut, self.open, self.rounds = {frozenset(c) for c in cut}, set(open_ports), []

    def address(self, name):
        return name

    def answer(self, src, h, p):
        return {"ok": True, "banner": f"meshcert-banner host={h} port={p}", "error": None} \
            if frozenset((src, h)) not in self.cut and p in self.open else \
            {"ok": False, "banner": None, "error": "TimeoutError"}

    def dial(self, src, targets, timeout):
        self.rounds.append((src, list(targets)))
        return [self.answer(src, h, p) for h, p in targets]


class TimedCutPathsWorld(CutPathsWorld):
    """CutPathsWorld with a coroutine ``adial`` whose dropped dials take their whole timeout and
    whose answers take ``answer_s``, as on the wire; ``dials``: (start, end, src, host, port), in
    seconds from the world's creation."""

    def __init__(self, cut=(), open_ports=(22,), answer_s=0.01):
        super().__init__(cut, open_ports)
        self.answer_s, self.dials = answer_s, []
        self.t0 = None  # the loop's clock at the first dial

    async def adial(self, src, targets, timeout):
        loop = asyncio.get_running_loop()
        if self.t0 is None:
            self.t0 = loop.time()
        start = loop.time() - self.t0
        out = [self.answer(src, h, p) for h, p in targets]
        await asyncio.sleep(self.answer_s if all(r["ok"] for r in out) else timeout)
        self.dials += [(start, loop.time() - self.t0, src, h, p) for h, p in targets]
        return out


class ScriptedPongsWorld:
    """WireGuard peers as given; a TSMP ping to ``(src, ip)`` is answered from its Nth try on
    (``pongs_after``), never when not listed."""

    def __init__(self, peers, pongs_after, nodes=None):
        self.peers, self.pongs_after, self.pings = peers, pongs_after, []
        self.nodes = {name: SimpleNamespace(ts_ip=ip) for name, ip in (nodes or {}).items()}  # name -> tailnet IP

    def wireguard_peer(self, src, address):
        return self.peers.get((src, address))

    def tsmp_ping(self, src, ip, timeout):
        self.pings.append((src, ip))
        n = sum(1 for p in self.pings if p == (src, ip))
        after = self.pongs_after.get((src, ip))
        return None if after is not None and n >= after else "ping \"x\" timed out"
