"""A plain host: one container kind of the world. A legacy VLAN server (or any host off the
tailnet) running only meshcert's node agent, which serves the topology's banner ports and
dials on request; reached through its ``NodeAPI``. Started with the world from the topology's
hosts, or added for one test (extra.add_plain_host)."""

from __future__ import annotations

from meshcert.world.base import Box, Launcher
from meshcert.world.topology import HostSpec


def start_host(run: Launcher, image: str, spec: HostSpec) -> Box:
    """The host's container on its network at its fixed address, serving its banner ports."""
    return run(spec.name, image,
               ["python3", "/opt/meshcert/world/nodeagent.py", "--banner", ",".join(map(str, spec.banner_ports))],
               network=spec.network, hostname=spec.name, ipv4_address=spec.address,
               environment={"MESHCERT_NAME": spec.name})
