"""The world's interface (meshcert/world/interface.py) is the surface the code above the world
uses, and World and its handles really provide it. Engine-free: reads the source, builds no world."""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing
from pathlib import Path

import pytest

from meshcert.world import interface
from meshcert.world.headscale import Headscale
from meshcert.world.node import TailnetNode
from meshcert.world.pod import Pod
from meshcert.world.toxiproxy import Toxiproxy
from meshcert.world.vault import Vault
from meshcert.world.world import World

ROOT = Path(__file__).resolve().parents[2]
# Code above the world that is handed a World (report/ is not: its ``world`` is a dict of figures).
ABOVE = ["meshcert/checks", "meshcert/chaos", "meshcert/property", "meshcert/k8s", "meshcert/replay",
         "meshcert/plugin", "meshcert/cli.py", "conformance", "scenarios"]


def members(proto: type) -> set[str]:
    return set(typing._get_protocol_attrs(proto))  # the names a structural check would compare


def world_attributes() -> dict[str, set[str]]:
    """``name -> files`` for every ``world.name`` / ``steady_world.name`` / ``self.world.name``."""
    used: dict[str, set[str]] = {}
    for root in ABOVE:
        p = ROOT / root
        for f in [p] if p.is_file() else sorted(p.rglob("*.py")):
            for n in ast.walk(ast.parse(f.read_text())):
                if not isinstance(n, ast.Attribute):
                    continue
                v = n.value
                if (isinstance(v, ast.Name) and v.id in ("world", "steady_world")) or (
                        isinstance(v, ast.Attribute) and v.attr == "world" and isinstance(v.value, ast.Name)
                        and v.value.id == "self"):
                    used.setdefault(n.attr, set()).add(str(f.relative_to(ROOT)))
    return used


def test_everything_used_above_the_world_is_in_its_interface():
    api = members(interface.WorldAPI)
    outside = {k: sorted(v) for k, v in world_attributes().items() if k not in api}
    assert not outside, f"used on a World but not in interface.WorldAPI (add it there, or use a member): {outside}"


def test_no_private_name_of_the_world_is_used_above_it():
    private = {k: sorted(v) for k, v in world_attributes().items() if k.startswith("_")}
    assert not private, f"private World names used outside meshcert/world/: {private}"


@pytest.mark.parametrize("proto, impl", [
    (interface.WorldAPI, World), (interface.ControlServer, Headscale), (interface.ProxyServer, Toxiproxy),
    (interface.SecretStore, Vault),
    (interface.TailnetPeer, TailnetNode), (interface.PodHandle, Pod)])
def test_the_world_provides_its_interface(proto, impl):
    if impl is World:
        obj = World()  # makes the run's certs only; touches no engine
        have = set(dir(obj))
    else:
        have = set(dir(impl)) | set(getattr(impl, "__annotations__", {}))
        init = getattr(impl, "__init__", None)
        if init is not None and getattr(init, "__code__", None) is not None:
            have |= {n.attr for n in ast.walk(ast.parse(_source(impl)))
                     if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"}
    missing = sorted(members(proto) - have)
    assert not missing, f"{impl.__name__} lacks {proto.__name__} member(s) {missing}"


def _source(cls: type) -> str:
    return textwrap.dedent(inspect.getsource(cls))
