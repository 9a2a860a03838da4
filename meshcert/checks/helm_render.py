"""HELM clauses on the rendered manifests (no engine): ``helm template`` (the pinned helm
binary) renders the chart with the guide's Helm values, and the parsed manifests are asserted.

Each check (``helm1_*`` .. ``helm7_*``, by clause in :data:`RENDER_CHECKS`) raises
:class:`~meshcert.checks.base.ClauseFailure` (through ``Expect``/``clause`` of checks/sut.py)
naming the clause, the expected and the observed; a failing one saves the values and manifests
it rendered as its "logs".

Any chart can be certified this way (``pytest --chart PATH``): the checks set only the guide's
values (``connectivity.enabled, controlServer, authKeySecret, authKeySecretKey, hostname,
acceptRoutes``), and the reference chart's extensions (``connectivity.type``) only when the
chart's own values.yaml declares them. How a sidecar's settings are read: meshcert/k8s/chart.py.
"""

from __future__ import annotations

import os
import secrets as pysecrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from meshcert.checks.sut import Expect, clause
from meshcert.k8s.chart import (
    DEFAULT_SOCKET,
    SIDECAR,
    SOCKET_DIR,
    Chart,
    ChartError,
    Manifests,
    describe,
    env_item,
    guide_values,
    literal_env,
    mount_for,
    runs_tailscale,
    setting,
    socket_path,
    truthy,
    userspace,
)
from meshcert.secrets import KEY_SHAPES, redact

PROXY_ENV = ("SUT_PROXY", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


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


# ------------------------------------------------------------------------------ the checks
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
        smount = mount_for(side, sock)
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
