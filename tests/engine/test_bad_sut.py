"""A bad SUT ends in one clear error naming it, exit code 2, and nothing left running (engine
tests; malformed policy/spec files, refused before anything starts: tests/unit/test_bad_input.py).
"""

import io
import json
import re
import tarfile

import pytest

from meshcert.toolchain import engine, images
from meshcert.world import labels
from tests.common.cli import certify, one_clear_line
from tests.common.engine import free_vlan

# The child certify runs of this module run 2 workers, not certify's default 4: still more than
# one world at once (each stops with the one error, said once), at half the worlds: each is a
# whole guide world started only to be refused (about 8 CPU-s and 40 containers on the shared
# 2 cores of the CI).
CHILD_WORKERS = 2


@pytest.mark.engine
@pytest.mark.slow
def test_a_sut_answering_garbage_is_one_clear_error_and_leaves_nothing(tmp_path):
    """/healthz 200, everything else HTML: found when the world starts the SUT (its read-only
    GET /transcript is not JSON), said once, not tested, exit 2, nothing left."""
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
    p = certify("--sut-image", tag, "--report-dir", str(tmp_path / "report"),
                 env_extra={"MESHCERT_VLAN": free_vlan(count=CHILD_WORKERS),
                            "MESHCERT_CERTIFY_WORKERS": str(CHILD_WORKERS)})
    one_clear_line(p, "SUT in pod", "non-JSON")
    doc = json.loads((tmp_path / "report" / "results.json").read_text())
    assert "non-JSON" in doc["not_tested"]["reason"], doc.get("not_tested")
    assert not [c for c, v in doc["clauses"].items() if v["outcome"] == "failed"], "bad input is not a failed clause"
    assert "Verdict: **not tested**" in (tmp_path / "report" / "report.md").read_text()
    left = labels.leftovers(c, doc["not_tested"]["run"])
    assert left == {"containers": [], "networks": [], "volumes": []}, f"the aborted run left {left}"


# ------------------------------------------------------------------ a SUT that cannot be tested: exit 2, "not tested"

def _vlan() -> str:
    """As many consecutive /24s as the child certify has workers, that no network of the engine holds: never this session's own MESHCERT_VLAN, whose world
    may be running beside the child run (it was: "Pool overlaps" whenever MESHCERT_VLAN was set)."""
    return free_vlan(count=CHILD_WORKERS)  # certify's workers' worlds use MESHCERT_VLAN + 0, + 1, ...


def _assert_not_tested(report, needle: str) -> dict:
    doc = json.loads((report / "results.json").read_text())
    assert doc["clauses"] == {}, "no clause may be recorded, let alone failed"
    assert needle in doc["not_tested"]["reason"], doc["not_tested"]
    md = (report / "report.md").read_text()
    assert "Verdict: **not tested**" in md and "## Not tested" in md and needle in md
    assert "**failed**" not in md and "## Failures" not in md
    assert len(list(report.glob("meshcert-results-*.tar.gz"))) == 1
    return doc


@pytest.mark.engine
def test_a_sut_image_not_on_the_engine_is_refused_before_anything_starts(tmp_path):
    """Engine-light: the engine is only asked whether it has the image; no set-up, no world."""
    image = "meshcert/not-on-this-engine:0"
    p = certify("--sut-image", image, "--report-dir", str(tmp_path / "report"))
    line = one_clear_line(p, image, "is not on this engine", "docker load -i", "docker tag")
    assert "setup:" not in p.stderr and "world mc" not in p.stderr, p.stderr[-2000:]
    assert "certification: not tested" in p.stdout
    _assert_not_tested(tmp_path / "report", image)
    assert line.count(image) >= 1


@pytest.mark.engine
@pytest.mark.slow
def test_a_sut_that_never_answers_healthz_is_not_tested_and_each_world_is_built_once(tmp_path):
    """meshcert's own host image has no CMD: `tini --` prints its usage and exits. certify must
    end after one world per worker (never one per test) with one line naming the pod, the port and the image's command, then the
    last lines of the container's log -- its usage text shown as its log, not as an observation."""
    c = engine.ensure_engine()
    host = images.ensure_images(c, ("host",))["host"]
    p = certify("--sut-image", host, "--sut-port", "8080", "--report-dir", str(tmp_path / "report"),
                 env_extra={"MESHCERT_VLAN": _vlan(), "MESHCERT_CERTIFY_WORKERS": str(CHILD_WORKERS)})
    line = one_clear_line(p, "SUT in pod agent", "GET /healthz on port 8080", "exited with code",
                           f"image {host} runs ENTRYPOINT `/usr/bin/tini -s -g --`, no CMD")
    assert "verbose output" not in line, "a tool's usage text reported as the observation"
    log = [x for x in p.stderr.splitlines() if x.startswith("  | ")]
    assert log and any("tini" in x.lower() for x in log), p.stderr[-2000:]
    assert (p.stdout + p.stderr).count("never answered GET /healthz") == 1, "said once, not once per test"
    assert "certification: not tested" in p.stdout and "failed" not in p.stdout, p.stdout[-2000:]
    doc = _assert_not_tested(tmp_path / "report", "SUT in pod agent")
    assert doc["not_tested"]["log"] == [x[4:] for x in log]
    assert not any(re.match(r"\d{4}-\d\d-\d\dT", x) for x in doc["not_tested"]["log"]), "docker timestamps"
    # The session stopped at the first test needing the world: no test ran, none errored.
    junit = (tmp_path / "report" / "junit.xml").read_text()
    assert 'errors="0" failures="0"' in junit and "<error" not in junit, junit[:600]
    left = labels.leftovers(c, doc["not_tested"]["run"])
    assert left == {"containers": [], "networks": [], "volumes": []}, f"the stopped run left {left}"
