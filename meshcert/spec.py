"""An environment spec's `connectivity` block (the guide's "Connectivity Types"), validated.

Accepted files: YAML (or JSON) holding `spec.connectivity`, or `connectivity` at the top.
Malformed input ends in one InputError naming the file and the field, with the fix.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from meshcert.errors import InputError

TYPES = ("direct", "headscale", "tailscale")


def validate_connectivity(conn, what: str) -> dict:
    """The normalised connectivity block; ``None`` (omitted) means direct, as the guide says."""
    if conn is None:
        return {"type": "direct"}
    if not isinstance(conn, dict):
        raise InputError(what, "spec.connectivity must be a mapping", "write `connectivity: {type: direct}` or omit it")
    t = conn.get("type", "direct")
    if t not in TYPES:
        raise InputError(what, f"spec.connectivity.type is {t!r}", f"use one of {', '.join(TYPES)}")
    if t == "direct":
        return {"type": "direct"}
    hs = conn.get("headscale")
    if not isinstance(hs, dict):
        raise InputError(what, f"type {t} needs a spec.connectivity.headscale mapping",
                         "add headscale: {controlServer: ..., authKeySecretRef: ...}")
    if t == "headscale" and not hs.get("controlServer"):
        raise InputError(what, "spec.connectivity.headscale.controlServer is missing or empty",
                         "set it to your headscale URL, e.g. https://headscale.example.com")
    cs = hs.get("controlServer") or ""
    if not isinstance(cs, str) or (cs and not cs.startswith(("http://", "https://"))):
        raise InputError(what, f"spec.connectivity.headscale.controlServer {cs!r} is not an http(s) URL", "")
    if not isinstance(hs.get("authKeySecretRef"), str) or not hs["authKeySecretRef"]:
        raise InputError(what, "spec.connectivity.headscale.authKeySecretRef is missing or empty",
                         "name the Secret that holds the pre-auth key")
    tags = hs.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(x, str) and x.startswith("tag:") for x in tags):
        raise InputError(what, "spec.connectivity.headscale.tags must be a list of 'tag:...' strings", "")
    if not isinstance(hs.get("acceptRoutes", False), bool):
        raise InputError(what, "spec.connectivity.headscale.acceptRoutes must be true or false", "")
    return {"type": t, "headscale": dict(hs)}


def load_spec(path: str | Path) -> dict:
    what = f"spec file {path}"
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(what, "does not exist", "give the path of an environment spec (YAML)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError(what, f"is not valid YAML{where}: {getattr(e, 'problem', e)}", "fix the YAML syntax") from None
    if not isinstance(doc, dict):
        raise InputError(what, "must be a mapping with spec.connectivity (or connectivity)", "")
    if "spec" in doc:
        if not isinstance(doc["spec"], dict):
            raise InputError(what, "spec must be a mapping", "")
        return validate_connectivity(doc["spec"].get("connectivity"), what)
    return validate_connectivity(doc.get("connectivity"), what)
