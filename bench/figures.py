#!/usr/bin/env python3
"""Regenerate every figure the README states, from artifacts this script writes under bench/results/.

    .venv/bin/python bench/figures.py                          # everything (about an hour on 2 cores)
    .venv/bin/python bench/figures.py --report-dir reports/X   # reuse a full suite run's report
    .venv/bin/python bench/figures.py --steps world,readme     # some steps only

Steps (in this order; each writes its artifact, stamped with the commit and the machine):

- ``world``   bench/world_startup.py: warm world start-up and memory -> world-startup.json
- ``suite``   the README's test command (``./meshcert.sh test tests conformance scenarios``, a
              full run: mutants, property test, performance, scenarios) into a report dir, or
              ``--report-dir D`` to reuse one; from its results.json: mutants.json (the
              scoreboard over every fault, with the suite's pytest exit code), latency.json,
              property.json, scenarios.json
- ``flake``   bench/scenario_runs.py --runs N (default 10): scenario-runs.json (+ .md)
- ``readme``  rewrites the README between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->``
              from the artifacts present; a block with no artifact says so (never a typed figure)

A step that fails is reported and the others still run; exit 1 if any failed. Figures are only
ever read from artifacts: nothing here types a number into the README.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import matrix_cost  # bench/matrix_cost.py: its result table
from stamp import REPO, RESULTS, checkout_of, describe, stamp  # bench/stamp.py

README = REPO / "README.md"
PY = sys.executable
STEPS = ("world", "suite", "flake", "readme")


def _write(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    p = RESULTS / name
    p.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    print(f"figures: wrote {p.relative_to(REPO)}", flush=True)
    return p


def _read(name: str) -> dict | None:
    try:
        return json.loads((RESULTS / name).read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------ steps

def step_world(args) -> None:
    rc = subprocess.call([PY, str(REPO / "bench" / "world_startup.py"), "-n", str(args.world_runs),
                          "--out", str(RESULTS / "world-startup.json")], cwd=REPO)
    if rc != 0:
        raise RuntimeError(f"bench/world_startup.py exited {rc}")


def step_suite(args) -> None:
    report = args.report_dir
    rc = None
    cmd = "(reused report)"
    if report is None:
        report = REPO / "reports" / time.strftime("figures-%Y%m%d-%H%M%S")
        argv = [str(REPO / "meshcert.sh"), "test", "-q", "-p", "no:cacheprovider", "tests", "conformance",
                "scenarios", "--report-dir", str(report)]
        cmd = " ".join(["./meshcert.sh", *argv[1:]])
        rc = subprocess.call(argv, cwd=REPO)
        print(f"figures: the suite exited {rc}", flush=True)
    results = json.loads((Path(report) / "results.json").read_text())
    extra = results.get("extra") or {}
    # A reused report is stamped with the commit of the checkout that ran it (e.g. a clean clone).
    base = {**stamp(cmd, checkout_of(Path(report)) or REPO), "report_dir": str(report), "suite_exit_code": rc}
    if extra.get("mutants"):
        _write("mutants.json", {**base, "board": extra["mutants"]})
    else:
        print("figures: no mutation scoreboard in that report (were tests/ run?)", flush=True)
    if extra.get("latency"):
        _write("latency.json", {**base, "rows": extra["latency"]})
    prop = {k: extra[k] for k in ("property", "property_oracle_flip") if extra.get(k)}
    if prop:
        _write("property.json", {**base, **prop})
    if extra.get("scenarios"):
        _write("scenarios.json", {**base, "scenarios": {n: {"outcome": j.get("outcome"),
                                                            "duration_s": j.get("duration_s"),
                                                            "figures": j.get("figures", {})}
                                                        for n, j in extra["scenarios"].items()}})
    if rc not in (None, 0):
        raise RuntimeError(f"the suite exited {rc} (its artifacts are written; the README says so)")


def step_flake(args) -> None:
    """The flake loops: N consecutive `pytest scenarios` runs and N consecutive certifications;
    with --flake-side-by-side the two loops run at once (each on VLANs of its own), the machine
    loaded as a CI run loads it."""
    failed = []
    jobs = (("scenarios", "scenario-runs", "10.20.120.0/24"), ("certify", "certify-runs", "10.20.110.0/24"))

    def loop(job: str, name: str, vlan: str) -> None:
        out = REPO / "reports" / time.strftime(f"{name}-%Y%m%d-%H%M%S")
        cmd = ["bench/scenario_runs.py", "--job", job, "--runs", str(args.flake_runs)]
        env = {**os.environ, "MESHCERT_VLAN": vlan} if args.flake_side_by_side else None
        rc = subprocess.call([PY, str(REPO / cmd[0]), *cmd[1:], "--out", str(out)], cwd=REPO, env=env)
        try:
            runs = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError):
            runs = []
        _write(f"{name}.json", {**stamp(" ".join(cmd)), "exit_code": rc, "job": job, "runs": runs,
                                "side_by_side": bool(args.flake_side_by_side)})
        md = out / "summary.md"
        if md.is_file():
            (RESULTS / f"{name}.md").write_text(md.read_text())
        if rc != 0:
            failed.append(f"{' '.join(cmd)} exited {rc}")

    if args.flake_side_by_side:
        threads = [threading.Thread(target=loop, args=j) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for j in jobs:
            loop(*j)
    if failed:
        raise RuntimeError("; ".join(failed))


# ------------------------------------------------------------------------------------ README blocks

def _none(name: str) -> str:
    return (f"No figure yet: `bench/results/{name}` does not exist (it is written by "
            f"`.venv/bin/python bench/figures.py`).")


def block_mutants() -> str:
    a = _read("mutants.json")
    if not a:
        return _none("mutants.json")
    board = a["board"]
    killed = sum(1 for v in board.values() if v.get("killed"))
    kinds = {"mutant": "mutants of the reference SUT", "world": "broken world settings", "chart": "broken charts"}
    parts = []
    for k, label in kinds.items():
        rows = [v for v in board.values() if v.get("kind") == k]
        parts.append(f"{label} {sum(1 for v in rows if v.get('killed'))}/{len(rows)}")
    pct = 100.0 * killed / len(board) if board else 0.0
    out = [f"Mutation score: **{killed}/{len(board)} faults killed ({pct:.0f}%)** — {', '.join(parts)} "
           f"(`bench/results/mutants.json`, {describe(a)}"
           + (f", suite exit code {a['suite_exit_code']}" if a.get("suite_exit_code") is not None else "")
           + ").", "", "| fault | target | result |", "|---|---|---|"]
    for name, v in sorted(board.items(), key=lambda kv: (bool(kv[1].get("killed")), kv[0])):
        res = f"caught by {', '.join(v.get('clauses') or [])}" if v.get("killed") else \
            f"**not killed**: {v.get('why', '')}"
        out.append(f"| `{name}` | {', '.join(v.get('target') or []) or '–'} | {res.replace('|', '/')} |")
    return "\n".join(out)


def block_latency() -> str:
    a = _read("latency.json")
    if not a:
        return _none("latency.json")
    rows = [f"{r.get('path')} {r.get('p50_ms')} ms (p95 {r.get('p95_ms')} ms, n={r.get('n')}, {r.get('target')})"
            for r in a["rows"]]
    return (f"Measured TCP connect p50 from the agent pod (`bench/results/latency.json`, {describe(a)}): "
            + "; ".join(rows) + ". The guide's \"~3-5 ms\" is compared in the report, never asserted.")


def block_world() -> str:
    a = _read("world-startup.json")
    if not a:
        return _none("world-startup.json")
    return (f"Warm start of the guide's world until every node is Running, routes seen and policy synced: "
            f"median {a['median_total_s']} s (max {a['max_total_s']} s over {len(a.get('runs', []))} runs); the "
            f"containers' peak memory {a['median_containers_peak_mib']} MiB in all; meshcert's own process "
            f"{a['meshcert_process_peak_rss_mib']} MiB peak RSS (`bench/results/world-startup.json`, {describe(a)})."
            + _cred_world())


def _cred_world() -> str:
    """The credential world's warm start (bench/world_startup.py --cred), when measured."""
    a = _read("world-startup-cred.json")
    if not a or not a.get("runs"):
        return ""
    runs = a["runs"]
    vault = statistics.median(r["phases_s"].get("beside", 0) for r in runs)
    after = statistics.median(r["phases_s"].get("vault", 0) for r in runs)
    loads = [x for r in runs for x in (r.get("load1_before_after") or []) if x is not None]
    load = f"; machine load (1-min average) {min(loads):.1f}-{max(loads):.1f}" if loads else ""
    return (f"\n\nThe credential world (the same with sshd and PostgreSQL targets and Vault, the SUT started "
            f"with its Vault configuration), warm: median {a['median_total_s']} s (max {a['max_total_s']} s over "
            f"{len(runs)} runs; target {a.get('target_s')} s). Vault starts, initialises and unseals beside the "
            f"nodes while they join (median {vault:.1f} s, not waited for), and its configuration and the "
            f"targets' trust in it take {after:.1f} s after the world converged; the containers' peak memory "
            f"{a['median_containers_peak_mib']} MiB (`bench/results/world-startup-cred.json`, {describe(a)}{load}).")


def block_property() -> str:
    a = _read("property.json")
    if not a or not a.get("property"):
        return _none("property.json")
    p = a["property"]
    text = (f"Last full run (`bench/results/property.json`, {describe(a)}): {p.get('examples_run')} examples in "
            f"{p.get('wall_s')} s (median {p.get('example_s_median')} s an example), "
            f"{p.get('failing_runs')} failing; denials judged live after a positive control: "
            f"{p.get('denials_judged_live', '–')}, unjudged (their TSMP control never answered): "
            f"{p.get('denials_unjudged', '–')}; allowed pairs that needed a retry: {p.get('retried_pairs')}, the "
            f"slowest first connected after {p.get('slowest_first_connect_s', '–')} s.")
    f = a.get("property_oracle_flip")
    if f:
        text += (f" The flipped oracle rule (`tests/engine/test_property_oracle_flip.py`) was caught at example "
                 f"{f.get('first_failure_at')}.")
    return text


def block_flake() -> str:
    a = _read("scenario-runs.json")
    if not a:
        return _none("scenario-runs.json")
    runs = a.get("runs") or []
    passed = sum(1 for r in runs if r.get("rc") == 0)
    walls = sorted(r.get("wall_s") for r in runs if r.get("wall_s") is not None)
    out = [f"{passed}/{len(runs)} consecutive runs passed; wall per run min / median / max "
           f"{walls[0] if walls else '–'} / {walls[len(walls) // 2] if walls else '–'} / "
           f"{walls[-1] if walls else '–'} s"
           + ("; run side by side with the certify loop below (both at once: a machine loaded as CI loads it)"
              if a.get("side_by_side") else "")
           + f" (`bench/results/scenario-runs.json`, {describe(a)}).", "",
           "| scenario | passed | figures (min / max over the runs) |", "|---|---|---|"]
    names = sorted({n for r in runs for n in (r.get("scenarios") or {})})
    for n in names:
        js = [r["scenarios"][n] for r in runs if n in (r.get("scenarios") or {})]
        ok = sum(1 for j in js if j.get("outcome") == "passed")
        figs = sorted({k for j in js for k in (j.get("figures") or {})})
        cells = []
        for k in figs:
            vals = [j["figures"][k] for j in js if isinstance((j.get("figures") or {}).get(k), (int, float))]
            if vals:
                cells.append(f"{k}: {min(vals)} / {max(vals)}")
        out.append(f"| {n.replace('|', '/')} | {ok}/{len(js)} | {'; '.join(cells) or '–'} |")
    c = _read("certify-runs.json")
    if not c:
        out += ["", _none("certify-runs.json")]
    else:
        cr = c.get("runs") or []
        cw = sorted(r.get("wall_s") for r in cr if r.get("wall_s") is not None)
        # each clause not passed in some run, with its outcome and in how many runs (a clause
        # skipped in every run is not applicable to this session's versions, not a flake)
        counts = collections.Counter((n, str(j.get("outcome"))) for r in cr
                                     for n, j in (r.get("scenarios") or {}).items()
                                     if j.get("outcome") not in ("passed", "measured"))
        bad = [f"{n} {o} in {k}/{len(cr)}" for (n, o), k in sorted(counts.items())]
        out += ["", f"Certification: {sum(1 for r in cr if r.get('rc') == 0)}/{len(cr)} consecutive "
                f"`meshcert certify` runs passed; wall per run min / median / max "
                f"{cw[0] if cw else '–'} / {cw[len(cw) // 2] if cw else '–'} / {cw[-1] if cw else '–'} s"
                + (f"; clauses not passed in some run: {', '.join(bad)} runs" if bad else "")
                + f" (`bench/results/certify-runs.json`, {describe(c)})."]
    return "\n".join(out)


def block_catalog() -> str:
    """Not a figure: the clause catalog, generated from clauses.yaml so the README can never
    claim more (or less) than the MUST sentence the report puts beside each verdict."""
    from meshcert.plugin.marks import collect_clause_tests
    from meshcert.report.catalog import load_catalog, with_tests
    out = ["| clause | group | what meshcert asserts (the MUST sentence of `clauses.yaml`) | tests |",
           "|---|---|---|---|"]
    # tests: the tests marked @pytest.mark.clause(<id>), from a collect-only pytest run
    for c in with_tests(load_catalog(), collect_clause_tests()):
        tests = (f"out of scope: {' '.join(c.out_of_scope.split())}" if c.out_of_scope
                 else f"{len(c.tests)} (measured: reported, never counted as passed)" if c.measured
                 else str(len(c.tests)) if c.tests else "**no test**")
        out.append(f"| {c.id} | {c.group} | {' '.join(c.must.split()).replace('|', '/')} | {tests} |")
    return "\n".join(out)


def _speed_files() -> list[tuple[str, dict]]:
    out = []
    for f in sorted(RESULTS.glob("speed-*.json")):
        a = _read(f.name)
        if a:
            out.append((f.name, a))
    return sorted(out, key=lambda x: x[1].get("generated", ""))


def block_speed() -> str:
    """The newest A/B measurement of the warm jobs (bench/speed.py --vs) and the newest clean-clone CI."""
    files = _speed_files()
    ab = [(n, a) for n, a in files if any("vs" in v for v in a.get("steps", {}).values())]
    ci = [(n, a) for n, a in files if "ci" in a.get("steps", {})]
    out = []
    if ab:
        n, a = ab[-1]
        rows = []
        for job, v in a["steps"].items():
            vs = v.get("vs")
            if not vs:
                continue
            ex = f", {v['examples'][0]} examples" if v.get("examples") else ""
            rows.append(f"| {job} | {vs['median_s']:.0f} s (commit {vs['commit']}) | {v['median_s']:.0f} s{ex} | "
                        f"{vs['ratio_median']:.2f} |")
        runs = max(len(v.get("wall_s") or []) for v in a["steps"].values() if v.get("vs"))
        out += [f"Warm wall times, the baseline and this layout measured in one call, runs alternating, "
                f"{runs} run{'s' if runs != 1 else ''} each, medians (`bench/results/{n}`, {describe(a)}{_load_note(a)}):",
                "",
                "| job | before | after | after / before |", "|---|---|---|---|", *rows]
    else:
        out.append(_none("speed-*.json with a --vs baseline"))
    warm = [(n, a) for n, a in files if any(k in a.get("steps", {}) for k in ("certify", "property"))]
    if warm and (not ab or warm[-1][0] != ab[-1][0]):
        n, a = warm[-1]
        parts = []
        for job in ("certify", "property"):
            v = a["steps"].get(job)
            if v:
                ex = f", {v['examples'][0]} examples" if v.get("examples") else ""
                alone = (v.get("examples_wall_s") or [None])[0]
                if alone is not None:  # the runner's wall: the examples alone, without pytest and the world
                    ex += f" (the examples alone {alone:.0f} s)"
                parts.append(f"{job} {v['median_s']:.0f} s{ex}")
        out += ["", f"Newest warm times of this layout alone: {'; '.join(parts)} (`bench/results/{n}`, "
                f"{describe(a)}{_load_note(a)})."]
    if ci:
        # the newest run with the default worker count; a newer run with another count (an
        # experiment: MESHCERT_TEST_WORKERS) beside it, never instead of it
        default = [(n, a) for n, a in ci if str(a["steps"]["ci"].get("test_workers", "")).startswith("the default")]
        shown = [default[-1]] if default else []
        if ci[-1] not in shown:
            shown.append(ci[-1])
        for n, a in shown:
            c = a["steps"]["ci"]
            workers = str(c.get("test_workers") or "?")
            if workers.startswith("the default"):  # "the default (meshcert.cli.TEST_WORKERS[ = N])"
                n_default = workers.rstrip(")").rpartition("= ")[2]
                workers = f"{n_default} workers, the default" if n_default.isdigit() else "the default workers"
            else:
                workers = f"{workers} workers"
            out += ["", f"Clean-clone `.ci/run` ({workers}): {c['wall_s']:.0f} s, exit {c['exit']}, "
                    f"{c.get('summary') or '?'} (`bench/results/{n}`, {describe(a)}{_load_note(a)}; its 40 "
                    "slowest tests are in the file)."]
    return "\n".join(out)


def _load_note(a: dict) -> str:
    """The machine's 1-min load while the file's timed commands ran (the engine and the 2 cores
    are shared: a figure taken at load 20 is not comparable with one taken at load 1)."""
    meds = [x.get("load1_median") for x in a.get("load") or [] if x.get("load1_median") is not None]
    if not meds:
        return ""
    return f"; machine load (1-min average) median {statistics.median(meds):.1f}, max " \
           f"{max(x.get('load1_max') or 0 for x in a['load']):.1f}"


def block_builds() -> str:
    """Cold builds per component version and warm matrices (bench/matrix_cost.py)."""
    rows = None
    try:
        rows = json.loads((RESULTS / "matrix-cost.json").read_text())
    except (OSError, ValueError):
        pass
    if not rows:
        return _none("matrix-cost.json")
    out = matrix_cost.table(rows)
    return "\n".join(out)


BLOCKS = {"builds": block_builds, "mutants": block_mutants, "speed": block_speed, "latency": block_latency, "world": block_world,
          "property": block_property, "flake": block_flake, "catalog": block_catalog}
MARKER = re.compile(r"(<!-- figures:(?P<name>[a-z]+) -->)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.S)


def rewrite_readme(text: str) -> str:
    seen = set()

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in BLOCKS:
            raise RuntimeError(f"README has a figures block {name!r} this script does not know")
        seen.add(name)
        return m.group(1) + "\n" + BLOCKS[name]() + "\n" + m.group(4)
    out = MARKER.sub(sub, text)
    missing = set(BLOCKS) - seen
    if missing:
        raise RuntimeError(f"README lacks the figures block(s) {sorted(missing)} "
                           f"(<!-- figures:NAME --> ... <!-- /figures:NAME -->)")
    return out


def step_readme(args) -> None:
    README.write_text(rewrite_readme(README.read_text()))
    print("figures: README blocks rewritten from bench/results/", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, from {', '.join(STEPS)}")
    ap.add_argument("--report-dir", type=Path, default=None,
                    help="reuse this full suite run's report (results.json) instead of running the suite")
    ap.add_argument("--world-runs", type=int, default=3)
    ap.add_argument("--flake-runs", type=int, default=10)
    ap.add_argument("--flake-side-by-side", action="store_true",
                    help="flake: the scenario loop and the certify loop at once (VLANs 10.20.120 and 10.20.110 up)")
    args = ap.parse_args()
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        ap.error(f"unknown step(s) {unknown}; use {', '.join(STEPS)}")
    failed = []
    for name in STEPS:
        if name not in steps:
            continue
        print(f"figures: step {name}", flush=True)
        try:
            globals()[f"step_{name}"](args)
        except Exception as e:  # keep going: the other artifacts are still worth having
            failed.append(f"{name}: {e}")
            print(f"figures: step {name} FAILED: {e}", flush=True)
    for f in failed:
        print(f"figures: failed step {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
