from .topology import Topology, guide_topology, guide_policy  # noqa: F401
from .world import World, WorldError, wait_for  # noqa: F401
