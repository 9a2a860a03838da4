"""Helpers for meshcert's own engine tests (tests/engine/): a VLAN no network of the engine holds."""

from __future__ import annotations

import ipaddress
import os

from meshcert.plugin import parallel
from meshcert.toolchain import engine


def free_vlan(count: int = 1) -> str:
    """A /24 no network of this engine holds: the session world (MESHCERT_VLAN) runs beside us.
    ``count``: the first of that many consecutive free /24s (a child run with that many xdist
    workers, whose worlds use MESHCERT_VLAN + 0, + 1, ...)."""
    c = engine.ensure_engine()
    used = [ipaddress.ip_network(cfg["Subnet"]) for n in c.networks.list()
            for cfg in ((n.attrs.get("IPAM") or {}).get("Config") or []) if "Subnet" in cfg and ":" not in cfg["Subnet"]]
    for third in _candidates():
        cands = [ipaddress.ip_network(f"10.20.{t}.0/24") for t in range(third, third + count)]
        if third + count <= 256 and not any(cand.overlaps(u) for cand in cands for u in used):
            return str(cands[0])
    raise AssertionError("no free 10.20.x.0/24 on this engine")


def _candidates() -> list[int]:
    """Third octets to try. Serial: 30..249. In an xdist worker gwK of N: past the block of the
    workers' own session VLANs, every N-th octet from K on, so two workers never pick the same
    free /24 before either has made its network."""
    block = parallel.worker_vlans()
    if block is None:
        return list(range(30, 250))
    first, n = block
    k = int(os.environ["PYTEST_XDIST_WORKER"][2:])
    return [t for t in range(first + n, 250) if (t - first - n) % n == k]
