"""The version matrix (issue 14): which Tailscale and Headscale versions a certification covers,
and whether each is built here.

Defaults (``default_versions``):
- tailscale: the newest version the module proxy serves, the pinned one, and the oldest the
  pinned headscale still supports -- read from headscale's capability-version table
  (``hscontrol/capver/capver_generated.go``: ``MinSupportedCapabilityVersion`` and the
  ``"v1.80": 113`` rows), never guessed;
- headscale: the pinned one, the previous minor release, and one release from before the routes
  API changed (0.25.x; ``headscale routes enable`` is the right command there).
The proxy here refuses headscale's version list (exact versions are served), so the headscale
defaults are written below; tailscale's are looked up, with the written ones as the fallback
when the proxy cannot be asked.

A version is ``built`` (binaries in the cache), ``missing`` (pinned, not built yet) or ``not
built`` with a one-line reason: not pinned (``meshcert matrix add``) and why the pin failed, or
why its last build failed. Nothing here is ever silently dropped: a version that cannot be built
keeps its column, with the reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass

from meshcert.errors import EnvironmentProblem, MeshcertError
from meshcert.toolchain import components

# Measured here on 2026-12-01 (/work/notes/issue14-research.md): the proxy serves these exact
# headscale versions but refuses the list. v0.28.0 is the previous minor of the pinned v0.29.2
# (v0.28.1/.2: 403); v0.25.1 is the last release before the routes API changed in 0.26.
HEADSCALE_PREVIOUS_MINOR = "v0.28.0"
HEADSCALE_BEFORE_ROUTES_API = "v0.25.1"
# Fallbacks when the module proxy cannot be asked for tailscale.com's versions (same note).
TAILSCALE_NEWEST_SERVED = "v1.104.7"
BUILT, MISSING, NOT_BUILT = "built", "missing", "not built"


@dataclass(frozen=True)
class Status:
    name: str
    version: str
    state: str          # BUILT, MISSING or NOT_BUILT
    reason: str = ""    # NOT_BUILT: one line; MISSING: what building it takes

    def line(self) -> str:
        return f"{self.name} {self.version}: {self.state}" + (f" ({self.reason})" if self.reason else "")


def status(name: str, version: str) -> Status:
    """Where ``name`` at ``version`` stands here, without building anything."""
    try:
        comp = components.component(name, version)
    except MeshcertError as e:
        return Status(name, version, NOT_BUILT, e.message)
    if not comp.pinned():
        why = comp.last_failure()
        return Status(name, version, NOT_BUILT,
                      why.split(": ", 1)[1] if why else f"not pinned (meshcert matrix add {name} {version})")
    if comp.present():
        return Status(name, version, BUILT, str(comp.out_dir))
    why = comp.last_failure()
    if why:
        return Status(name, version, NOT_BUILT, why)
    return Status(name, version, MISSING, "pinned, not built yet: `meshcert matrix build` builds it")


def build(name: str, version: str) -> Status:
    """Build ``name`` at ``version`` (progress shown); a failure is a NOT_BUILT status with its
    one line, never an exception."""
    try:
        comp = components.component(name, version)
        if not comp.pinned():
            return status(name, version)  # why its pin failed, or how to pin it
        comp.ensure()
    except MeshcertError as e:
        return Status(name, version, NOT_BUILT, e.one_line())
    return Status(name, version, BUILT, str(comp.out_dir))


def served_versions(name: str) -> list[str] | None:
    """The versions of ``name``'s main module the module proxy lists (``go list -m -versions``),
    or None when it refuses the list (headscale here) or cannot be asked."""
    env = dict(os.environ, GOFLAGS="-mod=mod", GOWORK="off")
    try:
        r = subprocess.run([components._go(), "list", "-m", "-versions", "-json", components.MODULES[name]],
                           capture_output=True, text=True, env=env, timeout=120,
                           cwd=str(components.COMPONENTS[name].module_dir))
        versions = json.loads(r.stdout).get("Versions") if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return sorted(versions, key=components.version_key) if versions else None


def capver_floor(headscale: str | None = None) -> tuple[str, int]:
    """(oldest supported tailscale major.minor, its capability version) read from ``headscale``'s
    (default: the pinned one's) capability-version table (``hscontrol/capver``)."""
    src = components.component("headscale", headscale).source() / "hscontrol" / "capver"
    # the constant sits in capver_generated.go (v0.29) or capver.go (v0.25): read the package
    text = "\n".join(f.read_text() for f in sorted(src.glob("*.go")) if not f.name.endswith("_test.go"))
    return parse_capver(text, str(src))


def parse_capver(text: str, where: str = "hscontrol/capver") -> tuple[str, int]:
    """The oldest ``vX.Y`` of the ``tailscaleToCapVer`` table whose capability version is at
    least ``MinSupportedCapabilityVersion``, with that capability version."""
    m = re.search(r"MinSupportedCapabilityVersion\s+\S*\s*=\s*(\d+)", text)
    table = re.search(r"tailscaleToCapVer\s*=\s*map\[string\][\w.]+\{(.*?)\}", text, re.S)
    if not m or not table:
        raise EnvironmentProblem("headscale capver table", f"{where} has no MinSupportedCapabilityVersion or "
                                 "tailscaleToCapVer (its layout changed)", "read it and update parse_capver()")
    floor = int(m.group(1))
    # rows are "v1.80": 113 (v0.29) or "v1.62.0": 88 (v0.25, full versions): keyed by major.minor
    rows = [(v, int(c)) for v, c in re.findall(r'"(v\d+\.\d+)(?:\.\d+)?":\s*(\d+)', table.group(1))]
    ok = [(v, c) for v, c in rows if c >= floor]
    if not ok:
        raise EnvironmentProblem("headscale capver table", f"{where}: no version reaches capability {floor}", "")
    return min(ok, key=lambda r: components.version_key(r[0] + ".0"))


def _newest_patch(minor: str, versions: list[str]) -> str | None:
    same = [v for v in versions if v.startswith(minor + ".") and "-" not in v]
    return max(same, key=components.version_key) if same else None


def default_versions() -> dict[str, list[str]]:
    """The default matrix's versions, newest first, without duplicates (see the module's doc)."""
    ts_pinned = components.COMPONENTS["tailscale"].version
    served = served_versions("tailscale")
    stable = [v for v in (served or []) if "-" not in v]
    newest = stable[-1] if stable else TAILSCALE_NEWEST_SERVED
    minor, _ = capver_floor()
    oldest = (_newest_patch(minor, stable) or _newest_patch(minor, components.pinned_versions("tailscale"))
              or f"{minor}.0")
    hs_pinned = components.COMPONENTS["headscale"].version
    return {"tailscale": _unique([newest, ts_pinned, oldest]),
            "headscale": _unique([hs_pinned, HEADSCALE_PREVIOUS_MINOR, HEADSCALE_BEFORE_ROUTES_API])}


def _unique(vs: list[str]) -> list[str]:
    return sorted(dict.fromkeys(vs), key=components.version_key, reverse=True)


@dataclass(frozen=True)
class Combination:
    tailscale: str
    headscale: str

    @property
    def name(self) -> str:
        return f"tailscale {self.tailscale} + headscale {self.headscale}"


def combinations(tailscale: list[str], headscale: list[str]) -> list[Combination]:
    """Every pair, grouped by headscale version (a world per headscale version is built once and
    reused across the tailscale versions)."""
    return [Combination(t, h) for h in headscale for t in tailscale]
