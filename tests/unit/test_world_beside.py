"""World.start(beside=...): what runs beside the nodes (Vault) is waited for, its result kept, its
error the start's error, and the world never removed while it still starts containers (no engine:
the nodes' part is replaced)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from meshcert.world.topology import guide_topology
from meshcert.world.world import World


def _world(monkeypatch, nodes) -> World:
    w = World(topology=guide_topology())
    created = []
    w.client = SimpleNamespace(networks=SimpleNamespace(create=lambda name, **kw: created.append(name) or
                                                         SimpleNamespace(name=name)))
    monkeypatch.setattr(w, "_build_nodes", lambda t: nodes())
    return w


def test_its_result_is_kept_and_the_world_waits_for_it(monkeypatch):
    order = []
    w = _world(monkeypatch, lambda: order.append("nodes"))

    def beside(world):
        assert world.networks, "it starts once the networks exist"
        time.sleep(0.2)
        order.append("beside")
        return "vault"
    w._build(beside)
    assert w.beside == "vault" and order == ["nodes", "beside"]
    assert w.timings["beside"] >= 0.2 and "beside_wait" in w.timings


def test_its_error_is_the_starts_error(monkeypatch):
    w = _world(monkeypatch, lambda: None)

    def beside(world):
        raise RuntimeError("vault would not unseal")
    with pytest.raises(RuntimeError, match="would not unseal"):
        w._build(beside)


def test_a_failing_world_waits_for_it_before_the_error_propagates(monkeypatch):
    done = threading.Event()

    def nodes():
        raise RuntimeError("a node would not join")
    w = _world(monkeypatch, nodes)

    def beside(world):
        time.sleep(0.3)
        done.set()
    with pytest.raises(RuntimeError, match="would not join"):
        w._build(beside)
    assert done.is_set(), "World.start's stop() would have run while Vault's container was still being made"
