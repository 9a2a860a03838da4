"""``--kubeconfig``: the pod-level clauses on a cluster the user already has (meshcert/k8s/existing.py).

"Someone else's cluster" here is a kind cluster this module creates with the pinned kind (as a
user would have one), whose kubeconfig and node container are all meshcert is told about; the
world's images are put into it with ``kind load``, as the user would (``--pull-policy`` Never,
the default: nothing is pulled). A child pytest run (the options ``meshcert certify
--kubeconfig`` passes, on a free VLAN) must pass the clauses, and leave no namespace of its own
in that cluster; a run interrupted with SIGINT (Ctrl-C) leaves none either; a namespace of a run
killed with -9 is deleted by the next sweep (``meshcert sweep --kubeconfig``, every run's start) while a live run's is kept.

Engine + kind (``pytest --cluster kind tests/engine/test_kubeconfig.py``).
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from meshcert.k8s import existing, kind
from meshcert.toolchain import engine, images
from meshcert.world import labels
from tests.common.engine import free_vlan
from tests.common.paths import REPO

pytestmark = [pytest.mark.kind, pytest.mark.engine, pytest.mark.slow]

# the pod-level clauses of conformance/test_helm_kind.py this module runs on the user's cluster:
# HELM-1/2/3/4/6 on the installed chart; ACL-1/2 (meshcert's node agent in the pod, through a
# port-forward on this machine's loopback); HEALTH-3 (the witness sees the node's address);
# HELM-2 and TROUBLE-1 without the Secret
SELECTION = "runs_its_sidecar_in_the_tailnet or acl_from_inside or not_ready_sidecar or without_the_secret"
CLAUSES = ("HELM-1", "HELM-2", "HELM-3", "HELM-4", "HELM-6", "ACL-1", "ACL-2", "HEALTH-3", "TROUBLE-1")


@pytest.fixture(scope="module")
def theirs():
    """A kind cluster that is not meshcert's business beyond its kubeconfig (and its node
    container's name, for --cluster-node); the world's images kind-loaded into it."""
    client = engine.ensure_engine()
    node_image = kind.ensure_node_image(client)
    names = images.ensure_images(client, ("host", "tailscale", "sut-reference"))
    run_id = f"kctest-{uuid.uuid4().hex[:8]}"
    c = kind.KindCluster(f"mc-{run_id}", node_image, run_id=run_id, client=client)
    try:
        c.create()
        c.load([names["tailscale"], names["sut-reference"]])
        yield c
    finally:
        c.delete()


def _theirs_kubectl(c, *args: str) -> str:
    user = existing.ExistingCluster(existing.ClusterOptions(c.kubeconfig), "test")
    return user.kubectl(*args)


def _meshcert_namespaces(c) -> list[str]:
    out = _theirs_kubectl(c, "get", "namespaces", "-l", f"{labels.LABEL}=1", "-o", "json")
    return [n["metadata"]["name"] for n in json.loads(out)["items"]]


def _child(c, tmp_path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "no:xdist",
            "conformance/test_helm_kind.py", "-k", SELECTION, "--report-dir", str(tmp_path / "report"),
            "--kubeconfig", str(c.kubeconfig), "--cluster-node", c.node, *extra]
    env = {**os.environ, "MESHCERT_VLAN": free_vlan(), "MESHCERT_CLUSTER": "docker"}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def test_the_clauses_pass_on_their_cluster_and_its_namespaces_are_removed(theirs, tmp_path):
    p = _child(theirs, tmp_path)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out[-3000:]
    results = json.loads((tmp_path / "report" / "results.json").read_text())["clauses"]
    outcomes = {cid: results.get(cid, {}).get("outcome") for cid in CLAUSES}
    assert set(outcomes.values()) == {"passed"}, outcomes
    assert _meshcert_namespaces(theirs) == [], "the run's namespaces are gone from the user's cluster"
    net = theirs.client.containers.get(theirs.node).attrs["NetworkSettings"]["Networks"]
    assert set(net) == {theirs.network}, f"the node is detached from the world's WAN again: {sorted(net)}"


def test_ctrl_c_removes_the_runs_namespaces(theirs, tmp_path):
    p = _child(theirs, tmp_path)
    deadline = time.monotonic() + 600  # a world (15-30 s) and a helm install on a loaded machine
    while not _meshcert_namespaces(theirs):
        assert p.poll() is None, f"the run ended before creating a namespace: {p.stdout.read()[-2000:]}"
        assert time.monotonic() < deadline, "no namespace of the run appeared"
        time.sleep(1)  # poll interval of the namespace listing, not a wait for a condition
    os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends to the foreground group
    out, _ = p.communicate(timeout=600)
    assert _meshcert_namespaces(theirs) == [], f"namespaces left after Ctrl-C; run said: {out[-2000:]}"


def test_sweep_deletes_a_killed_runs_namespace_and_keeps_a_live_ones(theirs):
    dead = subprocess.Popen(["true"])
    dead.wait()  # a finished process: an owner that is gone, as after kill -9
    user = existing.ExistingCluster(existing.ClusterOptions(theirs.kubeconfig), "sweeptest")
    docs = []
    for name, owner in (("meshcert-killed-0", labels.owner_token(dead.pid)), ("meshcert-live-0", labels.owner_token())):
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": name, "labels": {labels.LABEL: "1", labels.RUN: name},
            "annotations": {labels.OWNER: owner}}})
    user.apply(docs)
    try:
        # what `meshcert sweep --kubeconfig` and every --kubeconfig run's start call (the CLI's
        # sweep would also sweep the shared engine's dead objects: not this test's business)
        gone = existing.sweep_namespaces(user)
        assert "meshcert-killed-0" in gone and "meshcert-live-0" not in gone, gone
        user.kubectl("wait", "--for=delete", "namespace/meshcert-killed-0", "--timeout=120s")
        assert "meshcert-live-0" in _meshcert_namespaces(theirs)
    finally:
        user.kubectl("delete", "namespace", "meshcert-live-0", "meshcert-killed-0", "--ignore-not-found",
                     "--wait=true")
