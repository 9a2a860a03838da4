#!/usr/bin/env python3
"""Benchmark: warm start-up of the default (guide) world until every node is Running, converged
and policy-synced, and its peak memory. Rerun: `.venv/bin/python bench/world_startup.py [-n 3]`.

``--cred``: the credential world instead (issue 13: the guide's world with real targets, sshd
and PostgreSQL, and Vault started, initialised, unsealed and configured, the SUT started with
its Vault configuration, as the ``cred_world`` fixture builds it), written to
bench/results/world-startup-cred.json with Vault's own phases.

Figures are measured, printed and written to bench/results/world-startup.json (``--out``),
stamped with the commit and the machine; nothing is asserted (the target, under 20 s on a 2-core
machine, is compared in the printout only). bench/figures.py runs it and puts the figures in
the README.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

from stamp import RESULTS, stamp  # bench/stamp.py (this script's folder is on sys.path)

from meshcert.toolchain import engine, images, progress
from meshcert.world import World
from meshcert.world.credentials import configure_vault, credential_topology, start_sut_with_vault, start_vault_beside
from meshcert.world.topology import guide_topology


def container_peak_bytes(w: World) -> dict[str, int]:
    out = {}
    for role, box in w.boxes.items():
        st = box.container.stats(stream=False)
        mem = st.get("memory_stats") or {}
        out[role] = int(mem.get("max_usage") or mem.get("usage") or 0)  # max_usage: cgroup v1 high-water mark
    return out


def _load1() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3, help="number of warm starts")
    ap.add_argument("--cred", action="store_true", help="the credential world (Vault, sshd, PostgreSQL)")
    ap.add_argument("--out", type=Path, default=None,
                    help="the artifact (JSON; default world-startup.json, with --cred world-startup-cred.json)")
    a = ap.parse_args()
    out = a.out or RESULTS / ("world-startup-cred.json" if a.cred else "world-startup.json")
    c = engine.ensure_engine()
    images.ensure_images(c)  # warm: the first (cold) build is not what we measure
    runs = []
    for i in range(a.n):
        vlan = os.environ.get("MESHCERT_VLAN")  # two worlds on one engine need different VLANs
        w = World(topology=(credential_topology if a.cred else guide_topology)(*([vlan] if vlan else [])))
        load_before = _load1()
        t0 = time.monotonic()
        vault_phases: dict = {}
        try:
            if a.cred:  # as the cred_world fixture (meshcert/plugin/fixtures.py)
                w.start(beside=start_vault_beside)
                vault = configure_vault(w, w.beside)
                start_sut_with_vault(w, vault)
                vault_phases = dict(vault.timings)
            else:
                w.start()
            total = time.monotonic() - t0
            peaks = container_peak_bytes(w)
        finally:
            w.stop()
        runs.append({"total_s": round(total, 2), "phases_s": {k: round(v, 2) for k, v in w.timings.items()},
                     **({"vault_phases_s": {k: round(v, 2) for k, v in vault_phases.items()}} if a.cred else {}),
                     "load1_before_after": [load_before, _load1()],  # the 2 cores and the engine are shared
                     "containers_peak_mib": round(sum(peaks.values()) / 2**20, 1),
                     "per_container_mib": {k: round(v / 2**20, 1) for k, v in peaks.items()}})
        progress.say(f"warm start {i + 1}/{a.n}: {total:.1f}s, containers' peak {runs[-1]['containers_peak_mib']} MiB")
    totals = [r["total_s"] for r in runs]
    result = {
        **stamp(f"bench/world_startup.py -n {a.n}{' --cred' if a.cred else ''}"),
        "world": "credential" if a.cred else "guide",
        "runs": runs,
        "median_total_s": statistics.median(totals),
        "max_total_s": max(totals),
        "median_containers_peak_mib": statistics.median(r["containers_peak_mib"] for r in runs),
        "meshcert_process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "target_s": 20,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
