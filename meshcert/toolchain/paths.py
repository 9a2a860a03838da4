"""Where meshcert keeps things outside the repository."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    base = os.environ.get("MESHCERT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "meshcert")
    p = Path(base)
    p.mkdir(parents=True, exist_ok=True)
    return p


def tools_dir() -> Path:
    return Path(__file__).resolve().parent / "tools"


def images_dir() -> Path:
    return REPO / "images"


@contextmanager
def cache_lock(name: str, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``<cache>/locks/<name>`` while building something into the
    shared cache: two meshcert processes (two checkouts, CI beside a developer) then build a
    component once instead of racing on the same temporary folder. ``waiting`` is told once
    when another process holds it."""
    d = cache_dir() / "locks"
    d.mkdir(exist_ok=True)
    with open(d / f"{name}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                waiting(f"another meshcert process is building {name}; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
