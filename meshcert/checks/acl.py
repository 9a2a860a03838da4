"""ACL-1, ACL-2: the guide's ACL policy scopes what the agent can reach."""

from __future__ import annotations

from .base import Probe, check_reachability

# The guide: tag:agent-runtime -> tag:managed-servers:22 and tag:managed-databases:5432,3306.
ALLOWED = {("agent", "server", 22), ("agent", "database", 5432), ("agent", "database", 3306)}


def acl1(world) -> None:
    """ACL-1: the agent reaches managed-servers:22 and managed-databases:5432 and :3306."""
    check_reachability(world, "ACL-1", [Probe(s, d, p, True, "allowed by the guide's ACL") for s, d, p in sorted(ALLOWED)])


def tailnet_ports(world) -> dict[str, tuple[int, ...]]:
    out = {n.name: n.banner_ports for n in world.topology.nodes}
    out[world.topology.agent.name] = world.topology.agent.banner_ports
    return out


def acl2(world) -> None:
    """ACL-2: everything else between tailnet nodes is denied -- servers:80, databases:6379, every
    other pair (default deny), and no target can open a connection to the agent."""
    ports = tailnet_ports(world)
    probes = [Probe(s, d, p, True, "positive control") for s, d, p in sorted(ALLOWED)]
    probes.append(Probe("agent", "legacy", 22, True, "positive control through the subnet router", via="router"))
    for src in ports:
        for dst, dports in ports.items():
            if src == dst:
                continue
            for port in dports:
                if (src, dst, port) not in ALLOWED:
                    why = "target -> agent must be denied" if dst == "agent" else "default deny"
                    probes.append(Probe(src, dst, port, False, why))
    check_reachability(world, "ACL-2", probes)
