from meshcert.world.base import WorldError, wait_for  # noqa: F401
from meshcert.world.interface import ControlServer, PodHandle, ProxyServer, TailnetPeer, WorldAPI  # noqa: F401
from meshcert.world.topology import Topology, guide_policy, guide_topology  # noqa: F401
from meshcert.world.world import World  # noqa: F401
