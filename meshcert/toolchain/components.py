"""Pinned Go components: headscale, tailscale(d), toxiproxy, helm, kind, and the kind node's Kubernetes.

Each lives in ``meshcert/toolchain/tools/<name>/`` (package data) as a Go module of ours whose
``tool`` directives name the commands and whose go.sum verifies every module checksum. Binaries are built with
``go build tool`` into the cache, in a folder keyed by a hash of go.mod + go.sum + the Go
version, so a warm run builds nothing. Nothing of their source enters the repository.
"""

from __future__ import annotations

import hashlib
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


@lru_cache(maxsize=1)
def go_version() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)
    if not go:
        raise EnvironmentProblem("Go toolchain", "no `go` on PATH", "install Go >= 1.26.4 (headscale v0.29 needs it)")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()
    return out


def _go() -> str:
    return shutil.which("go") or "/usr/local/go/bin/go"


@dataclass(frozen=True)
class Component:
    name: str

    @property
    def module_dir(self) -> Path:
        return tools_dir() / self.name

    @property
    def version(self) -> str:
        """The pinned version of the component's main module, read from go.mod."""
        text = (self.module_dir / "go.mod").read_text()
        want = {"headscale": "github.com/juanfont/headscale", "tailscale": "tailscale.com",
                "toxiproxy": "github.com/Shopify/toxiproxy/v2", "helm": "helm.sh/helm/v3",
                "kind": "sigs.k8s.io/kind", "kubernetes": "k8s.io/kubernetes",
                "vault": "github.com/hashicorp/vault"}[self.name]
        m = re.search(rf"^\s*(?:require\s+)?{re.escape(want)}\s+(v\S+)", text, re.M)
        return m.group(1) if m else "?"

    @property
    def key(self) -> str:
        h = hashlib.sha256()
        for f in ("go.mod", "go.sum"):
            h.update((self.module_dir / f).read_bytes())
        h.update(go_version().encode())
        return h.hexdigest()[:12]

    @property
    def out_dir(self) -> Path:
        return cache_dir() / "bin" / f"{self.name}-{self.version}-{self.key}"

    def paths(self) -> dict[str, Path]:
        return {installed: self.out_dir / installed for installed in BINARIES[self.name].values()}

    def present(self) -> bool:
        return all(p.exists() for p in self.paths().values())

    def ensure(self) -> dict[str, Path]:
        if self.present():
            return self.paths()
        with cache_lock(f"go-{self.name}", progress.say):
            if self.present():  # built by the process we waited for
                return self.paths()
            return self._build()

    def _build(self) -> dict[str, Path]:
        tmp = self.out_dir.with_name(self.out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-buildvcs=false -mod=readonly")
        log = cache_dir() / f"go-build-{self.name}.log"
        # The build runs in a copy of the module folder: an installed meshcert's package data may be
        # read-only, and go.mod/go.sum are all the module is (-mod=readonly: go never edits them).
        src = tmp.with_name(tmp.name + ".src")
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(self.module_dir, src)
        try:
            with progress.step(f"go build {self.name} {self.version} "
                               f"(pinned in meshcert/toolchain/tools/{self.name}, verified by go.sum)"):
                progress.run_streamed([_go(), "build", "-trimpath", *ldflags(self.name, self.version),
                                       "-o", str(tmp) + "/", "tool"],
                                      f"go build {self.name}", env=env, cwd=str(src), log_path=str(log))
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


def ensure(names: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for n in names:
        out.update(COMPONENTS[n].ensure())
    return out
