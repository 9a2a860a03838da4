"""Things added to a running world for one test and removed after it (same labels, so the
sweeper catches them if the run is killed): a plain host, and nft faults loaded into a
container's network namespace from the host."""

from __future__ import annotations

import os
import subprocess

from meshcert.world.base import NodeAPI, WorldError, container_state, http_state, wait_for
from meshcert.world.host import start_host
from meshcert.world.topology import HostSpec
from meshcert.world.world import World


def add_plain_host(world: World, spec: HostSpec) -> NodeAPI:
    box = start_host(world.run_container, world.images["host"], spec)
    api = NodeAPI(spec.name, world.ip_of(box, spec.network))
    wait_for(f"node agent on {spec.name}", api.healthy, 30,
             describe=lambda: f"GET /health: {http_state(api.base + '/health')}; {container_state(box)}")
    world.hosts[spec.name] = api
    world.host_addresses[spec.name] = spec.address
    return api


def remove_plain_host(world: World, name: str) -> None:
    box = world.boxes.pop(name, None)
    if box is not None:
        box.container.remove(force=True)
    world.hosts.pop(name, None)
    world.host_addresses.pop(name, None)


CHAOS_TABLE = "meshcert_chaos"


def _netns_pid(world: World, role: str) -> int:
    if os.environ.get("DOCKER_HOST"):
        raise WorldError("netns faults need a local engine (nsenter into the container's pid)",
                         "run meshcert on the engine's host")
    box = world.boxes[role]
    box.container.reload()
    return int(box.container.attrs["State"]["Pid"])


def netns_nft(world: World, role: str, chains: str) -> None:
    """Load ``chains`` (nft syntax, the body of an inet table) into the network namespace of
    container ``role`` from the host (the container needs no NET_ADMIN). Healed by netns_heal."""
    pid = _netns_pid(world, role)
    ruleset = f"table inet {CHAOS_TABLE} {{\n{chains}\n}}\n"
    p = subprocess.run(["nsenter", "-t", str(pid), "-n", "nft", "-f", "-"], input=ruleset, text=True,
                       capture_output=True)
    if p.returncode != 0:
        raise WorldError(f"nft in {role}'s network namespace failed: {p.stderr.strip()}")


def netns_heal(world: World, role: str) -> bool:
    """Remove meshcert's fault table from ``role``'s namespace; True if there was one."""
    pid = _netns_pid(world, role)
    p = subprocess.run(["nsenter", "-t", str(pid), "-n", "nft", "delete", "table", "inet", CHAOS_TABLE],
                       capture_output=True, text=True)
    return p.returncode == 0


BLOCK_UDP = """  chain out { type filter hook output priority 0; meta l4proto udp ip daddr != 127.0.0.0/8 drop; }
  chain in { type filter hook input priority 0; meta l4proto udp ip saddr != 127.0.0.0/8 drop; }"""
