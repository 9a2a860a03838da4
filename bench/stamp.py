"""The stamp every figure artifact under bench/results/ carries: which commit, which machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def commit(repo: Path = REPO) -> str:
    """HEAD's short hash of ``repo`` (this checkout, or the one whose report is reused), with
    -dirty when the work tree differs from it."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    # The figures' own outputs (bench/results/, the README blocks they rewrite) do not make it dirty:
    # a run of bench/figures.py writes them one step after another.
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":(exclude)bench/results", ":(exclude)README.md")
    return head + ("-dirty" if changed else "")


def machine() -> dict:
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {"cores": os.cpu_count(), "memory_mib": mem_kib // 1024, "kernel": platform.release(),
            "python": platform.python_version()}


def checkout_of(path: Path) -> Path | None:
    """The git checkout a folder (a reused report) lives in, if any."""
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True)
    return Path(top.stdout.strip()) if top.returncode == 0 and top.stdout.strip() else None


def stamp(command: str, repo: Path = REPO) -> dict:
    return {"commit": commit(repo), "machine": machine(), "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": command}


def describe(s: dict) -> str:
    """One line for the README: 'commit abc, 2 cores, 7.8 GiB, 2026-12-01'."""
    m = s.get("machine") or {}
    mem = f"{m.get('memory_mib', 0) / 1024:.1f} GiB" if m.get("memory_mib") else "memory unknown"
    return f"commit {s.get('commit', '?')}, {m.get('cores', '?')} cores, {mem}, {str(s.get('generated', '?'))[:10]}"


def write_result(folder: Path, stem: str, result: dict, lines: list[str]) -> None:
    """A bench script's artifact: ``<stem>.json`` (the stamped data) and ``<stem>.md`` (its
    rendering, ``lines``) in ``folder``; the rendering is printed too."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written to {folder / stem}.json and .md")
