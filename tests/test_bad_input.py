"""Bad input ends in one clear error naming the input, exit code 2, and nothing left running."""

import io
import subprocess
import sys
import tarfile

import pytest

from meshcert.paths import REPO

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


@pytest.mark.engine
@pytest.mark.slow
def test_a_sut_answering_garbage_is_one_clear_error_and_leaves_nothing(tmp_path):
    from meshcert import engine, images
    from meshcert.world import labels
    c = engine.ensure_engine()
    host = images.ensure_images(c, ("host",))["host"]
    server = ("import http.server as h\n"
              "class H(h.BaseHTTPRequestHandler):\n"
              "    def _g(self):\n"
              "        self.send_response(200); self.end_headers(); self.wfile.write(b'<html>garbage</html>')\n"
              "    do_GET = do_POST = _g\n"
              "h.HTTPServer(('0.0.0.0', 8080), H).serve_forever()\n")
    df = f"FROM {host}\nCOPY garbage.py /opt/garbage.py\nCMD [\"python3\", \"/opt/garbage.py\"]\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("Dockerfile", df), ("garbage.py", server)):
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            tf.addfile(info, io.BytesIO(data.encode()))
    buf.seek(0)
    tag = "meshcert/test-garbage-sut:1"
    c.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True, labels={images.LABEL: "test-garbage-sut"})
    from tests.test_leaks import _free_vlan
    p = _certify("--sut-image", tag, "--report-dir", str(tmp_path / "report"),
                 env_extra={"MESHCERT_VLAN": _free_vlan()})
    _one_clear_line(p, "SUT in pod", "non-JSON")
    import json
    run = json.loads((tmp_path / "report" / "world.json").read_text())["run"]
    left = labels.leftovers(c, run)
    assert left == {"containers": [], "networks": [], "volumes": []}, f"the aborted run left {left}"
