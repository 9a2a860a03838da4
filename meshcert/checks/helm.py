"""HELM clauses: the chart's values, the pod they render, and that pod run for real.

Two kinds of checks, each raising :class:`~meshcert.checks.base.ClauseFailure` (through
``Expect``/``clause`` of checks/sut.py) naming the clause, the expected and the observed:

- **render checks** (``helm1_*`` .. ``helm7_*``): ``helm template`` (the pinned helm binary)
  renders the chart with the guide's Helm values, and the parsed manifests are asserted. They
  need no engine. A failing one saves the values and manifests it rendered as its "logs".
- **pod checks** (``pod_*``): the Deployment rendered with this world's control server, images
  and CA is run as a pod on the Docker engine (meshcert/k8s/podrunner.py) in the session world,
  with the pre-auth key in a Secrets mapping, and the sidecar, headscale and the SUT are asked
  what happened.

Any chart can be certified this way (``pytest --chart PATH``): the checks set only the guide's
values (``connectivity.enabled, controlServer, authKeySecret, authKeySecretKey, hostname,
acceptRoutes``), and the reference chart's extensions (``connectivity.type``, ``tags``,
``caBundle``, the image values) only when the chart's own values.yaml declares them.

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
import secrets as pysecrets
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import yaml

from meshcert.toolchain import components
from meshcert.errors import MeshcertError
from meshcert.toolchain.paths import cache_dir, charts_dir
from meshcert.secrets import KEY_SHAPES, redact
from meshcert.checks.sut import Expect, clause

REFERENCE_CHART = charts_dir() / "reference-agent"
SIDECAR = "tailscale"
SOCKET_DIR = "/var/run/tailscale"
DEFAULT_SOCKET = f"{SOCKET_DIR}/tailscaled.sock"  # tailscaled's Linux default, and the SUT contract's
AGENT_TAG = "tag:agent-runtime"
CA_CONFIGMAP = "meshcert-control-ca"
PROXY_ENV = ("SUT_PROXY", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
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
        from meshcert.k8s.podrunner import WORKLOAD_KINDS
        return [d for d in self.docs if d.get("kind") in WORKLOAD_KINDS]

    def pod_spec(self) -> dict | None:
        """The pod spec of the one workload (None when there is not exactly one)."""
        from meshcert.k8s.podrunner import PodRunError, pod_template
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


class Evidence:
    """Stands in for the world in ``Expect`` for render checks: what was rendered, saved when a
    clause fails (values + manifests, secrets redacted)."""

    def __init__(self, chart: Chart):
        self.chart = chart
        self.rendered: list[tuple[str, dict, str]] = []
        self._n = 0

    def render(self, e: Expect, values: dict, label: str) -> Manifests | None:
        try:
            m = self.chart.render(values)
        except ChartError as err:
            self.rendered.append((label, values, f"# helm template failed: {err.message}\n"))
            e.that(False, f"`helm template` renders {self.chart.label} with {label}", err.message)
            return None
        self.rendered.append((label, values, m.text))
        if not e.that(m.pod_spec() is not None, f"{label}: exactly one workload with a pod template",
                      [f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}" for d in m.docs]):
            return None
        return m

    def failure_logs(self, clause_id: str) -> Path | None:
        if self.chart.log_root is None:
            return None
        self._n += 1
        d = Path(self.chart.log_root) / f"{clause_id}-render-{pysecrets.token_hex(2)}"
        d.mkdir(parents=True, exist_ok=True)
        for i, (label, values, text) in enumerate(self.rendered, 1):
            (d / f"{i:02d}-values.yaml").write_text(f"# {label}\n" + redact(yaml.safe_dump(values, sort_keys=False)))
            (d / f"{i:02d}-manifests.yaml").write_text(redact(text))
        return d


@contextmanager
def _check(chart: Chart, cid: str) -> Iterator[tuple[Expect, Evidence]]:
    ev = Evidence(chart)
    with clause(ev, cid) as e:
        yield e, ev


# ------------------------------------------------------------------------------ reading a container
_SHELL_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def literal_env(c: dict) -> dict[str, str]:
    from meshcert.k8s.podrunner import expand
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
    from meshcert.k8s.podrunner import expand
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


def _mount_for(c: dict, path: str) -> dict | None:
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


# ------------------------------------------------------------------------------ render checks
def helm1_sidecar_rendered(chart: Chart) -> None:
    with _check(chart, "HELM-1") as (e, ev):
        m = ev.render(e, guide_values(), "the guide's Helm values")
        if not m:
            return
        names = [c.get("name") for c in m.every_container()]
        named = [c for c in m.containers() if c.get("name") == SIDECAR]
        e.that(len(named) == 1, "exactly one container named `tailscale` in the controller's pod (the name "
               "`kubectl logs <pod> -c tailscale` relies on)", names)
        if named:
            e.that(runs_tailscale(named[0]), "the `tailscale` container runs tailscaled (its command, args or image)",
                   describe(named[0]))
        e.that(m.controller() is not None, "the controller's own container in the same pod", names)


def helm2_authkey_from_secret(chart: Chart) -> None:
    with _check(chart, "HELM-2") as (e, ev):
        for secret, key in (("meshcert-helm2-auth", "meshcert-helm2-key"), ("agent-preauth", "token")):
            label = f"authKeySecret={secret} authKeySecretKey={key}"
            m = ev.render(e, guide_values(authKeySecret=secret, authKeySecretKey=key), label)
            if not m:
                continue
            side = m.sidecar()
            if not e.that(side is not None, f"{label}: a tailscale sidecar", [c.get("name") for c in m.containers()]):
                continue
            item = env_item(side, "TS_AUTHKEY")
            if not e.that(item is not None, f"{label}: the sidecar has TS_AUTHKEY", describe(side)):
                continue
            ref = (item.get("valueFrom") or {}).get("secretKeyRef") or {}
            e.that("value" not in item, f"{label}: TS_AUTHKEY without a literal value", "a literal value is set")
            e.that(ref.get("name") == secret and ref.get("key") == key,
                   f"{label}: TS_AUTHKEY from secretKeyRef {{name: {secret}, key: {key}}}", item.get("valueFrom"))
            rendered = [d["metadata"].get("name") for d in m.docs if d.get("kind") == "Secret"
                        and (d.get("metadata") or {}).get("name") == secret]
            e.that(not rendered, f"{label}: the chart does not render the Secret {secret} (the key lives only in it)",
                   f"a Secret {secret} is rendered")
            e.that(not KEY_SHAPES.search(m.text), f"{label}: nothing shaped like an auth key in the manifests",
                   "an auth-key-shaped string is rendered")


def helm3_login_server(chart: Chart) -> None:
    url = "https://headscale.meshcert.example:8443"
    with _check(chart, "HELM-3") as (e, ev):
        m = ev.render(e, guide_values(controlServer=url), f"controlServer={url}")
        side = m.sidecar() if m else None
        if m and e.that(side is not None, "a tailscale sidecar", [c.get("name") for c in m.containers()]):
            v, where = setting(side, "login-server")
            e.that(v == url, f"the sidecar logs in to {url} (--login-server)", f"{v!r} ({where})")
        values = guide_values(controlServer="")
        if chart.declares("connectivity", "type"):
            values["connectivity"]["type"] = "tailscale"
        m = ev.render(e, values, "controlServer \"\" (Tailscale's control plane)")
        side = m.sidecar() if m else None
        if m and e.that(side is not None, "empty controlServer: still a tailscale sidecar",
                        [c.get("name") for c in m.containers()]):
            v, where = setting(side, "login-server")
            e.that(v is None, "empty controlServer: no login-server override (--login-server / TS_LOGIN_SERVER "
                   "absent: the client's default control plane)", f"{v!r} ({where})")


def helm4_hostname(chart: Chart) -> None:
    with _check(chart, "HELM-4") as (e, ev):
        for host in ("legator-controller", "meshcert-helm4-host"):
            m = ev.render(e, guide_values(hostname=host), f"hostname={host}")
            side = m.sidecar() if m else None
            if m and e.that(side is not None, "a tailscale sidecar", [c.get("name") for c in m.containers()]):
                v, where = setting(side, "hostname")
                e.that(v == host, f"the sidecar joins as {host} (--hostname)", f"{v!r} ({where})")


def helm5_accept_routes(chart: Chart) -> None:
    with _check(chart, "HELM-5") as (e, ev):
        for on in (True, False):
            m = ev.render(e, guide_values(acceptRoutes=on), f"acceptRoutes={str(on).lower()}")
            side = m.sidecar() if m else None
            if m and e.that(side is not None, "a tailscale sidecar", [c.get("name") for c in m.containers()]):
                v, where = setting(side, "accept-routes")
                e.that(truthy(v) is on, f"acceptRoutes {str(on).lower()}: the sidecar "
                       f"{'accepts' if on else 'does not accept'} subnet routes (--accept-routes)", f"{v!r} ({where})")


def helm6_socket_shared(chart: Chart) -> None:
    with _check(chart, "HELM-6") as (e, ev):
        m = ev.render(e, guide_values(), "the guide's Helm values")
        if not m:
            return
        side, ctl = m.sidecar(), m.controller()
        if not (e.that(side is not None, "a tailscale sidecar", [c.get("name") for c in m.containers()])
                and e.that(ctl is not None, "a controller container", [c.get("name") for c in m.containers()])):
            return
        sock = socket_path(side)
        smount = _mount_for(side, sock)
        if not e.that(smount is not None, f"the sidecar's socket {sock} on a volume",
                      [x.get("mountPath") for x in side.get("volumeMounts") or []]):
            return
        vol = next((v for v in (m.pod_spec() or {}).get("volumes") or [] if v.get("name") == smount["name"]), {})
        e.that("emptyDir" in vol, f"the socket volume {smount['name']} is a pod volume (emptyDir)", vol)
        rel = os.path.relpath(sock, smount["mountPath"])
        cmounts = [x for x in ctl.get("volumeMounts") or [] if x.get("name") == smount["name"]]
        if e.that(bool(cmounts), f"the controller mounts the socket volume {smount['name']}",
                  [x.get("name") for x in ctl.get("volumeMounts") or []]):
            ctl_sock = literal_env(ctl).get("TS_SOCKET") or DEFAULT_SOCKET
            e.that(any(os.path.normpath(os.path.join(x["mountPath"], rel)) == ctl_sock for x in cmounts),
                   f"the controller reads the socket where the sidecar makes it (TS_SOCKET {ctl_sock})",
                   {"sidecar socket": sock, "controller mounts": [x["mountPath"] for x in cmounts]})
        if userspace(side):
            ports = {p for p in (_port(setting(side, "socks5-server")[0]),
                                 _port(setting(side, "outbound-http-proxy-listen")[0])) if p}
            env = literal_env(ctl)
            proxies = {k: env[k] for k in PROXY_ENV if env.get(k)}
            good = {k: v for k, v in proxies.items() if _local_proxy(v) in ports}
            e.that(bool(ports), "userspace networking: the sidecar serves a SOCKS5 or HTTP proxy "
                   "(--socks5-server / --outbound-http-proxy-listen)", describe(side))
            e.that(bool(good), f"userspace networking: the controller dials through the sidecar's proxy "
                   f"(one of {', '.join(PROXY_ENV)} = a localhost port in {sorted(ports)})",
                   proxies or "no proxy variable")
        else:
            caps = ((side.get("securityContext") or {}).get("capabilities") or {}).get("add") or []
            priv = (side.get("securityContext") or {}).get("privileged")
            e.that(priv or any(x.removeprefix("CAP_") == "NET_ADMIN" for x in caps),
                   "kernel TUN mode: the sidecar may create the TUN device (NET_ADMIN or privileged)",
                   side.get("securityContext"))


def _port(hostport: str | None) -> int | None:
    if not hostport or hostport.startswith("<"):
        return None
    try:
        return int(hostport.rsplit(":", 1)[-1])
    except ValueError:
        return None


def _local_proxy(url: str) -> int | None:
    u = urlsplit(url if "://" in url else "socks5://" + url)
    try:
        return u.port if u.hostname in ("127.0.0.1", "localhost", "::1") else None
    except ValueError:
        return None


def helm7_no_sidecar_when_disabled(chart: Chart) -> None:
    secret = "meshcert-helm7-auth"
    variants = [("connectivity.enabled false", guide_values(enabled=False, authKeySecret=secret)),
                ("no connectivity values", {})]
    if chart.declares("connectivity", "type"):
        variants.append(("connectivity.type direct", guide_values(type="direct", authKeySecret=secret)))
    conn = chart.defaults.get("connectivity") if chart.declares("connectivity") else None
    default_secret = conn.get("authKeySecret") if isinstance(conn, dict) else None
    with _check(chart, "HELM-7") as (e, ev):
        for label, values in variants:
            m = ev.render(e, values, label)
            if not m:
                continue
            cs = m.every_container()
            e.that(not [c for c in cs if c.get("name") == SIDECAR or runs_tailscale(c)],
                   f"{label}: no sidecar container", [c.get("name") for c in cs])
            ts_env = sorted({i.get("name") for c in cs for i in c.get("env") or []
                             if str(i.get("name")).startswith("TS_")})
            e.that(not ts_env, f"{label}: no TS_* environment", ts_env)
            vols = [v.get("name") for v in (m.pod_spec() or {}).get("volumes") or []]
            socket_mounts = [x.get("mountPath") for c in cs for x in c.get("volumeMounts") or []
                             if x.get("mountPath", "").rstrip("/") == SOCKET_DIR]
            e.that(not socket_mounts and not [v for v in vols if "tailscale" in str(v)],
                   f"{label}: no tailscale socket volume", {"volumes": vols, "mounts at " + SOCKET_DIR: socket_mounts})
            names = {secret} if values else ({default_secret} if default_secret else set())
            for s in names:
                e.that(s not in m.text, f"{label}: no reference to the auth key Secret {s}",
                       f"{s} appears in the manifests")


RENDER_CHECKS = {"HELM-1": helm1_sidecar_rendered, "HELM-2": helm2_authkey_from_secret, "HELM-3": helm3_login_server,
                 "HELM-4": helm4_hostname, "HELM-5": helm5_accept_routes, "HELM-6": helm6_socket_shared,
                 "HELM-7": helm7_no_sidecar_when_disabled}


# ------------------------------------------------------------------------------ the pod, run for real
def split_image(ref: str) -> tuple[str, str]:
    """repository, tag of an image reference ("" tag when none: a registry port is not a tag)."""
    head, _, last = ref.rpartition("/")
    if ":" in last:
        name, tag = last.rsplit(":", 1)
        return (f"{head}/{name}" if head else name), tag
    return ref, ""


def world_values(world, chart: Chart, hostname: str, **connectivity: Any) -> tuple[dict, dict[str, str]]:
    """(values, image overrides by container name) that run ``chart`` in ``world``: its control
    server, the world's images and CA. Extensions are set only where the chart declares them;
    images it does not let us set are replaced by container name."""
    sut_image = world.sut_image or world.images["sut-reference"]
    values = guide_values(controlServer=world.login_server(), hostname=hostname)
    c = values["connectivity"]
    overrides: dict[str, str] = {}
    if chart.declares("connectivity", "tags"):
        # The world's key carries tag:agent-runtime: headscale >= 0.28 refuses a pre-auth key
        # registration that also advertises tags ("requested tags ... are invalid or not permitted").
        c["tags"] = []
    if chart.declares("connectivity", "caBundle"):
        c["caBundle"] = {"configMap": CA_CONFIGMAP, "key": "ca.pem"}
    if chart.declares("connectivity", "image", "repository"):
        repo, tag = split_image(world.images["tailscale"])
        c["image"] = {"repository": repo, "tag": tag, "pullPolicy": "Never"}
    else:
        overrides[SIDECAR] = world.images["tailscale"]
    if chart.declares("image", "repository"):
        repo, tag = split_image(sut_image)
        values["image"] = {"repository": repo, "tag": tag, "pullPolicy": "Never"}
        if chart.declares("controller", "port"):
            values.setdefault("controller", {})["port"] = world.sut_port
        if world.sut_image and chart.declares("controller", "args"):  # a user's image: its own ENTRYPOINT/CMD
            values.setdefault("controller", {}).update(command=[], args=[])
    else:
        overrides["*"] = sut_image
    c.update(connectivity)
    return values, overrides


@dataclass
class ChartPod:
    """A chart's pod running in the world."""
    pod: Any            # podrunner.RunningPod
    manifests: Manifests
    values: dict
    hostname: str
    secret: str
    sut_port: int
    socket: str = DEFAULT_SOCKET

    def sut(self):
        from meshcert.sut.client import SutClient
        return SutClient(f"http://{self.pod.ip}:{self.sut_port}", name=f"SUT in chart pod {self.pod.name}")

    def ts_status(self) -> dict:
        code, out = self.pod.exec(SIDECAR, ["tailscale", f"--socket={self.socket}", "status", "--json"])
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            raise MeshcertError("tailscale status", f"exit {code}, not JSON: {redact(out.strip())[-300:]}") from None

    def backend_state(self) -> str:
        try:
            return self.ts_status().get("BackendState", "?")
        except Exception as e:
            return f"unavailable ({e})"

    def wait_running(self, timeout: float = 90) -> dict:
        from meshcert.world.world import log_tail, wait_for
        wait_for(f"chart pod {self.pod.name}: sidecar BackendState Running", lambda: self.backend_state() == "Running",
                 timeout, describe=lambda: f"BackendState {self.backend_state()}; sidecar state "
                                           f"{self.pod.state(SIDECAR)}; the sidecar's last log lines: "
                                           + " | ".join(map(repr, log_tail(self.pod.logs(SIDECAR)))))
        return self.ts_status()


def _sidecar_name(m: Manifests) -> str:
    side = m.sidecar()
    return side.get("name") if side else SIDECAR


@contextmanager
def chart_pod(world, chart: Chart, *, secrets: dict | None = None, hostname: str | None = None,
              **connectivity: Any) -> Iterator[ChartPod]:
    """Render ``chart`` for ``world`` and run its pod; everything (containers, volumes, the
    headscale node it registered) is removed on exit. ``secrets``: the cluster's Secrets
    (default: the pre-auth key of tag:agent-runtime in the Secret and key the values name)."""
    from meshcert.k8s.podrunner import pod_template, run_in_world
    token = pysecrets.token_hex(3)
    hostname = hostname or f"legator-{token}"
    values, overrides = world_values(world, chart, hostname, **connectivity)
    c = values["connectivity"]
    m = chart.render(values)
    tpl, _ = pod_template(m.docs)
    if secrets is None:
        secrets = {c["authKeySecret"]: {c["authKeySecretKey"]: world._key_for((AGENT_TAG,)).reveal()}}
    if "*" in overrides:
        sut_image = overrides.pop("*")
        side = _sidecar_name(m)
        for cs in (tpl.get("spec") or {}).get("containers") or []:
            if cs.get("name") != side:
                overrides.setdefault(cs["name"], sut_image)
    pod = run_in_world(world, tpl, f"chart-{token}", secrets=secrets,
                       config_maps={CA_CONFIGMAP: {"ca.pem": world.certs.ca_pem}}, namespace=chart.namespace,
                       image_overrides=overrides)
    pod.on_remove.insert(0, lambda: forget_node(world, hostname))
    side = m.sidecar()
    port = (values.get("controller") or {}).get("port") or world.sut_port
    try:
        yield ChartPod(pod, m, values, hostname, c["authKeySecret"], port,
                       socket_path(side) if side else DEFAULT_SOCKET)
    finally:
        pod.remove()


def forget_node(world, hostname: str) -> None:
    """Delete the node a chart pod registered (headscale keeps offline nodes)."""
    for n in world.headscale.nodes():
        if hostname in (n.get("given_name"), n.get("name")):
            world.headscale.cli("nodes", "delete", "--identifier", str(n["id"]), "--force")


def _mesh_spec(world, secret: str) -> dict:
    return {"type": "headscale", "headscale": {"controlServer": world.login_server(), "authKeySecretRef": secret,
                                               "tags": [AGENT_TAG], "acceptRoutes": True}}


def _connect_until(sut, host: str, port: int, want: str, timeout: float = 20) -> dict:
    """/connect until the banner names ``want`` or the deadline passes (a fresh path may need a
    WireGuard handshake); returns the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        r = sut.connect(host, port, timeout_s=3)
        if r.get("ok") and f"host={want} port={port}" in (r.get("banner") or ""):
            return r
        if time.monotonic() >= deadline:
            return r
        time.sleep(0.5)


def pod_joins_tailnet(world, chart: Chart, userspace: bool | None = None) -> None:
    """HELM-1, -2, -3, -4, -6 on a running pod: the `tailscale` container runs tailscaled, gets its
    key from the Secret (and shows it nowhere: logs, command lines), logs in to the world's
    headscale and reaches Running, under the hostname of the values, and the controller reads
    its socket and dials into the mesh through it. ``userspace``: the chart's
    ``connectivity.userspace`` (userspace networking + proxy, or kernel TUN), when it has one."""
    extra = {"userspace": userspace} if userspace is not None and chart.declares("connectivity", "userspace") else {}
    with chart_pod(world, chart, acceptRoutes=True, **extra) as cp:
        pod = cp.pod
        with clause(world, "HELM-1") as e:
            e.that(pod.started(SIDECAR), "the `tailscale` container started", pod.not_started() or pod.events)
            if pod.started(SIDECAR):
                st = cp.ts_status()
                e.that("BackendState" in st, "tailscaled answers on its LocalAPI socket in that container",
                       str(st)[:300])
        with clause(world, "HELM-3") as e:
            try:
                st = cp.wait_running()
            except MeshcertError as err:
                e.that(False, "BackendState Running with a valid pre-auth key", err.message)
                st = {}
            if st:
                code, out = pod.exec(SIDECAR, ["tailscale", f"--socket={cp.socket}", "debug", "prefs"])
                try:
                    url = json.loads(out).get("ControlURL")
                except json.JSONDecodeError:
                    url = f"(not JSON, exit {code}: {out.strip()[-200:]})"
                e.that(url == world.login_server(), f"logged in to controlServer {world.login_server()}", url)
                ok, detail = pod.probe(SIDECAR, "readinessProbe")
                e.that(ok, "the sidecar's own readiness probe passes once Running", detail)
        with clause(world, "HELM-2") as e:
            key = world._key_for((AGENT_TAG,)).reveal()
            side = pod.run(SIDECAR).container if pod.started(SIDECAR) else None
            if e.that(side is not None, "the sidecar started with the Secret present", pod.not_started()):
                side.reload()
                env = side.attrs["Config"].get("Env") or []
                e.that(f"TS_AUTHKEY={key}" in env, f"TS_AUTHKEY resolved from Secret {cp.secret} "
                       f"(the key the world put there)", "another value, or none")
                e.that(bool(st), "with it, the sidecar joined (BackendState Running)", cp.backend_state())
                places = {"the sidecar's log": side.logs().decode(errors="replace"),
                          "the sidecar's process command lines": pod.exec(SIDECAR, [
                              "sh", "-c", 'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$f"; echo; done'])[1]}
                ctl = cp.manifests.controller()
                if ctl and pod.started(ctl["name"]):
                    places["the controller's log"] = pod.run(ctl["name"]).container.logs().decode(errors="replace")
                e.that("tailscaled" in places["the sidecar's process command lines"],
                       "the sidecar's process command lines readable (tailscaled among them)", "not readable")
                for where, text in places.items():
                    e.that(key not in text, f"the pre-auth key absent from {where}", "it appears there (redacted here)")
        helm4_joined_under_hostname(world, cp.hostname, st)
        with clause(world, "HELM-6") as e:
            ctl = cp.manifests.controller()
            cname = ctl.get("name") if ctl else "controller"
            mounts = {n: pod.mounts(n) for n in (SIDECAR, cname) if pod.started(n)}
            sock_dir = os.path.dirname(cp.socket)
            vols = {n: (ms.get(sock_dir) or {}).get("volume") for n, ms in mounts.items()}
            e.that(len(vols) == 2 and None not in vols.values() and len(set(vols.values())) == 1,
                   f"one volume at {sock_dir} in both the sidecar and the controller", vols)
            try:
                pod.wait_probe(cname, "readinessProbe", 30)
            except MeshcertError as err:
                e.that(False, "the controller's readiness probe passes", err.message)
            sut = cp.sut()
            code, ans = sut.prerun(_mesh_spec(world, cp.secret), {
                "server": {"url": f"tcp://{world.address('server')}:22", "critical": True}}, deadline_s=3)
            side = ans.get("sidecar") or {}
            e.that(side.get("ready") is True and side.get("backend_state") == "Running",
                   "the controller's pre-run reads the sidecar's LocalAPI through the shared socket: ready, Running",
                   side)
            r = _connect_until(sut, world.address("server"), 22, "server")
            e.that(r.get("ok") and "host=server port=22" in (r.get("banner") or ""),
                   "the controller's own dial reaches server:22 through the mesh (the sidecar's data path)", r)


def helm4_joined_under_hostname(world, hostname: str, st: dict) -> None:
    """HELM-4 on a running pod (``st``: its sidecar's `tailscale status --json`): the node's own
    HostName is ``hostname``; headscale's node list shows it under that name carrying
    tag:agent-runtime (the tag of the pod's pre-auth key), and its own status carries it too.
    tailscale leaves an empty list out of its JSON: a status with no ``Tags`` means no tags."""
    with clause(world, "HELM-4") as e:
        me = st.get("Self") or {}
        e.that(me.get("HostName") == hostname, f"the node's HostName is {hostname}", me.get("HostName"))
        nodes = {n.get("given_name"): n for n in world.headscale.nodes()}
        node = nodes.get(hostname)
        if e.that(node is not None, f"headscale's node list shows {hostname}", sorted(str(k) for k in nodes)):
            e.that(AGENT_TAG in (node.get("tags") or []), f"headscale lists {hostname} carrying {AGENT_TAG}",
                   node.get("tags") or "no tags")
        e.that(AGENT_TAG in (me.get("Tags") or []), f"the node's own status carries {AGENT_TAG} (Self.Tags)",
               me.get("Tags") if "Tags" in me else "no Tags in Self (tailscale omits an empty list): no tags")


def pod_accept_routes(world, chart: Chart) -> None:
    """HELM-5 on running pods: acceptRoutes true reaches the legacy VLAN host through the subnet
    router; false does not (while server:22 on the tailnet still answers)."""
    router, routes = next(iter(world.expected_primary_routes().items()))
    vlan = next(iter(routes))
    legacy = world.address("legacy")
    with clause(world, "HELM-5") as e:
        for on in (True, False):
            with chart_pod(world, chart, acceptRoutes=on) as cp:
                try:
                    cp.wait_running()
                except MeshcertError as err:
                    e.that(False, f"acceptRoutes {on}: the sidecar Running", err.message)
                    continue
                from meshcert.world.world import wait_for
                try:
                    wait_for(f"chart pod {cp.pod.name}: sees the router's primary route {vlan}",
                             lambda: any(vlan in (p.get("PrimaryRoutes") or [])
                                         for p in (cp.ts_status().get("Peer") or {}).values()), 30,
                             describe=lambda: "primary routes seen: " + json.dumps(
                                 {p.get("HostName"): p.get("PrimaryRoutes") or []
                                  for p in (cp.ts_status().get("Peer") or {}).values()}))
                except MeshcertError as err:
                    e.that(False, f"acceptRoutes {on}: the router's route {vlan} in the sidecar's netmap", err.message)
                code, out = cp.pod.exec(SIDECAR, ["tailscale", f"--socket={cp.socket}", "debug", "prefs"])
                try:
                    route_all = json.loads(out).get("RouteAll")
                except json.JSONDecodeError:
                    route_all = f"(not JSON: {out.strip()[-200:]})"
                e.that(route_all is on, f"acceptRoutes {str(on).lower()}: the sidecar's RouteAll pref is {on}",
                       route_all)
                sut = cp.sut()
                r = _connect_until(sut, world.address("server"), 22, "server")
                if not e.that(r.get("ok"), f"acceptRoutes {on}: server:22 reachable on the tailnet (positive control)",
                              r):
                    continue
                if on:
                    r = _connect_until(sut, legacy, 22, "legacy")
                    e.that(r.get("ok") and "host=legacy port=22" in (r.get("banner") or ""),
                           f"acceptRoutes true: the legacy host {legacy}:22 on {vlan} reached through the router", r)
                else:
                    # The denial is judged only once the WireGuard session to the router (the path
                    # the legacy host's packets would take) answers a TSMP ping: tailscaled answers
                    # those ahead of its packet filter, so the tunnel is proven up and a lost first
                    # handshake cannot pass for "routes not accepted".
                    router_ip = world.address(router)
                    seen = {}

                    def pong() -> bool:
                        code, out = cp.pod.exec(SIDECAR, ["tailscale", f"--socket={cp.socket}", "ping", "--tsmp",
                                                          "-c", "1", "--timeout=2s", router_ip])
                        seen["last"] = out.strip().splitlines()[-1] if out.strip() else f"exit {code}"
                        return code == 0 and "pong from" in out
                    try:
                        wait_for(f"chart pod {cp.pod.name}: a TSMP pong from {router} ({router_ip})", pong, 30,
                                 describe=lambda: seen.get("last", "no ping answered yet"))
                    except MeshcertError as err:
                        e.that(False, f"acceptRoutes false: the WireGuard session to {router} up (positive control "
                               f"on the legacy host's path)", err.message)
                        continue
                    r = sut.connect(legacy, 22, timeout_s=3)
                    e.that(not r.get("ok"), f"acceptRoutes false: the legacy host {legacy}:22 unreachable", r)


def pod_missing_secret(world, chart: Chart) -> None:
    """HELM-2 on running pods: the sidecar's TS_AUTHKEY comes from the named Secret and key --
    without the Secret, or with the key under another name, the kubelet does not start the
    sidecar (CreateContainerConfigError naming the Secret / key); the controller still runs and
    its pre-run warns about the sidecar and goes on."""
    with clause(world, "HELM-2") as e:
        cases = (("no Secret", {}, "secret \"{secret}\" not found"),
                 ("the Secret without the key", None, "couldn't find key {key} in Secret"))
        for label, secrets, reason in cases:
            values_secret = guide_values()["connectivity"]
            sname, skey = values_secret["authKeySecret"], values_secret["authKeySecretKey"]
            if secrets is None:
                secrets = {sname: {"not-" + skey: world._key_for((AGENT_TAG,)).reveal()}}
            with chart_pod(world, chart, secrets=secrets) as cp:
                pod = cp.pod
                why = pod.not_started().get(_sidecar_name(cp.manifests), "")
                want = reason.format(secret=sname, key=skey)
                e.that(why.startswith("CreateContainerConfigError") and want in why,
                       f"{label}: the sidecar not started, CreateContainerConfigError: {want}",
                       why or f"started ({pod.state(SIDECAR) if pod.started(SIDECAR) else 'absent'})")
                ctl = cp.manifests.controller()
                cname = ctl.get("name") if ctl else "controller"
                if not e.that(pod.started(cname), f"{label}: the controller starts anyway", pod.not_started()):
                    continue
                try:
                    pod.wait_probe(cname, "readinessProbe", 30)
                except MeshcertError as err:
                    e.that(False, f"{label}: the controller ready", err.message)
                    continue
                code, ans = cp.sut().prerun(_mesh_spec(world, cp.secret), {
                    "server": {"url": f"tcp://{world.address('server')}:22", "critical": False}}, deadline_s=1)
                logs = ans.get("logs") or []
                e.that(code == 200, f"{label}: the pre-run answers HTTP 200 (the run goes on)", f"HTTP {code}")
                e.that((ans.get("sidecar") or {}).get("ready") is False, f"{label}: sidecar not ready",
                       ans.get("sidecar"))
                e.that(any(x.get("level") == "warning" and "sidecar" in x.get("msg", "").lower() for x in logs),
                       f"{label}: a warning about the sidecar", logs)
                e.that(not any(x.get("level") == "error" for x in logs), f"{label}: no error-level line", logs)
                e.that("server" in (ans.get("endpoints") or {}), f"{label}: endpoints still dialled",
                       ans.get("endpoints"))


def pod_disabled(world, chart: Chart) -> None:
    """HELM-7 on a running pod: connectivity.enabled false runs the controller alone, with no
    tailscale volume or TS_* variable, and direct mode reaches the server over the network."""
    with clause(world, "HELM-7") as e:
        with chart_pod(world, chart, enabled=False) as cp:
            pod = cp.pod
            e.that(sorted(pod.containers) == sorted(c["name"] for c in cp.manifests.every_container())
                   and SIDECAR not in pod.containers, "no sidecar container in the pod", sorted(pod.containers))
            ctl = cp.manifests.controller()
            cname = ctl.get("name") if ctl else "controller"
            if not e.that(pod.started(cname), "the controller runs", pod.not_started()):
                return
            pod.run(cname).container.reload()
            env = pod.run(cname).container.attrs["Config"].get("Env") or []
            e.that(not [x for x in env if x.startswith("TS_")], "no TS_* variable in the controller",
                   [x.split("=")[0] for x in env if x.startswith("TS_")])
            e.that(SOCKET_DIR not in pod.mounts(cname), f"no volume at {SOCKET_DIR}", sorted(pod.mounts(cname)))
            try:
                pod.wait_probe(cname, "readinessProbe", 30)
            except MeshcertError as err:
                e.that(False, "the controller ready", err.message)
                return
            target = {"server": {"url": f"tcp://{world.nodes['server'].wan_ip}:22", "critical": True}}
            code, ans = cp.sut().prerun({"type": "direct"}, target, deadline_s=3)
            e.that(code == 200 and ans.get("ready") is True and
                   (ans.get("endpoints") or {}).get("server", {}).get("reachable") is True,
                   "direct mode: ready, the server reached over the cluster network", ans)


# ------------------------------------------------------------------------------ the same clauses on kind
def kind_pod_joins(world, cluster, chart: Chart, namespace: str = "meshcert-agent", timeout: float = 180) -> None:
    """HELM-1, -3, -4 on a real Kubernetes pod: the chart applied to a kind cluster whose node is
    on the world's WAN (``cluster``: a :class:`meshcert.k8s.kind.KindCluster`), its Deployment rolled
    out, the `tailscale` container Running in the tailnet under the values' hostname."""
    from meshcert.k8s import kind
    from meshcert.world.world import CONTROL_ALIAS, wait_for
    hostname = f"legator-kind-{pysecrets.token_hex(3)}"
    values, overrides = world_values(world, chart, hostname)
    with clause(world, "HELM-1") as e:
        e.that(not overrides, "the chart's image values can be set (kind runs the images meshcert loads)",
               f"no image value for {sorted(overrides)}")
    if chart.declares("hostAliases"):
        values["hostAliases"] = [{"ip": world.toxiproxy.ip, "hostnames": [CONTROL_ALIAS]}]
    c = values["connectivity"]
    m = chart.render(values)
    name = (m.workloads()[0].get("metadata") or {}).get("name")
    cluster.apply(kind.cluster_manifests(m.docs, namespace=namespace, secret_name=c["authKeySecret"],
                                         secret_key=c["authKeySecretKey"], auth_key=world._key_for((AGENT_TAG,)),
                                         ca_configmap=CA_CONFIGMAP, ca_pem=world.certs.ca_pem))
    sock = socket_path(m.sidecar()) if m.sidecar() else DEFAULT_SOCKET

    def status() -> dict:
        out = cluster.kubectl("-n", namespace, "exec", f"deployment/{name}", "-c", SIDECAR, "--",
                              "tailscale", f"--socket={sock}", "status", "--json")
        return json.loads(out)

    try:
        with clause(world, "HELM-1") as e:
            try:
                cluster.kubectl("-n", namespace, "rollout", "status", f"deployment/{name}", f"--timeout={timeout:.0f}s",
                                timeout=timeout + 30)
            except MeshcertError as err:
                e.that(False, f"deployment/{name} rolled out", err.message)
            pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-o", "json")).get("items") or []
            names = [[x.get("name") for x in (p.get("spec") or {}).get("containers") or []] for p in pods]
            e.that(any(SIDECAR in n for n in names), "a running pod with a container named `tailscale`", names)
        with clause(world, "HELM-3") as e:
            try:
                wait_for(f"kind pod of {name}: BackendState Running", lambda: status().get("BackendState") == "Running",
                         90, describe=lambda: f"BackendState {status().get('BackendState')!r}")
            except MeshcertError as err:
                e.that(False, "BackendState Running with a valid pre-auth key", err.message)
        try:
            st = status()
        except (MeshcertError, json.JSONDecodeError):
            st = {}
        helm4_joined_under_hostname(world, hostname, st)
    finally:
        try:
            cluster.kubectl("delete", "namespace", namespace, "--wait=true", timeout=240)
        finally:
            forget_node(world, hostname)
