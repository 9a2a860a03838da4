"""Things added to a running world for one test and removed after it (same labels, so the
sweeper catches them if the run is killed)."""

from __future__ import annotations

from .topology import HostSpec
from .world import NodeAPI, World, wait_for


def add_plain_host(world: World, spec: HostSpec) -> NodeAPI:
    box = world._run(spec.name, world.images["host"],
                     ["python3", "/opt/meshcert/nodeagent.py", "--banner", ",".join(map(str, spec.banner_ports))],
                     network=spec.network, hostname=spec.name, ipv4_address=spec.address,
                     environment={"MESHCERT_NAME": spec.name})
    api = NodeAPI(spec.name, world._ip(box, spec.network))
    wait_for(f"node agent on {spec.name}", api.healthy, 30, describe=lambda: box.logs()[-500:])
    world.hosts[spec.name] = api
    world.host_addresses[spec.name] = spec.address
    return api


def remove_plain_host(world: World, name: str) -> None:
    box = world.boxes.pop(name, None)
    if box is not None:
        box.container.remove(force=True)
    world.hosts.pop(name, None)
    world.host_addresses.pop(name, None)
