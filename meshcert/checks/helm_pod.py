"""HELM clauses on the rendered pod, run for real, two ways:

- on plain Docker (``pod_*``): the Deployment rendered with this world's control server, images
  and CA runs as containers sharing a network namespace (meshcert/k8s/podrunner.py, not a
  kubelet) in the session world, with the pre-auth key in a Secrets mapping; the sidecar,
  headscale and the SUT are asked what happened -- what the pod's own processes do;
- on a real kubelet (``kind_*``, ``--cluster kind``): the chart installed with helm on a kind
  cluster; what Kubernetes decides about the pod (a missing Secret's
  CreateContainerConfigError and events, the env it resolved, mounts, readiness) is read from
  the pod object and the cluster's events, never from strings meshcert wrote.

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
from meshcert.k8s import kind, kindpod
from meshcert.k8s.chart import DEFAULT_SOCKET, SIDECAR, SOCKET_DIR, Chart, Manifests, guide_values, socket_path
from meshcert.k8s.podrunner import pod_template, run_in_world
from meshcert.secrets import Secret, redact
from meshcert.sut.client import SutClient
from meshcert.toolchain import progress
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


class _Sidecar:
    """What a chart's pod on Docker (ChartPod) and on a kubelet (KindRelease) both answer: the
    sidecar's tailscale status, read inside it (``self.pod.exec``, ``self.socket``)."""
    pod: Any
    socket: str

    def ts_status(self) -> dict:
        code, out = self.pod.exec(SIDECAR, ["tailscale", f"--socket={self.socket}", "status", "--json"], answer=True)
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            raise MeshcertError("tailscale status", f"exit {code}, not JSON: {redact(out.strip())[-300:]}") from None

    def backend_state(self) -> str:
        try:
            return self.ts_status().get("BackendState", "?")
        except Exception as e:
            return f"unavailable ({e})"


@dataclass
class ChartPod(_Sidecar):
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
            e.that(pod.started(SIDECAR), "a `tailscale` container in the pod", sorted(pod.containers))
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
                code, out = pod.exec(SIDECAR, ["tailscale", f"--socket={cp.socket}", "debug", "prefs"], answer=True)
                try:
                    url = json.loads(out).get("ControlURL")
                except json.JSONDecodeError:
                    url = f"(not JSON, exit {code}: {out.strip()[-200:]})"
                e.that(url == world.login_server(), f"logged in to controlServer {world.login_server()}", url)
                ok, detail = pod.probe(SIDECAR, "readinessProbe")
                e.that(ok, "the sidecar's own readiness probe passes once Running", detail)
        with clause(world, "HELM-2") as e:
            # How the key reached the sidecar (the kubelet resolving the secretKeyRef) is asserted
            # on kind (kind_pod_joins); here, what the sidecar's real processes did with it.
            key = world.key_for((AGENT_TAG,)).reveal()
            side = pod.run(SIDECAR).container if pod.started(SIDECAR) else None
            if e.that(side is not None, "a sidecar in the pod", sorted(pod.containers)):
                e.that(bool(st), "with the Secret's key, the sidecar joined (BackendState Running)",
                       cp.backend_state())
                places = {"the sidecar's log": side.logs().decode(errors="replace"),
                          "the sidecar's process command lines": pod.exec(SIDECAR, [
                              "sh", "-c", 'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$f"; echo; done'], answer=True)[1]}
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
    def one(e, on: bool) -> None:
        with chart_pod(world, chart, acceptRoutes=on) as cp:
            _judge_accept_routes(world, e, cp, on)

    # the two pods are independent (own hostname, own containers): both at once, not one after
    # the other (each pod's start-up and join is ~8 s of waiting)
    with clause(world, "HELM-5") as e:
        at_once(e, one, (True, False))


def _judge_accept_routes(world, e, cp, on: bool) -> None:
    """HELM-5's assertions on one running pod with acceptRoutes ``on`` (``cp``: a ChartPod on
    Docker or a KindRelease on a real kubelet: both give wait_running, ts_status, sut, socket
    and pod.exec)."""
    router, routes = next(iter(world.expected_primary_routes().items()))
    vlan = next(iter(routes))
    legacy = world.address("legacy")
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
    code, out = cp.pod.exec(SIDECAR, ["tailscale", f"--socket={cp.socket}", "debug", "prefs"], answer=True)
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
                                              "-c", "1", "--timeout=2s", router_ip], answer=True)
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
            if not e.that(pod.started(cname), "the controller runs", sorted(pod.containers)):
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
# On kind the chart is installed with the pinned helm (`helm install`) and its pod is scheduled,
# mounted, started and probed by a real kubelet. Every verdict below reads what Kubernetes
# itself reports (the pod object's container states and readiness, the cluster's events,
# `kubectl exec`/`logs`) or what the pod's own processes answer -- never a string meshcert wrote.
KIND_AGENT = "agent-kind"            # the kind pod's name as a tailnet node of the world
KIND_BANNER_PORTS = (5000,)          # the controller runs as uid 1000: no port < 1024 (see kindpod)
KIND_SECRET_PRESENT, KIND_SECRET_MISSING, KIND_KEY_MISSING = "present", "missing", "key-missing"


# How long a kind release's sidecar gets to reach BackendState Running (HELM-3's wait, and its
# negative's: a pod that never joins waits this out). The kind pod is Ready -- its sidecar
# Running and the readiness probe passed -- a median 7.5-8.4 s after it is created, 9.3 s at
# most, under a 1-min load of 13-21 on 2 cores (bench/results/kind-2026-12-02-*.json,
# pod_ready_s); 45 s is nearly 5x that worst case (it was 90 s, with no basis written).
KIND_RUNNING_S = 45.0
# The grace period a release's pods get at its end (kind_release's delete). The reference chart's
# containers exit on SIGTERM at once (gone 1.0-1.3 s after the delete, measured), so 3 s costs a
# healthy pod nothing; a sidecar stuck in `tailscale up` is killed after 3 s, not the default 30.
# The headscale node is forgotten only after the pods are gone either way, so a sidecar killed
# at the end cannot come back.
RELEASE_GRACE_S = 3.0
# How long a release's pods get to go after its delete: the kubelet stops them within
# RELEASE_GRACE_S; 120 s leaves a loaded kind node room (it was 4x the default 30 s grace period,
# and is kept: it is waited out only by a release whose pods never go, which is a failure).
RELEASE_GONE_S = 120.0


@dataclass
class KindRelease(_Sidecar):
    """A chart installed with helm in a namespace of its own on a kind cluster, its one pod."""
    cluster: Any          # kind.KindCluster
    pod: kindpod.KindPod
    manifests: Manifests  # the same values rendered (container names, the socket path)
    values: dict
    namespace: str
    hostname: str
    secret: str
    secret_key: str
    auth_key: Secret      # what the Secret holds (never printed)
    node_ip: str          # where this machine reaches the port-forwards (a kind node: its address on the WAN)
    sut_port: int
    socket: str = DEFAULT_SOCKET
    egress_ips: tuple[str, ...] = ()  # the addresses the pod's traffic comes from on the world's WAN

    @property
    def controller(self) -> str:
        ctl = self.manifests.controller()
        return ctl.get("name") if ctl else "controller"

    def sut(self) -> SutClient:
        return kindpod.sut_client(self.pod, self.controller, self.sut_port)

    def wait_running(self, timeout: float = KIND_RUNNING_S) -> dict:
        wait_for(f"kind pod {self.namespace}: sidecar BackendState Running", lambda: self.backend_state() == "Running",
                 timeout, describe=lambda: f"BackendState {self.backend_state()}; {self.pod.brief()}; sidecar log: "
                                           + " | ".join(map(repr, log_tail(redact(self.pod.logs(SIDECAR))))))
        return self.ts_status()

    def tailscale(self, *args: str) -> tuple[int, str]:
        return self.pod.exec(SIDECAR, ["tailscale", f"--socket={self.socket}", *args], answer=True)


def _settled(pod: kindpod.KindPod, names: list[str]) -> tuple[bool, str]:
    """Every container of the pod running, or waiting for a reason of its own (not still being
    created): the kubelet has decided about each of them."""
    p = pod.get()
    if not p:
        return False, "no pod yet"
    ok = all(pod.running(n, p) or pod.waiting(n, p)[0] not in ("", "ContainerCreating") for n in names)
    return ok, pod.brief(p)


@contextmanager
def kind_release(world, cluster, chart: Chart, *, secret: str = KIND_SECRET_PRESENT,
                 controller_env: dict[str, str] | None = None, auth_key: Secret | None = None,
                 control_ip: str | None = None, values_extra: dict | None = None,
                 objects: list[dict] | None = None, **connectivity: Any) -> Iterator[KindRelease]:
    """``helm install`` of ``chart`` with this world's values into a fresh namespace of ``cluster``
    (whose node is on the world's WAN): the auth key Secret (``secret``: present, missing, or
    present without the key the values name) and the control server's CA ConfigMap created first,
    as the guide tells a user to; the pod's control server is ``control`` -> toxiproxy (hostAliases),
    as for the world's own pods. Yields once the kubelet has started or refused each container.
    ``auth_key`` (default: the world's tag:agent-runtime key) and ``control_ip`` (default:
    toxiproxy's) exist for meshcert's own kill tests (a broken world setting). ``values_extra``:
    more values (each top-level mapping merged over the world's, e.g. the run lifecycle's
    ``vault`` and ``serviceAccount``); ``objects``: more manifests applied in the namespace
    before the chart (e.g. a ConfigMap with Vault's CA).
    The namespace, the release and the headscale node are removed on exit."""
    token = pysecrets.token_hex(3)
    hostname, namespace = f"legator-kind-{token}", cluster.namespace_for(token)
    values, overrides = world_values(world, chart, hostname, **connectivity)
    if overrides:
        raise MeshcertError("kind", f"the chart {chart.label} lets no image be set for {sorted(overrides)}: a "
                                    "cluster runs only the images meshcert names (never a chart's own pull)")
    for holder in (values["connectivity"].get("image"), values.get("image")):
        if holder:  # the names and pull policy this cluster runs meshcert's images with
            repo, tag = split_image(cluster.image_ref(f"{holder['repository']}:{holder['tag']}"))
            holder.update(repository=repo, tag=tag, pullPolicy=cluster.pull_policy)
    if chart.declares("hostAliases"):
        values["hostAliases"] = [{"ip": control_ip or world.toxiproxy.ip, "hostnames": [CONTROL_ALIAS]}]
    if controller_env and chart.declares("controller", "env"):
        values.setdefault("controller", {}).setdefault("env", {}).update(controller_env)
    for k, v in (values_extra or {}).items():
        values[k] = {**values[k], **v} if isinstance(v, dict) and isinstance(values.get(k), dict) else v
    c = values["connectivity"]
    m = chart.render(values)
    side = m.sidecar()
    key = auth_key or world.key_for((AGENT_TAG,))
    objs = kind.cluster_manifests([], namespace=namespace, secret_name=c["authKeySecret"],
                                  secret_key=c["authKeySecretKey"] if secret == KIND_SECRET_PRESENT
                                  else "not-" + c["authKeySecretKey"], auth_key=key,
                                  ca_configmap=CA_CONFIGMAP, ca_pem=world.certs.ca_pem,
                                  namespace_metadata=cluster.namespace_metadata())
    if secret == KIND_SECRET_MISSING:
        objs = [o for o in objs if o["kind"] != "Secret"]
    objs += [{**o, "metadata": {**(o.get("metadata") or {}), "namespace": namespace}} for o in objects or []]
    workload = m.workloads()[0]
    selector = ",".join(f"{k}={v}" for k, v in sorted(
        ((((workload.get("spec") or {}).get("selector") or {}).get("matchLabels")) or {}).items()))
    pod = kindpod.KindPod(cluster, namespace, selector)
    port = (values.get("controller") or {}).get("port") or world.sut_port
    wan = world.networks["wan"].name
    rel = KindRelease(cluster, pod, m, values, namespace, hostname, c["authKeySecret"], c["authKeySecretKey"],
                      key, cluster.forward_host(wan), port, socket_path(side) if side else DEFAULT_SOCKET,
                      cluster.egress_ips(wan))
    try:
        t0 = time.monotonic()
        cluster.apply(objs)
        cluster.helm_install(chart.release, chart.path, values, namespace)
        t1 = time.monotonic()
        names = [x.get("name") for x in m.every_container()]
        wait_for(f"kind pod {namespace}: every container started or refused by the kubelet",
                 lambda: _settled(pod, names)[0], 120, describe=lambda: _settled(pod, names)[1])
        progress.say(f"kind release {namespace}: helm install {t1 - t0:.1f} s, the kubelet settled every "
                     f"container {time.monotonic() - t1:.1f} s later ({pod.brief()})")
        yield rel
    finally:
        pod.close()
        try:
            # The workloads are deleted first, and their pods waited out (gone 1.0-1.3 s after the
            # delete, measured on this machine), so the sidecar has left the tailnet before its
            # node is forgotten. The namespace is removed in the background: its controller takes
            # 5-10 s (measured) to finish, which no check needs (every release has a namespace of
            # its own; a kind cluster goes whole at its end; on a user's cluster the run's end
            # waits until every namespace of the run is gone: existing.delete_run_namespaces).
            # A grace period of RELEASE_GRACE_S: a sidecar stuck in `tailscale up` (a control server
            # it cannot reach: a kill test's broken setting) defers the reference script's TERM trap
            # until SIGKILL, which otherwise came after the default 30 s (27 s of an 86 s test).
            cluster.kubectl("delete", "all", "--all", "--namespace", namespace, "--wait=false",
                            f"--grace-period={RELEASE_GRACE_S:.0f}", timeout=240)
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", timeout=240)
            wait_for(f"kind namespace {namespace}: its pods gone after the namespace's delete", lambda: not (
                cluster.api_get(f"/api/v1/namespaces/{namespace}/pods").get("items")), RELEASE_GONE_S,
                describe=lambda: pod.brief())
        finally:
            forget_node(world, hostname)


def _controller_ready(e, rel: KindRelease, label: str = "") -> bool:
    """Wait for the kubelet to mark the controller ready (its readiness probe, every 5 s in the
    reference chart; 60 s covers a loaded machine); a clause violation when it does not."""
    try:
        rel.pod.wait_ready(rel.controller, 60)
        return True
    except MeshcertError as err:
        return e.that(False, f"{label}the kubelet marks the controller ready (its readiness probe)", err.message)


def kind_pod_joins(world, rel: KindRelease) -> None:
    """HELM-1, -2, -3, -4, -6 on the kubelet's pod of the installed chart (``rel``, reference
    values, Secret present)."""
    pod = rel.pod
    key = rel.auth_key.reveal()
    with clause(world, "HELM-2") as e:  # first: a sidecar the kubelet refuses fails HELM-1 as well
        env = {x.get("name"): x for x in pod.spec_container(SIDECAR).get("env") or []}
        ref = ((env.get("TS_AUTHKEY") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        e.that(ref.get("name") == rel.secret and ref.get("key") == rel.secret_key,
               f"the pod's TS_AUTHKEY a secretKeyRef to {rel.secret}/{rel.secret_key}", ref or env.get("TS_AUTHKEY"))
        if e.that(pod.running(SIDECAR), "the kubelet started the sidecar with the Secret present",
                  f"{'/'.join(pod.waiting(SIDECAR))}; {pod.brief()}"):
            code, got = pod.exec(SIDECAR, ["printenv", "TS_AUTHKEY"], answer=True)
            e.that(code == 0 and got.strip() == key, f"the kubelet resolved TS_AUTHKEY from Secret {rel.secret} "
                   f"(the key put there)", "another value, or none" if code == 0 else f"unset (exit {code})")
    p = pod.get()
    with clause(world, "HELM-1") as e:
        e.that(SIDECAR in pod.container_names(), "the pod the kubelet runs has a container named `tailscale`",
               pod.container_names())
        if e.that(pod.running(SIDECAR, p), "the kubelet reports the `tailscale` container running", pod.brief(p)):
            code, out = pod.exec(SIDECAR, ["sh", "-c", 'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$f"; '
                                                       'echo; done'], answer=True)
            e.that(any(line.split()[:1] and line.split()[0].endswith("tailscaled") for line in out.splitlines()),
                   "tailscaled among the `tailscale` container's processes", redact(out)[-300:])
    st: dict = {}
    with clause(world, "HELM-3") as e:
        try:
            st = rel.wait_running()
        except MeshcertError as err:
            e.that(False, "BackendState Running with a valid pre-auth key", err.message)
        if st:
            code, out = rel.tailscale("debug", "prefs")
            try:
                url = json.loads(out).get("ControlURL")
            except json.JSONDecodeError:
                url = f"(not JSON, exit {code}: {out.strip()[-200:]})"
            e.that(url == world.login_server(), f"logged in to controlServer {world.login_server()}", url)
            code, hosts = pod.exec(SIDECAR, ["cat", "/etc/hosts"], answer=True)
            e.that(any(line.split()[:1] == [world.toxiproxy.ip] and CONTROL_ALIAS in line.split()[1:]
                       for line in hosts.splitlines()),
                   f"the kubelet's /etc/hosts sends {CONTROL_ALIAS} to toxiproxy ({world.toxiproxy.ip})", hosts[-300:])
            try:
                pod.wait_ready(SIDECAR, 30)  # the probe runs every 5 s (the chart's periodSeconds)
            except MeshcertError as err:
                e.that(False, "the kubelet marks the sidecar ready (its own readiness probe) once Running", err.message)
    with clause(world, "HELM-2") as e:
        e.that(bool(st), "with the Secret's key, the sidecar joined (BackendState Running)", rel.backend_state())
        if pod.running(SIDECAR):
            places = {"the sidecar's log (kubectl logs)": pod.logs(SIDECAR),
                      "the controller's log (kubectl logs)": pod.logs(rel.controller),
                      "the sidecar's process command lines": pod.exec(SIDECAR, [
                          "sh", "-c", 'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$f"; echo; done'], answer=True)[1],
                      "the pod object (the API server's, as JSON)": json.dumps(pod.get())}
            for where, text in places.items():
                e.that(key not in text, f"the pre-auth key absent from {where}", "it appears there (redacted here)")
    helm4_joined_under_hostname(world, rel.hostname, st)
    with clause(world, "HELM-6") as e:
        sock_dir = os.path.dirname(rel.socket)
        vols = {n: next((mt.get("name") for mt in pod.spec_container(n).get("volumeMounts") or []
                         if mt.get("mountPath") == sock_dir), None) for n in (SIDECAR, rel.controller)}
        e.that(None not in vols.values() and len(set(vols.values())) == 1,
               f"one volume mounted at {sock_dir} in both the sidecar and the controller", vols)
        code, out = pod.exec(rel.controller, ["python3", "-c", f"import os, stat, sys; "
                                              f"sys.exit(0 if stat.S_ISSOCK(os.stat({rel.socket!r}).st_mode) else 1)"])
        e.that(code == 0, f"the controller sees the sidecar's socket {rel.socket} (the kubelet mounted it)",
               f"exit {code}: {out.strip()[-200:]}")
        if not _controller_ready(e, rel):
            return
        code, ans = rel.sut().prerun(_mesh_spec(world, rel.secret), {
            "server": {"url": f"tcp://{world.address('server')}:22", "critical": True}}, deadline_s=3)
        side = ans.get("sidecar") or {}
        e.that(side.get("ready") is True and side.get("backend_state") == "Running",
               "the controller's pre-run reads the sidecar's LocalAPI through the shared socket: ready, Running", side)
        r = _connect_until(rel.sut(), world.address("server"), 22, "server")
        e.that(r.get("ok") and "host=server port=22" in (r.get("banner") or ""),
               "the controller's own dial reaches server:22 through the mesh (the sidecar's data path)", r)


def kind_missing_secret(world, cluster, chart: Chart, **release: Any) -> None:
    """HELM-2 and TROUBLE-1 on the kubelet's pod: without the Secret (or with the Secret but not
    the key the values name) the kubelet does not start the sidecar -- the pod object shows it
    waiting in CreateContainerConfigError and the cluster's events name the Secret (the key) --
    while the controller runs and is ready; the controller's pre-run answers 200, warns about the
    sidecar naming the Secret (TROUBLE-1: also to the agent, sidecar and mesh not ready)."""
    cases = ((KIND_SECRET_MISSING, "no Secret", 'secret "{secret}" not found'),
             (KIND_KEY_MISSING, "the Secret without the key", "couldn't find key {key} in Secret {ns}/{secret}"))
    for secret, label, reason in cases:
        with kind_release(world, cluster, chart, secret=secret, **release) as rel:
            pod = rel.pod
            want = reason.format(secret=rel.secret, key=rel.secret_key, ns=rel.namespace)
            with clause(world, "HELM-2") as e:
                why, msg = pod.waiting(SIDECAR)
                e.that(why == "CreateContainerConfigError" and want in msg,
                       f"{label}: the kubelet leaves the sidecar waiting, CreateContainerConfigError: {want}",
                       f"{why or 'not waiting'}: {msg}; {pod.brief()}")
                events = pod.events()
                e.that(any(ev.get("type") == "Warning" and want in (ev.get("message") or "") for ev in events),
                       f"{label}: a Warning event of the cluster saying {want}",
                       [f"{ev.get('reason')}: {ev.get('message')}" for ev in events][-8:])
                _controller_ready(e, rel, f"{label}: all the same, ")
            if secret != KIND_SECRET_MISSING:
                continue
            with clause(world, "TROUBLE-1") as e:
                why, msg = pod.waiting(SIDECAR)
                e.that(why == "CreateContainerConfigError" and want in msg,
                       f"no key reaches the pod, as the kubelet reports it: the sidecar waiting, {want}",
                       f"{why or 'not waiting'}: {msg}")
                code, ans = rel.sut().prerun(_mesh_spec(world, rel.secret), {
                    "server": {"url": f"tcp://{world.address('server')}:22", "critical": False}}, deadline_s=1)
                warn = [x.get("msg", "") for x in ans.get("logs") or [] if x.get("level") == "warning"]
                e.that(code == 200, "HTTP 200 (a missing Secret is reported, not an error)", f"HTTP {code}")
                e.that(any(rel.secret in w for w in warn), f"a warning naming the Secret {rel.secret}", warn)
                e.that(any(rel.secret in str(x) for x in ans.get("agent_context") or []),
                       f"the agent told that {rel.secret} is missing", ans.get("agent_context"))
                e.that((ans.get("sidecar") or {}).get("ready") is False, "the sidecar reported not ready",
                       ans.get("sidecar"))
                e.that(ans.get("ready") is False, "the mesh not reported ready (ready false)", ans.get("ready"))


def kind_accept_routes(world, cluster, chart: Chart) -> None:
    """HELM-5 on the kubelet's pods: one release with acceptRoutes true reaches the legacy VLAN
    host through the subnet router, one with false does not (after a TSMP pong from the router:
    the tunnel on that path is up), while server:22 on the tailnet answers both."""
    with clause(world, "HELM-5") as e:
        for on in (True, False):
            with kind_release(world, cluster, chart, acceptRoutes=on) as rel:
                if _controller_ready(e, rel, f"acceptRoutes {on}: "):
                    _judge_accept_routes(world, e, rel, on)


def kind_disabled(world, cluster, chart: Chart) -> None:
    """HELM-7 on the kubelet's pod: connectivity.enabled false -> the pod the kubelet runs has the
    controller alone, no TS_* variable, nothing at the socket dir, and direct mode reaches the
    server over the network (the pod's egress through the node)."""
    with kind_release(world, cluster, chart, enabled=False) as rel:
        pod = rel.pod
        with clause(world, "HELM-7") as e:
            names = pod.container_names()
            e.that(SIDECAR not in names and names == [x["name"] for x in rel.manifests.every_container()],
                   "no sidecar container in the pod the kubelet runs", names)
            if not _controller_ready(e, rel):
                return
            code, out = pod.exec(rel.controller, ["env"], answer=True)
            ts = sorted({line.split("=")[0] for line in out.splitlines() if line.startswith("TS_")})
            e.that(code == 0 and not ts, "no TS_* variable in the controller's environment", ts or f"exit {code}")
            mounts = [mt.get("mountPath") for mt in pod.spec_container(rel.controller).get("volumeMounts") or []]
            e.that(SOCKET_DIR not in mounts, f"no volume at {SOCKET_DIR}", mounts)
            target = {"server": {"url": f"tcp://{world.nodes['server'].wan_ip}:22", "critical": True}}
            code, ans = rel.sut().prerun({"type": "direct"}, target, deadline_s=3)
            e.that(code == 200 and ans.get("ready") is True and
                   (ans.get("endpoints") or {}).get("server", {}).get("reachable") is True,
                   "direct mode: ready, the server reached over the cluster network", ans)
