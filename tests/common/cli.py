"""Running `meshcert certify` as a user does, and reading its one-line error (bad-input tests)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.common.paths import REPO


def certify(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "meshcert.cli", "certify", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=600)


def one_clear_line(p: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one `meshcert: ` line naming every needle, and no traceback."""
    assert p.returncode == 2, p.stderr[-2000:]
    errs = [line for line in p.stderr.splitlines() if line.startswith("meshcert: ")]
    assert len(errs) == 1, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    for n in needles:
        assert n in errs[0], errs[0]
    return errs[0]
