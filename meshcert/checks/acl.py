"""ACL-1, ACL-2: the guide's ACL policy scopes what the agent can reach."""

from __future__ import annotations

from ..world.topology import AGENT_TAG, DB_TAG, SERVER_TAG
from .base import Probe, check_reachability

# The guide: tag:agent-runtime -> tag:managed-servers:22 and tag:managed-databases:5432,3306.
GUIDE_GRANTS = {SERVER_TAG: (22,), DB_TAG: (5432, 3306)}


def _tags(world, name: str) -> tuple[str, ...]:
    return world.topology.node(name).tags


def allowed_triples(world) -> set[tuple[str, str, int]]:
    names = [n.name for n in world.topology.nodes] + [p.name for p in world.topology.pods]
    return {(s, d, port) for s in names if AGENT_TAG in _tags(world, s)
            for d in names for tag, ports in GUIDE_GRANTS.items() if tag in _tags(world, d) for port in ports}


def acl1(world) -> None:
    """ACL-1: every agent pod reaches managed-servers:22 and managed-databases:5432 and :3306."""
    check_reachability(world, "ACL-1", [Probe(s, d, p, True, "allowed by the guide's ACL")
                                        for s, d, p in sorted(allowed_triples(world))])


def tailnet_ports(world) -> dict[str, tuple[int, ...]]:
    return {n.name: n.banner_ports for n in (*world.topology.nodes, *world.topology.pods)}


def acl2(world) -> None:
    """ACL-2: everything else between tailnet nodes is denied -- servers:80, databases:6379, every
    other pair (default deny), and no target can open a connection to the agent."""
    allowed = allowed_triples(world)
    ports = tailnet_ports(world)
    probes = [Probe(s, d, p, True, "positive control") for s, d, p in sorted(allowed)]
    for pod in world.topology.pods:  # proves the subnet router's tailnet end alive
        for host in world.topology.hosts:
            probes.append(Probe(pod.name, host.name, 22, True, "positive control through the subnet router",
                                via="router"))
    for src in ports:
        for dst, dports in ports.items():
            if src == dst:
                continue
            for port in dports:
                if (src, dst, port) not in allowed:
                    why = "target -> agent must be denied" if AGENT_TAG in _tags(world, dst) else "default deny"
                    probes.append(Probe(src, dst, port, False, why))
    check_reachability(world, "ACL-2", probes)
