"""``--kubeconfig`` and ``--kind-config`` without a cluster: a kubeconfig that is missing,
malformed or does not answer, and a broken kind config, are one line and exit 2 (certify and
pytest alike); the user's cluster's names, labels and images; `meshcert test` runs the kind
tests; the kind tests are one xdist unit, handed out first."""

import subprocess
import sys
from collections import OrderedDict

import pytest

from meshcert.cli import cluster_args, kubeconfig_args
from meshcert.errors import InputError
from meshcert.k8s import existing, kind
from meshcert.plugin import parallel
from meshcert.world import labels
from tests.common.cli import certify, one_clear_line
from tests.common.paths import REPO

GOOD = """apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
users:
- name: u
  user: {}
"""


@pytest.mark.parametrize("text,needle", [
    (None, "does not exist"),
    ("apiVersion: v1\nkind: Config\n  clusters: [\n", "is not YAML at line 3"),
    ("- just a list\n", "no `kind: Config` mapping"),
    (GOOD.replace("current-context: x\n", ""), "no current-context"),
    (GOOD.replace("current-context: x", "current-context: y"), "no context 'y'"),
    (GOOD.replace('{server: "https://127.0.0.1:6443"}', "{}"), "which has no server"),
])
def test_a_bad_kubeconfig_is_named_in_one_line(tmp_path, text, needle):
    f = tmp_path / "kc.yaml"
    if text is not None:
        f.write_text(text)
    with pytest.raises(InputError) as ei:
        existing.read_kubeconfig(f)
    assert needle in ei.value.message and str(f) in ei.value.message and ei.value.what == "--kubeconfig"


def _fake_kubectl(tmp_path, out: str, err: str, code: int) -> str:
    k = tmp_path / "kubectl"
    k.write_text(f"#!/bin/sh\nprintf '%s' '{out}'\nprintf '%s\\n' '{err}' >&2\nexit {code}\n")
    k.chmod(0o755)
    return str(k)


def test_a_kubeconfig_whose_server_does_not_answer_is_one_line(tmp_path):
    f = tmp_path / "kc.yaml"
    f.write_text(GOOD)
    kubectl = _fake_kubectl(tmp_path, "", "The connection to the server 127.0.0.1:6443 was refused", 1)
    with pytest.raises(InputError) as ei:
        existing.check_kubeconfig(f, kubectl=kubectl)
    line = ei.value.one_line()
    assert "\n" not in line and str(f) in line and "https://127.0.0.1:6443 does not answer" in line
    assert "refused" in line and "fix:" in line
    assert existing.check_kubeconfig(f, kubectl=_fake_kubectl(tmp_path, "ok", "", 0)) == "https://127.0.0.1:6443"


@pytest.mark.parametrize("text,needle", [(None, "does not exist"), ("kind: Config\n  x: [\n", "is not YAML")])
def test_certify_refuses_a_bad_kubeconfig_before_anything_starts(tmp_path, text, needle):
    f = tmp_path / "kc.yaml"
    if text is not None:
        f.write_text(text)
    one_clear_line(certify("--kubeconfig", str(f), "--report-dir", str(tmp_path / "r")), "--kubeconfig", needle)
    assert not (tmp_path / "r").exists()


def test_certify_refuses_kubeconfig_with_cluster_kind(tmp_path):
    f = tmp_path / "kc.yaml"
    f.write_text(GOOD)
    one_clear_line(certify("--kubeconfig", str(f), "--cluster", "kind"), "--kubeconfig", "--cluster kind")


BROKEN_KIND_CONFIGS = [
    ("kind: Cluster\n nodes: [\n", "is not valid YAML at line 2"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: control-plane\n  bogus: 1\n"
     "networking: {apiServerAddress: 127.0.0.1}\n", "unknown field 'nodes[0].bogus'"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: control-plane\n"
     "networking: {apiServerAddress: 127.0.0.1, podSubnett: 10.1.0.0/16}\n", "unknown field 'networking.podSubnett'"),
    ("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodez: []\n", "unknown field 'nodez'"),
]


@pytest.mark.parametrize("text,needle", BROKEN_KIND_CONFIGS)
def test_certify_refuses_a_broken_kind_config_in_one_line(tmp_path, text, needle):
    f = tmp_path / "kind.yaml"
    f.write_text(text)
    one_clear_line(certify("--cluster", "kind", "--kind-config", str(f), "--report-dir", str(tmp_path / "r")),
                   "kind config", str(f), needle)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("text,needle", BROKEN_KIND_CONFIGS[:2])
def test_pytest_stops_on_a_broken_kind_config_with_exit_2(tmp_path, text, needle):
    f = tmp_path / "kind.yaml"
    f.write_text(text)
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q", "--co",
                        "--cluster", "kind", "--kind-config", str(f), "conformance/test_helm_kind.py",
                        "--report-dir", str(tmp_path / "r")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stdout[-1500:] + p.stderr[-1500:]
    lines = [x for x in (p.stdout + p.stderr).splitlines() if "meshcert: kind config" in x]
    assert lines and needle in lines[0] and "Traceback" not in p.stdout + p.stderr


def test_the_repo_kind_config_passes_the_check():
    assert kind.check_config()["kind"] == "Cluster"


def test_certify_hands_the_cluster_options_to_pytest():
    class A:
        kubeconfig, kube_context, image_prefix, pull_policy = "/k.yaml", "ctx", "reg.example/mc", None
        cluster_node = ["n1", "n2"]
    assert kubeconfig_args(A()) == ["--kubeconfig", "/k.yaml", "--kube-context", "ctx", "--image-prefix",
                                    "reg.example/mc", "--cluster-node", "n1", "--cluster-node", "n2"]
    A.kubeconfig = None
    assert kubeconfig_args(A()) == []


def test_meshcert_test_runs_the_kind_tests_unless_told_otherwise():
    assert cluster_args([], {}) == ["--cluster", "kind"]
    assert cluster_args(["--cluster", "docker"], {}) == []
    assert cluster_args(["--cluster=docker"], {}) == []
    assert cluster_args(["--kubeconfig", "k"], {}) == []
    assert cluster_args([], {"MESHCERT_CLUSTER": "docker"}) == []


def test_the_users_cluster_names_labels_images_and_pull_policy(monkeypatch):
    monkeypatch.setattr(existing, "kubectl_binary", lambda: "/bin/kubectl")
    plain = existing.ExistingCluster(existing.ClusterOptions("/k.yaml"), "mcabc123")
    assert plain.pull_policy == "Never" and plain.image_ref("meshcert/tailscale:1") == "meshcert/tailscale:1"
    assert plain.namespace_for("f00d") == "meshcert-mcabc123-f00d"
    meta = plain.namespace_metadata()
    assert meta["labels"] == {labels.LABEL: "1", labels.RUN: "mcabc123"}
    assert labels.owner_alive(meta["annotations"][labels.OWNER])  # this process owns them
    assert plain.kubectl_argv("get", "ns") == ["/bin/kubectl", "--kubeconfig=/k.yaml", "get", "ns"]
    reg = existing.ExistingCluster(existing.ClusterOptions("/k.yaml", "ctx", "reg.example/mc/"), "r")
    assert reg.pull_policy == "IfNotPresent" and reg.image_ref("meshcert/tailscale:1") == "reg.example/mc/meshcert/tailscale:1"
    assert reg.kubectl_argv("get", "ns")[:3] == ["/bin/kubectl", "--kubeconfig=/k.yaml", "--context=ctx"]
    always = existing.ExistingCluster(existing.ClusterOptions("/k.yaml", pull_policy="Always"), "r")
    assert always.pull_policy == "Always"
    assert 0 < plain.forward_port(4000) < 65536  # a free port of this machine, never a fixed one


def test_sweep_deletes_only_namespaces_of_dead_owners():
    dead = subprocess.Popen(["true"])
    dead.wait()

    class Fake(existing.ExistingCluster):
        def __init__(self):
            self.deleted = []

        def namespaces(self, selector):
            assert selector == f"{labels.LABEL}=1"
            return [{"metadata": {"name": "meshcert-dead-1", "annotations": {labels.OWNER: labels.owner_token(dead.pid)}}},
                    {"metadata": {"name": "meshcert-live-1", "annotations": {labels.OWNER: labels.owner_token()}}},
                    {"metadata": {"name": "meshcert-other-host", "annotations": {labels.OWNER: "elsewhere:1:2"}}}]

        def kubectl(self, *args, **kw):
            self.deleted.append(args)
            return ""
    f = Fake()
    assert existing.sweep_namespaces(f) == ["meshcert-dead-1"]
    assert f.deleted == [("delete", "namespaces", "meshcert-dead-1", "--wait=false", "--ignore-not-found")]


def test_the_kind_tests_are_two_units_handed_out_first():
    split = parallel.SharedWorldScheduling._split_scope
    units = {split(None, n) for n in ("conformance/test_helm_kind.py::test_x", "tests/engine/test_kind_cluster.py::t",
                                      "tests/engine/test_kubeconfig.py::t", "tests/engine/test_kind_cleanup.py::t")}
    assert units == {"meshcert:kind"} and split(None, "tests/engine/test_kind_kills.py::t") == "meshcert:kind:kills"
    assert {"meshcert:kind", "meshcert:kind:kills"} <= set(parallel.FIRST_UNITS)
    assert split(None, "tests/engine/test_matrix.py::a") == split(None, "tests/engine/test_matrix.py::b")
    assert split(None, "conformance/test_acl.py::t") != "meshcert:kind"

    sched = parallel.SharedWorldScheduling.__new__(parallel.SharedWorldScheduling)
    sched.workqueue = OrderedDict([("meshcert:conformance:pods", {"a": False}), ("meshcert:kind", {"k": False}),
                                   ("t1", {"t1": False})])
    sched.assigned_work, sched.registered_collections = {}, {}
    sent = []

    class Node:
        def send_runtest_some(self, idx):
            sent.append(idx)
    node = Node()
    sched.registered_collections[node] = ["a", "k", "t1"]
    sched._assign_work_unit(node)
    assert list(sched.assigned_work[node]) == ["meshcert:kind"] and sent == [[1]]
