from meshcert.world.topology import Topology, guide_topology, guide_policy  # noqa: F401
from meshcert.world.world import World, WorldError, wait_for  # noqa: F401
from meshcert.world.interface import ControlServer, PodHandle, ProxyServer, TailnetPeer, WorldAPI  # noqa: F401
