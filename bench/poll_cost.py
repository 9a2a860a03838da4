"""What a wait's checks cost in CPU, written as a stamped artifact (commit, machine, load): the
basis of meshcert.world.base's pacing (PACE_FACTOR, PACE_CAP_S).

On one kind cluster of meshcert's (no world: the node alone), from cgroup v1 cpuacct files
(the engine runs cgroupfs on cgroup v1 here):

- ``create_s`` / ``create_cpu_s``: ``kind create cluster`` (node Ready), wall and the machine's CPU;
- ``idle_node_core_pct``: the idle node's CPU over ``--idle`` seconds, in % of one core
  (API server, etcd, controller-manager, scheduler, kubelet, containerd);
- ``kubectl_wall_s`` / ``kubectl_cpu_s``: one ``kubectl get pods -A -o json`` through
  ``docker exec`` into the node (as meshcert's KindCluster.kubectl runs it), the median of
  ``--calls``; its CPU is the machine's (the engine, the exec, kubectl);
- ``busy_at_fixed_0_2_s_core_pct`` / ``busy_paced_core_pct``: the share of a core such checks
  keep busy when repeated every 0.2 s (the old fixed pause), and paced (pause = max(0.2,
  PACE_FACTOR x the check's wall time, at most PACE_CAP_S)).

    .venv/bin/python bench/poll_cost.py [--calls 20] [--idle 60]

Results: bench/results/poll-cost-<date>-<commit>.{json,md}. The cluster is removed at the end
(Ctrl-C included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stamp  # noqa: E402
from speed import CPUACCT, cpuacct_ns  # noqa: E402

from meshcert.k8s import kind  # noqa: E402
from meshcert.toolchain import engine  # noqa: E402
from meshcert.world.base import pause  # noqa: E402


def machine_cpu() -> float:
    return (cpuacct_ns(CPUACCT / "cpuacct.usage") or 0) / 1e9


def container_cpu(client, name: str) -> float:
    return (cpuacct_ns(CPUACCT / "docker" / client.containers.get(name).id / "cpuacct.usage") or 0) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--idle", type=float, default=60.0)
    a = ap.parse_args()
    client = engine.ensure_engine()
    node_image = kind.ensure_node_image(client)
    run_id = f"pollcost-{uuid.uuid4().hex[:6]}"
    c = kind.KindCluster(f"mc-{run_id}", node_image, run_id=run_id, client=client)
    res: dict = stamp.stamp("bench/poll_cost.py " + " ".join(sys.argv[1:]))
    res["load1_before"] = float(Path("/proc/loadavg").read_text().split()[0])
    try:
        t0, cpu0 = time.monotonic(), machine_cpu()
        c.create()
        res["create_s"], res["create_cpu_s"] = round(time.monotonic() - t0, 1), round(machine_cpu() - cpu0, 1)
        n0, t0 = container_cpu(client, c.node), time.monotonic()
        time.sleep(a.idle)  # the measurement window itself, not a wait on a condition
        res["idle_node_core_pct"] = round((container_cpu(client, c.node) - n0) / (time.monotonic() - t0) * 100, 1)
        walls, cpus = [], []
        for _ in range(a.calls):
            t0, cpu0 = time.monotonic(), machine_cpu()
            c.kubectl("get", "pods", "-A", "-o", "json")
            walls.append(time.monotonic() - t0)
            cpus.append(machine_cpu() - cpu0)
        w, u = statistics.median(walls), statistics.median(cpus)
        res.update(calls=a.calls, kubectl_wall_s=round(w, 3), kubectl_cpu_s=round(u, 3))
        res["busy_at_fixed_0_2_s_core_pct"] = round(u / (w + 0.2) * 100, 1)
        res["busy_paced_core_pct"] = round(u / (w + pause(0.2, w)) * 100, 1)
    finally:
        c.delete()
    lines = [f"# What a wait's checks cost ({stamp.describe(res)})", "",
             f"One kind node (no world), load {res['load1_before']} before. Medians of {a.calls} calls.", "",
             "| figure | value |", "|---|---|",
             *(f"| {k} | {res[k]} |" for k in ("create_s", "create_cpu_s", "idle_node_core_pct", "kubectl_wall_s",
                                                 "kubectl_cpu_s", "busy_at_fixed_0_2_s_core_pct",
                                                 "busy_paced_core_pct")), "",
             "A wait checks, then pauses: at a fixed 0.2 s a wait on a kind pod (`docker exec` + kubectl) keeps "
             "the share of a core above busy; paced by meshcert.world.base.pause, the share below."]
    stamp.write_result(stamp.RESULTS, f"poll-cost-{time.strftime('%Y-%m-%d')}-{res['commit']}", res, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
