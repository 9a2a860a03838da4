"""The kind path: the HELM clauses against a real Kubernetes pod (``pytest --cluster kind``).

- the cluster's configuration is ``meshcert/k8s/charts/kind-config.yaml`` (package data) (checked by :func:`config_problems`),
  plus what meshcert's node image needs (:func:`effective_config`);
- the node image is never pulled: meshcert builds its own here from pinned inputs
  (:mod:`meshcert.k8s.nodeimage`, ``meshcert setup --kind``), or uses the one the user names with
  ``MESHCERT_KIND_NODE_IMAGE`` (already on the engine); :func:`node_image_availability` says which,
  or why neither can be had, in one line;
- :func:`images_to_load` lists what ``kind load docker-image`` must copy into the node (the
  chart's two images: nothing is pulled inside the cluster either, ``imagePullPolicy: Never``);
- :func:`cluster_manifests` is what is applied before the chart: a Namespace, the auth key
  Secret, the control server's CA ConfigMap (the chart itself goes in with ``helm install``,
  :meth:`KindCluster.helm_install`, the pinned helm);
- :class:`KindCluster` drives the pinned, unmodified kind binary through meshcert's docker shim
  (:mod:`meshcert.k8s.cluster`) and runs ``kubectl`` inside the node (the node image ships it);
  helm reaches the API server on this machine's loopback (kind-config.yaml's apiServerAddress);
- :func:`world_cluster` is the cluster beside a world: its node on the world's WAN, the world's
  images loaded with ``kind load`` (:func:`bring_up`, which can also run while the world's nodes
  start), deleted on exit (and after Ctrl-C).

The node containers and the cluster's network carry meshcert's labels (run id, owner): a run
that is killed leaves them for the world's sweeper (``meshcert sweep``) to remove.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import yaml

from meshcert.errors import EnvironmentProblem, InputError
from meshcert.k8s import chart, cluster, nodeimage
from meshcert.secrets import redact
from meshcert.toolchain import progress
from meshcert.toolchain.components import COMPONENTS
from meshcert.toolchain.paths import charts_dir
from meshcert.world import labels
from meshcert.world.base import ANSWER_REREADS, WorldError, brief_error, wait_for

# kind reads its configuration from a file: meshcert is installed as files, never zipped.
KIND_CONFIG = charts_dir() / "kind-config.yaml"
MESHCERT_NETS = ipaddress.ip_network("10.20.0.0/16")  # the guide's VLAN and every world's VLAN


# ------------------------------------------------------------------------------ configuration
CONFIG_FIX = "start from meshcert/k8s/charts/kind-config.yaml (kind's v1alpha4 Cluster fields)"


def load_config(path: str | os.PathLike = KIND_CONFIG) -> dict:
    """The kind config at ``path``; an :class:`InputError` (one line, exit 2) naming the file when
    it is missing, not YAML or not a mapping."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as e:
        raise InputError("kind config", f"{p} cannot be read ({e.strerror or type(e).__name__})", CONFIG_FIX) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError("kind config", f"{p} is not valid YAML{where}", CONFIG_FIX) from None
    if not isinstance(doc, dict):
        raise InputError("kind config", f"{p} is not a YAML mapping", CONFIG_FIX)
    return doc


def check_config(path: str | os.PathLike = KIND_CONFIG) -> dict:
    """:func:`load_config`, then :func:`config_problems`: every problem in one :class:`InputError` line."""
    doc = load_config(path)
    problems = config_problems(doc)
    if problems:
        raise InputError("kind config", f"{path}: " + "; ".join(problems), CONFIG_FIX)
    return doc


# the fields of kind v0.33's v1alpha4 Node and Networking (kind decodes strictly: another is an error)
NODE_FIELDS = {"role", "image", "labels", "extraMounts", "extraPortMappings", "kubeadmConfigPatches",
               "kubeadmConfigPatchesJSON6902"}
NETWORKING_FIELDS = {"ipFamily", "apiServerPort", "apiServerAddress", "podSubnet", "serviceSubnet",
                     "disableDefaultCNI", "kubeProxyMode", "dnsSearch"}


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
    if not isinstance(nodes, list):
        return [*p, "nodes must be a list"]
    roles = [n.get("role", "control-plane") for n in nodes if isinstance(n, dict)]
    if len(roles) != len(nodes):
        p.append("every node must be a mapping")
    if roles.count("control-plane") != 1:
        p.append(f"exactly one control-plane node wanted, found {roles.count('control-plane')}")
    p += [f"node role {r!r} is neither control-plane nor worker" for r in roles if r not in ("control-plane", "worker")]
    p += [f"unknown field 'nodes[{i}].{k}'" for i, n in enumerate(nodes) if isinstance(n, dict)
          for k in n if k not in NODE_FIELDS]
    for n in nodes:
        if isinstance(n, dict) and n.get("image"):
            p.append("a node names an image: the node image is chosen at run time (never a hard-coded pull)")
        for pm in (n.get("extraPortMappings") or []) if isinstance(n, dict) else []:
            if pm.get("listenAddress", "0.0.0.0") not in ("127.0.0.1", "::1"):
                p.append(f"port mapping {pm} listens beyond loopback")
    net = doc.get("networking") or {}
    if not isinstance(net, dict):
        return [*p, "networking must be a mapping"]
    p += [f"unknown field 'networking.{k}'" for k in net if k not in NETWORKING_FIELDS]
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
    node_image: str | None = None  # None while meshcert's own node image is still to be built


def build_prerequisites() -> list[str]:
    """What this machine lacks to build meshcert's node image (meshcert.k8s.nodeimage); [] = none."""
    missing = []
    if not (shutil.which("go") or os.path.exists("/usr/local/go/bin/go")):
        missing.append("go")
    if not (shutil.which("debootstrap") or os.path.exists("/usr/sbin/debootstrap")):
        missing.append("debootstrap")
    if not shutil.which("gcc"):
        missing.append("gcc")
    return missing


def node_image_availability(client=None, env: Mapping[str, str] | None = None,
                            prerequisites: Callable[[], list[str]] = build_prerequisites) -> Availability:
    """Which node image kind uses here; never pulls. ``MESHCERT_KIND_NODE_IMAGE`` names one that
    must be on the engine (for example a kindest/node the user loaded); otherwise meshcert's own,
    built here from pinned inputs (``meshcert setup --kind``) -- node_image None means "to build"."""
    env = os.environ if env is None else env
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
    local = sorted(t for img in client.images.list(name=nodeimage.NODE_REPO) for t in img.tags)
    missing = prerequisites()
    if missing:
        return Availability(False, f"kind cannot run here: building the node image needs {', '.join(missing)}"
                                   f"{' (an older meshcert node image is on the engine)' if local else ''}")
    return Availability(True, "meshcert's kind node image is built here from pinned inputs "
                              "(meshcert setup --kind; a warm run rebuilds nothing)")


def ensure_node_image(client, env: Mapping[str, str] | None = None) -> str:
    """The node image to run: MESHCERT_KIND_NODE_IMAGE, or meshcert's own, built when missing."""
    a = node_image_availability(client, env)
    if not a.ok:
        raise EnvironmentProblem("kind node image", a.reason)
    return a.node_image or nodeimage.ensure_node_image(client)


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
                      ca_configmap: str, ca_pem: bytes, ca_key: str = "ca.pem",
                      namespace_metadata: Mapping[str, Any] | None = None) -> list[dict]:
    """What ``kubectl apply`` gets: the Namespace (with ``namespace_metadata``: its labels and
    annotations), the auth key Secret (``auth_key`` a :class:`~meshcert.secrets.Secret`), the CA
    ConfigMap, and the chart's manifests placed in the namespace. Never print it: the Secret holds the key."""
    docs: list[dict] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {**(namespace_metadata or {}), "name": namespace}},
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
def effective_config(doc: dict, node_image_is_ours: bool) -> dict:
    """The config kind gets: the user's, plus what meshcert's node image needs
    (:func:`meshcert.k8s.nodeimage.cluster_config_patches`); a foreign node image (a kindest/node)
    only gets kubelet's cgroup v1 switch."""
    if node_image_is_ours:
        return cluster.merge_config(doc, nodeimage.cluster_config_patches())
    return cluster.merge_config(doc, {"kubeadmConfigPatches": ["kind: KubeletConfiguration\nfailCgroupV1: false\n"]})


def api_path(path: str, query: Mapping[str, str] | None = None) -> str:
    """An API path with its query (``/api/v1/namespaces/ns/pods?labelSelector=app%3Da``)."""
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def _verb(args: tuple[str, ...]) -> str:
    """kubectl's command among its arguments (``-n NS get pods`` -> ``get``)."""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        rest = rest[2:] if rest[0] in ("-n", "--namespace", "--context", "--kubeconfig") else rest[1:]
    return rest[0] if rest else ""


class KubectlCluster:
    """What the chart's pod checks (meshcert/checks/helm_pod.py, kind_pod.py, k8s/kindpod.py) ask
    of a cluster, whichever it is: a kind cluster of meshcert's (:class:`KindCluster`) or one the
    user already has (:class:`meshcert.k8s.existing.ExistingCluster`). A subclass says how kubectl
    and helm reach it (:meth:`kubectl_argv`, :meth:`helm`), where its port-forwards answer, the
    addresses its pods' traffic leaves from, its namespaces' names and which images it runs."""

    pull_policy = "Never"  # the chart's images are in the cluster already: nothing is pulled

    def kubectl_argv(self, *args: str) -> list[str]:
        raise NotImplementedError

    def helm(self, *args: str, timeout: float = 300) -> str:
        raise NotImplementedError

    def kubectl_run(self, *args: str, stdin: str | None = None, timeout: float = 180) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of ``kubectl args``; never raises on a non-zero exit."""
        try:
            r = subprocess.run(self.kubectl_argv(*args), input=stdin, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, "", f"kubectl {args[0]}: no answer within {timeout:.0f} s"
        return r.returncode, r.stdout, r.stderr

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 180, check: bool = True) -> str:
        code, out, err = self.kubectl_run(*args, stdin=stdin, timeout=timeout)
        # a read whose format always prints (-o json|yaml) that printed nothing: `docker exec`
        # into the node lost its output (see ANSWER_REREADS in meshcert.world.base): read again
        reads = _verb(args) in ("get", "version") and any(a in ("json", "yaml", "--raw") for a in args)
        for _ in range(ANSWER_REREADS if reads else 0):
            if code != 0 or out.strip():
                break
            code, out, err = self.kubectl_run(*args, stdin=stdin, timeout=timeout)
        if reads and code == 0 and not out.strip():
            raise EnvironmentProblem(f"kubectl {' '.join(args[:3])}", f"printed nothing {ANSWER_REREADS + 1} times "
                                     "(docker exec losing output; look at the engine's load)")
        if check and code != 0:
            raise EnvironmentProblem(f"kubectl {args[0]}", redact(err.strip()[-800:]) or f"exit {code}")
        return out

    def api_get(self, path: str, query: Mapping[str, str] | None = None) -> dict:
        """GET of an API path (``/api/v1/namespaces/NS/pods``, ``query`` its parameters: a
        labelSelector...), the JSON answer: here ``kubectl get --raw`` (any cluster kubectl
        reaches); a kind cluster of meshcert's asks its API server itself (KindCluster.api_get)."""
        out = self.kubectl("get", "--raw", api_path(path, query))
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            raise EnvironmentProblem(f"kubectl get --raw {path}", f"not JSON: {redact(out.strip())[-300:]}") from None

    def apply(self, docs: list[dict]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs, sort_keys=False))

    def helm_install(self, release: str, chart_path: str | os.PathLike, values: dict, namespace: str,
                     timeout: float = 300) -> str:
        """``helm install`` of a chart folder with ``values`` into ``namespace`` (created when
        missing); returns helm's output. Secrets are never among the values (the caller creates
        the auth key Secret itself, as the guide tells a user to)."""
        with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="meshcert-kind-values-", delete=False) as f:
            json.dump(values, f)
        try:
            return self.helm("install", release, str(chart_path), "--namespace", namespace, "--create-namespace",
                             "-f", f.name, timeout=timeout)
        finally:
            os.unlink(f.name)

    # ---------------------------------------------------------------- what differs per cluster
    def background_argv(self, *args: str) -> list[str]:
        """``kubectl args`` to keep running (port-forward, the agent's exec): a shell prints
        ``meshcert-pid <pid>`` of the kubectl first, for :meth:`stop_background`."""
        return ["sh", "-c", 'echo "meshcert-pid $$"; exec "$@"', "sh", *self.kubectl_argv(*args)]

    def stop_background(self, pid: str) -> None:
        """End a kubectl started by :meth:`background_argv` (here: a process of this machine)."""
        try:
            os.kill(int(pid), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass

    def forward_address(self) -> str:
        """The address ``kubectl port-forward`` listens on."""
        return "127.0.0.1"

    def forward_host(self, network: str) -> str:
        """Where this machine reaches the port-forwards (``network``: the world's WAN)."""
        return self.forward_address()

    def forward_port(self, port: int) -> int:
        """The local port a port-forward of the pod's ``port`` listens on."""
        return port

    def egress_ips(self, network: str) -> tuple[str, ...]:
        """The addresses a pod's traffic comes from on the world's WAN ``network`` (its nodes')."""
        raise NotImplementedError

    def namespace_for(self, token: str) -> str:
        """The name of a release's namespace."""
        return f"mc-kind-{token}"

    def namespace_metadata(self) -> dict:
        """Labels and annotations of the namespaces meshcert creates in this cluster."""
        return {}

    def image_ref(self, image: str) -> str:
        """The name the cluster's kubelet knows a meshcert image by."""
        return image


class KindCluster(KubectlCluster):
    """A kind cluster driven by the pinned, unmodified kind binary through meshcert's docker shim
    (meshcert.k8s.cluster: labels, and the engine adapter where --privileged is refused);
    kubectl runs inside its node. Its kubeconfig stays in meshcert's cache, never ~/.kube."""

    def __init__(self, name: str, node_image: str, config: str | os.PathLike = KIND_CONFIG, *,
                 run_id: str | None = None, client=None):
        self.name, self.node_image, self.config = name, node_image, Path(config)
        self.run_id = run_id or name  # the meshcert run the cluster belongs to (names, logs)
        # The label run id of the cluster's containers and network: its own name, so that removing
        # the cluster never touches the world it was started beside (same process, so the sweeper
        # still removes both after a kill).
        self.label_run = name
        self.client = client or docker.from_env(timeout=120)
        self.network = f"{name}-net"
        self.unprivileged: list[str] | None = None
        self.kubeconfig = cluster.kubeconfig_dir() / f"{name}.yaml"
        self.timings: dict[str, float] = {}
        self._api_ctx: tuple[str, ssl.SSLContext] | None = None

    @property
    def node(self) -> str:
        return f"{self.name}-control-plane"

    def _kind(self, *args: str, timeout: float = 600) -> str:
        binary = str(COMPONENTS["kind"].ensure()["kind"])
        r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                           env=cluster.kind_env(self.label_run, self.network, self.unprivileged))
        if r.returncode != 0:
            raise EnvironmentProblem(f"kind {args[0]}", r.stderr.strip()[-1500:] or f"exit {r.returncode}")
        return r.stdout

    def create(self, wait: str = "180s", retain: bool = False) -> KindCluster:
        """Create the cluster; ``retain`` keeps a failed one's node for its logs (delete() still removes it)."""
        doc = check_config(self.config)
        ours = self.node_image.split(":")[0] == nodeimage.NODE_REPO
        if cluster.engine_refuses_privileged(self.client, self.node_image):
            self.unprivileged = cluster.unprivileged_options(cluster.missing_capabilities())
        cfg = cluster.kubeconfig_dir() / f"{self.name}.kind-config.yaml"
        cfg.write_text(yaml.safe_dump(effective_config(doc, ours), sort_keys=False))
        self._kind("create", "cluster", "--name", self.name, "--config", str(cfg), "--image", self.node_image,
                   "--kubeconfig", str(self.kubeconfig), "--wait", wait, *(["--retain"] if retain else []))
        self._wait_default_service_account()
        return self

    # kind's --wait ends when the node is Ready; the controller-manager makes namespace default's
    # service account a moment later, and until then the API server refuses a bare Pod ("error
    # looking up service account default/default": seen in CI). Seconds here; 60 s under load.
    SERVICE_ACCOUNT_WAIT_S = 60.0

    def _wait_default_service_account(self) -> None:
        last = {"err": ""}

        def present() -> bool:
            try:
                self.api_get("/api/v1/namespaces/default/serviceaccounts/default")
            except EnvironmentProblem as e:
                last["err"] = e.one_line()
                return False
            return True
        try:
            wait_for("namespace default's service account `default`", present, self.SERVICE_ACCOUNT_WAIT_S,
                     interval=0.5, describe=lambda: last["err"].strip()[-300:])
        except WorldError as e:
            raise EnvironmentProblem(f"kind cluster {self.name}", f"{e.one_line()} (the node was Ready; the "
                                     "controller-manager makes it)") from None

    def delete(self) -> None:
        """Remove the cluster, its network and kubeconfig; safe to call twice or after a failed create."""
        try:
            self._kind("delete", "cluster", "--name", self.name, "--kubeconfig", str(self.kubeconfig), timeout=180)
        finally:
            labels.remove_run(self.client, self.label_run)
            cluster.remove_kubeconfig(self.name)
            (cluster.kubeconfig_dir() / f"{self.name}.kind-config.yaml").unlink(missing_ok=True)

    def load(self, images: list[str]) -> None:
        """``kind load docker-image`` of every image in one call (one `docker save` of them all,
        one import into the node)."""
        if images:
            self._kind("load", "docker-image", *images, "--name", self.name)

    def api_get(self, path: str, query: Mapping[str, str] | None = None) -> dict:
        """GET of an API path straight from this process to the cluster's API server (on this
        machine's loopback), authenticated as the kubeconfig's admin: no `docker exec` and no
        kubectl process in the node. Pods' waits read the pod this way: a `kubectl get` through
        `docker exec` costs 0.18 CPU-s (bench/results/poll-cost-*.json), this a few ms."""
        server, ctx = self._api()
        url = urllib.parse.urlsplit(server)
        conn = http.client.HTTPSConnection(url.hostname, url.port or 443, context=ctx, timeout=30)
        try:
            conn.request("GET", api_path(path, query), headers={"Accept": "application/json"})
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
        except OSError as e:
            raise EnvironmentProblem(f"kind cluster {self.name}: GET {path}", brief_error(e)) from None
        finally:
            conn.close()
        if resp.status != 200:
            raise EnvironmentProblem(f"kind cluster {self.name}: GET {path}", f"HTTP {resp.status}: {redact(body.strip())[-300:]}")
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            raise EnvironmentProblem(f"kind cluster {self.name}: GET {path}", f"not JSON: {redact(body.strip())[-300:]}") from None

    def _api(self) -> tuple[str, ssl.SSLContext]:
        """The API server's URL and a TLS context for it, from the kubeconfig kind wrote (its CA;
        the admin's client certificate, passed to the context through a file that exists only
        while it is read, in meshcert's cache, 0600)."""
        if self._api_ctx is None:
            try:
                doc = yaml.safe_load(self.kubeconfig.read_text())
                server = doc["clusters"][0]["cluster"]["server"]
                ca = base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
                user = doc["users"][0]["user"]
                pem = base64.b64decode(user["client-certificate-data"]) + b"\n" + base64.b64decode(user["client-key-data"])
            except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError) as e:
                raise EnvironmentProblem(f"kind cluster {self.name}: its kubeconfig {self.kubeconfig}",
                                         f"unreadable ({brief_error(e)})") from None
            ctx = ssl.create_default_context(cadata=ca)
            fd, tmp = tempfile.mkstemp(prefix=f"{self.name}.client-", suffix=".pem", dir=cluster.kubeconfig_dir())
            try:
                os.write(fd, pem)
                os.close(fd)
                ctx.load_cert_chain(tmp)
            finally:
                os.unlink(tmp)
            self._api_ctx = (server, ctx)
        return self._api_ctx

    def kubectl_argv(self, *args: str) -> list[str]:
        """The command line of ``kubectl args`` run inside the node (the node image ships kubectl)."""
        return ["docker", "exec", "-i", self.node, "kubectl", "--kubeconfig=/etc/kubernetes/admin.conf", *args]

    def helm(self, *args: str, timeout: float = 300) -> str:
        """The pinned helm against this cluster (its kubeconfig in meshcert's cache; the API server
        listens on this machine's loopback only: kind-config.yaml's apiServerAddress)."""
        return chart.helm(*args, "--kubeconfig", str(self.kubeconfig), timeout=timeout)

    def background_argv(self, *args: str) -> list[str]:
        # Ending the `docker exec` client does not end what it runs in the node: the kubectl is
        # started by a shell that first prints its pid in the node, and stop_background kills it there.
        argv = self.kubectl_argv(*args)
        at = argv.index("kubectl")
        return [*argv[:at], "sh", "-c", 'echo "meshcert-pid $$"; exec "$@"', "sh", *argv[at:]]

    def stop_background(self, pid: str) -> None:
        subprocess.run(["docker", "exec", self.node, "kill", pid], capture_output=True, timeout=30)

    def forward_address(self) -> str:
        return "0.0.0.0"  # inside the node: its address on the world's WAN is among them

    def forward_host(self, network: str) -> str:
        return self.ip(network)

    def egress_ips(self, network: str) -> tuple[str, ...]:
        return (self.ip(network),)  # the node's ptp CNI masquerades pod traffic to its own address

    def ip(self, network: str) -> str:
        """The node's address on a Docker network it is attached to."""
        ct = self.client.containers.get(self.node)
        return ct.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]

    def connect(self, client, network: str) -> None:
        """Attach the node to a Docker network (the world's WAN), so pods reach the control server."""
        client.networks.get(network).connect(self.node)


def cluster_for(world, config: str | os.PathLike = KIND_CONFIG) -> KindCluster:
    """The (not yet created) kind cluster of ``world``: named after its run (``meshcert-<run id>``:
    the kubeconfig sweep keeps it while the run's containers exist), meshcert's node image."""
    return KindCluster(f"{cluster.WORLD_CLUSTER_PREFIX}{world.run_id}", ensure_node_image(world.client), config,
                       run_id=world.run_id, client=world.client)


def bring_up(c: KindCluster, world) -> KindCluster:
    """Create ``c``, join its node to ``world``'s WAN (the pods reach ``control`` -> toxiproxy and
    the tailnet nodes), and load the world's sidecar and SUT images with one ``kind load``. Needs
    only the world's networks and images, so it can run while the world's nodes start
    (``World.start(beside=...)``). The caller deletes ``c`` whatever happens (``c.delete()`` is safe
    after a failed or half-done create)."""
    swept = cluster.sweep_kubeconfigs(world.client)  # the world's start swept dead runs' nodes already
    if swept:
        progress.say(f"swept kind kubeconfigs of killed runs: {swept}")
    t0 = time.monotonic()
    c.create()
    c.timings["create"] = time.monotonic() - t0
    c.connect(world.client, world.networks["wan"].name)
    t0 = time.monotonic()
    imgs = images_to_load(world.images, world.sut_image)
    c.load(imgs)
    c.timings["load"] = time.monotonic() - t0
    progress.say(f"kind cluster {c.name}: created in {c.timings['create']:.1f} s, "
                 f"{len(imgs)} images kind-loaded in {c.timings['load']:.1f} s")
    return c


@contextmanager
def world_cluster(world, config: str | os.PathLike = KIND_CONFIG, *,
                  started: KindCluster | None = None) -> Iterator[KindCluster]:
    """A kind cluster beside a running world (:func:`bring_up`), or ``started``: the one brought
    up while the world started; deleted on exit (also on Ctrl-C: KeyboardInterrupt unwinds
    through here; a kill -9 leaves labelled containers for the next run's sweep)."""
    c = started or cluster_for(world, config)
    try:
        if started is None:
            bring_up(c, world)
        yield c
    finally:
        c.delete()


def prepare() -> str:
    """Before kind tests run (the plugin, at collection: outside every test's timeout -- a cold
    node image build takes longer than pytest's 600 s): the pinned kind and meshcert's node
    image, built when missing with progress shown; returns the node image."""
    client = docker.from_env(timeout=120)
    with progress.step("kind: the pinned kind binary and the node image (built here when missing)"):
        COMPONENTS["kind"].ensure()
        return ensure_node_image(client)
