"""Local images, tagged by a hash of their inputs so a warm run builds nothing.

No container registry is reachable on our machines, so every image is built here:
- ``meshcert/base``: ``debootstrap --variant=minbase`` of the machine's own Debian suite from
  the mirror already configured in its apt sources (never a host name written in our files),
  imported with ``docker import``.
- ``meshcert/host``: base + meshcert's node agent (banner listeners and a probe API).
- ``meshcert/tailscale``, ``meshcert/headscale``, ``meshcert/toxiproxy``: host + the pinned Go
  binaries (see components.py). Another version of tailscale or headscale is the image named
  ``tailscale@v1.80.3`` here (:func:`versioned`): the same recipe with that version's binaries,
  so its ``meshcert/tailscale:<hash>`` tag differs; it carries the label ``io.meshcert.version``.
- the credential layer's images (vault, server, sshd-host, database, clients): credimages.py.
- ``meshcert/sut-reference``: clients (host + ssh and psql) + the reference SUT runtime.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import docker

from meshcert.errors import EnvironmentProblem
from meshcert.toolchain import components, credimages, paths, progress
from meshcert.toolchain.paths import PACKAGE, cache_dir

BASE_PACKAGES = ["python3", "ca-certificates", "iproute2", "nftables", "iptables", "procps", "tini"]
LABEL = "io.meshcert.image"
VERSION_LABEL = "io.meshcert.version"  # the component version in a tailscale/headscale image


def apt_mirror_and_suite() -> tuple[str, str]:
    """The main Debian mirror URI and suite from this machine's own apt configuration."""
    srcs: list[tuple[str, str]] = []
    d = Path("/etc/apt/sources.list.d")
    for f in sorted(d.glob("*.sources")) if d.exists() else []:
        for stanza in f.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if fields.get("Types", "").split()[:1] == ["deb"] and "URIs" in fields and "Suites" in fields:
                for uri in fields["URIs"].split():
                    srcs.append((uri, fields["Suites"].split()[0]))
    lst = Path("/etc/apt/sources.list")
    if lst.exists():
        for line in lst.read_text().splitlines():
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s", line)
            if m:
                srcs.append((m.group(1), m.group(2)))
    for uri, suite in srcs:
        if "security" not in uri and "-" not in suite:
            return uri, suite
    raise EnvironmentProblem("apt sources", "no Debian mirror found in /etc/apt/sources.list{,.d}",
                             "configure a Debian mirror for apt, or set MESHCERT_BASE_IMAGE to an image with python3")


def input_hash(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:12]


def image_exists(c: docker.DockerClient, tag: str) -> bool:
    try:
        c.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def base_image(c: docker.DockerClient) -> str:
    override = os.environ.get("MESHCERT_BASE_IMAGE")
    if override:
        return override
    _, suite = apt_mirror_and_suite()
    tag = f"meshcert/base:{input_hash(suite, 'minbase', *BASE_PACKAGES)}"
    if image_exists(c, tag):
        return tag
    with paths.cache_lock("image-base", progress.say):
        if not image_exists(c, tag):  # another process may have built it while we waited
            _debootstrap_base(c, tag)
    return tag


def _debootstrap_base(c: docker.DockerClient, tag: str) -> None:
    mirror, suite = apt_mirror_and_suite()
    if not shutil.which("debootstrap") and not os.path.exists("/usr/sbin/debootstrap"):
        raise EnvironmentProblem("debootstrap", "not installed", "apt-get install debootstrap (meshcert does this when root)")
    root = Path(tempfile.mkdtemp(prefix="meshcert-rootfs-", dir=cache_dir()))
    try:
        with progress.step(f"building {tag} (debootstrap {suite} minbase from the configured mirror)"):
            progress.run_streamed(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                                   suite, str(root), mirror], "debootstrap",
                                  log_path=str(cache_dir() / "debootstrap.log"))
            # Trim what a container never needs.
            for sub in ("usr/share/doc", "usr/share/man", "usr/share/locale", "var/cache/apt/archives",
                        "var/lib/apt/lists"):
                shutil.rmtree(root / sub, ignore_errors=True)
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            img = c.api.import_image_from_stream(tar.stdout, repository=tag.split(":")[0], tag=tag.split(":")[1],
                                                 changes=[f"LABEL {LABEL}=base", 'CMD ["/bin/sh"]'])
            tar.wait()
            if tar.returncode != 0 or not image_exists(c, tag):
                raise EnvironmentProblem("base image", f"docker import failed: {img}", "")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Recipe:
    name: str
    files: dict[str, Path] = field(default_factory=dict)  # path in image -> file on host
    parent: str = "host"
    extra: str = ""  # Dockerfile lines

    def dockerfile(self, parent_tag: str) -> str:
        lines = [f"FROM {parent_tag}", f"LABEL {LABEL}={self.name}"]
        for dest in sorted(self.files):
            lines.append(f"COPY {dest.lstrip('/')} {dest}")
        if self.extra:
            lines.append(self.extra)
        return "\n".join(lines) + "\n"


def versioned(name: str, version: str | None) -> str:
    """The image name of component ``name`` at ``version``: ``name`` itself for the pinned one
    (None or the pinned version), else ``name@version`` (e.g. ``tailscale@v1.80.3``)."""
    comp = components.component(name, version)
    return name if comp.release is None else f"{name}@{comp.release}"


def _split(name: str) -> tuple[str, str | None]:
    base, _, version = name.partition("@")
    return base, version or None


def recipe(name: str) -> Recipe:
    """The recipe of an image name, versioned ones (``tailscale@v1.80.3``) included."""
    base, version = _split(name)
    if version is None:
        return recipes()[name]
    if base not in components.VERSIONED:
        raise EnvironmentProblem(f"image {name}", "only tailscale and headscale images come in other versions", "")
    comp = components.component(base, version)
    r = recipes()[base]
    label = f"LABEL {VERSION_LABEL}={comp.release or comp.version}"
    return Recipe(base, {f"/usr/local/bin/{n}": p for n, p in comp.paths().items()}, r.parent,
                  "\n".join([label, r.extra]) if r.extra else label)


def recipes() -> dict[str, Recipe]:
    bins = {}
    for comp in ("tailscale", "headscale", "toxiproxy", "vault"):
        bins[comp] = components.COMPONENTS[comp]
    def binfiles(comp: str) -> dict[str, Path]:
        return {f"/usr/local/bin/{n}": p for n, p in bins[comp].paths().items()}
    return {
        "host": Recipe("host", {"/opt/meshcert/world/nodeagent.py": PACKAGE / "world" / "nodeagent.py"}, parent="base",
                       extra='ENTRYPOINT ["/usr/bin/tini", "-s", "-g", "--"]'),
        "tailscale": Recipe("tailscale", binfiles("tailscale"),
                            extra="RUN mkdir -p /var/run/tailscale /var/lib/tailscale"),
        "headscale": Recipe("headscale", binfiles("headscale"),
                            extra="RUN mkdir -p /var/lib/headscale /var/run/headscale /etc/headscale"),
        "toxiproxy": Recipe("toxiproxy", binfiles("toxiproxy")),
        # on `clients`: the run lifecycle's tools are Debian's ssh and psql (issue 13)
        # uid 1000 has an account: the chart runs the controller as 1000, and ssh and ssh-keygen
        # refuse to run for a uid with none ("No user exists for uid 1000"); home /tmp, which the
        # chart gives the run lifecycle as an emptyDir (the root filesystem is read-only)
        "sut-reference": Recipe("sut-reference",
                                {"/opt/sut/runtime.py": PACKAGE / "sut" / "reference" / "runtime.py"}, parent="clients",
                                extra="RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp "
                                      "--shell /usr/sbin/nologin sut"),
        # the credential layer (issue 13): credimages.py
        **{name: Recipe(name, binfiles("vault") if name == "vault" else {}, parent=parent, extra=extra)
           for name, (parent, extra) in credimages.recipe_specs().items()},
    }


# Files this large have their digest remembered, keyed by path, size, mtime and inode: hashing
# Vault's 361 MB binary took 6 s of a loaded world's start-up, every session (issue 13). A
# binary is rebuilt into a new file (components.py writes a new folder), which changes the key.
DIGEST_MEMO_MIN = 32 << 20


def _file_digest(p: Path) -> str:
    st = p.stat()
    memo = cache_dir() / "digests" / hashlib.sha256(
        f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}".encode()).hexdigest()[:32]
    if st.st_size >= DIGEST_MEMO_MIN and memo.is_file():
        return memo.read_text().strip()
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if st.st_size >= DIGEST_MEMO_MIN:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(h.hexdigest() + "\n")
        tmp.replace(memo)  # atomic: a concurrent reader sees the whole digest or none
    return h.hexdigest()


def build(c: docker.DockerClient, name: str, built: dict[str, str]) -> str:
    base, version = _split(name)
    if base in ("tailscale", "headscale", "toxiproxy", "vault"):
        components.component(base, version).ensure()  # one clear line when not pinned or not buildable
    r = recipe(name)
    parent = built["base"] if r.parent == "base" else built[r.parent]
    tag = image_tag(r, parent)
    if image_exists(c, tag):
        return tag
    with paths.cache_lock(f"image-{name}", progress.say):
        if not image_exists(c, tag):  # another process may have built it while we waited
            _build_image(c, name, r, r.dockerfile(parent), tag)
    return tag


def image_tag(r: Recipe, parent_tag: str) -> str:
    """``meshcert/<name>:<hash of the Dockerfile and every file copied in>``."""
    df = r.dockerfile(parent_tag)
    return f"meshcert/{r.name}:{input_hash(df, *(d + _file_digest(p) for d, p in sorted(r.files.items())))}"


def _build_image(c: docker.DockerClient, name: str, r, df: str, tag: str) -> None:
    with progress.step(f"building image {tag}"):
        with tempfile.TemporaryDirectory(prefix="meshcert-ctx-") as ctx:
            ctxp = Path(ctx)
            (ctxp / "Dockerfile").write_text(df)
            for dest, src in r.files.items():
                target = ctxp / dest.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
            try:
                c.images.build(path=ctx, tag=tag, rm=True, forcerm=True, pull=False)
            except docker.errors.BuildError as e:
                logs = "".join(str(x.get("stream", x.get("error", ""))) for x in e.build_log)[-2000:]
                raise EnvironmentProblem(f"image {name}", f"docker build failed: {e.msg}\n{logs}", "") from None


# every image a certification of the bundled reference SUT starts, parents first (every
# unversioned recipe: the guide's world, the credential world's targets, clients and Vault, the
# reference SUT); ensure_images builds in this order. `meshcert setup` builds them
# all, in the foreground with its progress lines: built on demand inside an xdist worker, a fresh
# machine's first certify spent ~8 min building Vault with nothing on the screen (its progress
# lines go to the worker's captured output).
CERTIFY_IMAGES = ("host", "tailscale", "headscale", "toxiproxy", *credimages.recipe_specs(), "sut-reference")


def ensure_images(c: docker.DockerClient, names: tuple[str, ...] = ("host", "tailscale", "headscale", "toxiproxy")) -> dict[str, str]:
    """Build what is missing of ``names`` (and their parents); {name: tag}. A versioned name
    (``tailscale@v1.80.3``) is built from that version's binaries (built first if needed)."""
    built = {"base": base_image(c)}
    order = list(CERTIFY_IMAGES)
    order += sorted(n for n in names if n not in order)  # versioned images, after their parent (host)
    for n in order:
        if n in names or any(recipe(m).parent == n for m in names):
            built[n] = build(c, n, built)
    return built


def built_versions(c: docker.DockerClient) -> dict[str, str]:
    """{versioned image name: tag} of every pinned tailscale/headscale version whose binaries are
    built and whose image is on the engine (nothing is built here)."""
    out: dict[str, str] = {}
    host = None
    for name in components.VERSIONED:
        for v in components.pinned_versions(name):
            comp = components.component(name, v)
            if comp.release is None or not comp.present():
                continue
            if host is None:
                host = build(c, "host", {"base": base_image(c)})
            tag = image_tag(recipe(f"{name}@{v}"), host)
            if image_exists(c, tag):
                out[f"{name}@{v}"] = tag
    return out


def stale_images(c: docker.DockerClient) -> list:
    """meshcert's own images that this checkout does not use (older hash tags), oldest first.
    Only ``meshcert/<name>`` images labelled ``io.meshcert.image=<name>`` count: an image built
    FROM one of ours inherits the label but not the name (a user's SUT image is never touched).
    The current ones are computed by :func:`ensure_images` (so this builds what is missing); the
    images of other pinned tailscale/headscale versions whose binaries are built are kept too."""
    keep = set(ensure_images(c, tuple(recipes())).values()) | set(built_versions(c).values())
    stale = []
    for img in c.images.list(filters={"label": LABEL}):
        own = [t for t in img.tags if t.split(":")[0] == f"meshcert/{(img.labels or {}).get(LABEL)}"]
        if own and not set(img.tags) & keep:
            stale.append(img)
    return sorted(stale, key=lambda i: i.attrs.get("Created", ""))


def remove_stale_images(c: docker.DockerClient) -> tuple[list[str], list[str]]:
    """Remove stale images; those a container still uses are kept. Returns (removed, kept)."""
    removed, kept = [], []
    for img in stale_images(c):
        name = (img.tags or [img.short_id])[0]
        try:
            c.images.remove(img.id, noprune=False)
            removed.append(name)
        except docker.errors.APIError as e:  # in use by a container (of a live run)
            kept.append(f"{name} ({e.explanation or e})")
    return removed, kept
