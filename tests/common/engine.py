"""Helpers for meshcert's own engine tests (tests/engine/): a VLAN no network of the engine holds,
and a world of a test module's own (:func:`own_world`)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager

from meshcert.plugin import parallel
from meshcert.plugin.fixtures import CRED_VLAN_OFFSET
from meshcert.toolchain import engine
from meshcert.toolchain.paths import cache_dir
from meshcert.world import labels
from meshcert.world.topology import GUIDE_VLAN, Topology
from meshcert.world.world import World


def free_vlan(count: int = 1) -> str:
    """A /24 no network of this engine holds and no other live process has reserved: the session
    world (MESHCERT_VLAN) runs beside us. ``count``: the first of that many consecutive free /24s
    (a child run with that many xdist workers, whose worlds use MESHCERT_VLAN + 0, + 1, ...).

    Looking at the engine's networks is not enough: between our look and the network's creation
    (by us, or by a child run started with this VLAN) another worker or another session on the
    same engine may pick the same /24 (a CI run failed so: "Pool overlaps"). So each /24 taken is
    also reserved in ``<cache>/vlans/10.20.<n>`` (created exclusively, holding this process's owner
    token) until this process ends (each call gets a /24 of its own); a reservation whose owner
    is gone is free again."""
    c = engine.ensure_engine()
    used = [ipaddress.ip_network(cfg["Subnet"]) for n in c.networks.list()
            for cfg in ((n.attrs.get("IPAM") or {}).get("Config") or []) if "Subnet" in cfg and ":" not in cfg["Subnet"]]
    for third in _candidates():
        cands = [ipaddress.ip_network(f"10.20.{t}.0/24") for t in range(third, third + count)]
        if third + count <= 256 and not any(cand.overlaps(u) for cand in cands for u in used) \
                and _reserve(range(third, third + count)):
            return str(cands[0])
    raise AssertionError("no free 10.20.x.0/24 on this engine")


def _reserve(thirds: range) -> bool:
    """Reserve every /24 of ``thirds`` for this process, or none of them. A reservation appears
    whole (written aside, then hard-linked into place: the link fails when one exists), so a
    reader never sees one without its owner."""
    d = cache_dir() / "vlans"
    d.mkdir(exist_ok=True)
    me = labels.owner_token()
    tmp = d / f".tmp-{os.getpid()}"
    tmp.write_text(me)
    taken: list = []
    try:
        for t in thirds:
            f = d / f"10.20.{t}"
            for _ in range(2):  # once more after removing a dead owner's reservation
                try:
                    os.link(tmp, f)
                    taken.append(f)
                    break
                except FileExistsError:
                    try:
                        owner = f.read_text().strip()
                    except OSError:
                        continue  # removed meanwhile: try again
                    # ours (handed out by an earlier call of this process, whose network may not
                    # exist yet) or a live process's: taken
                    if owner == me or labels.owner_alive(owner):
                        raise _Taken from None
                    f.unlink(missing_ok=True)
            else:
                raise _Taken
    except _Taken:
        for g in taken:
            g.unlink(missing_ok=True)
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


class _Taken(Exception):
    """A /24 of the range is reserved by a live process."""


def _candidates() -> list[int]:
    """Third octets to try. Serial: 30..249. In an xdist worker gwK of N: past the block of the
    workers' own session VLANs, every N-th octet from K on, so two workers never pick the same
    free /24 before either has made its network."""
    block = parallel.worker_vlans()
    if block is None:  # serial: the session's credential world is at its VLAN + CRED_VLAN_OFFSET
        own = ipaddress.ip_network(os.environ.get("MESHCERT_VLAN") or GUIDE_VLAN).network_address.packed[2]
        return [t for t in range(30, 250) if t != own + CRED_VLAN_OFFSET]
    first, n = block
    k = int(os.environ["PYTEST_XDIST_WORKER"][2:])
    # the workers' credential worlds (plugin cred_world) take their session VLAN + CRED_VLAN_OFFSET
    # without a reservation, possibly after a child run looked: never hand those out
    cred = range(first + CRED_VLAN_OFFSET, first + CRED_VLAN_OFFSET + n)
    return [t for t in range(first + n, 250) if (t - first - n) % n == k and t not in cred]


@contextmanager
def own_world(topology: Topology, tmp_path_factory, logs: str) -> Iterator[World]:
    """A world a test module builds for itself (another headscale, a mixed tailnet), beside the
    session world: started with its container logs under a temporary folder named ``logs``,
    stopped (everything it made removed) however the module ends. Give it ``free_vlan()``."""
    w = World(topology=topology)
    w.log_root = tmp_path_factory.mktemp(logs)
    w.start()
    try:
        yield w
    finally:
        w.stop()
