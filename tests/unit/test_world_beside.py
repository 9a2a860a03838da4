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


# ---- plugin/fixtures.py KindBeside: the kind cluster brought up while the session world starts

class _Cluster:
    def __init__(self):
        self.deleted = 0

    def delete(self):
        self.deleted += 1


def _kind_beside(monkeypatch, bring_up):
    from meshcert.plugin import fixtures
    made = []

    def cluster_for(world, config):
        made.append(_Cluster())
        return made[-1]
    monkeypatch.setattr(fixtures.kind, "cluster_for", cluster_for)
    monkeypatch.setattr(fixtures.kind, "bring_up", bring_up)
    return fixtures.KindBeside("kind-config.yaml"), made


def test_a_kind_cluster_beside_the_world_is_kept_for_the_module(monkeypatch):
    b, made = _kind_beside(monkeypatch, lambda c, w: c)
    assert b(object()) is b and b.cluster is made[0] and b.error is None and made[0].deleted == 0


def test_a_kind_cluster_that_fails_beside_the_world_is_the_modules_error_not_the_worlds(monkeypatch):
    def bring_up(c, w):
        raise RuntimeError("kind create: node not ready")
    b, made = _kind_beside(monkeypatch, bring_up)
    assert b(object()) is b, "the world's start goes on: no exception out of beside"
    assert isinstance(b.error, RuntimeError) and b.cluster is made[0]
    b.discard()
    b.discard()
    assert made[0].deleted == 1 and b.cluster is None, "deleted once (a half-created cluster too)"


def test_a_ctrl_c_beside_the_world_propagates_and_the_cluster_can_be_discarded(monkeypatch):
    def bring_up(c, w):
        raise KeyboardInterrupt
    b, made = _kind_beside(monkeypatch, bring_up)
    with pytest.raises(KeyboardInterrupt):
        b(object())
    b.discard()
    assert made[0].deleted == 1
