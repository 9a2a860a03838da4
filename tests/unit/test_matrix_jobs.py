"""certify --matrix runs its pytest sessions side by side (MATRIX_JOBS at a time), each with a
world on a VLAN of its own and its environment in the child only; Ctrl-C reaches every running
session (fake pytest children; the real 2 x 2: tests/engine/test_matrix.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from argparse import Namespace

from meshcert import cli

JOBS = [("v0.29.2", ["v1.102.3", "v1.80.3"], {"v1.102.3": (), "v1.80.3": ()}, False),
        ("v0.25.1", ["v1.102.3", "v1.80.3"], {"v1.102.3": (), "v1.80.3": ()}, False)]


def _fake(monkeypatch, seen):
    lock = threading.Lock()

    def fake_pytest(args, cwd, env=None, log=None):
        with lock:
            seen.append({"env": dict(env or {}), "log": log, "start": time.monotonic()})
        time.sleep(0.3)
        with lock:
            seen[-1]["end"] = time.monotonic()
        return 0
    monkeypatch.setattr(cli, "_pytest", fake_pytest)
    monkeypatch.setattr(cli, "collect_clause_tests", lambda: {})


def test_sessions_run_side_by_side_on_vlans_of_their_own(monkeypatch, tmp_path):
    monkeypatch.setenv("MESHCERT_VLAN", "10.20.40.0/24")
    monkeypatch.setenv("MESHCERT_TAILSCALE", "agent=v1.80.3")
    monkeypatch.delenv("MESHCERT_MATRIX_JOBS", raising=False)
    seen: list[dict] = []
    _fake(monkeypatch, seen)
    t = time.monotonic()
    got = cli._run_matrix_sessions(Namespace(sut_image=None), tmp_path, JOBS, ["ACL-1"], {"ACL-1": ["t"]})
    assert time.monotonic() - t < 0.55, "two 0.3 s sessions side by side"
    assert sorted(s["env"]["MESHCERT_VLAN"] for s in seen) == ["10.20.40.0/24", "10.20.41.0/24"]
    assert {s["env"]["MESHCERT_HEADSCALE"] for s in seen} == {"v0.29.2", "v0.25.1"}
    assert all(s["env"]["MESHCERT_TAILSCALE"] == "" for s in seen), "a node pin never overrides the column"
    assert all(s["log"] and s["log"].name == "pytest.log" for s in seen), "side by side: each session's output in its folder"
    assert os.environ["MESHCERT_TAILSCALE"] == "agent=v1.80.3" and "MESHCERT_HEADSCALE" not in os.environ
    assert {k for cols in got for k in cols} == {(ts, hs) for hs in ("v0.29.2", "v0.25.1") for ts in ("v1.102.3", "v1.80.3")}


def test_one_job_at_a_time_when_told(monkeypatch, tmp_path):
    monkeypatch.setenv("MESHCERT_MATRIX_JOBS", "1")
    seen: list[dict] = []
    _fake(monkeypatch, seen)
    cli._run_matrix_sessions(Namespace(sut_image=None), tmp_path, JOBS, ["ACL-1"], {"ACL-1": ["t"]})
    assert seen[1]["start"] >= seen[0]["end"] and all(s["log"] is None for s in seen)
    assert seen[0]["env"]["MESHCERT_VLAN"] == seen[1]["env"]["MESHCERT_VLAN"], "one slot: one VLAN"


CHILD = ("import signal, sys, time\n"
         "signal.signal(signal.SIGINT, lambda *a: (print('torn down', flush=True), sys.exit(3)))\n"
         "print('up', flush=True)\n"
         "time.sleep(60)\n")


def test_ctrl_c_reaches_every_running_session_and_waits_for_each(tmp_path):
    children = [subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True,
                                 start_new_session=True) for _ in range(2)]
    try:
        for c in children:
            assert c.stdout.readline().strip() == "up"
            cli._CHILDREN.add(c)
        cli._interrupt_children()
        assert [c.returncode for c in children] == [3, 3], "each got one SIGINT and was waited for"
        assert all(c.stdout.read().strip() == "torn down" for c in children)
    finally:
        for c in children:
            cli._CHILDREN.discard(c)
            if c.poll() is None:
                os.killpg(c.pid, signal.SIGKILL)
                c.wait()
