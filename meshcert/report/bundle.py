"""The result bundle of a certification: one ``meshcert-results-<timestamp>.tar.gz`` to attach
to a release (as Sonobuoy's users attach theirs).

``certify`` writes it into the run's report folder. It holds, under ``meshcert-results-<ts>/``:
results.json, junit.xml, report.md, report.html, world.json, the logs of failing clauses
(``logs/``), replay files of failed scenarios (``replays/``), the clause catalog the run used
(clauses.yaml, so the summary reads the same with any checkout) and ``manifest.json``: the
versions of every component (tailscale, headscale, toxiproxy, helm, kind as pinned in
meshcert/toolchain/tools/*/go.mod; meshcert, Python, Go, the engine) and the SUT image's digest.

Every text file is passed through :func:`meshcert.secrets.redact` once more on its way in
(results and logs are redacted when written; this is the belt to those braces).

    path = write_bundle(Path("reports/20261201-150549"), sut_image=None)
    doc = read_bundle(path)   # {"results", "manifest", "catalog_text", "members"}
"""

from __future__ import annotations

import io
import json
import platform
import subprocess
import tarfile
import time
from importlib.metadata import version
from pathlib import Path

from meshcert.errors import InputError
from meshcert.report.catalog import default_path
from meshcert.secrets import redact
from meshcert.toolchain import components, engine
from meshcert.toolchain.paths import source_tree

PREFIX = "meshcert-results-"
SUFFIX = ".tar.gz"
# Report-folder entries that go into the bundle (logs/ and replays/ with everything under them).
TOP_FILES = ("results.json", "junit.xml", "report.md", "report.html", "world.json", "property-examples.jsonl")
TREES = ("logs", "replays")
MAX_FILE_BYTES = 20 << 20  # a runaway log is cut, never the bundle refused (20 MiB per file)


def meshcert_version() -> str:
    try:
        v = version("meshcert")
    except Exception:
        v = "?"
    tree = source_tree()  # a checkout's commit is stamped; an installed wheel has only its version
    if tree is None:
        return v
    try:
        rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if rev.returncode == 0 and rev.stdout.strip():
            dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            v += f" (git {rev.stdout.strip()}{', with local changes' if dirty else ''})"
    except (OSError, subprocess.SubprocessError):
        pass
    return v


def component_versions(client=None) -> dict[str, str]:
    """Every component's version: the pinned Go tools (from meshcert/toolchain/tools/*/go.mod), meshcert, Python,
    Go and the engine. What cannot be read is "unavailable (why)", never left out."""
    out: dict[str, str] = {}
    for name, comp in components.COMPONENTS.items():
        try:
            out[name] = comp.version
        except OSError as e:
            out[name] = f"unavailable ({e.strerror})"
    out["meshcert"] = meshcert_version()
    out["python"] = f"{platform.python_implementation()} {platform.python_version()}"
    try:
        out["go"] = components.go_version()
    except Exception as e:
        out["go"] = f"unavailable ({type(e).__name__})"
    try:
        if client is None:
            client = engine.ensure_engine(install=False)
        v = client.version()
        out["engine"] = f"Docker {v.get('Version')} (API {v.get('ApiVersion')})"
    except Exception as e:
        out["engine"] = f"unavailable ({type(e).__name__})"
    return out


def image_identity(client, image: str | None) -> dict:
    """{"image", "id", "repo_digests"} of an image on the engine (docker inspect Id/RepoDigests)."""
    if not image:
        return {"image": None}
    try:
        attrs = client.images.get(image).attrs
        return {"image": image, "id": attrs.get("Id"), "repo_digests": attrs.get("RepoDigests") or []}
    except Exception as e:
        return {"image": image, "id": None, "repo_digests": [], "error": f"not on this engine ({type(e).__name__})"}


def _engine():
    try:
        return engine.ensure_engine(install=False)
    except Exception:
        return None


def bundle_name(ts: float | None = None) -> str:
    return f"{PREFIX}{time.strftime('%Y%m%d-%H%M%S', time.localtime(ts))}{SUFFIX}"


def _members(report_dir: Path) -> list[Path]:
    files = [report_dir / f for f in TOP_FILES if (report_dir / f).is_file()]
    for tree in TREES:
        if (report_dir / tree).is_dir():
            files += sorted(p for p in (report_dir / tree).rglob("*") if p.is_file())
    return files


def write_bundle(report_dir: str | Path, *, sut_image: str | None = None, client=None,
                 versions: dict | None = None, catalog_path: Path | None = None, ts: float | None = None) -> Path:
    """Write the bundle into ``report_dir`` and return its path. ``sut_image``: the image that
    was certified (None: the bundled reference SUT, whose tag world.json names)."""
    d = Path(report_dir)
    ts = time.time() if ts is None else ts
    client = client if client is not None else _engine()
    world = {}
    try:
        world = json.loads((d / "world.json").read_text())
    except (OSError, ValueError):
        pass
    sut = sut_image or (world.get("images") or {}).get("sut-reference")
    manifest = {
        "format": 1,
        "created": ts,
        "versions": versions if versions is not None else component_versions(client),
        "sut": {**(image_identity(client, sut) if client is not None else {"image": sut, "id": None}),
                "reference": not sut_image},
        "images": {k: v for k, v in (world.get("images") or {}).items()},
        "files": [],
    }
    name = bundle_name(ts)
    root = name[: -len(SUFFIX)]
    out = d / name
    tmp = out.with_name(out.name + ".tmp")
    catalog_path = catalog_path or default_path()
    with tarfile.open(tmp, "w:gz") as tf:
        def add(arcname: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"{root}/{arcname}")
            info.size, info.mtime, info.mode = len(data), int(ts), 0o644
            tf.addfile(info, io.BytesIO(data))
            manifest["files"].append(arcname)

        for p in _members(d):
            raw = p.read_bytes()[:MAX_FILE_BYTES]
            add(p.relative_to(d).as_posix(), redact(raw.decode("utf-8", errors="replace")).encode())
        if catalog_path.is_file():
            add("clauses.yaml", redact(catalog_path.read_text(encoding="utf-8")).encode())
        add("manifest.json", redact(json.dumps(manifest, indent=1)).encode())
    tmp.rename(out)
    return out


def read_bundle(path: str | Path) -> dict:
    """{"results", "manifest", "catalog_text", "members"} of a bundle; InputError naming the file
    when it is not one. Nothing is extracted to disk."""
    p = Path(path)
    what = str(p)
    try:
        tf = tarfile.open(p, "r:*")
    except FileNotFoundError:
        raise InputError(what, "the file does not exist", "give a meshcert-results-*.tar.gz that certify wrote") from None
    except (tarfile.TarError, OSError) as e:
        raise InputError(what, f"not a tar archive ({e})", "give a meshcert-results-*.tar.gz that certify wrote") from None
    with tf:
        files = {}
        for m in tf.getmembers():
            if not m.isfile():
                continue
            rel = m.name.split("/", 1)[1] if "/" in m.name else m.name
            if rel in ("results.json", "manifest.json", "clauses.yaml"):
                f = tf.extractfile(m)
                files[rel] = f.read() if f else b""
        members = [m.name for m in tf.getmembers() if m.isfile()]
    if "results.json" not in files:
        raise InputError(what, "no results.json in it", "give a meshcert-results-*.tar.gz that certify wrote")
    try:
        results = json.loads(files["results.json"])
        manifest = json.loads(files.get("manifest.json") or b"{}")
    except ValueError as e:
        raise InputError(what, f"results.json or manifest.json is not valid JSON ({e})", "") from None
    if not isinstance(results, dict) or not isinstance(results.get("clauses"), dict):
        raise InputError(what, "its results.json has no 'clauses' object", "give a bundle that certify wrote")
    return {"results": results, "manifest": manifest if isinstance(manifest, dict) else {},
            "catalog_text": files["clauses.yaml"].decode("utf-8", errors="replace") if "clauses.yaml" in files else None,
            "members": members}

