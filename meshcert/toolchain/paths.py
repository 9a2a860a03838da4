"""Where meshcert finds its own files (package data) and keeps things outside the package.

Everything meshcert reads at run time ships inside the package: the clause catalog
(meshcert/report/clauses.yaml), the Go tool pins (meshcert/toolchain/tools/<name>/go.mod+go.sum),
the charts (meshcert/k8s/charts/), the suite (meshcert.suite.conformance / .scenarios, mapped
from the checkout's top-level conformance/ and scenarios/). So an installed meshcert works from
any directory; a source tree is used only for its own suite folders and its git commit.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # the meshcert package folder (installed or checked out)


def cache_dir() -> Path:
    base = os.environ.get("MESHCERT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "meshcert")
    p = Path(base)
    p.mkdir(parents=True, exist_ok=True)
    return p


def bytecode_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a Python child of meshcert (pytest, its xdist workers, the tests' own child
    runs), with compiled bytecode kept in meshcert's cache (``<cache>/pycache``), never in the
    checkout: a run starts dozens of Python processes, and with PYTHONDONTWRITEBYTECODE (set on
    some machines, this one included) each of them recompiled and assertion-rewrote the whole
    suite (~180 modules): `pytest --collect-only conformance/test_property.py` took 5.1 s
    instead of 1.6 s. A PYTHONPYCACHEPREFIX the user set is kept; since the bytecode goes to that
    prefix, not beside the sources, PYTHONDONTWRITEBYTECODE is then dropped."""
    out = dict(env)
    out.setdefault("PYTHONPYCACHEPREFIX", str(cache_dir() / "pycache"))
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


def package_file(*parts: str) -> Path:
    """A file or folder shipped inside the meshcert package (package data), as a real path:
    meshcert is installed unzipped (setuptools wheel), so the resource is a file on disk."""
    return Path(str(resources.files("meshcert").joinpath(*parts)))


def source_tree() -> Path | None:
    """The checkout (source tree) this meshcert package runs from -- an editable install or
    ``python -m`` in the checkout -- or None when it runs from an installed wheel. Recognised by
    pyproject.toml and the suite's conformance/ folder beside the package."""
    root = PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / "conformance").is_dir():
        return root
    return None


def suite_root() -> Path:
    """The folder holding the suite's ``conformance/`` and ``scenarios/``: the checkout's own in a
    source tree, else the installed copy (meshcert/suite/). Test node ids are relative to it, so
    they read ``conformance/test_x.py::test_y`` either way (as clauses.yaml lists them)."""
    return source_tree() or package_file("suite")


def tools_dir() -> Path:
    """The pinned Go modules, one folder per tool with go.mod + go.sum (package data)."""
    return package_file("toolchain", "tools")


def charts_dir() -> Path:
    """The charts (package data, meshcert/k8s/charts/): the reference chart and kind's config."""
    return package_file("k8s", "charts")


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
