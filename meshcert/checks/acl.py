"""ACL-1, ACL-2: the guide's ACL policy scopes what the agent can reach."""

from __future__ import annotations

import json

from meshcert.checks.base import Probe, check_reachability, pair
from meshcert.world.topology import AGENT_TAG, DB_TAG, SERVER_TAG

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
    other pair (default deny), and no target can open a connection to the agent.

    Every denial is judged live, after a positive control between the same two nodes connected:
    another port the guide allows (either direction: agent -> server:22 controls server:80 and
    server -> agent). Pairs the guide lets exchange nothing at all (server | database, the
    router, agent | agent-us) get their control before the change: a policy that also accepts
    everything is set, each such pair must connect, then the world's policy is set back and the
    denials are dialled."""
    allowed = allowed_triples(world)
    ports = tailnet_ports(world)
    probes = [Probe(s, d, p, True, "positive control") for s, d, p in sorted(allowed)]
    for pod in world.topology.pods:  # the subnet router's tailnet end alive
        for host in world.topology.hosts:
            probes.append(Probe(pod.name, host.name, 22, True, "positive control through the subnet router",
                                via="router"))
    negatives = []
    for src in ports:
        for dst, dports in ports.items():
            if src == dst:
                continue
            for port in dports:
                if (src, dst, port) not in allowed:
                    why = "target -> agent must be denied" if AGENT_TAG in _tags(world, dst) else "default deny"
                    negatives.append(Probe(src, dst, port, False, why))
    controlled = {pair(p.src, p.dst) for p in probes}
    before: dict[frozenset, Probe] = {}
    for n in negatives:
        if pair(n.src, n.dst) not in controlled:
            before.setdefault(pair(n.src, n.dst), Probe(
                n.src, n.dst, n.port, True, f"positive control before the change, under a policy that accepts "
                f"everything: without it no denial between {n.src} and {n.dst} can be judged"))
    if before:
        guide = world.policy
        opened = json.loads(json.dumps(guide))
        opened["acls"] = [*opened["acls"], {"action": "accept", "src": ["*"], "dst": ["*:*"]}]
        world.set_policy(opened)
        try:
            check_reachability(world, "ACL-2", sorted(before.values(), key=lambda p: (p.src, p.dst)))
        finally:
            world.set_policy(guide)
    check_reachability(world, "ACL-2", probes + negatives, proven=[(p.src, p.dst) for p in before.values()])
