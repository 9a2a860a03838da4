"""kind clusters on the shared Docker engine: the engine adapter, the effective kind config,
and what makes a cluster removable after a kill.

The pinned kind binary is never modified. It runs ``docker`` from ``PATH``; meshcert puts its
own small ``docker`` first on that ``PATH`` (:func:`write_shim`), which hands every call to the
real one after two adjustments:

- ``docker run`` and ``docker network create`` get meshcert's labels (run id, owner), so the
  world's sweeper (:mod:`meshcert.world.labels`) removes the nodes and network of a killed run;
- only where the engine refuses ``--privileged`` (:func:`engine_refuses_privileged`): ``run
  --privileged`` becomes ``--cap-add=ALL`` less the capabilities missing from this machine's
  bounding set, ``systempaths=unconfined`` and ``/dev/kmsg``; ``exec --privileged`` runs with
  the container's own capabilities.

Why the second one: Docker 20.10 (Debian 12's ``docker.io``) grants a privileged container
every capability it knows, and runc cannot grant one that the engine's own bounding set lacks
(``unable to apply caps: operation not permitted``). Our sandboxes lack CAP_SYS_RESOURCE.
Docker >= 23 (moby ``oci/caps``: ``GetAllCapabilities`` is the daemon's own effective set) and
podman (``capabilities.BoundingSet()``) grant only what they have; on such an engine, or where
``--privileged`` works, the shim only labels.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import time
from functools import lru_cache
from pathlib import Path

import docker
import docker.errors

from meshcert.toolchain import paths
from meshcert.world import labels

# capability number -> name (linux/capability.h), for the ones a bounding set can lack
CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
        "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
        "CHECKPOINT_RESTORE"]
CLUSTER_LABEL = "io.x-k8s.kind.cluster"  # kind's label on its node containers

SHIM = r"""#!/bin/sh
# meshcert's `docker` for the pinned, unmodified kind binary (written by meshcert/k8s/cluster.py,
# which says why). Every call goes to the real docker ($MESHCERT_KIND_DOCKER), with:
# - meshcert's labels ($MESHCERT_KIND_LABELS) on `run` and `network create`;
# - where this engine refuses --privileged ($MESHCERT_KIND_UNPRIVILEGED holds what replaces it):
#   `run --privileged` -> those options; `exec --privileged` -> the container's own capabilities.
[ $# -eq 0 ] && exec "$MESHCERT_KIND_DOCKER"
sub="$1"
shift
for a do
  shift
  if [ "$a" = "--privileged" ] && [ -n "${MESHCERT_KIND_UNPRIVILEGED:-}" ]; then
    case "$sub" in
      run) set -- "$@" $MESHCERT_KIND_UNPRIVILEGED ;;
      exec) ;;
      *) set -- "$@" "$a" ;;
    esac
  else
    set -- "$@" "$a"
  fi
done
case "$sub" in
  run) set -- ${MESHCERT_KIND_LABELS:-} "$@" ;;
  network) if [ "${1:-}" = create ]; then shift; set -- create ${MESHCERT_KIND_LABELS:-} "$@"; fi ;;
esac
exec "$MESHCERT_KIND_DOCKER" "$sub" "$@"
"""


# ------------------------------------------------------------------------------ the engine adapter
def bounding_set(status: str | None = None) -> int:
    text = status if status is not None else Path("/proc/self/status").read_text()
    for line in text.splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    raise ValueError("no CapBnd line in /proc/self/status")


def missing_capabilities(bnd: int | None = None) -> list[str]:
    """The known capabilities this process's bounding set lacks (here: SYS_RESOURCE)."""
    bnd = bounding_set() if bnd is None else bnd
    return [name for i, name in enumerate(CAPS) if not bnd & (1 << i)]


def unprivileged_options(missing: list[str]) -> list[str]:
    """What replaces ``--privileged`` on a node's ``docker run`` where the engine refuses it:
    every capability the machine has, /proc/sys and /sys not masked (the node image's first
    step makes /proc/sys read-only again but for net), and /dev/kmsg (kubelet's OOM watcher)."""
    return ["--cap-add=ALL", *(f"--cap-drop={c}" for c in missing),
            "--security-opt", "systempaths=unconfined", "--device", "/dev/kmsg"]


_verdict: dict[str, bool] = {}


def engine_refuses_privileged(c: docker.DockerClient, image: str) -> bool:
    """Whether this engine fails a ``--privileged`` container (asked once per process, with a
    throw-away container of ``image`` that runs /bin/true without a network)."""
    if image in _verdict:
        return _verdict[image]
    # created, started and removed here whatever happens: `run(remove=True)` removes only a
    # container that ran, and a refused one never runs (it was left behind, for a sweep to find)
    box = None
    try:
        box = c.containers.create(image, entrypoint=["/bin/true"], command=[], privileged=True, network_mode="none",
                                  labels={**labels.labels("kind-probe"), "io.meshcert.kind-probe": "1"})
        box.start()
        box.wait(timeout=60)
        refused = False
    except docker.errors.APIError as e:
        text = str(e)
        if "apply caps" not in text and "operation not permitted" not in text:
            raise
        refused = True
    finally:
        if box is not None:
            try:
                box.remove(force=True)
            except docker.errors.APIError:
                pass  # gone already; the sweep finds anything else by its label
    _verdict[image] = refused
    return refused


def real_docker() -> str:
    shim_root = str(paths.cache_dir() / "kind-shim")
    for d in os.environ.get("PATH", "").split(os.pathsep):
        p = os.path.join(d, "docker")
        if d and not d.startswith(shim_root) and os.access(p, os.X_OK):
            return p
    raise FileNotFoundError("no docker CLI on PATH (kind drives the engine through it)")


def write_shim() -> Path:
    """The shim's folder (content-addressed in the cache), for the front of kind's PATH."""
    d = paths.cache_dir() / "kind-shim" / hashlib.sha256(SHIM.encode()).hexdigest()[:12]
    f = d / "docker"
    if not f.exists():
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "docker.tmp"
        tmp.write_text(SHIM)
        tmp.chmod(0o755)
        tmp.rename(f)
    return d


def kind_env(run_id: str, network: str, unprivileged: list[str] | None, base: dict | None = None) -> dict:
    """The environment of one kind call: the shim first on PATH, the run's labels, the docker
    provider on a network of the run's own."""
    env = dict(os.environ if base is None else base)
    lab = labels.labels(run_id)
    env.update({
        "PATH": f"{write_shim()}{os.pathsep}{env.get('PATH', '')}",
        "MESHCERT_KIND_DOCKER": real_docker(),
        "MESHCERT_KIND_LABELS": " ".join(f"--label={k}={v}" for k, v in sorted(lab.items())),
        "MESHCERT_KIND_UNPRIVILEGED": " ".join(unprivileged or []),
        "KIND_EXPERIMENTAL_PROVIDER": "docker",
        "KIND_EXPERIMENTAL_DOCKER_NETWORK": network,
    })
    return env


# ------------------------------------------------------------------------------ config
def merge_config(doc: dict, patches: dict) -> dict:
    """``doc`` with ``patches`` applied: mappings merged, lists extended (kubeadmConfigPatches),
    scalars of ``patches`` winning. ``doc`` is not modified."""
    out = copy.deepcopy(doc)
    for k, v in patches.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_config(out[k], v)
        elif isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = [*out[k], *v]
        else:
            out[k] = copy.deepcopy(v)
    return out


def owned_clusters(c: docker.DockerClient) -> dict[str, str]:
    """kind cluster name -> meshcert run id, for every kind node container meshcert started."""
    out = {}
    for lab in _labels_of(c, [f"{labels.LABEL}=1", CLUSTER_LABEL]):
        out[lab[CLUSTER_LABEL]] = lab.get(labels.RUN, "")
    return out


def _labels_of(c: docker.DockerClient, label_filter: list[str]) -> list[dict]:
    """The labels of every container matching ``label_filter``, from one list call (sparse: a
    container removed meanwhile -- a sweep under way -- cannot fail a per-container inspect)."""
    return [ct.attrs.get("Labels") or {} for ct in c.containers.list(all=True, sparse=True,
                                                                      filters={"label": label_filter})]


@lru_cache(maxsize=1)
def kubeconfig_dir() -> Path:
    d = paths.cache_dir() / "kind-kubeconfig"
    d.mkdir(exist_ok=True)
    return d


def remove_kubeconfig(name: str) -> None:
    (kubeconfig_dir() / f"{name}.yaml").unlink(missing_ok=True)
    shutil.rmtree(kubeconfig_dir() / f"{name}.lock", ignore_errors=True)


# A kind-config file is written a few seconds before `kind create` starts the node container; a
# file older than this with no node container is a dead run's (5 min >> the measured 8-35 s create).
KUBECONFIG_GRACE_S = 300.0
WORLD_CLUSTER_PREFIX = "meshcert-"  # kind.world_cluster names a cluster meshcert-<the world's run id>


def sweep_kubeconfigs(c: docker.DockerClient, now: float | None = None) -> list[str]:
    """Remove the kubeconfigs, effective kind configs and locks in meshcert's cache whose cluster
    has no node container left (a run killed with -9: the world's sweeper removed its node);
    returns the names removed. A world's cluster (meshcert-<run id>) is kept while any container
    of that run exists (its create may be under way); any other is kept while younger than
    KUBECONFIG_GRACE_S."""
    live = set(owned_clusters(c))
    runs = {lab.get(labels.RUN) for lab in _labels_of(c, [f"{labels.LABEL}=1"])}
    now = time.time() if now is None else now
    removed = []
    for f in sorted(kubeconfig_dir().iterdir()):
        name = f.name.split(".", 1)[0]
        if name in live:
            continue
        if name.startswith(WORLD_CLUSTER_PREFIX):
            if name.removeprefix(WORLD_CLUSTER_PREFIX) in runs:
                continue
        elif now - f.stat().st_mtime < KUBECONFIG_GRACE_S:
            continue
        if f.is_dir():
            shutil.rmtree(f, ignore_errors=True)
        else:
            f.unlink(missing_ok=True)
        removed.append(f.name)
    return removed
