"""The VLAN reservations of meshcert's own engine tests (tests/common/engine.py): two workers or
two sessions on one engine never get the same /24 between looking at the engine and creating the
network. Engine-free: only the reservation files."""

from __future__ import annotations

import os

from meshcert.world import labels
from tests.common import engine


def test_a_reserved_vlan_is_not_handed_out_twice_and_a_range_is_all_or_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHCERT_CACHE", str(tmp_path))
    assert engine._reserve(range(40, 42))
    assert not engine._reserve(range(41, 43)), "41 is ours already: a second caller must not get it"
    assert not (tmp_path / "vlans" / "10.20.42").exists(), "a refused range leaves nothing reserved"
    (tmp_path / "vlans" / "10.20.50").write_text(labels.owner_token(os.getppid()))  # a live process's
    assert not engine._reserve(range(50, 51))


def test_a_dead_processs_reservation_is_free_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHCERT_CACHE", str(tmp_path))
    (tmp_path / "vlans").mkdir()
    (tmp_path / "vlans" / "10.20.60").write_text(f"{labels.owner_token().rsplit(':', 2)[0]}:999999999:1")
    assert engine._reserve(range(60, 61))
    assert (tmp_path / "vlans" / "10.20.60").read_text() == labels.owner_token()
