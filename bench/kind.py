"""Warm kind figures, written as a stamped artifact (commit, machine, load):

- ``node_image_s``: finding (a warm run: not building) meshcert's node image;
- ``create_s``: ``kind create cluster`` with meshcert's node image (the pinned kind, node Ready);
- ``load_s``: ``kind load docker-image`` of the chart's two images;
- ``pod_ready_s``: ``helm install`` of the reference chart (auth key Secret and CA ConfigMap
  first) until the kubelet marks both of the pod's containers ready (the sidecar joined the
  world's headscale through toxiproxy);
- ``cluster_and_pod_s`` = create + load + pod ready (target: under 90 s on this machine);
- ``peak_memory_mib``: the node container's peak memory, read from its cgroup v1 file
  ``memory.max_usage_in_bytes`` (the engine runs cgroupfs on cgroup v1 here) once the pod is
  ready: the cluster's start and the pod's included (page cache counts too: ``rss_at_ready_mib``
  and ``cache_at_ready_mib`` split the usage at that moment, from ``memory.stat``).

The world the pod joins is built first and not counted (``world_s`` is shown). Everything is
removed at the end (Ctrl-C included).

    MESHCERT_VLAN=10.20.x.0/24 .venv/bin/python bench/kind.py [--runs N]

Results: bench/results/kind-<date>-<commit>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stamp  # noqa: E402

from meshcert.checks import helm_pod  # noqa: E402
from meshcert.k8s import kind  # noqa: E402
from meshcert.k8s.chart import REFERENCE_CHART, SIDECAR, Chart  # noqa: E402
from meshcert.plugin import parallel  # noqa: E402
from meshcert.toolchain import engine  # noqa: E402
from meshcert.world import World  # noqa: E402
from meshcert.world.topology import guide_topology  # noqa: E402

TARGET_S = 90.0  # issue 12: a warm cluster with the chart's pod Ready in under 90 s on this machine
CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory/docker")


def _load1() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class LoadSampler:
    """The 1-min load average every 5 s while a run goes on (the engine and 2 cores are shared)."""

    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(5):
            v = _load1()
            if v is not None:
                self.samples.append(v)

    def __enter__(self) -> LoadSampler:
        v = _load1()
        self.samples = [v] if v is not None else []
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join(timeout=10)

    def summary(self) -> dict:
        s = self.samples or [0.0]
        return {"load1_median": round(statistics.median(s), 2), "load1_max": max(s), "samples": len(s)}


def peak_memory_bytes(client, container: str) -> int:
    """The container's peak memory from its cgroup v1 memory.max_usage_in_bytes (engine side)."""
    cid = client.containers.get(container).id
    return int((CGROUP_V1_MEMORY / cid / "memory.max_usage_in_bytes").read_text().strip())


def memory_stat_mib(client, container: str) -> dict:
    """The node's resident memory and page cache now (cgroup v1 memory.stat: total_rss,
    total_cache): how much of the peak is page cache (the images ``kind load`` copied in)."""
    cid = client.containers.get(container).id
    stat = dict(line.split() for line in (CGROUP_V1_MEMORY / cid / "memory.stat").read_text().splitlines())
    return {f"{k}_at_ready_mib": round(int(stat[f"total_{k}"]) / 2**20, 1) for k in ("rss", "cache")}


def one_run(client, node_image: str, vlan: str) -> dict:
    out: dict = {}
    world = World(topology=guide_topology(vlan))
    t = time.monotonic()
    world.start()
    out["world_s"] = time.monotonic() - t
    try:
        c = kind.KindCluster(f"meshcert-{world.run_id}", node_image, run_id=world.run_id, client=client)
        try:
            t = time.monotonic()
            c.create()
            out["create_s"] = time.monotonic() - t
            c.connect(client, world.networks["wan"].name)
            t = time.monotonic()
            c.load(kind.images_to_load(world.images, world.sut_image))
            out["load_s"] = time.monotonic() - t
            t = time.monotonic()
            with helm_pod.kind_release(world, c, Chart(REFERENCE_CHART)) as rel:
                for name in (SIDECAR, rel.controller):
                    rel.pod.wait_ready(name, 180)  # bound: twice the target, a loaded machine's slack
                out["pod_ready_s"] = time.monotonic() - t
                out["peak_memory_mib"] = round(peak_memory_bytes(client, c.node) / 2**20, 1)
                out.update(memory_stat_mib(client, c.node))
        finally:
            c.delete()
    finally:
        world.stop()
    out["cluster_and_pod_s"] = out["create_s"] + out["load_s"] + out["pod_ready_s"]
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args(argv)
    client = engine.ensure_engine()
    t = time.monotonic()
    node_image = kind.ensure_node_image(client)
    node_image_s = round(time.monotonic() - t, 1)
    vlan = parallel.session_vlan(None)
    runs = []
    for i in range(args.runs):
        with LoadSampler() as load:
            r = one_run(client, node_image, vlan)
        r["load"] = load.summary()
        runs.append(r)
        print(f"run {i + 1}: {json.dumps(r)}", flush=True)
    keys = ("create_s", "load_s", "pod_ready_s", "cluster_and_pod_s", "peak_memory_mib", "rss_at_ready_mib",
            "cache_at_ready_mib", "world_s")
    median = {k: round(statistics.median(r[k] for r in runs), 1) for k in keys}
    doc = {**stamp.stamp("bench/kind.py " + " ".join(argv if argv is not None else sys.argv[1:])),
           "node_image": node_image, "node_image_s": node_image_s, "target_s": TARGET_S,
           "median": median, "runs": runs, "within_target": median["cluster_and_pod_s"] < TARGET_S}
    stem = f"kind-{time.strftime('%Y-%m-%d')}-{doc['commit']}"
    stamp.RESULTS.mkdir(parents=True, exist_ok=True)
    (stamp.RESULTS / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [f"# Warm kind cluster and the chart's pod ({stamp.describe(doc)})", "",
             f"Node image `{node_image}` (found in {node_image_s} s: nothing built). {len(runs)} run(s), medians:", "",
             "| step | median |", "|---|---|",
             *(f"| {k} | {median[k]} |" for k in keys), "",
             f"Cluster create + kind load + chart pod Ready: {median['cluster_and_pod_s']} s "
             f"({'under' if doc['within_target'] else 'NOT under'} the {TARGET_S:.0f} s target). "
             "Peak memory: the node container's cgroup v1 memory.max_usage_in_bytes once the pod is ready "
             "(page cache included; its resident and cache parts at that moment are in the rss/cache rows).", "",
             "Machine load (1-min average on 2 cores, shared engine) per run: "
             + "; ".join(f"median {r['load']['load1_median']}, max {r['load']['load1_max']}" for r in runs), ""]
    (stamp.RESULTS / f"{stem}.md").write_text("\n".join(lines))
    print(f"wrote {stamp.RESULTS / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
