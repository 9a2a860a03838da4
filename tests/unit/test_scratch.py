"""Files a run keeps on disk (Vault's CA) live in one folder per process: removed at exit, and
after kill -9 by the next run's sweep; a live process's folder is never swept."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from meshcert.world import scratch

CHILD = ("import sys; from meshcert.world import scratch; p = scratch.write('x.pem', b'ca'); "
         "print(p, flush=True); sys.stdin.readline()")


def _child(tmp: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "TMPDIR": str(tmp)}
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=env)
    path = Path(p.stdout.readline().strip())
    assert path.read_bytes() == b"ca" and path.parent.parent == tmp
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700" and oct(path.stat().st_mode & 0o777) == "0o600"
    return p, path


def test_the_folder_is_removed_when_the_process_ends(tmp_path):
    p, path = _child(tmp_path)
    p.communicate("\n", timeout=30)
    assert p.returncode == 0
    assert not path.parent.exists(), list(tmp_path.iterdir())


def test_a_killed_process_folder_is_swept_and_a_live_one_is_kept(tmp_path):
    live, live_path = _child(tmp_path)
    dead, dead_path = _child(tmp_path)
    try:
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait(timeout=30)
        assert dead_path.parent.exists(), "kill -9 should leave the folder (else this test proves nothing)"
        (tmp_path / "meshcert-scratch-notapid").mkdir()  # not ours by name: left alone
        assert scratch.sweep(tmp_path) == 1
        assert not dead_path.parent.exists()
        assert live_path.exists() and (tmp_path / "meshcert-scratch-notapid").exists()
    finally:
        live.communicate("\n", timeout=30)
    assert not live_path.parent.exists()


def test_a_recycled_pid_does_not_keep_a_dead_folder(tmp_path):
    """The owner is pid + start ticks: this process's pid with other ticks is a dead owner."""
    d = tmp_path / f"{scratch.PREFIX}{os.getpid()}-1"
    d.mkdir()
    assert scratch.sweep(tmp_path) == 1 and not d.exists()
