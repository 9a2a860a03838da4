"""Helpers for meshcert's own engine tests (tests/engine/): a VLAN no network of the engine holds."""

from __future__ import annotations

import ipaddress

from meshcert.toolchain import engine


def free_vlan() -> str:
    """A /24 no network of this engine holds: the session world (MESHCERT_VLAN) runs beside us."""
    c = engine.ensure_engine()
    used = [ipaddress.ip_network(cfg["Subnet"]) for n in c.networks.list()
            for cfg in ((n.attrs.get("IPAM") or {}).get("Config") or []) if "Subnet" in cfg and ":" not in cfg["Subnet"]]
    for third in range(30, 250):
        cand = ipaddress.ip_network(f"10.20.{third}.0/24")
        if not any(cand.overlaps(u) for u in used):
            return str(cand)
    raise AssertionError("no free 10.20.x.0/24 on this engine")
