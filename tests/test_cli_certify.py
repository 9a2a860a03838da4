"""Fast tests (no engine) of how `certify` reads a run's results into its exit code and summary
(pytest and the set-up are replaced by fakes that write results.json)."""

from __future__ import annotations

import json
import signal

import pytest

from meshcert import cli
from meshcert.catalog import load_catalog


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

        def fake_pytest(args):
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
