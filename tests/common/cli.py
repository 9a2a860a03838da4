"""Running `meshcert` (certify, replay, sweep) as a user does, and reading its one-line error (bad-input tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.common.paths import REPO


def meshcert(*args: str, env: dict | None = None, timeout: float = 600, cwd=REPO) -> subprocess.CompletedProcess:
    """``meshcert ARGS`` as a user runs it (``env``: the whole environment, default ours),
    output captured. Stopped however this test ends (its own timeout, pytest-timeout's, a
    Ctrl-C) as a user stops it: Ctrl-C, so it tears its worlds down. Killing it would orphan the
    pytest it runs in a session of its own and leave that run's world up until it ended: seen
    once, a child certify alive 10 min after its test had timed out."""
    cmd = [sys.executable, "-m", "meshcert.cli", *args]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                          env=os.environ.copy() if env is None else env) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except BaseException:
            p.send_signal(signal.SIGINT)
            try:
                p.communicate(timeout=120)  # its teardown (worlds, a cluster) finishes
            except subprocess.TimeoutExpired:
                p.kill()  # what a kill -9 leaves, the next run sweeps
            raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def certify(*args: str, env_extra: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return meshcert("certify", *args, env=dict(os.environ, **(env_extra or {})), timeout=timeout)


def one_clear_line(p: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one `meshcert: ` line naming every needle, and no traceback."""
    assert p.returncode == 2, p.stderr[-2000:]
    errs = [line for line in p.stderr.splitlines() if line.startswith("meshcert: ")]
    assert len(errs) == 1, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    for n in needles:
        assert n in errs[0], errs[0]
    return errs[0]
