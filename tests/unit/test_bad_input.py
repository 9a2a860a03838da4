"""Bad input ends in one clear error naming the input, exit code 2, and nothing left running."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]  # this checkout (the tests do not ship)

BAD_POLICY = '{ "acls": [ {"action": "accept", "src": ["tag:agent-runtime"] "dst": [] } ] }'


def _certify(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "meshcert.cli", "certify", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=600)


def _one_clear_line(p: subprocess.CompletedProcess, *needles: str) -> str:
    assert p.returncode == 2, p.stderr[-2000:]
    errs = [line for line in p.stderr.splitlines() if line.startswith("meshcert: ")]
    assert len(errs) == 1, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    for n in needles:
        assert n in errs[0], errs[0]
    return errs[0]


def test_malformed_policy_is_refused_before_anything_starts(tmp_path):
    f = tmp_path / "policy.hujson"
    f.write_text(BAD_POLICY)
    line = _one_clear_line(_certify("--policy", str(f)), str(f), "line 1")
    assert "fix:" in line


@pytest.mark.parametrize("text,needle", [
    ("spec:\n  connectivity:\n    type: wireguard\n", "spec.connectivity.type"),
    ("spec:\n  connectivity:\n    type: headscale\n    headscale:\n      authKeySecretRef: k\n", "controlServer"),
    ("spec: [unclosed\n", "not valid YAML"),
])
def test_malformed_spec_is_refused_before_anything_starts(tmp_path, text, needle):
    f = tmp_path / "spec.yaml"
    f.write_text(text)
    _one_clear_line(_certify("--spec", str(f)), str(f), needle)




# ------------------------------------------------------------------ a SUT that cannot be tested: exit 2, "not tested"







