#!/usr/bin/env python3
"""Benchmark: what a pre-run costs beyond its deadline in the real world, the figure behind
meshcert.checks.sut.OVERHEAD_S (the time bounds of HEALTH-2 and the chaos scenarios).

A world is built (MESHCERT_VLAN moves its VLAN), then in each agent pod the SUT runs many
mesh-mode pre-runs whose endpoints are all blackholed (ACL-denied ports of online peers: each
dial waits its whole deadline), timed from this machine as the checks time them. overhead =
duration - deadline. Written to bench/results/prerun-overhead-<date>-<commit>.{json,md} with
the commit, the machine (cores, memory) and its load average during the runs. Nothing is asserted.

Rerun: `.venv/bin/python bench/prerun_overhead.py [--runs 30] [--deadlines 1 2]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stamp import write_result  # noqa: E402
from meshcert.checks.sut import BLACKHOLES, ep, mesh_spec  # noqa: E402
from meshcert.toolchain import progress  # noqa: E402
from meshcert.world import World, wait_for  # noqa: E402
from meshcert.world.topology import guide_topology  # noqa: E402


def machine() -> dict:
    mem_kib = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {"cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1), "kernel": os.uname().release}


def commit() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def stats(values: list[float]) -> dict:
    return {"n": len(values), "min": round(min(values), 4), "median": round(statistics.median(values), 4),
            "max": round(max(values), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30, help="pre-runs per pod and deadline")
    ap.add_argument("--deadlines", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--pods", nargs="+", default=["agent", "agent-us"])
    a = ap.parse_args()
    vlan = os.environ.get("MESHCERT_VLAN")
    world = World(topology=guide_topology(vlan) if vlan else guide_topology())
    series = []
    try:
        world.start()
        for pod in a.pods:
            sut = world.sut(pod)
            # a positive control first: the peers whose denied ports we dial are up and handshaken
            wait_for(f"server:22 reachable from the SUT in {pod}",
                     lambda sut=sut: sut.connect(world.address("server"), 22, timeout_s=3).get("ok"), 30)
            eps = {f"{n}-{p}": ep(world, n, p, critical=False) for n, p in BLACKHOLES}
            for deadline in a.deadlines:
                load0 = os.getloadavg()
                overheads = []
                for _ in range(a.runs):
                    t0 = time.monotonic()
                    code, ans = sut.prerun(mesh_spec(world), eps, deadline_s=deadline)
                    took = time.monotonic() - t0
                    if code != 200 or any(r.get("reachable") for r in ans["endpoints"].values()):
                        raise SystemExit(f"{pod}: a blackholed endpoint answered or HTTP {code}: {ans}")
                    overheads.append(took - deadline)
                load1 = os.getloadavg()
                s = {"pod": pod, "deadline_s": deadline, "endpoints": len(eps), "overhead_s": stats(overheads),
                     "loadavg_1m_before_after": [round(load0[0], 2), round(load1[0], 2)],
                     "samples_s": [round(x, 4) for x in overheads]}
                series.append(s)
                progress.say(f"{pod}, deadline {deadline:g} s: overhead {s['overhead_s']} "
                             f"(load {s['loadavg_1m_before_after']})")
    finally:
        world.stop()
    worst = max(s["overhead_s"]["max"] for s in series)
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit(),
              "machine": machine(), "runs_per_series": a.runs, "series": series,
              "max_overhead_s": worst}
    out_dir = ROOT / "bench" / "results"
    stem = f"prerun-overhead-{time.strftime('%Y-%m-%d', time.gmtime())}-{result['commit']}"
    m = result["machine"]
    lines = ["# Pre-run overhead beyond its deadline (all endpoints blackholed)", "",
             f"{result['when']}, commit {result['commit']}, {m['cores']} cores, {m['memory_gib']} GiB, "
             f"kernel {m['kernel']}; {a.runs} pre-runs per row, {len(eps)} endpoints each, mesh mode, "
             f"timed from the host as the checks time them. Written by `bench/prerun_overhead.py`.", "",
             "| pod | deadline s | overhead s (min / median / max) | load avg 1 min (before / after) |",
             "|---|---|---|---|"]
    for s in series:
        o = s["overhead_s"]
        lines.append(f"| {s['pod']} | {s['deadline_s']:g} | {o['min']:.3f} / {o['median']:.3f} / {o['max']:.3f} | "
                     f"{s['loadavg_1m_before_after'][0]} / {s['loadavg_1m_before_after'][1]} |")
    lines += ["", f"Largest overhead seen: {worst:.3f} s."]
    write_result(out_dir, stem, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
