"""Every sample in fixtures/policies/ and fixtures/specs/ loads cleanly with the loaders behind
--policy and --spec (engine-free)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshcert.policy import load_policy
from meshcert.spec import load_spec

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
POLICIES = sorted((FIXTURES / "policies").glob("*.hujson"))
SPECS = sorted((FIXTURES / "specs").glob("*.yaml"))


def test_there_are_samples_of_each():
    assert POLICIES and SPECS, f"no samples under {FIXTURES}"
    others = [p.name for d in ("policies", "specs") for p in (FIXTURES / d).iterdir()
              if p not in (*POLICIES, *SPECS) and p.name != "README.md"]
    assert not others, f"files the loaders are not tried on (name them .hujson / .yaml): {others}"


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_sample_policy_loads(path: Path):
    policy = load_policy(path)
    assert policy.acls, f"{path.name}: a sample policy with no acls section allows everything"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_sample_spec_loads(path: Path):
    conn = load_spec(path)
    assert conn["type"] in ("direct", "headscale", "tailscale")
