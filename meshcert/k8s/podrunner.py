"""Containers that share a network namespace, from a rendered pod template, on plain Docker
(the fast world; DESIGN.md §2). This is NOT a kubelet and does not imitate one.

What it does: the Deployment a chart renders gives a pod template, and this module starts its
containers so that they share what a pod's containers share:

- a **pause** container owns the network namespace (and /etc/hosts: ``hostAliases``); every
  container of the pod joins it (``network_mode=container:<pause>``): one 127.0.0.1, one IP;
- volumes shared between the containers: ``emptyDir`` -> a labelled Docker volume (tmpfs,
  mode 0777), ``secret``/``configMap`` -> a labelled tmpfs volume holding the keys' files, all
  also mounted in the pause container so they live as long as the pod;
- what a container is started with: ``command``/``args`` (with ``$(VAR)`` expansion), ``env``
  (values from the Secrets / ConfigMaps mapping the caller gives), the securityContext's user,
  groups, read-only root, capabilities, no-new-privileges; restartPolicy -> Docker's.

What it does not do: decide what a kubelet would refuse. A Secret, ConfigMap or key that is
not in the caller's mapping, an image that is not on the engine, runAsNonRoot with a root
user, an init container that fails: each is a :class:`PodRunError` naming the fact, never a
status, event or reason string written to look like the kubelet's. The kubelet's own answers
(CreateContainerConfigError, FailedMount, readiness, events) are asserted on a real cluster:
meshcert/k8s/kind.py and kindpod.py, ``pytest --cluster kind``.

Not supported (a :class:`PodRunError` says so): hostPath and other volume types, subPath,
ephemeral containers. Resources, ports, service accounts and scheduling fields are ignored.

Everything is labelled (the caller's labels: a world's run labels, so the sweeper removes what
a killed run left) and removed by :meth:`RunningPod.remove`.
"""

from __future__ import annotations

import re
import shlex
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import docker.types
import requests
from testcontainers.core.container import DockerContainer

from meshcert.errors import MeshcertError
from meshcert.secrets import redact
from meshcert.toolchain import progress
from meshcert.world.base import Answers, Box, raw_exec, tar_files

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod")
VOLUME_ROOT = "/.meshcert/volumes"  # where the pause container holds every pod volume
POD_LABEL = "io.meshcert.pod"
CONTAINER_LABEL = "io.meshcert.pod-container"
RESTART = {"Always": {"Name": "always"}, "OnFailure": {"Name": "on-failure"}, "Never": None}


KUBELET_ONLY = ("meshcert's Docker pods only share a network namespace and volumes; what a kubelet does about "
                "this is asserted on a real one (pytest --cluster kind)")


class PodRunError(MeshcertError):
    """The pod template uses something the runner cannot do, an input is missing, or the engine refused it."""

    def __init__(self, message: str, fix: str = KUBELET_ONLY):
        super().__init__("pod runner", redact(message), fix)


# ------------------------------------------------------------------------------ manifests
def pod_template(docs: list[dict], name: str | None = None) -> tuple[dict, str | None]:
    """(the pod spec's template {"metadata", "spec"}, the namespace) of the one workload in ``docs``
    (or the one called ``name``)."""
    found = []
    for d in docs:
        if not isinstance(d, dict) or d.get("kind") not in WORKLOAD_KINDS:
            continue
        if name and (d.get("metadata") or {}).get("name") != name:
            continue
        if d["kind"] == "Pod":
            found.append(({"metadata": d.get("metadata") or {}, "spec": d.get("spec") or {}}, d))
        elif d["kind"] == "Job":
            found.append((((d.get("spec") or {}).get("template") or {}), d))
        else:
            found.append((((d.get("spec") or {}).get("template") or {}), d))
    if len(found) != 1:
        kinds = [f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}" for d in docs if isinstance(d, dict)]
        raise PodRunError(f"expected exactly one workload with a pod template{f' named {name}' if name else ''}, "
                          f"found {len(found)} among {kinds}")
    tpl, d = found[0]
    return tpl, (d.get("metadata") or {}).get("namespace")


_K8S_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables are replaced, undefined references
    stay as written, ``$$`` is a literal ``$``."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _K8S_VAR.sub(sub, text)


def _as_text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def resolve_env(spec: dict, *, secrets: Mapping[str, Mapping[str, Any]], config_maps: Mapping[str, Mapping[str, Any]],
                namespace: str, fields: Mapping[str, str]) -> dict[str, str]:
    """A container's environment from the caller's Secrets / ConfigMaps mappings (Kubernetes'
    rules for optional references and ``$(VAR)``); PodRunError for a reference to something
    that is not in them."""
    env: dict[str, str] = {}
    for src in spec.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        for kind, store, label in (("secretRef", secrets, "secret"), ("configMapRef", config_maps, "configmap")):
            ref = src.get(kind)
            if ref is None:
                continue
            obj = store.get(ref.get("name"))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise PodRunError(f'{label} "{ref.get("name")}" is not in the pod runner\'s mapping')
            for k, v in obj.items():
                env[prefix + k] = _as_text(v)
    for item in spec.get("env") or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        vf = item["valueFrom"] or {}
        if "secretKeyRef" in vf or "configMapKeyRef" in vf:
            is_secret = "secretKeyRef" in vf
            ref = vf["secretKeyRef" if is_secret else "configMapKeyRef"]
            store, label, kind = ((secrets, "secret", "Secret") if is_secret
                                  else (config_maps, "configmap", "ConfigMap"))
            obj = store.get(ref.get("name"))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise PodRunError(f'{label} "{ref.get("name")}" is not in the pod runner\'s mapping')
            if ref.get("key") not in obj:
                if ref.get("optional"):
                    continue
                raise PodRunError(f'{kind} {namespace}/{ref.get("name")} has no key {ref.get("key")}')
            env[name] = _as_text(obj[ref["key"]])
        elif "fieldRef" in vf:
            path = vf["fieldRef"].get("fieldPath", "")
            m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
            if m:
                env[name] = fields.get(f"{m.group(1)}:{m.group(2)}", "")
            elif path in fields:
                env[name] = fields[path]
            else:
                raise PodRunError(f"unsupported fieldRef {path!r}")
        else:
            raise PodRunError(f"env {name}: valueFrom {sorted(vf)} is not supported by meshcert's pod runner")
    return env


# ------------------------------------------------------------------------------ the running pod
@dataclass
class ContainerRun:
    name: str
    spec: dict
    container: Any = None   # docker.models.containers.Container once started
    init: bool = False

    @property
    def started(self) -> bool:
        return self.container is not None


@dataclass
class RunningPod:
    name: str
    namespace: str
    client: docker.DockerClient
    template: dict
    pause: Any
    ip: str
    containers: dict[str, ContainerRun] = field(default_factory=dict)
    volumes: list[Any] = field(default_factory=list)
    on_remove: list[Callable[[], None]] = field(default_factory=list)
    _removed: bool = False
    _answers: dict[str, Answers] = field(default_factory=dict, repr=False)

    # -- reading the pod
    def run(self, name: str) -> ContainerRun:
        if name not in self.containers:
            raise KeyError(f"pod {self.name} has no container {name!r} (it has {sorted(self.containers)})")
        return self.containers[name]

    def started(self, name: str) -> bool:
        return name in self.containers and self.containers[name].started

    def state(self, name: str) -> dict:
        c = self.run(name)
        c.container.reload()
        st = c.container.attrs.get("State") or {}
        return {"Status": st.get("Status"), "ExitCode": st.get("ExitCode"),
                "Restarts": c.container.attrs.get("RestartCount", 0), "Error": st.get("Error") or ""}

    def exec(self, name: str, cmd: list[str], *, answer: bool = False) -> tuple[int, str]:
        """``cmd`` in container ``name``: exit code and merged output; ``answer`` as in Box.exec."""
        c = self.run(name)
        if answer:
            return self._answers.setdefault(name, Answers()).exec(c.container, cmd, f"pod {self.name}/{name}")
        return raw_exec(c.container, cmd)

    def logs(self, name: str) -> str:
        c = self.run(name)
        try:
            return redact(c.container.logs(timestamps=True).decode(errors="replace"))
        except docker.errors.APIError as e:
            return f"(logs unavailable: {e})"

    def mounts(self, name: str) -> dict[str, dict]:
        """mount path -> {"volume", "read_only"} as the engine shows them for a started container."""
        c = self.run(name)
        c.container.reload()
        return {m["Destination"]: {"volume": m.get("Name"), "read_only": not m.get("RW", True)}
                for m in c.container.attrs.get("Mounts") or []}

    # -- probes (the chart's own readiness/liveness/startup probes, run once)
    def probe(self, name: str, kind: str = "readinessProbe") -> tuple[bool, str]:
        c = self.run(name)
        spec = c.spec.get(kind)
        if not spec:
            return True, f"no {kind}: ready once started"
        timeout = float(spec.get("timeoutSeconds") or 1)
        if "httpGet" in spec:
            g = spec["httpGet"]
            port = self._port(c, g.get("port"))
            url = f"{(g.get('scheme') or 'HTTP').lower()}://{g.get('host') or self.ip}:{port}{g.get('path') or '/'}"
            s = requests.Session()
            s.trust_env = False
            try:
                r = s.get(url, timeout=timeout, verify=False,
                          headers={h["name"]: h["value"] for h in g.get("httpHeaders") or []})
                return 200 <= r.status_code < 400, f"GET {url} -> {r.status_code}"
            except requests.RequestException as e:
                return False, f"GET {url}: {type(e).__name__}"
        if "tcpSocket" in spec:
            port = self._port(c, spec["tcpSocket"].get("port"))
            try:
                socket.create_connection((spec["tcpSocket"].get("host") or self.ip, port), timeout=timeout).close()
                return True, f"tcp {port} accepts"
            except OSError as e:
                return False, f"tcp {port}: {e}"
        if "exec" in spec:
            cmd = spec["exec"].get("command") or []
            code, out = self.exec(name, cmd)
            return code == 0, f"exec {shlex.join(cmd)} -> exit {code}: {redact(out.strip())[-300:]}"
        raise PodRunError(f"{kind} of {name}: only httpGet, tcpSocket and exec probes are supported")

    @staticmethod
    def _port(c: ContainerRun, port: Any) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise PodRunError(f"container {c.name}: probe names port {port!r}, which it does not declare")

    def wait_probe(self, name: str, kind: str = "readinessProbe", timeout: float = 60) -> str:
        """Poll a probe until it succeeds (a condition wait); returns its last detail."""
        deadline = time.monotonic() + timeout
        while True:
            ok, detail = self.probe(name, kind)
            if ok:
                return detail
            st = self.state(name)
            if time.monotonic() >= deadline:
                raise PodRunError(f"pod {self.name}: {kind} of {name} still failing after {timeout:.0f}s: {detail}; "
                                  f"state {st}; log tail: {self.logs(name)[-600:]}")
            time.sleep(0.5)

    # -- teardown
    def remove(self) -> dict[str, int]:
        if self._removed:
            return {}
        self._removed = True
        for hook in self.on_remove:
            try:
                hook()
            except Exception as e:  # a failing hook must not leave containers behind
                progress.say(f"pod {self.name}: cleanup hook failed: {redact(str(e))[:200]}")
        counts = {"containers": 0, "volumes": 0}
        for c in [*self.containers.values()]:
            if c.started:
                counts["containers"] += _force_remove(c.container)
        if self.pause is not None:
            counts["containers"] += _force_remove(self.pause)
        for v in self.volumes:
            try:
                v.remove(force=True)
                counts["volumes"] += 1
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                progress.say(f"pod {self.name}: could not remove volume {v.name}: {e}")
        return counts

    def __enter__(self) -> RunningPod:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _force_remove(ct) -> int:
    try:
        ct.remove(force=True, v=True)
        return 1
    except docker.errors.NotFound:
        return 0
    except docker.errors.APIError as e:
        return 0 if e.status_code == 409 else 1


# ------------------------------------------------------------------------------ running a template
@dataclass
class PodEnv:
    """Where and how the pod runs: the engine, names, labels, network, and the cluster's objects."""
    client: docker.DockerClient
    name_for: Callable[[str], str]       # object name for a role, e.g. World.container_name
    labels: dict[str, str]               # put on every container and volume
    network: str                         # Docker network of the pod's IP
    pause_image: str
    secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    config_maps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    image_overrides: Mapping[str, str] = field(default_factory=dict)  # container name -> image
    namespace: str = "default"
    node_name: str = "meshcert-engine"


def run_pod(template: dict, pod_name: str, penv: PodEnv, *, on_container: Callable[[str, Any], None] | None = None,
            init_timeout: float = 120) -> RunningPod:
    """Run ``template`` ({"metadata", "spec"} of a pod) as pod ``pod_name``; returns the running pod.

    Every container starts, or nothing is left running: a missing input (a Secret/key not in
    the mapping, an image not on the engine, runAsNonRoot with a root user, a failed init
    container) is a PodRunError naming it, and what was created is removed.
    """
    spec = template.get("spec") or {}
    meta = template.get("metadata") or {}
    c = penv.client
    if spec.get("ephemeralContainers"):
        raise PodRunError("ephemeralContainers are not supported")
    labels = {**penv.labels, POD_LABEL: pod_name}
    pod = RunningPod(pod_name, penv.namespace, c, template, None, "")
    try:
        _start(pod, spec, meta, penv, labels, on_container, init_timeout)
    except BaseException:
        pod.remove()
        raise
    return pod


def _start(pod: RunningPod, spec: dict, meta: dict, penv: PodEnv, labels: dict, on_container, init_timeout) -> None:
    c = penv.client
    psc = spec.get("securityContext") or {}
    fs_group = psc.get("fsGroup")

    # 1. volumes (each also mounted in the pause container, which lives as long as the pod)
    vol_names: dict[str, str] = {}
    fills: dict[str, tuple[str, dict]] = {}  # volume -> (kind, source)
    for v in spec.get("volumes") or []:
        vname = v["name"]
        kinds = [k for k in v if k != "name"]
        kind = kinds[0] if kinds else "emptyDir"
        if kind not in ("emptyDir", "secret", "configMap"):
            raise PodRunError(f"volume {vname}: type {kind} is not supported by meshcert's pod runner",
                              "use emptyDir, secret or configMap volumes")
        opts = "mode=0777" if kind == "emptyDir" else "mode=0755"
        size = (v.get("emptyDir") or {}).get("sizeLimit") if kind == "emptyDir" else None
        if size:
            opts += f",size={_bytes(size)}"
        dv = c.volumes.create(penv.name_for(f"{pod.name}-vol-{vname}"), driver="local", labels=labels,
                              driver_opts={"type": "tmpfs", "device": "tmpfs", "o": opts})
        pod.volumes.append(dv)
        vol_names[vname] = dv.name
        if kind in ("secret", "configMap"):
            fills[vname] = (kind, v[kind] or {})

    # 2. the pause container: owns the network namespace, /etc/hosts and the volumes
    extra_hosts = {h: a["ip"] for a in spec.get("hostAliases") or [] for h in a.get("hostnames") or []}
    sysctls = {s["name"]: str(s["value"]) for s in psc.get("sysctls") or []}
    pause = DockerContainer(penv.pause_image).with_name(penv.name_for(f"{pod.name}-pause")) \
        .with_command(["sleep", "infinity"])
    pkw: dict[str, Any] = {
        "labels": {**labels, CONTAINER_LABEL: "pause"}, "hostname": (spec.get("hostname") or pod.name)[:63],
        "network": penv.network,
        "networking_config": {penv.network: c.api.create_endpoint_config(aliases=[pod.name])},
        "mounts": [docker.types.Mount(f"{VOLUME_ROOT}/{n}", dv, type="volume", no_copy=True)
                   for n, dv in vol_names.items()],
    }
    if extra_hosts:
        pkw["extra_hosts"] = extra_hosts
    if sysctls:
        pkw["sysctls"] = sysctls
    pause.with_kwargs(**pkw)
    try:
        pause.start()
    except docker.errors.APIError as e:
        raise PodRunError(f"could not start the pause container of pod {pod.name}: {e.explanation or e}") from None
    pod.pause = pause.get_wrapped_container()
    pod.pause.reload()
    pod.ip = pod.pause.attrs["NetworkSettings"]["Networks"][penv.network]["IPAddress"]

    # 3. secret / configMap volumes: the keys' files, as the kubelet writes them
    for vname, (kind, src) in fills.items():
        _fill(pod.pause, vname, kind, src, penv, fs_group)

    fields = {"metadata.name": pod.name, "metadata.namespace": penv.namespace, "status.podIP": pod.ip,
              "status.hostIP": pod.ip, "spec.nodeName": penv.node_name,
              "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
              **{f"labels:{k}": str(v) for k, v in (meta.get("labels") or {}).items()},
              **{f"annotations:{k}": str(v) for k, v in (meta.get("annotations") or {}).items()}}
    restart = RESTART.get(spec.get("restartPolicy") or "Always")

    # 4. init containers (run to completion, in order; restartPolicy Always = a native sidecar)
    for ic in spec.get("initContainers") or []:
        native = ic.get("restartPolicy") == "Always"
        run = ContainerRun(ic["name"], ic, init=not native)
        pod.containers[ic["name"]] = run
        _start_container(pod, run, spec, penv, labels, vol_names, fields,
                         {"Name": "always"} if native else None, on_container)
        if not native:
            r = run.container.wait(timeout=init_timeout)
            if r.get("StatusCode", 1) != 0:
                raise PodRunError(f"init container {ic['name']} of pod {pod.name} exited {r.get('StatusCode')}")

    # 5. the pod's containers, in order
    for cs in spec.get("containers") or []:
        run = ContainerRun(cs["name"], cs)
        pod.containers[cs["name"]] = run
        _start_container(pod, run, spec, penv, labels, vol_names, fields, restart, on_container)


def _bytes(q: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|k|M|G)?", str(q))
    if not m:
        raise PodRunError(f"cannot read the quantity {q!r}")
    mult = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "M": 10**6, "G": 10**9}.get(m.group(2) or "", 1)
    return int(m.group(1)) * mult


def _fill(pause, vname: str, kind: str, src: dict, penv: PodEnv, fs_group: int | None) -> None:
    """Write a Secret's / ConfigMap's keys into the volume held by the pause container."""
    store, label, obj_name = ((penv.secrets, "secret", src.get("secretName")) if kind == "secret"
                              else (penv.config_maps, "configmap", src.get("name")))
    obj = store.get(obj_name)
    if obj is None:
        if src.get("optional"):
            return
        raise PodRunError(f'volume {vname}: {label} "{obj_name}" is not in the pod runner\'s mapping')
    mode = src.get("defaultMode", 0o644)
    items = src.get("items")
    files: dict[str, tuple[bytes, int]] = {}
    if items:
        for it in items:
            if it["key"] not in obj:
                if src.get("optional"):
                    continue
                raise PodRunError(f"volume {vname}: {label} {obj_name} has no key {it['key']}")
            files[it.get("path") or it["key"]] = (_as_bytes(obj[it["key"]]), it.get("mode", mode))
    else:
        files = {k: (_as_bytes(v), mode) for k, v in obj.items()}
    if fs_group is not None:  # the kubelet makes a read-only volume's files group-readable by fsGroup
        files = {p: (d, m | 0o440) for p, (d, m) in files.items()}
    if files and not pause.put_archive(f"{VOLUME_ROOT}/{vname}", tar_files(files)):
        raise PodRunError(f"could not write the files of volume {vname}")
    owner = f"0:{fs_group if fs_group is not None else 0}"
    code, out = pause.exec_run(["chown", "-R", owner, f"{VOLUME_ROOT}/{vname}"])
    if code != 0:
        raise PodRunError(f"could not set the owner of volume {vname}: {out.decode(errors='replace')[-200:]}")


def _as_bytes(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


def _image_user(c: docker.DockerClient, image: str) -> str:
    return ((c.images.get(image).attrs.get("Config") or {}).get("User") or "").strip()


def _start_container(pod: RunningPod, run: ContainerRun, pspec: dict, penv: PodEnv, labels: dict,
                     vol_names: dict[str, str], fields: dict, restart: dict | None, on_container) -> None:
    c = penv.client
    cs = run.spec
    image = penv.image_overrides.get(cs["name"], cs.get("image") or "")
    try:
        c.images.get(image)
    except (docker.errors.ImageNotFound, docker.errors.NullResource):
        raise PodRunError(f"container {run.name}: image {image!r} is not on this engine (meshcert never pulls images)",
                          "build or load it first (meshcert setup)") from None
    env = resolve_env(cs, secrets=penv.secrets, config_maps=penv.config_maps, namespace=penv.namespace, fields=fields)
    psc, csc = pspec.get("securityContext") or {}, cs.get("securityContext") or {}
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    if non_root:
        img_user = _image_user(c, image).split(":")[0]
        if uid is None and img_user and not img_user.isdigit():
            raise PodRunError(f"container {run.name}: runAsNonRoot, and the image's user {img_user!r} is not numeric")
        effective = uid if uid is not None else int(img_user or 0)
        if effective == 0:
            raise PodRunError(f"container {run.name}: runAsNonRoot, and it would run as root")
    kw: dict[str, Any] = {"labels": {**labels, CONTAINER_LABEL: run.name},
                          "network_mode": f"container:{pod.pause.id}", "network": None}
    if uid is not None:
        kw["user"] = f"{uid}:{gid}" if gid is not None else str(uid)
    groups = [str(g) for g in (psc.get("supplementalGroups") or [])]
    if psc.get("fsGroup") is not None:
        groups.append(str(psc["fsGroup"]))
    if groups:
        kw["group_add"] = groups
    if csc.get("readOnlyRootFilesystem"):
        kw["read_only"] = True
    if csc.get("privileged"):
        kw["privileged"] = True
    caps = csc.get("capabilities") or {}
    if caps.get("add"):
        kw["cap_add"] = [x.removeprefix("CAP_") for x in caps["add"]]
    if caps.get("drop"):
        kw["cap_drop"] = [x.removeprefix("CAP_") for x in caps["drop"]]
    if csc.get("allowPrivilegeEscalation") is False:
        kw["security_opt"] = ["no-new-privileges"]
    if restart:
        kw["restart_policy"] = restart
    if cs.get("workingDir"):
        kw["working_dir"] = cs["workingDir"]
    mounts = []
    for m in cs.get("volumeMounts") or []:
        if m.get("subPath") or m.get("subPathExpr"):
            raise PodRunError(f"container {run.name}: volumeMount subPath is not supported by meshcert's pod runner")
        if m["name"] not in vol_names:
            raise PodRunError(f"container {run.name}: volume {m['name']!r} is not among the pod's volumes")
        mounts.append(docker.types.Mount(m["mountPath"], vol_names[m["name"]], type="volume", no_copy=True,
                                         read_only=bool(m.get("readOnly"))))
    if mounts:
        kw["mounts"] = mounts
    command = [expand(str(x), env) for x in cs.get("command") or []]
    args = [expand(str(x), env) for x in cs.get("args") or []]
    if command:
        kw["entrypoint"] = command  # Kubernetes: command replaces ENTRYPOINT (and drops CMD)
    dc = DockerContainer(image).with_name(penv.name_for(f"{pod.name}-{run.name}"))
    if args:
        dc.with_command(args)
    for k, v in env.items():
        dc.with_env(k, v)
    dc.with_kwargs(**kw)
    try:
        dc.start()
    except docker.errors.APIError as e:
        raise PodRunError(f"container {run.name}: the engine refused it: {e.explanation or e}", "") from None
    run.container = dc.get_wrapped_container()
    if on_container:
        on_container(run.name, run.container)


# ------------------------------------------------------------------------------ in a meshcert world
def run_in_world(world, template: dict, pod_name: str, *, secrets: Mapping[str, Mapping[str, Any]] | None = None,
                 config_maps: Mapping[str, Mapping[str, Any]] | None = None, namespace: str = "default",
                 image_overrides: Mapping[str, str] | None = None, network: str = "wan") -> RunningPod:
    """Run a pod template in a running :class:`~meshcert.world.World`: on its WAN network (the
    pod reaches the control server as ``control``), with its run labels and names, the pause
    container from its host image. While the pod lives its containers are among the world's
    boxes, so a failing clause saves their logs with everyone else's."""

    penv = PodEnv(world.client, world.container_name, world.labels(), world.networks[network].name, world.images["host"],
                  secrets=secrets or {}, config_maps=config_maps or {}, image_overrides=image_overrides or {},
                  namespace=namespace)
    roles: list[str] = []

    def register(name: str, ct) -> None:
        role = f"{pod_name}-{name}"
        world.boxes[role] = Box(ct.name, ct, role)
        roles.append(role)

    def unregister() -> None:
        for r in roles:
            world.boxes.pop(r, None)

    try:
        pod = run_pod(template, pod_name, penv, on_container=register)
    except BaseException:
        unregister()
        raise
    pod.on_remove.append(unregister)
    return pod
