"""The result bundle (engine-free): what certify puts in meshcert-results-<ts>.tar.gz, that no
secret gets in, and that `meshcert report BUNDLE` reads it back."""

from __future__ import annotations

import json
import tarfile

import pytest

from meshcert.errors import InputError
from meshcert.report import bundle
from meshcert.report.bundle import read_bundle, write_bundle
from meshcert.secrets import register

KEY = "hskey-auth-Zm9vYmFyYmF6cXV4MTIz"
REGISTERED = "registered-bundle-s3cret-0d1e"
SUT_ID = "sha256:" + "ab" * 32


class _Engine:
    class images:  # noqa: N801 -- the docker client's attribute name
        @staticmethod
        def get(name):
            import docker.errors
            if name != "me/runtime:1":
                raise docker.errors.ImageNotFound(name)
            return type("Img", (), {"attrs": {"Id": SUT_ID, "RepoDigests": ["me/runtime@sha256:" + "cd" * 32]}})()

    @staticmethod
    def version():
        return {"Version": "20.10.24", "ApiVersion": "1.41"}


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "20261201-150549"
    (d / "logs" / "HEALTH-2-1").mkdir(parents=True)
    (d / "replays").mkdir()
    (d / "results.json").write_text(json.dumps({"finished": 1.0, "clauses": {
        "HEALTH-2": {"outcome": "failed", "tests": [{"test": "t", "outcome": "failed", "message": "m"}]}},
        "extra": {}, "input_error": None}))
    (d / "junit.xml").write_text("<testsuites/>")
    (d / "report.md").write_text("# meshcert report\n")
    (d / "report.html").write_text("<html></html>")
    (d / "world.json").write_text(json.dumps({"run": "mcabc", "images": {"sut-reference": "meshcert/sut-reference:1"}}))
    register(REGISTERED)
    (d / "logs" / "HEALTH-2-1" / "agent-sut.log").write_text(f"login with {KEY} and {REGISTERED}\nok\n")
    (d / "replays" / "scenario-x.yaml").write_text("name: x\n")
    (d / "unrelated.bin").write_bytes(b"\0\1")
    return d


def _names(path) -> list[str]:
    with tarfile.open(path) as tf:
        return [m.name for m in tf.getmembers()]


def _text(path, rel: str) -> str:
    with tarfile.open(path) as tf:
        m = next(m for m in tf.getmembers() if m.name.split("/", 1)[1] == rel)
        return tf.extractfile(m).read().decode()


def test_the_bundle_holds_results_junit_report_logs_versions_and_the_sut_digest(run_dir):
    p = write_bundle(run_dir, sut_image="me/runtime:1", client=_Engine(), ts=1795608101.0)
    assert p.parent == run_dir and p.name.startswith("meshcert-results-") and p.name.endswith(".tar.gz")
    root = p.name[: -len(".tar.gz")]
    assert all(n.startswith(root + "/") for n in _names(p))
    rel = sorted(n.split("/", 1)[1] for n in _names(p))
    assert rel == sorted(["results.json", "junit.xml", "report.md", "report.html", "world.json",
                          "logs/HEALTH-2-1/agent-sut.log", "replays/scenario-x.yaml", "clauses.yaml",
                          "manifest.json"]), rel
    man = json.loads(_text(p, "manifest.json"))
    assert man["sut"] == {"image": "me/runtime:1", "id": SUT_ID, "repo_digests": ["me/runtime@sha256:" + "cd" * 32],
                          "reference": False}
    v = man["versions"]
    for comp in ("tailscale", "headscale", "toxiproxy", "helm", "kind"):
        assert v[comp].startswith("v"), (comp, v[comp])  # pinned in tools/<comp>/go.mod
    assert v["engine"] == "Docker 20.10.24 (API 1.41)"
    assert v["meshcert"].startswith("0.") and v["python"].split()[-1].count(".") == 2 and "go" in v


def test_the_reference_sut_is_named_from_world_json(run_dir):
    p = write_bundle(run_dir, client=_Engine(), versions={})
    sut = json.loads(_text(p, "manifest.json"))["sut"]
    assert sut["image"] == "meshcert/sut-reference:1" and sut["reference"] is True
    assert sut["id"] is None and "not on this engine" in sut["error"]


def test_no_secret_gets_into_the_bundle(run_dir):
    p = write_bundle(run_dir, client=_Engine(), versions={})
    with tarfile.open(p) as tf:
        for m in tf.getmembers():
            text = tf.extractfile(m).read().decode()
            assert KEY not in text and REGISTERED not in text, m.name
    assert "login with «redacted» and «redacted»" in _text(p, "logs/HEALTH-2-1/agent-sut.log")


def test_read_bundle_gives_back_results_manifest_and_catalog(run_dir):
    p = write_bundle(run_dir, client=_Engine(), versions={"tailscale": "v1.2.3"})
    doc = read_bundle(p)
    assert doc["results"]["clauses"]["HEALTH-2"]["outcome"] == "failed"
    assert doc["manifest"]["versions"] == {"tailscale": "v1.2.3"}
    assert "clauses:" in doc["catalog_text"]


@pytest.mark.parametrize("content,needle", [
    (None, "does not exist"), (b"plain text", "not a tar archive"), ("empty-tar", "no results.json"),
])
def test_read_bundle_of_something_else_is_one_input_error(tmp_path, content, needle):
    p = tmp_path / "meshcert-results-1.tar.gz"
    if content == "empty-tar":
        with tarfile.open(p, "w:gz"):
            pass
    elif content is not None:
        p.write_bytes(content)
    with pytest.raises(InputError) as ei:
        read_bundle(p)
    assert needle in str(ei.value) and str(p) in str(ei.value)


def test_versions_read_every_pinned_component():
    v = bundle.component_versions(client=_Engine())
    assert set(v) >= {"tailscale", "headscale", "toxiproxy", "helm", "kind", "meshcert", "python", "go", "engine"}
