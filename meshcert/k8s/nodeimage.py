"""The kind node image, built here from pinned inputs: no registry, no BuildKit, no kindest/node.

Two stages, each a local image tagged by a hash of its inputs (a warm run builds nothing):

``meshcert/kind-base:<hash>`` -- kind's base image, assembled the way kind's
``images/base/Dockerfile`` does, from
- Debian :data:`NODE_SUITE` (kind v0.33's base is trixie), ``debootstrap --variant=minbase`` from
  this machine's configured mirror, with kind's package list (:data:`NODE_PACKAGES`) plus
  Debian's containerd, runc and CNI plugins (kind builds those from source; Debian's are pinned
  by the suite);
- kind's base files (``images/base/files/``: entrypoint, systemd units, containerd config) from
  the pinned kind module (``meshcert/toolchain/tools/kind``, go.sum-verified), with the
  changes :func:`containerd_config` makes;
- meshcert's node files (``meshcert/k8s/node/``): the step before kind's entrypoint that makes
  cgroup v1 writable and keeps the node from writing host-wide ``/proc/sys`` values, the
  ptp conflist (no CNI DaemonSet), and the unit importing the control-plane images.

``meshcert/kind-node:<hash>`` -- base + Kubernetes:
- kubelet, kubeadm, kubectl, kube-apiserver, kube-controller-manager, kube-scheduler and etcd
  from ``meshcert/toolchain/tools/kubernetes`` (k8s.io/kubernetes, go.sum-verified);
- pause, ``gcc -Os -static`` of the Kubernetes module's ``build/pause/linux/pause.c``;
- the control-plane images, made here ``FROM scratch`` with one static binary each, under the
  names kubeadm asks for (:func:`control_plane_images`), in one docker-archive that the node
  imports into containerd at boot (``ctr images import`` of a local file dials nobody).

The cluster this image runs has no kube-proxy, no CoreDNS and no kindnet: the kind config
patches in :func:`cluster_config_patches` say so to kind and kubeadm.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from meshcert.errors import EnvironmentProblem
from meshcert.toolchain import components, paths, progress

# under their old local names: the node image tag hashes the source of the functions that call them
from meshcert.toolchain.images import apt_mirror_and_suite
from meshcert.toolchain.images import image_exists as _exists
from meshcert.toolchain.images import input_hash as _hash

NODE_FILES = Path(__file__).resolve().parent / "node"
NODE_SUITE = "trixie"  # kind v0.33.0's images/base/Dockerfile: debian:trixie-slim
# kind's package list (images/base/Dockerfile) less nfs-common, open-iscsi (storage drivers),
# fuse-overlayfs (rootless nodes) and curl (nothing to fetch here); plus what kind builds from
# source and Debian packages: containerd, runc, the CNI plugins.
NODE_PACKAGES = ["systemd", "conntrack", "iptables", "nftables", "iproute2", "ethtool", "util-linux", "mount",
                 "kmod", "libseccomp2", "pigz", "e2fsprogs", "bash", "ca-certificates", "jq", "procps",
                 "containerd", "runc", "containernetworking-plugins"]
# Values kubelet insists on (k8s.io/component-helpers node/util/sysctl: setupKernelTunables);
# answered from files so that it never writes the host's (meshcert/k8s/node/meshcert-node-init).
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                   "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                   "kernel/keys/root_maxbytes": "25000000"}
BASE_REPO, NODE_REPO = "meshcert/kind-base", "meshcert/kind-node"
# Not io.meshcert.image: toolchain.images.stale_images() would count these as stale.
LABEL = "io.meshcert.kind-image"
ENTRYPOINT = ["/usr/local/bin/meshcert-node-init", "/usr/local/bin/entrypoint", "/sbin/init"]


# ------------------------------------------------------------------------------ pinned modules
def module_dir(tool: str, module: str, version: str) -> Path:
    """The extracted source of ``module@version``, downloaded through the Go module proxy and
    checked against the go.sum of ``meshcert/toolchain/tools/<tool>``."""
    env = dict(os.environ, GOFLAGS="-mod=readonly")
    r = subprocess.run([components._go(), "mod", "download", "-json", f"{module}@{version}"], capture_output=True,
                       text=True, cwd=str(components.COMPONENTS[tool].module_dir), env=env)
    try:
        info = json.loads(r.stdout)
    except json.JSONDecodeError:
        info = {}
    if r.returncode != 0 or not info.get("Dir") or info.get("Error"):
        raise EnvironmentProblem(f"go mod download {module}@{version}",
                                 (info.get("Error") or r.stderr.strip())[-800:] or f"exit {r.returncode}",
                                 "the Go module proxy must answer (or the module be in the Go module cache)")
    return Path(info["Dir"])


def kind_files() -> Path:
    return module_dir("kind", "sigs.k8s.io/kind", components.COMPONENTS["kind"].version) / "images" / "base" / "files"


def kubernetes_source() -> Path:
    return module_dir("kubernetes", "k8s.io/kubernetes", components.COMPONENTS["kubernetes"].version)


def kubeadm_constants(src: Path) -> dict[str, str]:
    """The image versions kubeadm asks for, read from its source (cmd/kubeadm/app/constants)."""
    text = (src / "cmd" / "kubeadm" / "app" / "constants" / "constants.go").read_text()
    out = {}
    for name in ("DefaultEtcdVersion", "PauseVersion"):
        m = re.search(rf'^\s*{name}\s*=\s*"([^"]+)"', text, re.M)
        if not m:
            raise EnvironmentProblem("kind node image", f"{name} not found in kubeadm's constants.go",
                                     "the pinned Kubernetes changed its layout: update meshcert/k8s/nodeimage.py")
        out[name] = m.group(1)
    return out


def control_plane_images(k8s_version: str, consts: dict[str, str]) -> dict[str, tuple[str, str]]:
    """image name -> (binary, path in the image); the names kubeadm's static pods and
    containerd's sandbox use, so nothing is ever pulled."""
    r = "registry.k8s.io"
    return {
        f"{r}/kube-apiserver:{k8s_version}": ("kube-apiserver", "usr/local/bin/kube-apiserver"),
        f"{r}/kube-controller-manager:{k8s_version}": ("kube-controller-manager", "usr/local/bin/kube-controller-manager"),
        f"{r}/kube-scheduler:{k8s_version}": ("kube-scheduler", "usr/local/bin/kube-scheduler"),
        f"{r}/etcd:{consts['DefaultEtcdVersion']}": ("etcd", "usr/local/bin/etcd"),
        f"{r}/pause:{consts['PauseVersion']}": ("pause", "pause"),
    }


# ------------------------------------------------------------------------------ kind's files, adapted
def containerd_config(kind_toml: str, pause_image: str) -> str:
    """kind's /etc/containerd/config.toml with the changes this node needs, each one checked to
    apply (a kind bump that moves a line fails here, not in a cluster)."""
    changes = [
        # Lowering a process's OOM score needs CAP_SYS_RESOURCE, which a node without
        # --privileged lacks on machines whose bounding set lacks it (ours): every pod sandbox
        # then fails ("can't get final child's PID from pipe: EOF"). Harmless with it.
        ("restrict_oom_score_adj = false", "restrict_oom_score_adj = true"),
        # kubeadm's pause (the one in the image); kind writes its own build's.
        ('sandbox_image = "registry.k8s.io/pause:3.10"', f'sandbox_image = "{pause_image}"'),
    ]
    out = kind_toml
    for old, new in changes:
        if old not in out:
            raise EnvironmentProblem("kind node image", f"kind's containerd config has no line {old!r}",
                                     "the pinned kind changed it: update meshcert/k8s/nodeimage.py")
        out = out.replace(old, new)
    # Debian's CNI plugins live in /usr/lib/cni (kind builds its own into /opt/cni/bin).
    return out + ('\n[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "/usr/lib/cni"\n'
                  '  conf_dir = "/etc/cni/net.d"\n')


def cri_base_spec(ctr_spec: str) -> str:
    """kind's cri-base.json: containerd's default OCI spec with kind's product-files hook and no
    rlimits (kind's Dockerfile does this with jq)."""
    spec = json.loads(ctr_spec)
    hooks = spec.setdefault("hooks", {}).setdefault("createContainer", [])
    hooks.append({"path": "/kind/bin/mount-product-files.sh"})
    spec.get("process", {}).pop("rlimits", None)
    return json.dumps(spec, indent=2) + "\n"


def cluster_config_patches() -> dict:
    """What a kind cluster on this node image needs in its config (merged by
    meshcert.k8s.cluster.effective_config): no kindnet, no kube-proxy, no CoreDNS (their images
    are not in the node), and kubelet allowed on a cgroup v1 engine."""
    return {
        "networking": {"disableDefaultCNI": True, "kubeProxyMode": "none"},
        "kubeadmConfigPatches": [
            # kind skips preflight (and addon/kube-proxy with kubeProxyMode none) itself; the
            # list is replaced whole by this patch, so it names them again.
            "kind: InitConfiguration\nskipPhases:\n  - preflight\n  - addon/kube-proxy\n  - addon/coredns\n",
            # kubelet 1.37 refuses cgroup v1 unless told (our engine runs v1; harmless on v2).
            "kind: KubeletConfiguration\nfailCgroupV1: false\n",
            # One node, one controller-manager, one scheduler: no leader election (each renews a
            # Lease every 2 s, through the API server into etcd, for the cluster's whole life).
            # kind's own extraArgs (enable-hostpath-provisioner) are named again: the list is
            # replaced whole.
            "kind: ClusterConfiguration\n"
            "controllerManager:\n  extraArgs:\n"
            "    - name: leader-elect\n      value: \"false\"\n"
            "    - name: enable-hostpath-provisioner\n      value: \"true\"\n"
            "scheduler:\n  extraArgs:\n"
            "    - name: leader-elect\n      value: \"false\"\n",
        ],
    }


# ------------------------------------------------------------------------------ hashes
def _tree_digest(root: Path) -> list[str]:
    return [f"{p.relative_to(root)}:{oct(p.stat().st_mode & 0o777)}:{hashlib.sha256(p.read_bytes()).hexdigest()}"
            for p in sorted(root.rglob("*")) if p.is_file()]


def _gcc_version() -> str:
    gcc = shutil.which("gcc")
    if not gcc:
        raise EnvironmentProblem("gcc", "not installed (the pause binary is compiled here)", "apt-get install gcc libc6-dev")
    return subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


@dataclass(frozen=True)
class Plan:
    """Every input of the two images, and the tags they hash to: the tags hash the inputs'
    contents and the source of the functions that assemble each stage (an edit elsewhere in
    this module rebuilds nothing)."""
    kind_files: Path
    k8s_src: Path
    k8s_version: str
    images: dict[str, tuple[str, str]]
    pause_image: str
    base_tag: str
    node_tag: str


def plan() -> Plan:
    kf = kind_files()
    src = kubernetes_source()
    k8s = components.COMPONENTS["kubernetes"]
    consts = kubeadm_constants(src)
    images = control_plane_images(k8s.version, consts)
    pause_image = next(n for n, (b, _) in images.items() if b == "pause")
    base = _hash("base", NODE_SUITE, *NODE_PACKAGES, *_tree_digest(kf), *_tree_digest(NODE_FILES),
                 json.dumps(KUBELET_SYSCTLS, sort_keys=True), json.dumps(ENTRYPOINT), pause_image, LABEL,
                 *(inspect.getsource(f) for f in (_build_base, _assemble_base, containerd_config, cri_base_spec)))
    base_tag = f"{BASE_REPO}:{base}"
    pause_c = (src / "build" / "pause" / "linux" / "pause.c").read_bytes()
    node = _hash("node", base_tag, k8s.version, k8s.key, pause_c, _gcc_version(), json.dumps(images, sort_keys=True),
                 *(inspect.getsource(f) for f in (_build_node, _build_pause, write_image_archive)))
    return Plan(kf, src, k8s.version, images, pause_image, base_tag, f"{NODE_REPO}:{node}")


# ------------------------------------------------------------------------------ building
def ensure_node_image(c: docker.DockerClient) -> str:
    """The node image's tag, built first when missing (progress shown; locked so that two
    meshcert processes build it once)."""
    p = plan()
    if _exists(c, p.node_tag):
        return p.node_tag
    with paths.cache_lock("image-kind-node", progress.say):
        if _exists(c, p.node_tag):
            return p.node_tag
        if not _exists(c, p.base_tag):
            _build_base(c, p)
        _build_node(c, p)
    return p.node_tag


def _run(cmd: list[str], what: str, **kw) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise EnvironmentProblem(what, f"`{' '.join(cmd)}` exited {r.returncode}: {(r.stderr or r.stdout).strip()[-800:]}")
    return r.stdout


def _install(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def _build_base(c: docker.DockerClient, p: Plan) -> None:
    mirror, _ = apt_mirror_and_suite()
    if not shutil.which("debootstrap") and not os.path.exists("/usr/sbin/debootstrap"):
        raise EnvironmentProblem("debootstrap", "not installed", "apt-get install debootstrap")
    root = Path(tempfile.mkdtemp(prefix="meshcert-kind-rootfs-", dir=paths.cache_dir()))
    try:
        with progress.step(f"building {p.base_tag} (debootstrap {NODE_SUITE} minbase + kind's base files "
                           f"from sigs.k8s.io/kind {components.COMPONENTS['kind'].version})"):
            progress.run_streamed(["debootstrap", "--variant=minbase", f"--include={','.join(NODE_PACKAGES)}",
                                   NODE_SUITE, str(root), mirror], "debootstrap (kind node)",
                                  log_path=str(paths.cache_dir() / "debootstrap-kind-node.log"))
            _assemble_base(root, p)
            tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            repo, tag = p.base_tag.split(":")
            c.api.import_image_from_stream(tar.stdout, repository=repo, tag=tag,
                                           changes=[f"LABEL {LABEL}=base", "ENV container=docker",
                                                    f"ENTRYPOINT {json.dumps(ENTRYPOINT)}"])
            tar.wait()
            if tar.returncode != 0 or not _exists(c, p.base_tag):
                raise EnvironmentProblem("kind node image", f"docker import of {p.base_tag} failed")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _assemble_base(root: Path, p: Plan) -> None:
    """kind's base Dockerfile steps on a debootstrapped tree (no container runs)."""
    kf = p.kind_files
    for sub in ("usr/share/doc", "usr/share/man", "usr/share/locale", "var/cache/apt/archives", "var/lib/apt/lists"):
        shutil.rmtree(root / sub, ignore_errors=True)
    # COPY --chmod lines of kind's Dockerfile: executables 0755, the rest 0644.
    for f in sorted(kf.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(kf)
        top = rel.parts[0]
        if top == "LICENSES":
            dest, mode = root / "LICENSES" / rel.name, 0o644
        elif top == "usr" or rel.parts[:2] == ("kind", "bin"):
            dest, mode = root / rel, 0o755
        else:
            dest, mode = root / rel, 0o644
        _install(f, dest, mode)
    # kind's RUN: trim systemd for a container, init link.
    (root / "lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service").unlink(missing_ok=True)
    for pattern in ("lib/systemd/system/multi-user.target.wants/*", "etc/systemd/system/*.wants/*",
                    "lib/systemd/system/local-fs.target.wants/*", "lib/systemd/system/sockets.target.wants/*udev*",
                    "lib/systemd/system/sockets.target.wants/*initctl*", "lib/systemd/system/basic.target.wants/*"):
        for x in root.glob(pattern):
            x.unlink()
    with open(root / "etc/systemd/journald.conf", "a") as f:
        f.write("ReadKMsg=no\n")
    init = root / "sbin/init"
    if init.exists() or init.is_symlink():
        init.unlink()
    init.symlink_to("/usr/lib/systemd/systemd")
    # kind's units start /usr/local/bin/containerd (kind builds it); Debian's is in /usr/bin.
    for b in ("containerd", "ctr", "containerd-shim-runc-v2"):
        link = root / "usr/local/bin" / b
        link.unlink(missing_ok=True)
        link.symlink_to(f"/usr/bin/{b}")
    # containerd: kind's config with this node's changes, and kind's base OCI spec.
    conf = root / "etc/containerd/config.toml"
    conf.write_text(containerd_config(conf.read_text(), p.pause_image))
    (root / "etc/containerd/cri-base.json").write_text(
        cri_base_spec(_run(["chroot", str(root), "/usr/bin/ctr", "oci", "spec"], "ctr oci spec")))
    # meshcert's node files.
    _install(NODE_FILES / "meshcert-node-init", root / "usr/local/bin/meshcert-node-init", 0o755)
    _install(NODE_FILES / "meshcert-images.service", root / "etc/systemd/system/meshcert-images.service", 0o644)
    _install(NODE_FILES / "12-meshcert.conf", root / "etc/systemd/system/kubelet.service.d/12-meshcert.conf", 0o644)
    _install(NODE_FILES / "10-meshcert-ptp.conflist", root / "etc/cni/net.d/10-meshcert-ptp.conflist", 0o644)
    for key, value in KUBELET_SYSCTLS.items():
        f = root / "kind/meshcert/sysctl" / key
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(value + "\n")
    (root / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
    systemctl = ["systemctl", f"--root={root}"]
    _run([*systemctl, "enable", "kubelet.service", "containerd.service", "undo-mount-hacks.service",
          "meshcert-images.service"], "systemctl enable (kind node)")
    _run([*systemctl, "mask", "systemd-binfmt.service"], "systemctl mask (kind node)")


def _build_pause(src: Path, out: Path, version: str) -> None:
    _run([shutil.which("gcc") or "gcc", "-Os", "-static", "-Wall", "-Werror", f"-DVERSION=v{version}",
          "-o", str(out), str(src / "build" / "pause" / "linux" / "pause.c")], "gcc pause.c")
    _run(["strip", str(out)], "strip pause")


def write_image_archive(images: dict[str, tuple[str, str]], binaries: dict[str, Path], out: Path) -> None:
    """A docker-archive (``docker save`` layout) of one-layer ``FROM scratch`` images, each
    holding one static binary; ``ctr images import`` reads it."""
    manifest = []
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as arc:
        def add(name: str, data: bytes | Path) -> None:
            ti = tarfile.TarInfo(name)
            ti.mtime, ti.mode = 0, 0o644
            if isinstance(data, Path):
                ti.size = data.stat().st_size
                with open(data, "rb") as f:
                    arc.addfile(ti, f)
            else:
                ti.size = len(data)
                arc.addfile(ti, io.BytesIO(data))

        for ref, (binary, inside) in sorted(images.items()):
            with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".layer") as layer:
                with tarfile.open(fileobj=layer, mode="w", format=tarfile.GNU_FORMAT) as lt:
                    parts = inside.split("/")
                    for i in range(1, len(parts)):
                        d = tarfile.TarInfo("/".join(parts[:i]))
                        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 0
                        lt.addfile(d)
                    ti = tarfile.TarInfo(inside)
                    ti.mode, ti.mtime, ti.size = 0o755, 0, binaries[binary].stat().st_size
                    with open(binaries[binary], "rb") as f:
                        lt.addfile(ti, f)
                layer.flush()
                h = hashlib.sha256()
                layer.seek(0)
                for chunk in iter(lambda: layer.read(1 << 20), b""):
                    h.update(chunk)
                diff_id = h.hexdigest()
                entry = ["/pause"] if inside == "pause" else None  # kubeadm names the others' commands
                config = {"architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
                          "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Entrypoint": entry},
                          "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
                          "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"meshcert: {binary}"}]}
                cfg = json.dumps(config, sort_keys=True).encode()
                cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
                add(cfg_name, cfg)
                add(f"{diff_id}/layer.tar", Path(layer.name))
                manifest.append({"Config": cfg_name, "RepoTags": [ref], "Layers": [f"{diff_id}/layer.tar"]})
        add("manifest.json", json.dumps(manifest).encode())


def _build_node(c: docker.DockerClient, p: Plan) -> None:
    bins = components.COMPONENTS["kubernetes"].ensure()
    with progress.step(f"building {p.node_tag} (Kubernetes {p.k8s_version}, control-plane images, pause)"):
        with tempfile.TemporaryDirectory(prefix="meshcert-kind-node-", dir=paths.cache_dir()) as ctx:
            ctxp = Path(ctx)
            pause = ctxp / "pause"
            _build_pause(p.k8s_src, pause, p.pause_image.rsplit(":", 1)[1])
            (ctxp / "kind" / "images").mkdir(parents=True)
            write_image_archive(p.images, {**bins, "pause": pause}, ctxp / "kind" / "images" / "control-plane.tar")
            pause.unlink()
            (ctxp / "kind" / "version").write_text(p.k8s_version + "\n")
            (ctxp / "usr" / "bin").mkdir(parents=True)
            for b in ("kubelet", "kubeadm", "kubectl"):
                _install(bins[b], ctxp / "usr" / "bin" / b, 0o755)
            (ctxp / "Dockerfile").write_text(
                f"FROM {p.base_tag}\nCOPY usr/bin/ /usr/bin/\nCOPY kind/ /kind/\n"
                f"STOPSIGNAL SIGRTMIN+3\nLABEL {LABEL}=node\n")
            try:
                c.images.build(path=ctx, tag=p.node_tag, rm=True, forcerm=True, pull=False)
            except docker.errors.BuildError as e:
                logs = "".join(str(x.get("stream", x.get("error", ""))) for x in e.build_log)[-2000:]
                raise EnvironmentProblem("kind node image", f"docker build failed: {e.msg}\n{logs}") from None


def stale_images(c: docker.DockerClient) -> list[str]:
    """meshcert's kind-base / kind-node images that this checkout's inputs no longer hash to
    (for ``meshcert sweep --images``); a container still using one keeps it."""
    p = plan()
    keep = {p.base_tag, p.node_tag}
    return sorted(t for img in c.images.list(filters={"label": LABEL}) for t in img.tags
                  if t.split(":")[0] in (BASE_REPO, NODE_REPO) and t not in keep)


def remove_stale_images(c: docker.DockerClient) -> tuple[list[str], list[str]]:
    """(removed, kept because a container uses them) among :func:`stale_images`."""
    removed, kept = [], []
    for tag in stale_images(c):
        try:
            c.images.remove(tag)
            removed.append(tag)
        except docker.errors.APIError as e:
            if e.status_code != 409:
                raise
            kept.append(tag)
    return removed, kept
