"""Where meshcert keeps things outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    base = os.environ.get("MESHCERT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "meshcert")
    p = Path(base)
    p.mkdir(parents=True, exist_ok=True)
    return p


def tools_dir() -> Path:
    return REPO / "tools"


def images_dir() -> Path:
    return REPO / "images"
