"""What the version matrix costs (issue 14), measured and written as a stamped artifact:

- ``cold NAME@VERSION ...``: the cold build of each version -- an empty meshcert cache and an
  empty Go build cache (GOCACHE) in a temporary folder, so every package is compiled; the Go
  module cache (downloaded source) is kept, so no download is timed. The binaries built are
  then moved into the real meshcert cache when it lacks them (the build is not wasted).
- ``warm --tailscale A,B --headscale C,D``: ``meshcert certify --matrix`` for those versions with
  everything built (the warm matrix time), with its exit code and per-combination tallies.

    .venv/bin/python bench/matrix_cost.py cold tailscale@v1.102.5 headscale@v0.27.1
    .venv/bin/python bench/matrix_cost.py warm --tailscale v1.102.3,v1.80.3 --headscale v0.29.2,v0.27.1

Each record is stamped (commit, machine, load around the command: the 2 cores and the engine
are shared) and kept in bench/results/matrix-cost.json (newest record per subject) with a
Markdown rendering beside it (matrix-cost.md). Builds run under ``nice -n 19`` with
``GOFLAGS=-p=1`` (a shared machine), as the measured figure says.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stamp  # noqa: E402

OUT = stamp.RESULTS / "matrix-cost.json"
PY = sys.executable


def _load1() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _timed(cmd: list[str], env: dict, log: Path) -> tuple[float, int, list[float]]:
    """(wall seconds, exit code, 1-min load sampled every 30 s) of ``cmd``, output to ``log``."""
    loads = [_load1()]
    t0 = time.monotonic()
    with log.open("w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=stamp.REPO)
        while True:
            try:
                p.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                loads.append(_load1())
    loads.append(_load1())
    return time.monotonic() - t0, p.returncode, [x for x in loads if x is not None]


def cold(subjects: list[str]) -> list[dict]:
    real_cache = Path(os.environ.get("MESHCERT_CACHE") or Path.home() / ".cache" / "meshcert")
    records = []
    for subject in subjects:
        name, version = subject.split("@", 1)
        with tempfile.TemporaryDirectory(prefix="mc-cold-") as tmp:
            env = dict(os.environ, MESHCERT_CACHE=f"{tmp}/meshcert", GOCACHE=f"{tmp}/go-build",
                       GOFLAGS=" ".join([*os.environ.get("GOFLAGS", "").split(), "-p=1"]))
            code = ("import sys; from meshcert.toolchain import components as c; "
                    f"p = c.component({name!r}, {version!r}).ensure(); print(sorted(p.values())[0].parent)")
            log = Path(tmp) / "build.log"
            wall, rc, loads = _timed(["nice", "-n", "19", PY, "-c", code], env, log)
            text = log.read_text(errors="replace")
            out_dir = Path(text.strip().splitlines()[-1]) if rc == 0 and text.strip() else None
            kept = None
            if out_dir and out_dir.is_dir():
                dest = real_cache / "bin" / out_dir.name
                if not dest.exists():
                    shutil.move(str(out_dir), str(dest))
                kept = str(dest)
            tail = [ln for ln in text.splitlines() if ln.strip()][-3:]
        records.append({"kind": "cold-build", "subject": f"{name} {version}", "wall_s": round(wall, 1),
                        "exit": rc, "load1": loads, "binaries": kept, "tail": tail,
                        **stamp.stamp(f"bench/matrix_cost.py cold {subject}")})
        print(f"cold build {name} {version}: {wall:.0f}s exit {rc}", flush=True)
    return records


def warm(tailscale: str, headscale: str, keep: str | None = None) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="mc-warm-") as tmp:
        report = Path(keep).absolute() if keep else Path(tmp) / "report"
        cmd = [PY, "-c", "import sys; from meshcert.cli import main; sys.exit(main())", "certify", "--matrix", "--tailscale", tailscale, "--headscale", headscale,
               "--report-dir", str(report)]
        wall, rc, loads = _timed(cmd, dict(os.environ), Path(tmp) / "certify.log")
        tallies = {}
        try:
            m = json.loads((report / "matrix.json").read_text())
            for combo in m.get("combinations", []):
                outs = list((combo.get("clauses") or {}).values()) + list((combo.get("findings") or {}).values())
                tallies[f"tailscale {combo['tailscale']} + headscale {combo['headscale']}"] = {
                    "state": combo.get("state"), **{o: outs.count(o) for o in sorted(set(outs))}}
        except (OSError, ValueError):
            pass
        log_tail = [ln for ln in (Path(tmp) / "certify.log").read_text(errors="replace").splitlines() if ln][-5:]
    subject = f"tailscale {tailscale} x headscale {headscale}"
    print(f"warm matrix {subject}: {wall:.0f}s exit {rc}", flush=True)
    return [{"kind": "warm-matrix", "subject": subject, "wall_s": round(wall, 1), "exit": rc, "load1": loads,
             "combinations": tallies, "tail": log_tail,
             **stamp.stamp(f"bench/matrix_cost.py warm --tailscale {tailscale} --headscale {headscale}")}]


def save(records: list[dict]) -> None:
    try:
        old = json.loads(OUT.read_text())
    except (OSError, ValueError):
        old = []
    keep = {(r["kind"], r["subject"]): r for r in old}
    keep.update({(r["kind"], r["subject"]): r for r in records})
    rows = sorted(keep.values(), key=lambda r: (r["kind"], r["subject"]))
    OUT.write_text(json.dumps(rows, indent=1) + "\n")
    md = ["# What the version matrix costs (bench/matrix_cost.py; do not edit by hand)", "", *table(rows)]
    OUT.with_suffix(".md").write_text("\n".join(md) + "\n")


def table(rows: list[dict]) -> list[str]:
    """The records as a Markdown table with what they measured (matrix-cost.md and the README's
    `builds` figures block, bench/figures.py)."""
    out = ["| what | subject | wall | exit | 1-min load (min-max) | commit, date |", "|---|---|---|---|---|---|"]
    for r in rows:
        lo = f"{min(r['load1']):.1f}-{max(r['load1']):.1f}" if r.get("load1") else "?"
        out.append(f"| {r['kind']} | {r['subject']} | {r['wall_s']:.0f} s | {r['exit']} | {lo} | "
                   f"{r['commit']}, {r['generated'][:10]} |")
    return out + ["", "cold-build: an empty meshcert cache and Go build cache (the downloaded module source kept), "
                  "`nice -n 19`, `GOFLAGS=-p=1`, on a machine shared with other runs (read the load beside each); "
                  "warm-matrix: `meshcert certify --matrix` with every version built "
                  "(`bench/results/matrix-cost.json`, written by `bench/matrix_cost.py`)."]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cold")
    c.add_argument("subjects", nargs="+", help="NAME@VERSION (tailscale@v1.102.5)")
    w = sub.add_parser("warm")
    w.add_argument("--tailscale", required=True)
    w.add_argument("--headscale", required=True)
    w.add_argument("--report-dir", help="keep the matrix's report there (default: a temporary folder)")
    a = ap.parse_args()
    records = cold(a.subjects) if a.what == "cold" else warm(a.tailscale, a.headscale, a.report_dir)
    save(records)
    return 0 if all(r["exit"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
