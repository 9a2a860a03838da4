"""Files a run needs on this machine's disk (Vault's CA certificate, for one: requests verifies
against a path), in one folder per process, so that nothing is left in the temp folder.

The folder is ``<tmp>/meshcert-scratch-<pid>-<start ticks>``: removed when the process exits
(a normal end, Ctrl-C and SIGTERM, which meshcert turns into an ordinary exit), and, after
``kill -9``, by the next run's sweep (:func:`sweep`, called with the engine's), which removes
the folders whose process is gone -- the same owner rule as the engine's objects
(:mod:`meshcert.world.labels`, which takes :func:`start_ticks` from here)."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "meshcert-scratch-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-(\d+)$")
_mine: Path | None = None


def start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot: with its pid, who owns a thing (a pid
    alone is reused); "" when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def folder() -> Path:
    """This process's scratch folder (made on first use, mode 0700, removed at exit)."""
    global _mine
    pid = os.getpid()
    if _mine is None or not _mine.name.startswith(f"{PREFIX}{pid}-"):  # a forked child: its own
        d = Path(tempfile.gettempdir()) / f"{PREFIX}{pid}-{start_ticks(pid)}"
        d.mkdir(mode=0o700, exist_ok=True)
        atexit.register(shutil.rmtree, d, True)
        _mine = d
    return _mine


def write(name: str, data: bytes) -> Path:
    """``data`` in this process's scratch folder as ``name`` (mode 0600); its path."""
    p = folder() / name
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return p


def sweep(tmp: str | os.PathLike | None = None) -> int:
    """Remove the scratch folders of processes that are gone (killed: atexit never ran); how many."""
    gone = 0
    root = Path(tmp or tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return 0
    for d in entries:
        m = _NAME.match(d.name)
        if not m or not d.is_dir():
            continue
        pid, ticks = int(m.group(1)), m.group(2)
        if start_ticks(pid) != ticks:
            shutil.rmtree(d, ignore_errors=True)
            gone += 1
    return gone
