"""The kind path: the HELM clauses against a real Kubernetes pod (``pytest --cluster kind``).

- the cluster's configuration is ``meshcert/k8s/charts/kind-config.yaml`` (package data; checked by
  :func:`config_problems`);
- the node image is never pulled behind the user's back: :func:`node_image_availability` says
  whether one can be had -- a ``kindest/node`` image already on the engine (the pinned kind's
  default tag preferred, or ``MESHCERT_KIND_NODE_IMAGE``), or, only when the user allows pulls
  (``MESHCERT_KIND_PULL=1``), a registry that answers. On machines without a registry and
  without a node image (ours) the answer is "cannot" with a one-line reason, and the kind tests
  skip with it;
- :func:`images_to_load` lists what ``kind load docker-image`` must copy into the node (the
  chart's two images: nothing is pulled inside the cluster either, ``imagePullPolicy: Never``);
- :func:`cluster_manifests` is what is applied: a Namespace, the auth key Secret, the control
  server's CA ConfigMap, and the chart's rendered manifests;
- :class:`KindCluster` drives the pinned kind binary (tools/kind) and runs ``kubectl`` inside
  the node (the node image ships it), so nothing talks to the API server from outside.

A run that is killed leaves its cluster behind (kind's containers carry kind's labels, not
meshcert's): ``kind delete cluster --name <name>`` removes it.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import yaml

from meshcert.errors import EnvironmentProblem
from meshcert.secrets import redact
from meshcert.toolchain.components import COMPONENTS
from meshcert.toolchain.paths import charts_dir

# kind reads its configuration from a file: meshcert is installed as files, never zipped.
KIND_CONFIG = charts_dir() / "kind-config.yaml"
NODE_REPO = "kindest/node"
# The default node image of each pinned kind release (sigs.k8s.io/kind, pkg/apis/config/defaults/image.go).
NODE_IMAGES = {
    "v0.30.0": "kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a",
}
REGISTRY = ("registry-1.docker.io", 443)  # only ever dialled when MESHCERT_KIND_PULL=1
MESHCERT_NETS = ipaddress.ip_network("10.20.0.0/16")  # the guide's VLAN and every world's VLAN


# ------------------------------------------------------------------------------ configuration
def load_config(path: str | os.PathLike = KIND_CONFIG) -> dict:
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict):
        raise EnvironmentProblem("kind config", f"{path} is not a YAML mapping")
    return doc


def config_problems(doc: dict) -> list[str]:
    """Everything wrong with a kind cluster config for meshcert, one sentence each ([] = fine)."""
    p: list[str] = []
    if doc.get("kind") != "Cluster":
        p.append(f"kind must be Cluster, not {doc.get('kind')!r}")
    if doc.get("apiVersion") != "kind.x-k8s.io/v1alpha4":
        p.append(f"apiVersion must be kind.x-k8s.io/v1alpha4, not {doc.get('apiVersion')!r}")
    known = {"kind", "apiVersion", "name", "nodes", "networking", "featureGates", "runtimeConfig",
             "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902", "containerdConfigPatches",
             "containerdConfigPatchesJSON6902"}
    p += [f"unknown field {k!r}" for k in doc if k not in known]
    nodes = doc.get("nodes") or []
    roles = [n.get("role", "control-plane") for n in nodes if isinstance(n, dict)]
    if len(roles) != len(nodes):
        p.append("every node must be a mapping")
    if roles.count("control-plane") != 1:
        p.append(f"exactly one control-plane node wanted, found {roles.count('control-plane')}")
    p += [f"node role {r!r} is neither control-plane nor worker" for r in roles if r not in ("control-plane", "worker")]
    for n in nodes:
        if isinstance(n, dict) and n.get("image"):
            p.append("a node names an image: the node image is chosen at run time (never a hard-coded pull)")
        for pm in (n.get("extraPortMappings") or []) if isinstance(n, dict) else []:
            if pm.get("listenAddress", "0.0.0.0") not in ("127.0.0.1", "::1"):
                p.append(f"port mapping {pm} listens beyond loopback")
    net = doc.get("networking") or {}
    if net.get("apiServerAddress") not in ("127.0.0.1", "::1"):
        p.append(f"networking.apiServerAddress must be loopback, not {net.get('apiServerAddress')!r}")
    subnets = {}
    for k in ("podSubnet", "serviceSubnet"):
        if net.get(k):
            try:
                subnets[k] = ipaddress.ip_network(net[k])
            except ValueError:
                p.append(f"networking.{k} {net[k]!r} is not a CIDR")
    for k, s in subnets.items():
        if s.version == 4 and s.overlaps(MESHCERT_NETS):
            p.append(f"networking.{k} {s} overlaps meshcert's VLANs {MESHCERT_NETS}")
    if len(subnets) == 2 and subnets["podSubnet"].overlaps(subnets["serviceSubnet"]):
        p.append("podSubnet and serviceSubnet overlap")
    return p


# ------------------------------------------------------------------------------ node image
@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str               # one line: why kind can or cannot run here
    node_image: str | None = None


def pinned_node_image() -> str:
    v = COMPONENTS["kind"].version
    if v not in NODE_IMAGES:
        raise EnvironmentProblem("kind", f"no node image known for the pinned kind {v}",
                                 "add its default (pkg/apis/config/defaults/image.go) to meshcert.k8s.kind.NODE_IMAGES")
    return NODE_IMAGES[v]


def registry_reachable(timeout: float = 3.0) -> bool:
    """A TCP connection to the registry kind pulls node images from (only called when pulls are allowed)."""
    try:
        socket.create_connection(REGISTRY, timeout=timeout).close()
        return True
    except OSError:
        return False


def node_image_availability(client=None, env: Mapping[str, str] | None = None,
                            registry_probe: Callable[[], bool] | None = None) -> Availability:
    """Whether a kind node image can be had here, and which; never pulls, never dials out
    unless ``MESHCERT_KIND_PULL=1``."""
    env = os.environ if env is None else env
    pinned = pinned_node_image()
    tag = pinned.split("@")[0]
    if client is None:
        try:
            client = docker.from_env(timeout=10)
            client.ping()
        except Exception as e:
            return Availability(False, f"kind cannot run here: no Docker engine answers ({type(e).__name__})")
    wanted = env.get("MESHCERT_KIND_NODE_IMAGE")
    if wanted:
        if _has_image(client, wanted):
            return Availability(True, f"kind node image {wanted} (MESHCERT_KIND_NODE_IMAGE) is on the engine", wanted)
        return Availability(False, f"kind cannot run here: MESHCERT_KIND_NODE_IMAGE={wanted} is not on the engine "
                                   f"(docker load it first)")
    local = sorted(t for img in client.images.list(name=NODE_REPO) for t in img.tags)
    if local:
        best = tag if tag in local else local[0]
        return Availability(True, f"kind node image {best} is on the engine", best)
    if env.get("MESHCERT_KIND_PULL") == "1":
        probe = registry_probe or registry_reachable
        if probe():
            return Availability(True, f"kind will pull {pinned} (MESHCERT_KIND_PULL=1, registry reachable)", pinned)
        return Availability(False, f"kind cannot run here: no {NODE_REPO} image on the engine and the registry "
                                   f"{REGISTRY[0]} does not answer")
    return Availability(False, f"kind cannot run here: no {NODE_REPO} image on the engine and no registry to pull "
                               f"{tag} from (docker load one, or set MESHCERT_KIND_PULL=1 where a registry "
                               f"is reachable)")


def _has_image(client, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def skip_reason(**kw: Any) -> str | None:
    """One line when the kind tests cannot run here, else None."""
    a = node_image_availability(**kw)
    return None if a.ok else a.reason


# ------------------------------------------------------------------------------ what goes into the cluster
def images_to_load(images: Mapping[str, str], sut_image: str | None = None) -> list[str]:
    """The chart's images, for ``kind load docker-image``: the sidecar and the controller (the SUT)."""
    out = [images["tailscale"], sut_image or images["sut-reference"]]
    return list(dict.fromkeys(out))


def cluster_manifests(rendered: list[dict], *, namespace: str, secret_name: str, secret_key: str, auth_key,
                      ca_configmap: str, ca_pem: bytes, ca_key: str = "ca.pem") -> list[dict]:
    """What ``kubectl apply`` gets: the Namespace, the auth key Secret (``auth_key`` a
    :class:`~meshcert.secrets.Secret`), the CA ConfigMap, and the chart's manifests placed in
    the namespace. Never print it: the Secret holds the key."""
    docs: list[dict] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": secret_name, "namespace": namespace},
         "data": {secret_key: base64.b64encode(auth_key.reveal().encode()).decode()}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": ca_configmap, "namespace": namespace},
         "data": {ca_key: ca_pem.decode()}},
    ]
    for d in rendered:
        d = dict(d)
        d["metadata"] = {**(d.get("metadata") or {}), "namespace": namespace}
        docs.append(d)
    return docs


# ------------------------------------------------------------------------------ the cluster
class KindCluster:
    """A kind cluster driven by the pinned kind binary; kubectl runs inside its node."""

    def __init__(self, name: str, node_image: str, config: str | os.PathLike = KIND_CONFIG):
        self.name, self.node_image, self.config = name, node_image, Path(config)

    @property
    def node(self) -> str:
        return f"{self.name}-control-plane"

    def _kind(self, *args: str, timeout: float = 600) -> str:
        binary = str(COMPONENTS["kind"].ensure()["kind"])
        r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "KIND_EXPERIMENTAL_PROVIDER": "docker"})
        if r.returncode != 0:
            raise EnvironmentProblem(f"kind {args[0]}", r.stderr.strip()[-800:] or f"exit {r.returncode}")
        return r.stdout

    def create(self) -> KindCluster:
        self._kind("create", "cluster", "--name", self.name, "--config", str(self.config), "--image", self.node_image,
                   "--wait", "180s")
        return self

    def delete(self) -> None:
        self._kind("delete", "cluster", "--name", self.name, timeout=180)

    def load(self, images: list[str]) -> None:
        for img in images:
            self._kind("load", "docker-image", img, "--name", self.name)

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 180) -> str:
        r = subprocess.run(["docker", "exec", "-i", self.node, "kubectl", "--kubeconfig=/etc/kubernetes/admin.conf",
                            *args], input=stdin, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise EnvironmentProblem(f"kubectl {args[0]}", redact(r.stderr.strip()[-800:]) or f"exit {r.returncode}")
        return r.stdout

    def apply(self, docs: list[dict]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs, sort_keys=False))

    def connect(self, client, network: str) -> None:
        """Attach the node to a Docker network (the world's WAN), so pods reach the control server."""
        client.networks.get(network).connect(self.node)
