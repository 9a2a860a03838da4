"""Nothing leaks: after a normal run, after Ctrl-C / SIGTERM, and after SIGKILL followed by a new run."""

import os
import signal
import subprocess
import sys
import time

import pytest

from meshcert import engine
from meshcert.world import labels

pytestmark = [pytest.mark.engine, pytest.mark.slow]

def _free_vlan() -> str:
    """A /24 no network of this engine holds: the session world (10.20.5.0/24) runs beside us."""
    import ipaddress
    c = engine.ensure_engine()
    used = [ipaddress.ip_network(cfg["Subnet"]) for n in c.networks.list()
            for cfg in ((n.attrs.get("IPAM") or {}).get("Config") or []) if "Subnet" in cfg and ":" not in cfg["Subnet"]]
    for third in range(30, 250):
        cand = ipaddress.ip_network(f"10.20.{third}.0/24")
        if not any(cand.overlaps(u) for u in used):
            return str(cand)
    raise AssertionError("no free 10.20.x.0/24 on this engine")


def _start_world(*extra: str) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-m", "meshcert.cli", "world", "--vlan", _free_vlan(), *extra],
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
