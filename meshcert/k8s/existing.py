"""A cluster the user already has (``certify --kubeconfig PATH``), certified the way Sonobuoy
certifies one: meshcert only adds namespaces of its own and removes them.

- :func:`check_kubeconfig` refuses, in one line naming the file and the fix, a kubeconfig that is
  missing, malformed, names no usable context, or whose API server does not answer
  (``kubectl get --raw /readyz``) -- before any world is built;
- :class:`ExistingCluster` runs the pinned kubectl and helm of this machine with that kubeconfig.
  Every namespace it creates is named ``meshcert-<run id>-<n>`` and labelled ``io.meshcert=1``,
  ``io.meshcert.run=<run id>`` (the owning process in an annotation): :func:`world_cluster`
  deletes the run's namespaces on exit (also after Ctrl-C), and :func:`sweep_namespaces` (at the
  start of every run on that cluster, and ``meshcert sweep --kubeconfig PATH``) deletes those of
  runs whose process is gone (a kill -9);
- nothing is pulled behind the user's back: the chart's images are meshcert's own names, or
  those names under ``--image-prefix`` (a registry the user pushed them to), with the pull
  policy ``--pull-policy`` (default ``Never`` without a prefix: the user loaded the images into
  the cluster's nodes; ``IfNotPresent`` with one). meshcert never pushes;
- the world runs on this machine's Docker engine; its control server (toxiproxy) and tailnet
  nodes have addresses on the world's WAN, a Docker bridge created per run. The cluster's pods
  must reach it: ``--cluster-node NAME`` attaches the named Docker containers (the nodes of a
  kind/k3d/minikube cluster on this same engine) to the WAN for the run and detaches them after.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import yaml

from meshcert.errors import InputError
from meshcert.k8s import chart
from meshcert.k8s.kind import KubectlCluster
from meshcert.secrets import redact
from meshcert.toolchain import progress
from meshcert.toolchain.components import COMPONENTS
from meshcert.world import labels

PULL_POLICIES = ("Never", "IfNotPresent", "Always")
NAMESPACE_PREFIX = "meshcert-"
# `kubectl get --raw /readyz` must answer within this; an API server on a loaded 2-core machine
# answers in well under a second, so 15 s separates "slow" from "not there".
ANSWER_TIMEOUT_S = 15
FIX = "pass the kubeconfig of a running cluster (`kubectl --kubeconfig PATH get --raw /readyz` answers ok)"


@dataclass(frozen=True)
class ClusterOptions:
    """What the user says about their cluster (certify's / pytest's options)."""
    kubeconfig: Path
    context: str | None = None
    image_prefix: str | None = None
    pull_policy: str | None = None     # None: Never without image_prefix, IfNotPresent with it
    nodes: tuple[str, ...] = field(default=())  # Docker containers of this engine to attach to the world's WAN

    @property
    def policy(self) -> str:
        return self.pull_policy or ("IfNotPresent" if self.image_prefix else "Never")


def kubectl_binary() -> str:
    """The pinned kubectl of this machine (built with the kind node image's Kubernetes)."""
    return str(COMPONENTS["kubernetes"].ensure()["kubectl"])


def read_kubeconfig(path: str | os.PathLike, context: str | None = None) -> str:
    """The API server URL ``path`` points at (its current context, or ``context``); an
    :class:`InputError` naming the file for a missing, unreadable or malformed one."""
    what = "--kubeconfig"
    p = Path(path)
    if not p.is_file():
        raise InputError(what, f"{p} does not exist" if not p.exists() else f"{p} is not a file",
                         "pass the path of your cluster's kubeconfig")
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(what, f"{p} cannot be read ({type(e).__name__})", "pass a readable kubeconfig") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(what, f"{p} is not YAML{where}", "pass a kubeconfig (kind: Config)") from None
    if not isinstance(doc, dict) or doc.get("kind") != "Config":
        raise InputError(what, f"{p} is not a kubeconfig (no `kind: Config` mapping)", "pass a kubeconfig")
    want = context or doc.get("current-context")
    if not want:
        raise InputError(what, f"{p} has no current-context", "pass --kube-context NAME or set one in the file")
    ctx = next((c.get("context") or {} for c in doc.get("contexts") or [] if isinstance(c, dict)
                and c.get("name") == want), None)
    if ctx is None:
        raise InputError(what, f"{p} has no context {want!r}", "pass --kube-context with one of its contexts")
    cl = next((c.get("cluster") or {} for c in doc.get("clusters") or [] if isinstance(c, dict)
               and c.get("name") == ctx.get("cluster")), None)
    if not cl or not cl.get("server"):
        raise InputError(what, f"{p}: context {want!r} names cluster {ctx.get('cluster')!r}, which has no server",
                         "pass a complete kubeconfig")
    return str(cl["server"])


def check_kubeconfig(path: str | os.PathLike, context: str | None = None, kubectl: str | None = None) -> str:
    """:func:`read_kubeconfig`, then the API server must answer ``/readyz`` with ok; returns the
    server URL. Any failure is one :class:`InputError` line (exit 2), never a traceback."""
    server = read_kubeconfig(path, context)
    argv = [kubectl or kubectl_binary(), f"--kubeconfig={path}", *([f"--context={context}"] if context else []),
            f"--request-timeout={ANSWER_TIMEOUT_S}s", "get", "--raw", "/readyz"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=ANSWER_TIMEOUT_S + 10)
        answer, code = (r.stdout.strip(), r.returncode)
        err = " ".join(r.stderr.split())
    except subprocess.TimeoutExpired:
        answer, code, err = "", 124, f"no answer within {ANSWER_TIMEOUT_S + 10} s"
    if code != 0 or answer != "ok":
        said = redact(err or answer)[-240:] or f"exit {code}"
        raise InputError("--kubeconfig", f"{path}: the API server {server} does not answer ({said})", FIX)
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExistingCluster(KubectlCluster):
    """The user's cluster, through the pinned kubectl and helm of this machine and their kubeconfig."""

    def __init__(self, opts: ClusterOptions, run_id: str, client=None):
        self.opts, self.run_id = opts, run_id
        self.kubeconfig = Path(opts.kubeconfig)
        self.pull_policy = opts.policy
        self.client = client
        self.name = f"kubeconfig {self.kubeconfig}"
        self.attached: dict[str, str] = {}  # node container -> its address on the world's WAN
        self._kubectl = kubectl_binary()

    def _ctx(self, flag: str) -> list[str]:
        return [f"{flag}={self.opts.context}"] if self.opts.context else []

    def kubectl_argv(self, *args: str) -> list[str]:
        return [self._kubectl, f"--kubeconfig={self.kubeconfig}", *self._ctx("--context"), *args]

    def helm(self, *args: str, timeout: float = 300) -> str:
        return chart.helm(*args, "--kubeconfig", str(self.kubeconfig), *self._ctx("--kube-context"), timeout=timeout)

    def forward_port(self, port: int) -> int:
        return _free_port()  # this machine's loopback is shared with every other run: never a fixed port

    def egress_ips(self, network: str) -> tuple[str, ...]:
        """The attached nodes' addresses on the WAN; without ``--cluster-node``, the nodes'
        InternalIP addresses the cluster reports (a cluster routed to the WAN without NAT)."""
        if self.attached:
            return tuple(self.attached.values())
        out = self.kubectl("get", "nodes", "-o", "jsonpath={.items[*].status.addresses[?(@.type==\"InternalIP\")]"
                                                 ".address}")
        return tuple(out.split())

    def namespace_for(self, token: str) -> str:
        return f"{NAMESPACE_PREFIX}{self.run_id}-{token}"

    def namespace_metadata(self) -> dict:
        return {"labels": {labels.LABEL: "1", labels.RUN: self.run_id},
                # the owner token ("host:pid:start") is no valid label value: an annotation
                "annotations": {labels.OWNER: labels.owner_token()}}

    def image_ref(self, image: str) -> str:
        prefix = (self.opts.image_prefix or "").rstrip("/")
        return f"{prefix}/{image}" if prefix else image

    # ---------------------------------------------------------------- the run's life
    def attach(self, network: str) -> None:
        """Attach the ``--cluster-node`` containers to the world's WAN ``network``."""
        for name in self.opts.nodes:
            try:
                ct = self.client.containers.get(name)
                self.client.networks.get(network).connect(ct)
            except docker.errors.NotFound:
                raise InputError("--cluster-node", f"no container {name!r} on this Docker engine",
                                 "name the Docker containers of your cluster's nodes (docker ps)") from None
            ct.reload()
            self.attached[name] = ct.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]

    def detach(self, network: str) -> None:
        for name in list(self.attached):
            try:
                self.client.networks.get(network).disconnect(name, force=True)
            except docker.errors.APIError:
                pass  # the network or the container is gone already
            self.attached.pop(name, None)

    def namespaces(self, selector: str) -> list[dict]:
        out = self.kubectl("get", "namespaces", "-l", selector, "-o", "json")
        return [ns for ns in yaml.safe_load(out).get("items") or []]

    def delete_run_namespaces(self, timeout: float = 240) -> None:
        """Delete every namespace of this run (and wait until they are gone)."""
        self.kubectl("delete", "namespaces", "-l", f"{labels.LABEL}=1,{labels.RUN}={self.run_id}",
                     "--wait=true", "--ignore-not-found", timeout=timeout)


def sweep_namespaces(cluster: KubectlCluster) -> list[str]:
    """Delete meshcert's namespaces in ``cluster`` whose owning process is gone (a run killed with
    -9); returns their names. A namespace owned by a live process (another run) is kept."""
    doomed = []
    for ns in cluster.namespaces(f"{labels.LABEL}=1"):
        meta = ns.get("metadata") or {}
        if not labels.owner_alive((meta.get("annotations") or {}).get(labels.OWNER, "")):
            doomed.append(meta.get("name"))
    if doomed:
        cluster.kubectl("delete", "namespaces", *doomed, "--wait=false", "--ignore-not-found")
    return doomed


@contextmanager
def world_cluster(world, opts: ClusterOptions) -> Iterator[ExistingCluster]:
    """The user's cluster beside a running world: dead runs' namespaces swept, the
    ``--cluster-node`` containers attached to the world's WAN; on exit (also Ctrl-C: the
    KeyboardInterrupt unwinds through here) the run's namespaces deleted, the nodes detached."""
    check_kubeconfig(opts.kubeconfig, opts.context)
    c = ExistingCluster(opts, world.run_id, world.client)
    swept = sweep_namespaces(c)
    if swept:
        progress.say(f"{c.name}: deleted namespaces of killed runs: {swept}")
    wan = world.networks["wan"].name
    imgs = [c.image_ref(i) for i in (world.images["tailscale"], world.sut_image or world.images["sut-reference"])]
    progress.say(f"{c.name}: the chart's pods run {', '.join(imgs)} with imagePullPolicy {c.pull_policy}")
    try:
        c.attach(wan)
        yield c
    finally:
        try:
            c.delete_run_namespaces()
        finally:
            c.detach(wan)
