"""Fast tests (no engine) of how `certify` reads a run's results into its exit code and summary
(pytest and the set-up are replaced by fakes that write results.json)."""

from __future__ import annotations

import json
import signal

import pytest

from meshcert import cli
from meshcert.report.catalog import load_catalog
from meshcert.toolchain import components, engine, images
from meshcert.world.credentials import credential_topology
from meshcert.world.topology import guide_topology


def _results(scenarios: dict, failed_clause: str = "") -> dict:
    clauses = {c.id: {"outcome": "failed" if c.id == failed_clause else "passed", "tests": []}
               for c in load_catalog() if not c.out_of_scope}
    return {"finished": 0, "clauses": clauses, "extra": {"scenarios": scenarios}, "input_error": None}


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    """cli.main sets process-wide handlers (SIGPIPE default: die silently on a closed pipe);
    this pytest process must get its own back, or a later test's write to a closed socket
    would end the whole run without a word."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGPIPE, signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.fixture
def run_certify(monkeypatch, tmp_path, capsys):
    def run(results: dict, rc: int, *extra: str) -> tuple[int, str]:
        monkeypatch.setattr(cli, "cmd_setup", lambda *a: None)

        def fake_pytest(args, cwd):
            report = args[args.index("--report-dir") + 1]
            assert ("scenarios" in args) == ("--chaos" in extra)
            (tmp_path / "r").mkdir(exist_ok=True)
            (tmp_path / "r" / "results.json").write_text(json.dumps(results))
            assert report == str(tmp_path / "r")
            return rc
        monkeypatch.setattr(cli, "_pytest", fake_pytest)
        code = cli.main(["certify", "--report-dir", str(tmp_path / "r"), *extra])
        return code, capsys.readouterr().out
    return run


PASSED = {"outcome": "passed", "duration_s": 3.0}


def test_chaos_all_passed_is_exit_0(run_certify):
    code, out = run_certify(_results({"a": PASSED, "b": PASSED}), 0, "--chaos")
    assert code == 0 and "chaos: 2/2 scenarios passed" in out


def test_a_failed_scenario_is_exit_1_and_named_with_its_replay_command(run_certify):
    scen = {"a": PASSED, "partition agent | server": {"outcome": "failed", "replay_file": "/r/replays/s.yaml"}}
    code, out = run_certify(_results(scen), 1, "--chaos")
    assert code == 1
    assert "chaos: 1/2 scenarios passed" in out
    assert "not passed: partition agent | server (failed), replay: ./meshcert.sh replay /r/replays/s.yaml" in out


def test_a_failed_clause_is_exit_1_without_chaos(run_certify):
    cid = next(c.id for c in load_catalog() if not c.out_of_scope)
    code, out = run_certify(_results({}, failed_clause=cid), 1)
    assert code == 1 and f"failed: {cid}" in out and "chaos:" not in out


# ------------------------------------------------------------------ summary table, not tested, bundle

@pytest.fixture(autouse=True)
def _no_live_versions(monkeypatch):
    """The bundle's versions and SUT digest come from fakes here (engine-free)."""
    from meshcert.report import bundle
    monkeypatch.setattr(bundle, "component_versions", lambda client=None: {"tailscale": "v1", "engine": "fake"})
    monkeypatch.setattr(bundle, "_engine", lambda: None)


def test_the_summary_is_a_table_of_groups_by_outcome(run_certify):
    from meshcert.report.catalog import GROUPS
    cid = next(c for c in load_catalog() if not c.out_of_scope)
    code, out = run_certify(_results({}, failed_clause=cid.id), 1)
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["group"])
    # PERF-1/2 are measured-only: their column shows when they ran, and they are never "passed".
    assert lines[header].split()[1:6] == ["passed", "failed", "measured", "not", "tested"], lines[header]
    row = next(line for line in lines if line.startswith(GROUPS[cid.group] + " "))
    passed, failed, measured, not_tested = (int(x) for x in row[len(GROUPS[cid.group]):].split()[:4])
    in_group = [c for c in load_catalog() if c.group == cid.group and not c.out_of_scope]
    assert (passed, failed, measured, not_tested) == (len(in_group) - 1, 1, 0, 0), row
    total = next(line for line in lines if line.startswith("all clauses "))
    n_measured = sum(1 for c in load_catalog() if c.measured)
    assert n_measured and total.split()[2:5] == [
        str(sum(1 for c in load_catalog() if not c.out_of_scope) - 1 - n_measured), "1", str(n_measured)], total


def _not_tested_results(reason: str, log: list[str]) -> dict:
    return {"finished": 0, "clauses": {}, "extra": {}, "input_error": None,
            "not_tested": {"reason": reason, "log": log}}


def test_a_run_that_could_not_test_the_sut_is_exit_2_not_a_failure(run_certify, capsys, tmp_path):
    reason = ("SUT in pod agent: never answered GET /healthz on port 8080 (last: connection refused); its container "
              "exited with code 1; image meshcert/host:x runs ENTRYPOINT `/usr/bin/tini -s -g --`, no CMD")
    code, out = run_certify(_not_tested_results(reason, ["Usage: tini [OPTIONS] PROGRAM -- [ARGS]"]), 2)
    assert code == 2
    assert "certification: not tested" in out and "failed" not in out, out


def test_not_tested_names_the_reason_once_with_the_log_on_stderr(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "cmd_setup", lambda *a: None)
    reason = "SUT in pod agent: never answered GET /healthz on port 8080 (last: connection refused)"

    def fake_pytest(args, cwd):
        (tmp_path / "r").mkdir(exist_ok=True)
        (tmp_path / "r" / "results.json").write_text(json.dumps(_not_tested_results(reason, ["line one", "line two"])))
        return 2
    monkeypatch.setattr(cli, "_pytest", fake_pytest)
    code = cli.main(["certify", "--report-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    errs = [line for line in err.splitlines() if line.startswith("meshcert: ")]
    assert errs == [f"meshcert: {reason}"], err
    assert "  | line one\n  | line two" in err


class _FakeImages:
    def __init__(self, have: dict):
        self.have = have

    def get(self, name):
        import docker.errors
        if name not in self.have:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return type("Img", (), {"attrs": self.have[name]})()


class _FakeEngine:
    def __init__(self, have: dict | None = None):
        self.images = _FakeImages(have or {})


def test_a_sut_image_not_on_the_engine_is_refused_before_anything_starts(monkeypatch, tmp_path, capsys):
    from meshcert.toolchain import engine
    started = []
    monkeypatch.setattr(engine, "ensure_engine", lambda install=True: _FakeEngine())
    monkeypatch.setattr(cli, "cmd_setup", lambda *a: started.append("setup"))
    monkeypatch.setattr(cli, "_pytest", lambda args: started.append("pytest") or 0)
    code = cli.main(["certify", "--sut-image", "nope/nothing:1", "--report-dir", str(tmp_path / "r")])
    cap = capsys.readouterr()
    assert code == 2 and started == [], started
    errs = [line for line in cap.err.splitlines() if line.startswith("meshcert: ")]
    assert len(errs) == 1, cap.err
    assert "nope/nothing:1" in errs[0] and "docker load -i" in errs[0] and "docker tag" in errs[0], errs[0]
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    assert doc["clauses"] == {} and "nope/nothing:1" in doc["not_tested"]["reason"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Verdict: **not tested**" in md and "nope/nothing:1" in md
    assert "| **failed** |" not in md and "failed 0" in md
    html = (tmp_path / "r" / "report.html").read_text()
    assert 'id="not-tested"' in html and 'class="badge failed"' not in html
    bundles = list((tmp_path / "r").glob("meshcert-results-*.tar.gz"))
    assert len(bundles) == 1 and "bundle: " + str(bundles[0]) in cap.out


def test_certify_writes_a_bundle_and_report_prints_the_same_table(run_certify, tmp_path, capsys):
    cid = next(c.id for c in load_catalog() if not c.out_of_scope)
    code, out = run_certify(_results({}, failed_clause=cid), 1)
    bundles = list((tmp_path / "r").glob("meshcert-results-*.tar.gz"))
    assert len(bundles) == 1, list((tmp_path / "r").iterdir())
    table = out[out.index("group"):out.index("certification:")]
    code2 = cli.main(["report", str(bundles[0])])
    again = capsys.readouterr().out
    assert code2 == code == 1
    assert table in again, again
    assert f"failed: {cid}" in again


def test_report_of_something_that_is_not_a_bundle_is_one_clear_error(tmp_path, capsys):
    f = tmp_path / "meshcert-results-x.tar.gz"
    f.write_text("not a tar")
    assert cli.main(["report", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"meshcert: {f}: not a tar archive"), err


def test_setup_builds_every_image_a_certification_starts(monkeypatch):
    """A test worker that builds an image does it with its progress lines captured: setup, in the
    foreground, builds all of them (the credential world's and Vault's included)."""
    asked = []
    monkeypatch.setattr(engine, "ensure_engine", lambda *a, **k: "engine")
    monkeypatch.setattr(components.Component, "ensure", lambda self: {})
    monkeypatch.setattr(images, "ensure_images", lambda c, names=(): asked.append(names) or {})
    cli.cmd_setup()
    worlds = (guide_topology(), credential_topology())
    started = {s.image for t in worlds for s in (*t.nodes, *t.hosts)} | {"vault", "clients", "sut-reference"}
    assert asked and started <= set(asked[0]), sorted(started - set(asked[0] if asked else ()))
