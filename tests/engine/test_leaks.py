"""Nothing leaks: after a normal run, after Ctrl-C / SIGTERM, and after SIGKILL followed by a new run."""

import os
import signal
import subprocess
import sys
import time

import pytest

from meshcert.toolchain import engine
from meshcert.world import labels
from tests.common.engine import free_vlan

pytestmark = [pytest.mark.engine, pytest.mark.slow]

def _start_world(*extra: str) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-m", "meshcert.cli", "world", "--vlan", free_vlan(), *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = None
    deadline = time.monotonic() + 180
    for line in p.stdout:
        if line.startswith("run "):
            run = line.split()[1]
        if line.startswith("ready"):
            break
        if time.monotonic() > deadline:
            break
    assert run, f"world did not come up: {p.stderr.read() if p.poll() is not None else '(still running)'}"
    return p, run


def _nothing_left(c, run):
    left = labels.leftovers(c, run)
    assert left == {"containers": [], "networks": [], "volumes": []}, f"run {run} leaked {left}"


def test_normal_run_leaves_nothing():
    c = engine.ensure_engine()
    p, run = _start_world()
    assert p.wait(timeout=120) == 0
    _nothing_left(c, run)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_leaves_nothing(sig):
    c = engine.ensure_engine()
    p, run = _start_world("--hold")
    assert labels.leftovers(c, run)["containers"], "the held world should be running"
    p.send_signal(sig)
    p.wait(timeout=120)
    _nothing_left(c, run)


def test_killed_run_is_swept_by_the_next_run():
    c = engine.ensure_engine()
    p, killed = _start_world("--hold")
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    left = labels.leftovers(c, killed)
    assert left["containers"] and left["networks"], "SIGKILL should leave the world behind (else this test proves nothing)"
    p2, run2 = _start_world()   # a new run: its start sweeps what dead runs left
    assert p2.wait(timeout=120) == 0
    _nothing_left(c, killed)
    _nothing_left(c, run2)


@pytest.mark.parametrize("sig, paths", [
    (signal.SIGINT, ("conformance/test_acl.py",)),
    (signal.SIGTERM, ("conformance/test_acl.py",)),
    # two work units (conformance/, scenarios/) on two xdist workers: two worlds, both removed
    (signal.SIGINT, ("conformance/test_acl.py", "scenarios/test_chaos.py")),
], ids=["SIGINT", "SIGTERM", "SIGINT-2-workers"])
def test_interrupting_meshcert_test_tears_the_world_down(sig, paths, tmp_path):
    """Ctrl-C (SIGINT to the command's process group, as a terminal sends it) or SIGTERM to
    `meshcert test` while pytest has its world(s) up -- one per xdist worker that has tests --
    pytest tears every one down before the command ends."""
    c = engine.ensure_engine()
    # the child's workers' VLANs are MESHCERT_VLAN + 0, + 1, ...: as many free /24s as WORKERS, not
    # as worlds -- one unit may run on gw1, at + 1 (a CI run failed so: "Pool overlaps" with a /24
    # another worker had reserved)
    workers = max(2, len(paths))
    env = {**os.environ, "MESHCERT_VLAN": free_vlan(count=workers), "MESHCERT_TEST_WORKERS": str(workers)}
    p = subprocess.Popen([sys.executable, "-m", "meshcert.cli", "test", "-q", "-p", "no:cacheprovider",
                          *paths, "--report-dir", str(tmp_path / "report")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    runs: set[str] = set()
    deadline = time.monotonic() + 240
    while len(runs) < len(paths) and time.monotonic() < deadline and p.poll() is None:
        # the worlds' containers carry their owner: the pytest process the command started, or
        # (`meshcert test` runs xdist workers) one of its workers
        owners = {labels.owner_token(pid) for pid in _descendants(p.pid)}
        # sparse: the list's own labels, no inspect per container (another run's container
        # removed between the list and its inspect was a 404 here)
        for ctr in c.containers.list(sparse=True, filters={"label": labels.LABEL + "=1"}):
            ctr_labels = ctr.attrs.get("Labels") or {}
            if ctr_labels.get(labels.OWNER) in owners:
                runs.add(ctr_labels[labels.RUN])
        time.sleep(0.5)  # polling the engine for the worlds to appear, not waiting on time
    assert len(runs) == len(paths), (f"{len(runs)} of {len(paths)} worlds came up: "
                                     + (p.stderr.read()[-2000:] if p.poll() is not None else "(still running)"))
    for run in runs:
        assert labels.leftovers(c, run)["containers"], f"world {run} should be up"
    if sig == signal.SIGINT:
        os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    else:
        p.send_signal(signal.SIGTERM)
    rest = p.stderr.read()
    assert p.wait(timeout=240) != 0
    assert "interrupted" in rest, rest[-1500:]
    for run in runs:
        _nothing_left(c, run)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                continue
    return out
