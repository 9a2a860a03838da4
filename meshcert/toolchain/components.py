"""Pinned Go components: headscale, tailscale(d), toxiproxy, helm, kind, and the kind node's Kubernetes.

Each lives in ``meshcert/toolchain/tools/<name>/`` (package data) as a Go module of ours whose
``tool`` directives name the commands and whose go.sum verifies every module checksum. Binaries are built with
``go build tool`` into the cache, in a folder keyed by a hash of go.mod + go.sum + the Go
version, so a warm run builds nothing. Nothing of their source enters the repository.

Other versions of a component (issue 14, the version matrix) are Go modules of ours too, one
folder per version beside the pinned one: ``tools/<name>@<version>/go.mod+go.sum`` (written by
:func:`pin`, i.e. ``meshcert matrix add <name> <version>``). ``component(name)`` is the pinned
one (``tools/<name>/``, what every world uses unless told otherwise); ``component(name,
version)`` is that version's module, the pinned folder when ``version`` is the pinned version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from meshcert.errors import EnvironmentProblem
from meshcert.toolchain import progress
from meshcert.toolchain.paths import cache_dir, cache_lock, tools_dir

# tool folder -> {binary name produced by go build: name we install it under}
BINARIES: dict[str, dict[str, str]] = {
    "headscale": {"headscale": "headscale"},
    "tailscale": {"tailscale": "tailscale", "tailscaled": "tailscaled"},
    "toxiproxy": {"server": "toxiproxy-server"},
    "helm": {"helm": "helm"},
    "kind": {"kind": "kind"},
    # The kind node image's Kubernetes (meshcert/k8s/nodeimage.py); etcd's main is the root of
    # go.etcd.io/etcd/server/v3, which go build names "server".
    "kubernetes": {"kubelet": "kubelet", "kubeadm": "kubeadm", "kubectl": "kubectl",
                   "kube-apiserver": "kube-apiserver", "kube-controller-manager": "kube-controller-manager",
                   "kube-scheduler": "kube-scheduler", "server": "etcd"},
    # The world's secret store (meshcert/world/vault.py, issue 13): SSH CA + database users.
    "vault": {"vault": "vault"},
}


def ldflags(name: str, version: str) -> list[str]:
    """Extra ``go build`` flags of a component. Kubernetes takes its version from ``-X`` flags
    (its release scripts set them; without them kubeadm reports v0.0.0 and asks for images of
    that version); ``-s -w`` drop the symbol tables of these large binaries (about a third of
    the node image's Kubernetes bytes)."""
    if name == "vault":
        return ["-ldflags", "-s -w"]  # symbol tables are most of vault's bytes; we never debug it
    if name != "kubernetes":
        return []
    major, minor = version.lstrip("v").split(".")[:2]
    x = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        x += [f"-X {pkg}.gitVersion={version}", f"-X {pkg}.gitMajor={major}", f"-X {pkg}.gitMinor={minor}",
              f"-X {pkg}.gitTreeState=clean", f"-X {pkg}.buildDate=1970-01-01T00:00:00Z"]
    return ["-ldflags", " ".join(["-s", "-w", *x])]


# tool folder -> its main module (whose version go.mod pins)
MODULES: dict[str, str] = {"headscale": "github.com/juanfont/headscale", "tailscale": "tailscale.com",
                           "toxiproxy": "github.com/Shopify/toxiproxy/v2", "helm": "helm.sh/helm/v3",
                           "kind": "sigs.k8s.io/kind", "kubernetes": "k8s.io/kubernetes",
                           "vault": "github.com/hashicorp/vault"}
# the components a world may run at another version than the pinned one (the version matrix)
VERSIONED = ("tailscale", "headscale")
_VERSION = re.compile(r"^v\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")  # a Go module version (semver with a v)


# The one Go toolchain newer than this machine's that the Go module proxy serves here (the go
# command fetches it like a module when GOTOOLCHAIN names it; /work/.library/env notes, measured
# 2026-12-02: go1.27.3 served, nothing newer). A component whose go.mod needs a Go newer than
# the machine's is pinned and built with it, that component alone (its cache key hashes it):
# tailscale v1.104.x needs go 1.27.x.
SERVED_NEWER_TOOLCHAIN = "go1.27.3"


@lru_cache(maxsize=1)
def go_version() -> str:
    """This machine's own Go (GOTOOLCHAIN=local: an exported GOTOOLCHAIN does not change it)."""
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)
    if not go:
        raise EnvironmentProblem("Go toolchain", "no `go` on PATH", "install Go >= 1.26.4 (headscale v0.29 needs it)")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, GOTOOLCHAIN="local")).stdout.strip()
    return out


def go_key(v: str) -> tuple[int, ...]:
    """Sort key of a Go version (``go1.27.3`` or ``1.27``)."""
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def toolchain_for(go_line: str) -> str:
    """The GOTOOLCHAIN a module whose go.mod says ``go <go_line>`` builds with: ``local`` when
    this machine's Go is new enough, else the served newer toolchain (if it is new enough; if not,
    ``local``, and go's own "requires go >=" error says why)."""
    if go_key(go_line) <= go_key(go_version()):
        return "local"
    return SERVED_NEWER_TOOLCHAIN if go_key(go_line) <= go_key(SERVED_NEWER_TOOLCHAIN) else "local"


def _go() -> str:
    return shutil.which("go") or "/usr/local/go/bin/go"


def _goflags(*own: str) -> str:
    """GOFLAGS for our go commands: the user's own (e.g. ``-p=1`` on a shared machine) kept,
    ours after them (the later flag wins)."""
    return " ".join([*os.environ.get("GOFLAGS", "").split(), *own])


@dataclass(frozen=True)
class Component:
    name: str
    release: str | None = None  # None: the pinned module (tools/<name>/); else tools/<name>@<release>/

    @property
    def module_dir(self) -> Path:
        return tools_dir() / (self.name if self.release is None else f"{self.name}@{self.release}")

    @property
    def label(self) -> str:
        """How messages name it: ``tailscale v1.80.3``."""
        return f"{self.name} {self.release or self.version}"

    def pinned(self) -> bool:
        """Whether a go.mod + go.sum of ours pins this version (a version nobody added is not)."""
        return (self.module_dir / "go.mod").is_file() and (self.module_dir / "go.sum").is_file()

    def require_pinned(self) -> None:
        if not self.pinned():
            raise EnvironmentProblem(self.label, f"not pinned: no go.mod + go.sum in {self.module_dir}",
                                     f"meshcert matrix add {self.name} {self.release}")

    @property
    def version(self) -> str:
        """The version of the component's main module, read from its go.mod."""
        text = (self.module_dir / "go.mod").read_text()
        m = re.search(rf"^\s*(?:require\s+)?{re.escape(MODULES[self.name])}\s+(v\S+)", text, re.M)
        return m.group(1) if m else "?"

    @property
    def toolchain(self) -> str:
        """GOTOOLCHAIN for this module's go commands (:func:`toolchain_for` its go.mod's ``go`` line)."""
        m = re.search(r"^go\s+(\S+)", (self.module_dir / "go.mod").read_text(), re.M)
        return toolchain_for(m.group(1)) if m else "local"

    @property
    def go(self) -> str:
        """The Go version that builds it (this machine's, or the served newer toolchain)."""
        return go_version() if self.toolchain == "local" else self.toolchain

    def go_env(self, **extra: str) -> dict[str, str]:
        return dict(os.environ, GOTOOLCHAIN=self.toolchain, GOWORK="off", **extra)

    @property
    def key(self) -> str:
        h = hashlib.sha256()
        for f in ("go.mod", "go.sum"):
            h.update((self.module_dir / f).read_bytes())
        h.update(self.go.encode())
        return h.hexdigest()[:12]

    @property
    def out_dir(self) -> Path:
        return cache_dir() / "bin" / f"{self.name}-{self.version}-{self.key}"

    def paths(self) -> dict[str, Path]:
        return {installed: self.out_dir / installed for installed in BINARIES[self.name].values()}

    def present(self) -> bool:
        return self.pinned() and all(p.exists() for p in self.paths().values())

    @property
    def failure_file(self) -> Path:
        """Where the last failed build of this exact module (go.mod + go.sum + Go) left its one
        line, for `meshcert doctor` and the matrix; removed by a successful build."""
        return self.out_dir.with_name(self.out_dir.name + ".failed")

    def last_failure(self) -> str | None:
        """The one line of this version's last failed pin (not pinned) or build (pinned), if any."""
        try:
            f = self.failure_file if self.pinned() else _pin_failure(self.name, self.release or "")
            return f.read_text().strip() or None
        except OSError:
            return None

    def ensure(self) -> dict[str, Path]:
        self.require_pinned()
        if self.present():
            return self.paths()
        lock = f"go-{self.name}" if self.release is None else f"go-{self.name}@{self.release}"
        with cache_lock(lock, progress.say):
            if self.present():  # built by the process we waited for
                return self.paths()
            try:
                paths = self._build()
            except EnvironmentProblem as e:
                self.failure_file.write_text(e.one_line() + "\n")
                raise
            self.failure_file.unlink(missing_ok=True)
            return paths

    def source(self) -> Path:
        """The extracted source of this version's main module (Go module cache), downloaded
        through the module proxy and checked against our go.sum."""
        self.require_pinned()
        env = self.go_env(GOFLAGS=_goflags("-mod=readonly"))
        mod = f"{MODULES[self.name]}@{self.version}"
        r = subprocess.run([_go(), "mod", "download", "-json", mod], capture_output=True, text=True,
                           cwd=str(self.module_dir), env=env)
        try:
            info = json.loads(r.stdout)
        except json.JSONDecodeError:
            info = {}
        if r.returncode != 0 or not info.get("Dir") or info.get("Error"):
            raise EnvironmentProblem(f"go mod download {mod}", go_refusal(info.get("Error") or r.stderr, *mod.split("@")),
                                     "the Go module proxy must answer (or the module be in the Go module cache)")
        return Path(info["Dir"])

    def _build(self) -> dict[str, Path]:
        tmp = self.out_dir.with_name(self.out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        env = self.go_env(CGO_ENABLED="0", GOFLAGS=_goflags("-buildvcs=false", "-mod=readonly"))
        log = cache_dir() / ("go-build-" + (self.name if self.release is None else f"{self.name}@{self.release}")
                             + ".log")
        # The build runs in a copy of the module folder: an installed meshcert's package data may be
        # read-only, and go.mod/go.sum are all the module is (-mod=readonly: go never edits them).
        src = tmp.with_name(tmp.name + ".src")
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(self.module_dir, src)
        try:
            with progress.step(f"go build {self.name} {self.version} with {self.go} "
                               f"(pinned in meshcert/toolchain/tools/{self.module_dir.name}, verified by go.sum)"):
                try:
                    progress.run_streamed([_go(), "build", "-trimpath", *ldflags(self.name, self.version),
                                           "-o", str(tmp) + "/", "tool"],
                                          f"go build {self.label}", env=env, cwd=str(src), log_path=str(log))
                except EnvironmentProblem:
                    # one line (go's first error), not the log's tail: the matrix shows it in a column
                    raise EnvironmentProblem(f"go build {self.label}", build_error(log), f"full log: {log}") from None
        finally:
            shutil.rmtree(src, ignore_errors=True)
        for built, installed in BINARIES[self.name].items():
            if not (tmp / built).exists():
                raise EnvironmentProblem(f"go build {self.name}", f"expected binary {built} was not produced",
                                         f"read {log}")
            if built != installed:
                (tmp / built).rename(tmp / installed)
        shutil.rmtree(self.out_dir, ignore_errors=True)
        tmp.rename(self.out_dir)
        return self.paths()


COMPONENTS = {name: Component(name) for name in BINARIES}


def component(name: str, version: str | None = None) -> Component:
    """``name`` at ``version``: the pinned module when ``version`` is None or the pinned version,
    else ``tools/<name>@<version>/`` (which may not be pinned yet: see :meth:`Component.pinned`)."""
    if name not in BINARIES:
        raise EnvironmentProblem(name, "not a component meshcert builds", f"one of {', '.join(BINARIES)}")
    if version is None or version == COMPONENTS[name].version:
        return COMPONENTS[name]
    if name not in VERSIONED:
        raise EnvironmentProblem(name, f"only the pinned {COMPONENTS[name].version} is supported",
                                 f"the versioned components are {', '.join(VERSIONED)}")
    if not _VERSION.match(version):
        raise EnvironmentProblem(f"{name} {version}", "not a Go module version", "write it as vMAJOR.MINOR.PATCH")
    return Component(name, version)


def pinned_versions(name: str) -> list[str]:
    """Every version of ``name`` a go.mod + go.sum of ours pins: the pinned one and each
    ``tools/<name>@<version>/``, newest first."""
    found = {COMPONENTS[name].version}
    for d in tools_dir().glob(f"{name}@*"):
        if Component(name, d.name.split("@", 1)[1]).pinned():
            found.add(d.name.split("@", 1)[1])
    return sorted(found, key=version_key, reverse=True)


def failed_pins(name: str) -> list[str]:
    """Versions of ``name`` whose last pin failed here (their one line is kept in the cache)."""
    d = cache_dir() / "pin"
    return sorted((f.name[len(name) + 1:-len(".failed")] for f in d.glob(f"{name}@*.failed")) if d.is_dir() else [],
                  key=version_key, reverse=True)


def version_key(v: str) -> tuple:
    """Sort key of a ``vX.Y.Z[-pre]`` version (a pre-release sorts before its release)."""
    m = re.match(r"v(\d+)\.(\d+)\.(\d+)(-.*)?$", v)
    if not m:
        return (-1, -1, -1, v)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), "" if m.group(4) is None else m.group(4),
            m.group(4) is None)


def tool_packages(name: str) -> list[str]:
    """The ``tool`` directives of the pinned module (the commands every version builds)."""
    text = (COMPONENTS[name].module_dir / "go.mod").read_text()
    block = re.search(r"^tool\s*\((.*?)^\)", text, re.M | re.S)
    lines = block.group(1).split() if block else re.findall(r"^tool\s+(\S+)", text, re.M)
    return [t for t in lines if t and not t.startswith("//")]


def pin(name: str, version: str, into: Path | None = None) -> Path:
    """Write ``tools/<name>@<version>/go.mod + go.sum``: a module of ours requiring ``name``'s main
    module at ``version`` with the same ``tool`` directives as the pinned one, resolved by ``go
    get -tool`` and ``go mod tidy`` through the configured module proxy, checked against the
    checksum database (GOSUMDB, go's default). Only those two files are written (facts: module
    versions and their checksums), never source. A proxy that refuses the version, or a version
    that does not exist, is one clear EnvironmentProblem. Returns the folder."""
    comp = component(name, version)
    if comp.release is None:
        raise EnvironmentProblem(f"{name} {version}", "is the pinned version already",
                                 f"its module is {comp.module_dir}")
    dest = (into or tools_dir()) / f"{name}@{version}"
    tmp = cache_dir() / "pin" / f"{name}@{version}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    go_line = go_version().removeprefix("go")
    (tmp / "go.mod").write_text(f"module meshcert.local/tools/{name}\n\ngo {go_line}\n")
    mod = MODULES[name]
    cmds = [[_go(), "get", "-tool", *(f"{t}@{version}" for t in tool_packages(name))], [_go(), "mod", "tidy"]]
    proxy = subprocess.run([_go(), "env", "GOPROXY"], capture_output=True, text=True).stdout.strip()
    toolchain = "local"
    with progress.step(f"pinning {name} {version} (go get -tool, go mod tidy; module proxy: {proxy or '?'})"):
        for cmd in cmds:
            while True:
                env = dict(os.environ, GOFLAGS=_goflags("-mod=mod"), GOWORK="off", GOTOOLCHAIN=toolchain)
                r = subprocess.run(cmd, cwd=str(tmp), env=env, capture_output=True, text=True)
                need = re.search(r"requires go >= (\S+) \(running go", r.stderr) if r.returncode else None
                # a version that needs a newer Go than the machine's: once more with the served newer
                # toolchain, if that one is new enough (the built module then builds with it too)
                if need and toolchain == "local" and toolchain_for(need.group(1)) != "local":
                    toolchain = toolchain_for(need.group(1))
                    progress.say(f"{name} {version} needs go >= {need.group(1)}: using {toolchain} "
                                 "(the newest Go toolchain the module proxy serves here)")
                    continue
                break
            if r.returncode != 0:
                why = go_refusal(r.stderr, mod, version)
                if need and go_key(need.group(1)) > go_key(SERVED_NEWER_TOOLCHAIN):
                    why = (f"{mod}@{version} requires go >= {need.group(1)} (the newest Go toolchain the module "
                           f"proxy serves here is {SERVED_NEWER_TOOLCHAIN}; this machine's is {go_version()})")
                if "requires go" in why:
                    fix = (f"the newest Go toolchain the module proxy serves here is {SERVED_NEWER_TOOLCHAIN}: "
                           "pick an older version (or install a newer Go)")
                elif "checksum database" in why:
                    fix = ("the checksum database does not know a module this version needs: pick another version "
                           "(meshcert never turns the check off)")
                else:
                    fix = (f"pick a version the module proxy serves (go list -m -versions {mod}; some proxies "
                           "serve only exact versions)")
                problem = EnvironmentProblem(f"{name} {version}", f"not pinned: {why}", fix)
                _pin_failure(name, version).write_text(problem.one_line() + "\n")
                raise problem
    got = Component(name, version)
    text = (tmp / "go.mod").read_text()
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(mod)}\s+(v\S+)", text, re.M)
    if not m or m.group(1) != version:
        raise EnvironmentProblem(got.label, f"go resolved {mod} to {m.group(1) if m else 'nothing'}", "")
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("go.mod", "go.sum"):
        shutil.copy2(tmp / f, dest / f)
    shutil.rmtree(tmp, ignore_errors=True)
    _pin_failure(name, version).unlink(missing_ok=True)
    return dest


def _pin_failure(name: str, version: str) -> Path:
    """Where a failed :func:`pin` leaves its one line (shown for a version that is not pinned)."""
    d = cache_dir() / "pin"
    d.mkdir(exist_ok=True)
    return d / f"{name}@{version}.failed"


def build_error(log: Path) -> str:
    """The first compiler/linker/go error of a failed ``go build`` log, as one line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "failed (no log)"
    lines = [ln for ln in lines if not ln.startswith(("go: downloading", "go: finding", "go: extracting"))]
    for ln in lines:
        if re.search(r"\.go:\d+(:\d+)?: ", ln) or ln.startswith(("go: ", "link: ")):
            return "failed: " + ln.removeprefix("go: ")[:300]
    return "failed: " + (lines[-1][:300] if lines else "no output")


def go_refusal(stderr: str, module: str, version: str) -> str:
    """go's answer for a version it could not get, as one line naming what was refused: the
    module proxy's or the checksum database's HTTP status (e.g. ``403 Forbidden``) with the
    module it was asked for (often a dependency, not ``module`` itself), a Go too old for it,
    else go's last error line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        m = re.search(r"reading (\S+): (\d{3}) ([A-Za-z][A-Za-z ]*)$", ln)
        if m:
            url, code, status = m.groups()
            what = re.sub(r"^.*/(?:lookup|@v)/?", "", url)  # .../lookup/<mod>@<v> or .../<mod>/@v/<v>.info
            asked = re.search(r"https?://[^/]+/(?:sumdb/[^/]+/lookup/)?(.+?)(?:/@v/(.+?)\.(?:info|mod|zip)|)$", url)
            if asked:
                what = asked.group(1) + (f"@{asked.group(2)}" if asked.group(2) else "")
            who = "the checksum database has no entry for" if "/sumdb/" in url else "the module proxy refused"
            return f"{who} {what} ({code} {status.strip()})"
    for ln in lines:
        m = re.search(r"requires go >= (\S+) \(running go (\S+?)[;)]", ln)
        if m:
            return f"{module}@{version} requires go >= {m.group(1)} (this machine's Go is {m.group(2)})"
    for ln in reversed(lines):
        if ln.startswith("go:") or "error" in ln.lower() or "unknown revision" in ln or "invalid version" in ln:
            return ln.removeprefix("go: ")[:300]
    return (lines[-1] if lines else "go failed with no output")[:300]


def ensure(names: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for n in names:
        out.update(COMPONENTS[n].ensure())
    return out
