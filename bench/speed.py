"""Warm wall times of meshcert's three long jobs, in one checkout, written as a stamped artifact:

- ``certify``: the README's main command, ``./meshcert.sh certify`` (images and tools cached);
- ``property``: the property test alone, with the number of examples it ran;
- ``ci``: ``.ci/run`` on a clean clone of the checkout's HEAD (its venv is new, the Go tools
  and images are cached), with pytest's 40 slowest tests.

    .venv/bin/python bench/speed.py [--checkout DIR] [--vs DIR] [--steps certify,property,ci] [--runs N]
                                    [--property-seed N]

``--checkout`` measures another checkout; ``--vs DIR`` measures a second checkout (the "before":
an older commit in a worktree) in the same call, A and B runs alternating (A B A B ...) so that
both see the same machine, with the ratio A/B taken pair by pair. Results: bench/results/speed-<date>-<commit>.{json,md}
of THIS repo, stamped with the measured checkout's commit, the machine and its load while each
command ran (the engine and the 2 cores are shared; ``--property-seed`` runs the same examples
in every run). Medians are quoted;
with --runs 1 the median is the one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stamp  # noqa: E402

from meshcert.cli import TEST_WORKERS  # noqa: E402
from meshcert.plugin.parallel import unit_of  # noqa: E402

LOADS: list[dict] = []  # the machine's load around each timed command (the engine is shared)


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks since boot, all cores (/proc/stat's first line; iowait counts idle)."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return sum(f) - idle, sum(f)


def _load() -> dict:
    """1-min load average and how many meshcert containers run on the engine (all sessions')."""
    try:
        load1 = float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        load1 = None
    try:
        out = subprocess.run(["docker", "ps", "-q", "--filter", "name=^mc-"], capture_output=True, text=True,
                             timeout=30).stdout
        containers = len(out.split())
    except (OSError, subprocess.TimeoutExpired):
        containers = None
    return {"load1": load1, "mc_containers": containers}


CPUACCT = Path("/sys/fs/cgroup/cpuacct")  # cgroup v1, the engine's cgroupfs driver (this machine)


def cpuacct_ns(path: Path) -> int | None:
    """A cgroup v1 ``cpuacct.usage`` file's CPU nanoseconds; None when it is not there (gone)."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


class ContainerCPU:
    """Where the CPU of a timed command went: the machine's CPU seconds (cgroup v1 root cpuacct)
    and each container's (its cgroup's cpuacct.usage, last read before it was removed; new
    containers found every 2 s, so one that lives less than that may be missed), summed per
    image. The rest is this machine's own processes (pytest, the engine, docker/kubectl/kind/helm
    clients) and the kernel. Nothing is recorded where there is no cgroup v1 cpuacct."""

    def __init__(self):
        self.ok = (CPUACCT / "cpuacct.usage").is_file()
        self.seen: dict[str, list] = {}  # container id -> [image, last usage ns, usage at our start]
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._m0 = cpuacct_ns(CPUACCT / "cpuacct.usage") if self.ok else 0
        if self.ok:  # containers already running (another session's): only what they use from now on
            self._sample(base=True)

    def start(self) -> ContainerCPU:
        if self.ok:
            self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(2):  # a sampling period, not a wait on a condition
            self._sample()

    def _sample(self, base: bool = False) -> None:
        try:
            out = subprocess.run(["docker", "ps", "--no-trunc", "--format", "{{.ID}} {{.Image}}"],
                                 capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        for line in out.splitlines():
            cid, _, image = line.partition(" ")
            if cid not in self.seen:
                now = cpuacct_ns(CPUACCT / "docker" / cid / "cpuacct.usage") if base else 0
                self.seen[cid] = [image.split(":")[0], now or 0, now or 0]
        for cid, v in self.seen.items():
            got = cpuacct_ns(CPUACCT / "docker" / cid / "cpuacct.usage")
            if got is not None:
                v[1] = got

    def stop(self) -> dict | None:
        if not self.ok:
            return None
        self._stop.set()
        self._t.join(timeout=60)
        total = ((cpuacct_ns(CPUACCT / "cpuacct.usage") or 0) - self._m0) / 1e9
        by_image: dict[str, float] = {}
        for image, ns, ns0 in self.seen.values():
            by_image[image] = by_image.get(image, 0.0) + (ns - ns0) / 1e9
        containers = sum(by_image.values())
        return {"machine_s": round(total, 1), "containers_s": round(containers, 1),
                "rest_s": round(total - containers, 1),
                "by_image_s": {k: round(v, 1) for k, v in sorted(by_image.items(), key=lambda kv: -kv[1])}}


def _timed(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> tuple[float, int, str]:
    before = _load()
    samples: list[dict] = []
    cpu0 = _cpu_ticks()
    where = ContainerCPU().start()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with log.open("w") as f:
        p = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        while p.poll() is None:  # the load, every 15 s while it runs
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                samples.append(_load())
    wall = time.monotonic() - t0
    cpu_where = where.stop()
    if cpu_where is not None:
        # the CPU of the command's own process tree (every descendant waited for: pytest, its
        # workers, the docker/kind/helm clients they run; not the engine, not the containers),
        # plus this script's own sampling (`docker ps` every 2 s and 15 s: a few seconds in all)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_where["command_tree_s"] = round(kids.ru_utime + kids.ru_stime - kids0.ru_utime - kids0.ru_stime, 1)
    cpu1 = _cpu_ticks()
    # how busy the cores were over the whole command (all processes): near 100 %, more parallel
    # work only queues; well below, the command waits more than it computes
    cpu_busy = round(100.0 * (cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1]), 1) if cpu0 and cpu1 else None
    loads = [x["load1"] or 0.0 for x in samples] or [before["load1"] or 0.0]
    LOADS.append({"log": log.name, "before": before, "after": _load(),
                  "load1_median": round(statistics.median(loads), 2), "load1_max": max(loads),
                  "mc_containers_max": max((x["mc_containers"] or 0 for x in samples), default=None),
                  "cpu_busy_pct": cpu_busy, "cpu_s": cpu_where})
    return wall, p.returncode, log.read_text(errors="replace")


def _units(lines: list[str]) -> dict[str, float]:
    """Seconds per xdist work unit (setup + call + teardown of its tests, as
    meshcert.plugin.parallel.unit_of groups them), biggest first: what each worker carried."""
    units: dict[str, float] = {}
    for line in lines:
        m = re.match(r"^(\d+\.\d+)s\s+\w+\s+(\S+)", line)
        if m:
            u = unit_of(m.group(2))
            u = u if u.startswith("meshcert:") else "one-test units (together)"
            units[u] = units.get(u, 0.0) + float(m.group(1))
    return {k: round(v, 1) for k, v in sorted(units.items(), key=lambda kv: -kv[1])}


def _slowest(text: str) -> list[str]:
    out, on = [], False
    for line in text.splitlines():
        if "slowest" in line and "durations" in line:
            on = True
            continue
        if on:
            if re.match(r"^\d+\.\d+s ", line):
                out.append(line.strip())
            elif out:
                break
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkout", type=Path, default=stamp.REPO)
    ap.add_argument("--steps", default="certify,property,ci")
    ap.add_argument("--vs", type=Path, default=None, help="a second checkout (the baseline), alternated with --checkout")
    ap.add_argument("--runs", type=int, default=1, help="runs of certify and property (ci runs once)")
    ap.add_argument("--property-seed", help="MESHCERT_PROPERTY_SEED for certify and property (the same examples "
                                            "in every run); default: a random seed per run")
    ap.add_argument("--logs", type=Path, default=Path(tempfile.mkdtemp(prefix="meshcert-speed-")))
    args = ap.parse_args()
    co = args.checkout.resolve()
    steps = [s for s in args.steps.split(",") if s]
    args.logs.mkdir(parents=True, exist_ok=True)
    res: dict = {**stamp.stamp("bench/speed.py --steps " + ",".join(steps), co), "checkout": str(co), "steps": {}}
    env = {"MESHCERT_VLAN": os.environ.get("MESHCERT_VLAN", "10.20.90.0/24")}
    if args.property_seed:
        env["MESHCERT_PROPERTY_SEED"] = str(args.property_seed)
        res["property_seed"] = args.property_seed

    checkouts = {"a": co} | ({"b": args.vs.resolve()} if args.vs else {})
    if "certify" in steps or "property" in steps:
        for tag, c in checkouts.items():  # warm-up: the venv and the images exist before anything is timed
            _timed([str(c / "meshcert.sh"), "setup"], c, args.logs / f"setup-{tag}.log", env)

    def job(tag: str, c: Path, name: str, i: int) -> dict:
        if name == "certify":
            w, rc, _ = _timed([str(c / "meshcert.sh"), "certify", "--report-dir", str(args.logs / f"certify-{tag}-{i}")],
                              c, args.logs / f"certify-{tag}-{i}.log", env)
            return {"wall_s": w, "exit": rc}
        rd = args.logs / f"property-{tag}-{i}"
        w, rc, _ = _timed([str(c / "meshcert.sh"), "test", "-q", "-p", "no:cacheprovider",
                           "conformance/test_property.py"], c, args.logs / f"property-{tag}-{i}.log",
                          {**env, "MESHCERT_REPORT_DIR": str(rd)})
        jl = rd / "property-examples.jsonl"
        # the runner's own figures (results.json extra.property): wall_s counts from the first
        # example to the last, the basis of the "55 examples in about 4 min"
        # (bench/results/property.json: wall_s 257 for 55 examples); the job's wall adds pytest,
        # the world's start-up and its teardown
        try:
            fig = (json.loads((rd / "results.json").read_text()).get("extra") or {}).get("property") or {}
        except (OSError, ValueError):
            fig = {}
        return {"wall_s": w, "exit": rc,
                "examples": sum(1 for ln in jl.read_text().splitlines() if ln.strip()) if jl.exists() else None,
                "examples_wall_s": fig.get("wall_s"), "example_s_median": fig.get("example_s_median"),
                "phase_s_median": fig.get("phase_s_median")}

    for name in ("certify", "property"):
        if name not in steps:
            continue
        runs: dict[str, list[dict]] = {t: [] for t in checkouts}
        for i in range(args.runs):
            for tag, c in checkouts.items():
                r = job(tag, c, name, i)
                runs[tag].append(r)
                print(f"{name} {tag} run {i + 1}: {r['wall_s']:.0f} s, exit {r['exit']}"
                      + (f", examples {r['examples']}" if "examples" in r else ""), flush=True)
        entry = {"wall_s": [r["wall_s"] for r in runs["a"]], "exit": [r["exit"] for r in runs["a"]],
                 "median_s": statistics.median(r["wall_s"] for r in runs["a"])}
        if name == "property":
            entry["examples"] = [r["examples"] for r in runs["a"]]
            entry["examples_wall_s"] = [r.get("examples_wall_s") for r in runs["a"]]
            entry["phase_s_median"] = [r.get("phase_s_median") for r in runs["a"]]
        if "b" in runs:
            entry["vs"] = {"checkout": str(checkouts["b"]), "commit": stamp.commit(checkouts["b"]),
                           "wall_s": [r["wall_s"] for r in runs["b"]], "exit": [r["exit"] for r in runs["b"]],
                           "median_s": statistics.median(r["wall_s"] for r in runs["b"]),
                           "examples": [r.get("examples") for r in runs["b"]],
                           "ratio_median": statistics.median(a["wall_s"] / b["wall_s"]
                                                             for a, b in zip(runs["a"], runs["b"]))}
        res["steps"][name] = entry

    if "ci" in steps:
        clone = Path(tempfile.mkdtemp(prefix="meshcert-ci-"))
        subprocess.run(["git", "clone", "-q", str(co), str(clone)], check=True)
        w, rc, text = _timed(["bash", ".ci/run"], clone, args.logs / "ci.log",
                             {**env, "CI": "true", "PYTEST_ADDOPTS": "--durations=0 --durations-min=0.5"})
        summary = [ln for ln in text.splitlines() if re.search(r"\d+ passed", ln)]
        res["steps"]["ci"] = {"wall_s": w, "exit": rc, "summary": summary[-1].strip("= ") if summary else None,
                              "slowest": _slowest(text)[:40], "units_s": _units(_slowest(text)),
                              "test_workers": os.environ.get("MESHCERT_TEST_WORKERS")
                              or f"the default (meshcert.cli.TEST_WORKERS = {TEST_WORKERS})"}
        print(f"ci: {w:.0f} s, exit {rc}, {res['steps']['ci']['summary']}", flush=True)
        shutil.rmtree(clone, ignore_errors=True)

    res["load"] = LOADS
    name = f"speed-{res['generated'][:10]}-{res['commit']}"
    stamp.RESULTS.mkdir(parents=True, exist_ok=True)
    (stamp.RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [f"# Warm wall times ({stamp.describe(res)})", "", f"Checkout: `{co.name}`; logs: `{args.logs}`", "",
             "| job | median | runs | exit | note | baseline median | ratio (median of pairs) |",
             "|---|---|---|---|---|---|---|"]
    for k, v in res["steps"].items():
        walls = v["wall_s"] if isinstance(v["wall_s"], list) else [v["wall_s"]]
        note = (f"examples {v['examples']}, the examples alone (the runner's wall_s) {v.get('examples_wall_s')} s"
                if "examples" in v else (v.get("summary") or ""))
        vs = v.get("vs")
        base = (f"{vs['median_s']:.0f} s ({vs['commit']}, exit {vs['exit']}"
                + (f", examples {vs['examples']}" if k == "property" else "") + ")") if vs else "–"
        lines.append(f"| {k} | {statistics.median(walls):.0f} s | {len(walls)} | {v['exit']} | {note} | {base} | "
                     f"{vs['ratio_median']:.2f} |" if vs else
                     f"| {k} | {statistics.median(walls):.0f} s | {len(walls)} | {v['exit']} | {note} | – | – |")
    lines += ["", "Machine load while each command ran (1-min load average on "
              f"{res['machine'].get('cores')} cores; meshcert containers on the engine, all sessions):", ""]
    lines += [f"- {x['log']}: load median {x['load1_median']}, max {x['load1_max']}; meshcert containers "
              f"{x['before']['mc_containers']} before, up to {x['mc_containers_max']} during, "
              f"{x['after']['mc_containers']} after; cores busy {x.get('cpu_busy_pct')} % of the time" for x in LOADS]
    for x in LOADS:
        c = x.get("cpu_s")
        if c:
            top = ", ".join(f"{k} {v}" for k, v in list(c["by_image_s"].items())[:8])
            lines.append(f"- {x['log']}: CPU seconds {c['machine_s']}: containers {c['containers_s']} ({top}); "
                         f"this machine's own processes and the kernel {c['rest_s']}"
                         + (f", of which the command's own process tree {c['command_tree_s']}"
                            if "command_tree_s" in c else ""))
    if "ci" in res["steps"]:
        lines += ["", "Slowest tests of the ci run:", "", "```", *res["steps"]["ci"]["slowest"], "```"]
        lines += ["", "Seconds per work unit (each unit runs on one xdist worker; the one-test units "
                  "are spread over all):", "", *(f"- {k}: {v} s" for k, v in res["steps"]["ci"]["units_s"].items())]
    (stamp.RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print(f"written bench/results/{name}.json and .md")
    # the README's speed block shows the newest files: rewritten now, so committing this result
    # never leaves a README that tests/unit/test_figures.py finds stale. In a process of its own:
    # the checkout's figures.py as it is now, not as it was when this (hour-long) run began (it
    # once rewrote the README with a figures.py edited meanwhile, dropping a block)
    subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "figures.py"), "--steps", "readme"],
                   check=True)
    return 0 if all((v["exit"] == 0 if isinstance(v["exit"], int) else all(e == 0 for e in v["exit"]))
                    for v in res["steps"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
