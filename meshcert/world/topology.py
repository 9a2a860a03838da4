"""A declarative description of a world: networks, tailnet nodes, plain hosts, the agent pod, policy.

``guide_topology()`` is the Connectivity Guide's own world (DESIGN.md §2).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from dataclasses import dataclass

AGENT_TAG = "tag:agent-runtime"
SERVER_TAG = "tag:managed-servers"
DB_TAG = "tag:managed-databases"
ROUTER_TAG = "tag:subnet-router"
GUIDE_VLAN = "10.20.5.0/24"


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    subnet: str | None = None  # None: the engine picks one


@dataclass(frozen=True)
class NodeSpec:
    """A container running tailscaled (kernel TUN mode) and meshcert's node agent."""
    name: str
    tags: tuple[str, ...]
    banner_ports: tuple[int, ...] = ()
    networks: tuple[str, ...] = ("wan",)
    advertise_routes: tuple[str, ...] = ()
    approve_routes: tuple[str, ...] = ()
    accept_routes: bool = False
    image: str = "tailscale"  # or a credential target's: "server" (sshd), "database" (PostgreSQL): world/targets.py
    tailscale: str | None = None  # its tailscale version (issue 14: mixed tailnets); None: the pinned one


@dataclass(frozen=True)
class HostSpec:
    """A host with no tailscale at all (e.g. a legacy box on a VLAN)."""
    name: str
    network: str
    address: str
    banner_ports: tuple[int, ...] = (22,)
    image: str = "host"  # or "sshd-host": sshd on 22 (world/targets.py)


@dataclass(frozen=True)
class AgentSpec:
    """An agent pod: pause + tailscale sidecar + probe + SUT sharing one network namespace.

    ``userspace``: the sidecar runs ``--tun=userspace-networking`` (as the Helm chart's
    TS_USERSPACE=true does): no TUN in the pod, so the SUT and the probe must dial through the
    sidecar's SOCKS5 proxy on 127.0.0.1:``socks5_port``.
    """
    name: str = "agent"
    tags: tuple[str, ...] = (AGENT_TAG,)
    accept_routes: bool = True
    banner_ports: tuple[int, ...] = (22, 5000)  # for "targets cannot open connections to the agent"
    userspace: bool = False
    socks5_port: int = 1055
    tailscale: str | None = None  # the sidecar's tailscale version; None: the pinned one


@dataclass
class Topology:
    networks: tuple[NetworkSpec, ...]
    nodes: tuple[NodeSpec, ...]
    hosts: tuple[HostSpec, ...]
    pods: tuple[AgentSpec, ...]
    policy: dict
    user: str = "meshcert"
    headscale: str | None = None  # the control server's headscale version (issue 14); None: the pinned one
    tailscale: str | None = None  # the tailscale version of a node or pod that names none (pods added by a
                                  # test included); None: the pinned one

    @property
    def agent(self) -> AgentSpec:
        """The main agent pod (kernel TUN sidecar)."""
        return self.pods[0]

    def node(self, name: str) -> NodeSpec | AgentSpec:
        for n in (*self.nodes, *self.pods):
            if n.name == name:
                return n
        raise KeyError(name)


def guide_policy(vlan: str = GUIDE_VLAN) -> dict:
    """The guide's ACL policy, plus what the guide leaves implicit but a working tailnet needs:
    tagOwners for every tag (headscale rejects undefined tags), and -- for its subnet-router
    section to work at all -- a rule letting the agent reach SSH on the VLAN."""
    return {
        "tagOwners": {t: ["meshcert@"] for t in (AGENT_TAG, SERVER_TAG, DB_TAG, ROUTER_TAG)},
        "acls": [
            {"action": "accept", "src": [AGENT_TAG], "dst": [f"{SERVER_TAG}:22"]},
            {"action": "accept", "src": [AGENT_TAG], "dst": [f"{DB_TAG}:5432,3306"]},
            {"action": "accept", "src": [AGENT_TAG], "dst": [f"{vlan}:22"]},
        ],
    }


def guide_topology(vlan: str = GUIDE_VLAN) -> Topology:
    """The guide's world. ``vlan`` moves the subnet router's VLAN (two worlds on one engine
    cannot share a subnet); the legacy host takes its .10 address."""
    net = ipaddress.ip_network(vlan)
    legacy = str(net.network_address + 10)
    return Topology(
        networks=(NetworkSpec("wan"), NetworkSpec("vlan", str(net))),
        nodes=(
            NodeSpec("server", (SERVER_TAG,), banner_ports=(22, 80)),
            NodeSpec("database", (DB_TAG,), banner_ports=(5432, 3306, 6379)),
            NodeSpec("router", (ROUTER_TAG,), networks=("wan", "vlan"),
                     advertise_routes=(str(net),), approve_routes=(str(net),)),
        ),
        hosts=(HostSpec("legacy", "vlan", legacy, banner_ports=(22,)),),
        pods=(AgentSpec(), AgentSpec(name="agent-us", userspace=True)),
        policy=guide_policy(str(net)),
    )


def with_tailscale(topo: Topology, versions: dict[str, str]) -> Topology:
    """``topo`` with the named nodes and pods (``{"router": "v1.80.3", "agent": ...}``; ``"*"``:
    every one not named, and pods a test adds later) running another tailscale version: a mixed
    tailnet, as headscale's integration suite runs one."""
    default = versions.get("*", topo.tailscale)
    versions = {k: v for k, v in versions.items() if k != "*"}
    unknown = set(versions) - {n.name for n in (*topo.nodes, *topo.pods)}
    if unknown:
        raise KeyError(f"no node or pod named {', '.join(sorted(unknown))}")
    return dataclasses.replace(
        topo, tailscale=default, nodes=tuple(dataclasses.replace(n, tailscale=versions.get(n.name, n.tailscale)) for n in topo.nodes),
        pods=tuple(dataclasses.replace(a, tailscale=versions.get(a.name, a.tailscale)) for a in topo.pods))


def parse_versions(text: str) -> dict[str, str]:
    """``MESHCERT_TAILSCALE``'s form: ``v1.80.3`` (every node and pod) or
    ``agent=v1.80.3,router=v1.80.3`` (``*=v1.80.3``: every one not named, and pods a test adds)."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if part:
            name, _, version = part.rpartition("=")
            out[name.strip() or "*"] = version.strip()
    return out


def world_versions(topo: Topology, pinned: dict[str, str]) -> dict:
    """The versions a world runs, for results.json: {"headscale": v, "tailscale": {node: v},
    "tailscale_default": v (of pods added later)}
    (``pinned``: {"tailscale": v, "headscale": v}, for the nodes that run the pinned ones)."""
    default = topo.tailscale or pinned["tailscale"]
    return {"headscale": topo.headscale or pinned["headscale"], "tailscale_default": default,
            "tailscale": {n.name: n.tailscale or default for n in (*topo.nodes, *topo.pods)}}


def policy_text(policy: dict) -> str:
    return json.dumps(policy, indent=2, sort_keys=False)
