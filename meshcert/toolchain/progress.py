"""Step lines with elapsed time, so long set-up work is never silent."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

from meshcert.errors import EnvironmentProblem

_T0 = time.monotonic()
quiet = False


def say(msg: str) -> None:
    if not quiet:
        print(f"[meshcert {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    say(f"{title} ...")
    t = time.monotonic()
    try:
        yield
    except BaseException:
        say(f"{title}: failed after {time.monotonic() - t:.1f}s")
        raise
    say(f"{title}: done in {time.monotonic() - t:.1f}s")


def run_streamed(cmd: Sequence[str], title: str, *, env: dict | None = None, cwd: str | None = None,
                 every: float = 10.0, log_path: str | None = None) -> None:
    """Run a long command, printing a heartbeat line (with its last output line) every ``every`` s.

    Output goes to ``log_path`` (or is kept in memory); on failure the tail is raised.
    """

    t0 = time.monotonic()
    out = open(log_path, "w") if log_path else subprocess.PIPE
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, text=True)
    last = t0
    while True:
        try:
            proc.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() - last >= every:
                last = time.monotonic()
                say(f"{title}: still running ({last - t0:.0f}s)")
    if log_path:
        out.close()
        with open(log_path) as f:
            tail = f.read()[-3000:]
    else:
        tail = (proc.stdout.read() if proc.stdout else "")[-3000:]
    if proc.returncode != 0:
        raise EnvironmentProblem(title, f"command failed with exit {proc.returncode}: {' '.join(cmd)}\n{tail}",
                                 f"see {log_path}" if log_path else "")
