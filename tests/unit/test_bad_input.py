"""Bad input ends in one clear error naming the input, exit code 2, and nothing left running."""


import pytest

from tests.common.cli import certify, one_clear_line

BAD_POLICY = '{ "acls": [ {"action": "accept", "src": ["tag:agent-runtime"] "dst": [] } ] }'


def test_malformed_policy_is_refused_before_anything_starts(tmp_path):
    f = tmp_path / "policy.hujson"
    f.write_text(BAD_POLICY)
    line = one_clear_line(certify("--policy", str(f)), str(f), "line 1")
    assert "fix:" in line


@pytest.mark.parametrize("text,needle", [
    ("spec:\n  connectivity:\n    type: wireguard\n", "spec.connectivity.type"),
    ("spec:\n  connectivity:\n    type: headscale\n    headscale:\n      authKeySecretRef: k\n", "controlServer"),
    ("spec: [unclosed\n", "not valid YAML"),
])
def test_malformed_spec_is_refused_before_anything_starts(tmp_path, text, needle):
    f = tmp_path / "spec.yaml"
    f.write_text(text)
    one_clear_line(certify("--spec", str(f)), str(f), needle)




# ------------------------------------------------------------------ a SUT that cannot be tested: exit 2, "not tested"







