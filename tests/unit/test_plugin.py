"""meshcert's pytest plugin without an engine: its session state is in pytest's stash (no
private attributes on the config), kind-marked tests are skipped by a hook unless the run
uses kind (their clauses then not recorded), and testcontainers' reaper is off for every entry
because importing meshcert turns it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from meshcert.k8s import kind

pytest_plugins = ["pytester"]

TREE = '''
import pytest

@pytest.mark.clause("ACL-1")
def test_state_is_in_the_stash(request):
    assert not [a for a in vars(request.config) if a.startswith("_meshcert")]

@pytest.mark.kind
@pytest.mark.clause("HELM-1")
def test_on_kind():
    pass
'''


@pytest.mark.parametrize("cluster, helm1", [("docker", None), ("kind", "passed")])
def test_kind_tests_run_only_with_cluster_kind_and_record_no_clause_when_skipped(pytester, monkeypatch,
                                                                                   cluster, helm1):
    monkeypatch.setattr(kind, "skip_reason", lambda **kw: None)  # a node image is at hand
    prepared = []  # kind.prepare(): the node image made ready before any test (outside their timeout)
    monkeypatch.setattr(kind, "prepare", lambda: prepared.append(1) or "meshcert/kind-node:test")
    pytester.makepyfile(test_tree=TREE)
    rd = pytester.path / "report"
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-ra", "--report-dir", str(rd),
                                          "--cluster", cluster)
    assert result.ret == pytest.ExitCode.OK
    assert prepared == ([1] if cluster == "kind" else [])
    if helm1 is None:
        result.stdout.fnmatch_lines(["*SKIPPED*kind clauses run with --cluster kind*"])
    clauses = json.loads((rd / "results.json").read_text())["clauses"]
    assert clauses["ACL-1"]["outcome"] == "passed"
    assert (clauses.get("HELM-1") or {}).get("outcome") == helm1


def test_kind_tests_say_why_kind_cannot_run(pytester, monkeypatch):
    monkeypatch.setattr(kind, "skip_reason", lambda **kw: "no kindest/node image on the engine")
    pytester.makepyfile(test_tree=TREE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-ra", "-m", "kind", "--cluster", "kind",
                                          "--report-dir", str(pytester.path / "report"))
    result.stdout.fnmatch_lines(["*SKIPPED*no kindest/node image on the engine*"])
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED  # a run that tested nothing is no success


def test_importing_meshcert_turns_testcontainers_reaper_off():
    env = {k: v for k, v in os.environ.items() if k != "TESTCONTAINERS_RYUK_DISABLED"}
    code = ("import meshcert.k8s.podrunner, meshcert.world\n"
            "from testcontainers.core.config import testcontainers_config as c\n"
            "print(c.ryuk_disabled)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
