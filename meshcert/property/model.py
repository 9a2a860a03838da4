"""The data of the property test, shared with replay files: pure data, no Hypothesis, no world.

An :class:`Example` is an ACL policy written with ``${...}`` symbols plus :class:`RouteSettings`;
a :class:`Shape` is what the strategies draw from (names, tags, served ports of a topology); a
:class:`Pair` is one probe of the matrix; an :class:`Outcome` is one example run against a world
(:mod:`meshcert.property.runner` makes it, :mod:`meshcert.replay.model` saves it as a file).

Policies are written *symbolically*: world addresses are ``${...}`` symbols, resolved against
the live world just before the policy is set (:func:`meshcert.property.live.resolve`), because
headscale hands out tailnet addresses in join order, which varies from one world to the next. A
replay file keeps the symbols, so it reruns in any world built from the same topology. Symbols:

``${ip:NAME}``       tailnet IPv4 of node NAME, or the address of plain host NAME (the VLAN host)
``${net:NAME}``      the CIDR of topology network NAME (``${net:vlan}``: the router's VLAN)
``${net:NAME/LEN}``  the prefix of length LEN that contains that network's first address
``${tailnet}``       headscale's IPv4 range, 100.64.0.0/10

The probe matrix is every tailnet node and pod as source x every served (node, port) as target
(a node is not probed against itself) + every plain host's ports (the legacy host's 22, reached
only through the subnet router).

This module imports nothing above the oracle and the topology: a replay file is read and
written with it alone.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from meshcert.property.oracle import Verdict
from meshcert.world.topology import AGENT_TAG, DB_TAG, ROUTER_TAG, SERVER_TAG, Topology

TAGS = (AGENT_TAG, SERVER_TAG, DB_TAG, ROUTER_TAG)
TAILNET_V4 = "100.64.0.0/10"
OWNER = "meshcert@"
SYMBOL = re.compile(r"\$\{([a-z]+)(?::([A-Za-z0-9_.-]+)(?:/([0-9]{1,2}))?)?\}")

# s: one dial of a pair the oracle denies (a drop costs all of it). Dialled after an allowed pair
# between the same two nodes connected, or its TSMP control answered (live.probe()): over a live
# WireGuard session an allowed connection completes in milliseconds. Measured (the property
# figure connect_ms_max: the slowest first-dial connect of an allowed pair; seed 1, 2026-12-01):
# 76 ms at load 2, 117 ms at load 6 (55 examples each), 141 ms at a 1-min load of 13 (55
# examples), 141 ms at load 20-24 and 178 ms at load 17-26 (50 examples each; certify's run),
# 2 cores, ~40 dials at once per node. 0.5 s is 2.8x the worst of those, 6.6x the load-2 one. It was 1.5 s, then 0.75 s: each 0.25 s is ~12 s per property
# run. A shorter timeout cannot make a test flaky (a drop is what a denial is expected to do);
# what it could do is miss a violation that connects slower than this over a live session.
NEGATIVE_TIMEOUT = 0.5
RETRY_WINDOW = 25.0      # s: how long a pair the oracle allows is retried before it differs (see live.probe())
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


# ------------------------------------------------------------------------------------ outcomes

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
    # each pair's meshcert.property.live.Observation (it lives with the probing: it reads the
    # node agent's banner, a fact of the world this module does not import)
    observations: dict[Pair, Any]
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
