"""HELM clauses on the rendered pod, run for real: the Deployment rendered with this world's
control server, images and CA is run as a pod on the Docker engine (meshcert/k8s/podrunner.py)
in the session world, with the pre-auth key in a Secrets mapping, and the sidecar, headscale
and the SUT are asked what happened (``pod_*``); the same clauses on a kind cluster
(``kind_pod_joins``, ``--cluster kind``).

Each check raises :class:`~meshcert.checks.base.ClauseFailure` (through ``Expect``/``clause``
of checks/sut.py) naming the clause, the expected and the observed. Any chart can be run this
way (``pytest --chart PATH``): the reference chart's extensions (``connectivity.tags``,
``caBundle``, ``userspace``, the image values) are set only when the chart's own values.yaml
declares them; images it does not let us set are replaced by container name.
"""

from __future__ import annotations

import json
import os
import secrets as pysecrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from meshcert.checks.sut import at_once, clause
from meshcert.errors import MeshcertError
from meshcert.k8s import kind
from meshcert.k8s.chart import DEFAULT_SOCKET, SIDECAR, SOCKET_DIR, Chart, Manifests, guide_values, socket_path
from meshcert.k8s.podrunner import pod_template, run_in_world
from meshcert.secrets import redact
from meshcert.sut.client import SutClient
from meshcert.world.base import log_tail, wait_for
from meshcert.world.headscale import CONTROL_ALIAS

AGENT_TAG = "tag:agent-runtime"
CA_CONFIGMAP = "meshcert-control-ca"


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
    token = pysecrets.token_hex(3)
    hostname = hostname or f"legator-{token}"
    values, overrides = world_values(world, chart, hostname, **connectivity)
    c = values["connectivity"]
    m = chart.render(values)
    tpl, _ = pod_template(m.docs)
    if secrets is None:
        secrets = {c["authKeySecret"]: {c["authKeySecretKey"]: world.key_for((AGENT_TAG,)).reveal()}}
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
            key = world.key_for((AGENT_TAG,)).reveal()
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

    def one(e, on: bool) -> None:
        with chart_pod(world, chart, acceptRoutes=on) as cp:
            try:
                cp.wait_running()
            except MeshcertError as err:
                e.that(False, f"acceptRoutes {on}: the sidecar Running", err.message)
                return
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
                return
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

                def pong(router_ip: str = router_ip, seen: dict = seen) -> bool:
                    code, out = cp.pod.exec(SIDECAR, ["tailscale", f"--socket={cp.socket}", "ping", "--tsmp",
                                                      "-c", "1", "--timeout=2s", router_ip])
                    seen["last"] = out.strip().splitlines()[-1] if out.strip() else f"exit {code}"
                    return code == 0 and "pong from" in out
                try:
                    wait_for(f"chart pod {cp.pod.name}: a TSMP pong from {router} ({router_ip})", pong, 30,
                             describe=lambda seen=seen: seen.get("last", "no ping answered yet"))
                except MeshcertError as err:
                    e.that(False, f"acceptRoutes false: the WireGuard session to {router} up (positive control "
                           f"on the legacy host's path)", err.message)
                    return
                r = sut.connect(legacy, 22, timeout_s=3)
                e.that(not r.get("ok"), f"acceptRoutes false: the legacy host {legacy}:22 unreachable", r)

    # the two pods are independent (own hostname, own containers): both at once, not one after
    # the other (each pod's start-up and join is ~8 s of waiting)
    with clause(world, "HELM-5") as e:
        at_once(e, one, (True, False))


def pod_missing_secret(world, chart: Chart) -> None:
    """HELM-2 on running pods: the sidecar's TS_AUTHKEY comes from the named Secret and key --
    without the Secret, or with the key under another name, the kubelet does not start the
    sidecar (CreateContainerConfigError naming the Secret / key); the controller still runs and
    its pre-run warns about the sidecar and goes on."""
    cases = (("no Secret", {}, "secret \"{secret}\" not found"),
             ("the Secret without the key", None, "couldn't find key {key} in Secret"))

    def one(e, case) -> None:
        label, secrets, reason = case
        values_secret = guide_values()["connectivity"]
        sname, skey = values_secret["authKeySecret"], values_secret["authKeySecretKey"]
        if secrets is None:
            secrets = {sname: {"not-" + skey: world.key_for((AGENT_TAG,)).reveal()}}
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
                return
            try:
                pod.wait_probe(cname, "readinessProbe", 30)
            except MeshcertError as err:
                e.that(False, f"{label}: the controller ready", err.message)
                return
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

    # the two cases are independent pods: both at once
    with clause(world, "HELM-2") as e:
        at_once(e, one, cases)


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
                                         secret_key=c["authKeySecretKey"], auth_key=world.key_for((AGENT_TAG,)),
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
