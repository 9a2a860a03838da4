"""A run's kind cluster is removed after Ctrl-C, and what ``kill -9`` left is swept by the next run.

A child pytest run (``--cluster kind``, one kind test of conformance/test_helm_kind.py, a free
VLAN) is stopped once its cluster is up (its kubeconfig written):

- SIGINT to its process group (a terminal's Ctrl-C): the run removes the cluster's node
  container, its network and kubeconfig, and its world;
- SIGKILL to its process group: the node container stays, labelled with the dead owner; the
  sweep a next run makes (``labels.sweep`` at a world's start, ``cluster.sweep_kubeconfigs`` at
  a cluster's) removes it. Called here for the killed run's own run ids only
  (``remove_run(run, only_dead=True)``, what ``sweep`` does for every run): the engine is shared.

Engine + kind (``pytest --cluster kind tests/engine/test_kind_cleanup.py``).
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from meshcert.k8s import cluster, kind
from meshcert.toolchain import engine
from meshcert.world import labels
from tests.common.engine import free_vlan
from tests.common.paths import REPO

pytestmark = [pytest.mark.kind, pytest.mark.engine, pytest.mark.slow]

_why = kind.skip_reason()
if _why:
    pytest.skip(_why, allow_module_level=True)


def _start(report_dir) -> subprocess.Popen:
    env = {**os.environ, "MESHCERT_VLAN": free_vlan()}
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
                             "--cluster", "kind", "conformance/test_helm_kind.py", "-k", "disabled",
                             "--report-dir", str(report_dir)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _cluster_up(c, p: subprocess.Popen) -> tuple[str, set[str]]:
    """Wait until the child's kind cluster is up (its node container labelled with the child as
    owner, its kubeconfig written); returns (cluster name, the run ids on the child's objects)."""
    owner = labels.owner_token(p.pid)
    deadline = time.monotonic() + 420  # a world (15-30 s) and `kind create` (8-35 s) on a loaded machine
    while time.monotonic() < deadline:
        assert p.poll() is None, f"the run ended first: {p.stdout.read()[-2000:]}"
        mine = [ct.attrs.get("Labels") or {} for ct in c.containers.list(
            all=True, sparse=True, filters={"label": [f"{labels.OWNER}={owner}"]})]
        name = next((lab[cluster.CLUSTER_LABEL] for lab in mine if cluster.CLUSTER_LABEL in lab), None)
        if name and (cluster.kubeconfig_dir() / f"{name}.yaml").exists():
            return name, {lab[labels.RUN] for lab in mine}
        time.sleep(0.5)  # polling the engine for the cluster to appear, not waiting on time
    pytest.fail("the child run's kind cluster did not come up within 420 s")


def _left(c, owner: str) -> dict:
    flt = {"label": [f"{labels.OWNER}={owner}"]}
    # sparse: no inspect per container (another session's sweep may remove one meanwhile); the
    # list's own "Names" then, not .name
    return {"containers": [(x.attrs.get("Names") or ["?"])[0].lstrip("/")
                           for x in c.containers.list(all=True, sparse=True, filters=flt)],
            "networks": [x.name for x in c.networks.list(filters=flt)]}


def test_ctrl_c_removes_the_cluster_and_the_world(tmp_path):
    c = engine.ensure_engine()
    p = _start(tmp_path)
    try:
        name, _ = _cluster_up(c, p)
        os.killpg(p.pid, signal.SIGINT)
        out, _ = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    left = _left(c, labels.owner_token(p.pid))
    assert not any(left.values()), f"left after Ctrl-C: {left}; run said: {out[-1500:]}"
    assert not (cluster.kubeconfig_dir() / f"{name}.yaml").exists(), "the cluster's kubeconfig is removed"


def test_what_kill_9_left_is_swept_by_the_next_run(tmp_path):
    c = engine.ensure_engine()
    p = _start(tmp_path)
    owner = labels.owner_token(p.pid)  # while it lives: the token carries its start time
    try:
        name, runs = _cluster_up(c, p)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    assert f"{name}-control-plane" in _left(c, owner)["containers"], "kill -9 leaves the node behind"
    for run in runs:  # what the next run's labels.sweep does, for this killed run's ids only
        labels.remove_run(c, run, only_dead=True)
    swept = cluster.sweep_kubeconfigs(c)  # a cluster's start: kubeconfigs whose node is gone
    left = _left(c, owner)
    assert not any(left.values()), f"left after the sweep: {left}"
    assert f"{name}.yaml" in swept and not (cluster.kubeconfig_dir() / f"{name}.yaml").exists()
