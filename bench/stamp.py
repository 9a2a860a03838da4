"""The stamp every figure artifact under bench/results/ carries: which commit, which machine."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def commit() -> str:
    """HEAD's short hash, with -dirty when the work tree differs from it."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


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


def stamp(command: str) -> dict:
    return {"commit": commit(), "machine": machine(), "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": command}


def describe(s: dict) -> str:
    """One line for the README: 'commit abc, 2 cores, 7.8 GiB, 2026-12-01'."""
    m = s.get("machine") or {}
    mem = f"{m.get('memory_mib', 0) / 1024:.1f} GiB" if m.get("memory_mib") else "memory unknown"
    return f"commit {s.get('commit', '?')}, {m.get('cores', '?')} cores, {mem}, {str(s.get('generated', '?'))[:10]}"
