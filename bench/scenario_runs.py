"""Run `pytest scenarios` (or, with ``--job certify``, the README's main command) N times in a
row, each in a world of its own, and summarise: passes, wall time per run, and per scenario
(per clause) its outcome, duration and figures (min / median / max over the runs). This is the
flake measurement of the chaos suite and of a certification.

    .venv/bin/python bench/scenario_runs.py --runs 10 [--job certify] [--out reports/scenario-runs-<ts>]

Exit 0 when every run passed. The summary is printed and written to <out>/summary.json and
<out>/summary.md; each run's own report is in <out>/run-NN/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _stats(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--job", choices=("scenarios", "certify"), default="scenarios")
    ap.add_argument("--out", type=Path, default=REPO / "reports" / time.strftime("scenario-runs-%Y%m%d-%H%M%S"))
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k outage)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for i in range(1, args.runs + 1):
        report = args.out / f"run-{i:02d}"
        if args.job == "certify":
            cmd = [str(REPO / "meshcert.sh"), "certify", "--report-dir", str(report)]
        else:
            cmd = [str(REPO / "meshcert.sh"), "test", "-q", "-p", "no:cacheprovider", "scenarios",
                   "--report-dir", str(report), *args.pytest_args]
        t0 = time.monotonic()
        with open(args.out / f"run-{i:02d}.log", "w") as log:
            rc = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        wall = time.monotonic() - t0
        try:
            results = json.loads((report / "results.json").read_text())
        except (OSError, ValueError):
            results = {}
        if args.job == "certify":
            scen = {c: {"outcome": j.get("outcome"),
                        "duration_s": sum(t.get("duration_s") or 0 for t in j.get("tests", []))}
                    for c, j in (results.get("clauses") or {}).items()}
        else:
            scen = results.get("extra", {}).get("scenarios", {})
        runs.append({"run": i, "rc": rc, "wall_s": round(wall, 1),
                     "scenarios": {n: {"outcome": j.get("outcome"), "duration_s": j.get("duration_s"),
                                       "figures": j.get("figures", {})} for n, j in scen.items()}})
        bad = [n for n, j in scen.items() if j.get("outcome") not in ("passed", "measured")]
        print(f"run {i:2d}: exit {rc}, {wall:6.1f} s, {len(scen)} {args.job == 'certify' and 'clauses' or 'scenarios'}"
              + (f", not passed: {', '.join(bad)}" if bad else ""), flush=True)

    names = sorted({n for r in runs for n in r["scenarios"]})
    what = "`meshcert certify`" if args.job == "certify" else "`pytest scenarios`"
    lines = [f"# {args.runs} consecutive {what} runs", "",
             f"passed runs: {sum(r['rc'] == 0 for r in runs)}/{len(runs)}; wall per run (min / median / max): "
             f"{_stats([r['wall_s'] for r in runs])} s", "",
             f"| {'clause' if args.job == 'certify' else 'scenario'} | passed | duration s (min / median / max) | figures (min / median / max) |", "|---|---|---|---|"]
    for n in names:
        js = [r["scenarios"][n] for r in runs if n in r["scenarios"]]
        figs: dict[str, list[float]] = {}
        for j in js:
            for k, v in (j.get("figures") or {}).items():
                if isinstance(v, (int, float)):
                    figs.setdefault(k, []).append(float(v))
        cell = n.replace("|", "\\|")
        lines.append(f"| {cell} | {sum(j['outcome'] in ('passed', 'measured') for j in js)}/{len(runs)} | "
                     f"{_stats([j['duration_s'] for j in js if j.get('duration_s') is not None])} | "
                     + "; ".join(f"{k}: {_stats(v)}" for k, v in sorted(figs.items())) + " |")
    text = "\n".join(lines) + "\n"
    (args.out / "summary.md").write_text(text)
    (args.out / "summary.json").write_text(json.dumps(runs, indent=1))
    print(text)
    return 0 if all(r["rc"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
