#!/usr/bin/env python3
"""Benchmark: warm start-up of the default (guide) world until every node is Running, converged
and policy-synced, and its peak memory. Rerun: `.venv/bin/python bench/world_startup.py [-n 3]`.

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
from meshcert.world.topology import guide_topology


def container_peak_bytes(w: World) -> dict[str, int]:
    out = {}
    for role, box in w.boxes.items():
        st = box.container.stats(stream=False)
        mem = st.get("memory_stats") or {}
        out[role] = int(mem.get("max_usage") or mem.get("usage") or 0)  # max_usage: cgroup v1 high-water mark
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3, help="number of warm starts")
    ap.add_argument("--out", type=Path, default=RESULTS / "world-startup.json", help="the artifact (JSON)")
    a = ap.parse_args()
    c = engine.ensure_engine()
    images.ensure_images(c)  # warm: the first (cold) build is not what we measure
    runs = []
    for i in range(a.n):
        vlan = os.environ.get("MESHCERT_VLAN")  # two worlds on one engine need different VLANs
        w = World(topology=guide_topology(vlan) if vlan else guide_topology())
        t0 = time.monotonic()
        try:
            w.start()
            total = time.monotonic() - t0
            peaks = container_peak_bytes(w)
        finally:
            w.stop()
        runs.append({"total_s": round(total, 2), "phases_s": {k: round(v, 2) for k, v in w.timings.items()},
                     "containers_peak_mib": round(sum(peaks.values()) / 2**20, 1),
                     "per_container_mib": {k: round(v / 2**20, 1) for k, v in peaks.items()}})
        progress.say(f"warm start {i + 1}/{a.n}: {total:.1f}s, containers' peak {runs[-1]['containers_peak_mib']} MiB")
    totals = [r["total_s"] for r in runs]
    result = {
        **stamp(f"bench/world_startup.py -n {a.n}"),
        "runs": runs,
        "median_total_s": statistics.median(totals),
        "max_total_s": max(totals),
        "median_containers_peak_mib": statistics.median(r["containers_peak_mib"] for r in runs),
        "meshcert_process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "target_s": 20,
    }
    out = a.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
