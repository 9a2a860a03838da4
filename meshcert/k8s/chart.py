"""A Helm chart under test: the pinned ``helm``, ``helm template`` rendering, the manifests it
renders, and how a sidecar's settings are read from a rendered container.

The reference chart (and kind's cluster configuration) ship as package data in
``meshcert/k8s/charts/``, located with ``meshcert.toolchain.paths.charts_dir`` (importlib.resources); any other chart is a
folder (``pytest --chart PATH``).

How a sidecar's settings are read from a rendered container (any chart's convention): a
``tailscale up``/``tailscaled`` flag (``--login-server=X`` or ``--login-server X``) in its
command/args -- after Kubernetes' ``$(VAR)`` and the shell's ``$VAR`` expansion of literal env
values -- or in ``TS_EXTRA_ARGS``/``TS_TAILSCALED_EXTRA_ARGS``; failing that, the environment
variable of the same meaning (``TS_LOGIN_SERVER``, ``TS_HOSTNAME``, ``TS_SOCKET``, ...).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from meshcert.errors import MeshcertError
from meshcert.k8s.podrunner import WORKLOAD_KINDS, PodRunError, expand, pod_template
from meshcert.secrets import redact
from meshcert.toolchain import components
from meshcert.toolchain.paths import cache_dir, charts_dir

# helm reads a chart from a folder: meshcert is installed as files (pip install / -e), never
# zipped, so the package's Traversable is a real path.
CHARTS = charts_dir()
REFERENCE_CHART = CHARTS / "reference-agent"
SIDECAR = "tailscale"
SOCKET_DIR = "/var/run/tailscale"
DEFAULT_SOCKET = f"{SOCKET_DIR}/tailscaled.sock"  # tailscaled's Linux default, and the SUT contract's
EXTRA_ARGS_ENV = ("TS_EXTRA_ARGS", "TS_TAILSCALED_EXTRA_ARGS")
# tailscale/tailscaled flag -> the environment variable some charts use for the same setting
ENV_FOR_FLAG = {"login-server": "TS_LOGIN_SERVER", "hostname": "TS_HOSTNAME", "accept-routes": "TS_ACCEPT_ROUTES",
                "advertise-tags": "TS_ADVERTISE_TAGS", "socket": "TS_SOCKET", "socks5-server": "TS_SOCKS5_SERVER",
                "outbound-http-proxy-listen": "TS_OUTBOUND_HTTP_PROXY_LISTEN"}
BOOL_FLAGS = {"accept-routes", "accept-dns", "reset", "ssh", "shields-up"}


def guide_values(**connectivity: Any) -> dict:
    """The guide's "Helm values to enable the sidecar", with some values replaced."""
    c = {"enabled": True, "controlServer": "https://headscale.example.com", "authKeySecret": "headscale-auth-key",
         "authKeySecretKey": "key", "hostname": "legator-controller", "acceptRoutes": True}
    c.update(connectivity)
    return {"connectivity": c}


# ------------------------------------------------------------------------------ helm and manifests
class ChartError(MeshcertError):
    def __init__(self, message: str, fix: str = ""):
        super().__init__("helm", redact(message), fix)


def helm_binary() -> str:
    """The pinned helm (tools/helm, go.sum-verified), built once into meshcert's cache."""
    return str(components.COMPONENTS["helm"].ensure()["helm"])


def helm(*args: str, timeout: float = 120) -> str:
    base = cache_dir() / "helm"
    env = {**os.environ, "HELM_CACHE_HOME": str(base / "cache"), "HELM_CONFIG_HOME": str(base / "config"),
           "HELM_DATA_HOME": str(base / "data")}
    try:
        r = subprocess.run([helm_binary(), *args], capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ChartError(f"`helm {args[0]}` did not finish within {timeout:.0f}s") from None
    if r.returncode != 0:
        msg = " ".join(line.strip() for line in r.stderr.strip().splitlines() if line.strip())
        raise ChartError(f"`helm {args[0]}` failed: {msg[-800:]}")
    return r.stdout


@dataclass
class Manifests:
    """What ``helm template`` rendered: the text and its YAML documents."""
    text: str
    docs: list[dict]

    def workloads(self) -> list[dict]:
        return [d for d in self.docs if d.get("kind") in WORKLOAD_KINDS]

    def pod_spec(self) -> dict | None:
        """The pod spec of the one workload (None when there is not exactly one)."""
        try:
            return pod_template(self.docs)[0].get("spec") or {}
        except PodRunError:
            return None

    def containers(self) -> list[dict]:
        """The pod's containers, native sidecars (init containers with restartPolicy Always) included."""
        spec = self.pod_spec() or {}
        return list(spec.get("containers") or []) + [c for c in spec.get("initContainers") or []
                                                     if c.get("restartPolicy") == "Always"]

    def every_container(self) -> list[dict]:
        spec = self.pod_spec() or {}
        return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])

    def sidecar(self) -> dict | None:
        """The container named ``tailscale``, else the first one that runs tailscale."""
        cs = self.containers()
        named = next((c for c in cs if c.get("name") == SIDECAR), None)
        return named or next((c for c in cs if runs_tailscale(c)), None)

    def controller(self) -> dict | None:
        """The first container that is not the sidecar (the agent's controller)."""
        side = self.sidecar()
        return next((c for c in self.containers() if c is not side and not runs_tailscale(c)), None)


@dataclass
class Chart:
    """A chart under test, rendered with the pinned helm."""
    path: Path
    release: str = "legator"
    namespace: str = "legator"
    log_root: Path | None = None  # where failing render checks save what they rendered

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._renders: dict[str, Manifests] = {}

    @property
    def label(self) -> str:
        return str(self.path)

    @cached_property
    def defaults(self) -> dict:
        """The chart's own values.yaml."""
        if not (self.path / "Chart.yaml").is_file():
            raise ChartError(f"{self.path} is not a chart (no Chart.yaml)", "pass --chart the chart's folder")
        return yaml.safe_load(helm("show", "values", str(self.path))) or {}

    def declares(self, *keys: str) -> bool:
        try:
            node: Any = self.defaults
        except ChartError:
            return False  # rendering will fail too, as a clause failure naming helm's error
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return False
            node = node[k]
        return True

    def render(self, values: dict) -> Manifests:
        """``helm template`` with ``values`` (memoized per chart: rendering is deterministic)."""
        key = json.dumps(values, sort_keys=True)
        if key not in self._renders:
            self._renders[key] = self._render(values)
        m = self._renders[key]
        return Manifests(m.text, copy.deepcopy(m.docs))

    def _render(self, values: dict) -> Manifests:
        with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="meshcert-values-", delete=False) as f:
            json.dump(values, f)
        try:
            text = helm("template", self.release, str(self.path), "--namespace", self.namespace, "-f", f.name)
        finally:
            os.unlink(f.name)
        try:
            docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
        except yaml.YAMLError as e:
            raise ChartError(f"the rendered manifests are not YAML: {e}") from None
        return Manifests(text, docs)


# ------------------------------------------------------------------------------ reading a container
_SHELL_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def literal_env(c: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in c.get("env") or []:
        if "valueFrom" not in item:
            env[item["name"]] = expand(str(item.get("value", "")), env)
    return env


def env_item(c: dict, name: str) -> dict | None:
    return next((i for i in c.get("env") or [] if i.get("name") == name), None)


def _texts(c: dict) -> list[str]:
    """command+args as the process would see them (Kubernetes, then shell expansion of literal env)
    and the extra-args variables."""
    env = literal_env(c)
    joined = " ".join(expand(str(x), env) for x in (c.get("command") or []) + (c.get("args") or []))
    joined = _SHELL_VAR.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), joined)
    return [joined] + [env[k] for k in EXTRA_ARGS_ENV if env.get(k)]


def flag(c: dict, name: str) -> str | None:
    """The last value given to ``--name`` in the container's command/args/extra args; "true" for
    a bare boolean flag; None when absent."""
    value_re = r"(\"[^\"]*\"|'[^']*'|[^\s\"';|&]*)"
    if name in BOOL_FLAGS:
        rx = re.compile(rf"(?<![\w-])--{re.escape(name)}(?![\w-])(?:={value_re})?")
    else:
        rx = re.compile(rf"(?<![\w-])--{re.escape(name)}(?![\w-])(?:=|\s+(?!-)){value_re}")
    found = None
    for text in _texts(c):
        for m in rx.finditer(text):
            v = m.group(1)
            found = "true" if v is None else v.strip("\"'")
    return found


def setting(c: dict, name: str) -> tuple[str | None, str]:
    """(value, where it was found) of a tailscale setting: the flag, else its environment variable."""
    v = flag(c, name)
    if v is not None:
        return v, f"flag --{name}"
    envname = ENV_FOR_FLAG.get(name)
    item = env_item(c, envname) if envname else None
    if item is not None:
        if "valueFrom" in item:
            return "<from " + json.dumps(item["valueFrom"]) + ">", f"env {envname}"
        return literal_env(c).get(envname, ""), f"env {envname}"
    return None, "absent"


def truthy(v: str | None) -> bool:
    return v is not None and v.strip().lower() in ("true", "1", "t", "yes")


def runs_tailscale(c: dict) -> bool:
    image = str(c.get("image") or "").rsplit("/", 1)[-1].split(":")[0].split("@")[0]
    text = " ".join(str(x) for x in (c.get("command") or []) + (c.get("args") or []))
    return "tailscale" in image or bool(re.search(r"\btailscaled\b|\bcontainerboot\b", text))


def userspace(c: dict) -> bool:
    tun = flag(c, "tun")
    if tun is not None:
        return tun == "userspace-networking"
    return truthy(literal_env(c).get("TS_USERSPACE"))


def socket_path(c: dict, default: str = DEFAULT_SOCKET) -> str:
    v, _ = setting(c, "socket")
    return v or default


def mount_for(c: dict, path: str) -> dict | None:
    """The volumeMount whose mountPath holds ``path`` (the deepest one)."""
    best = None
    for m in c.get("volumeMounts") or []:
        mp = m.get("mountPath", "").rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"].rstrip("/")):
                best = m
    return best


def describe(c: dict | None) -> str:
    if c is None:
        return "no such container"
    keep = {k: c.get(k) for k in ("name", "image", "command", "args") if c.get(k)}
    if keep.get("command"):
        keep["command"] = [x if len(str(x)) < 120 else str(x)[:117] + "..." for x in keep["command"]]
    keep["env"] = [i.get("name") for i in c.get("env") or []]
    return json.dumps(keep)
