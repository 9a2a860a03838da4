"""The kind node image's recipe and the docker shim kind runs through, without an engine:
kind's files adapted (each change checked to apply), the control-plane image archive, the
tags (a hash of the inputs), and the shim's argument rewriting run against a fake docker."""

import hashlib
import json
import os
import subprocess
import tarfile

import pytest

from meshcert.errors import EnvironmentProblem
from meshcert.k8s import cluster, nodeimage


@pytest.fixture(scope="module")
def plan():
    return nodeimage.plan()


def test_containerd_config_gets_this_nodes_changes(plan):
    kind_toml = (plan.kind_files / "etc/containerd/config.toml").read_text()
    out = nodeimage.containerd_config(kind_toml, plan.pause_image)
    assert "restrict_oom_score_adj = true" in out and "restrict_oom_score_adj = false" not in out
    assert f'sandbox_image = "{plan.pause_image}"' in out and plan.pause_image == "registry.k8s.io/pause:3.10.2"
    assert 'bin_dir = "/usr/lib/cni"' in out


def test_a_kind_bump_that_moves_a_line_fails_the_build_not_the_cluster():
    with pytest.raises(EnvironmentProblem, match="restrict_oom_score_adj = false"):
        nodeimage.containerd_config('sandbox_image = "registry.k8s.io/pause:3.10"\n', "p:1")


def test_cri_base_spec_is_kinds():
    spec = json.loads(nodeimage.cri_base_spec(json.dumps({"process": {"rlimits": [1], "args": []}})))
    assert "rlimits" not in spec["process"]
    assert spec["hooks"]["createContainer"] == [{"path": "/kind/bin/mount-product-files.sh"}]


def test_the_control_plane_images_are_the_ones_kubeadm_asks_for(plan):
    assert set(plan.images) == {"registry.k8s.io/kube-apiserver:v1.37.2", "registry.k8s.io/kube-controller-manager:v1.37.2",
                                "registry.k8s.io/kube-scheduler:v1.37.2", "registry.k8s.io/etcd:3.7.0-0",
                                "registry.k8s.io/pause:3.10.2"}


def test_the_image_archive_is_a_docker_archive(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"\x7fELF one")
    b.write_bytes(b"\x7fELF two")
    out = tmp_path / "images.tar"
    nodeimage.write_image_archive({"registry.k8s.io/x:1": ("a", "usr/local/bin/x"),
                                   "registry.k8s.io/pause:9": ("b", "pause")}, {"a": a, "b": b}, out)
    with tarfile.open(out) as t:
        manifest = json.load(t.extractfile("manifest.json"))
        assert sorted(m["RepoTags"][0] for m in manifest) == ["registry.k8s.io/pause:9", "registry.k8s.io/x:1"]
        for m in manifest:
            cfg_bytes = t.extractfile(m["Config"]).read()
            assert m["Config"] == hashlib.sha256(cfg_bytes).hexdigest() + ".json"
            cfg = json.loads(cfg_bytes)
            layer = t.extractfile(m["Layers"][0]).read()
            assert cfg["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
            (tmp_path / "l.tar").write_bytes(layer)
            with tarfile.open(tmp_path / "l.tar") as lt:
                files = {m.name: m for m in lt.getmembers() if m.isfile()}
            if "pause" in m["RepoTags"][0]:
                assert list(files) == ["pause"] and cfg["config"]["Entrypoint"] == ["/pause"]
            else:
                assert list(files) == ["usr/local/bin/x"] and files["usr/local/bin/x"].mode == 0o755


def test_tags_are_a_hash_of_the_inputs(plan, monkeypatch):
    again = nodeimage.plan()
    assert (again.base_tag, again.node_tag) == (plan.base_tag, plan.node_tag), "same inputs, same tags"
    monkeypatch.setattr(nodeimage, "NODE_PACKAGES", [*nodeimage.NODE_PACKAGES, "strace"])
    other = nodeimage.plan()
    assert other.base_tag != plan.base_tag and other.node_tag != plan.node_tag


def test_the_node_init_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(nodeimage.NODE_FILES / "meshcert-node-init")], check=True)
    conflist = json.loads((nodeimage.NODE_FILES / "10-meshcert-ptp.conflist").read_text())
    assert [p["type"] for p in conflist["plugins"]] == ["ptp", "portmap"]


# ------------------------------------------------------------------------------ the engine adapter
def test_missing_capabilities_come_from_the_bounding_set():
    assert cluster.missing_capabilities(0x000001fffeffffff) == ["SYS_RESOURCE"]
    assert cluster.missing_capabilities(0x000001ffffffffff) == []
    assert cluster.bounding_set("Name:\tx\nCapBnd:\t000001fffeffffff\n") == 0x000001fffeffffff


def _shim(tmp_path, args, unprivileged):
    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\nfor a do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    env = dict(os.environ, MESHCERT_KIND_DOCKER=str(fake), MESHCERT_KIND_LABELS="--label=io.meshcert=1 --label=io.meshcert.run=r",
               MESHCERT_KIND_UNPRIVILEGED=" ".join(unprivileged))
    shim = cluster.write_shim() / "docker"
    return subprocess.run([str(shim), *args], env=env, capture_output=True, text=True, check=True).stdout.splitlines()


def test_the_shim_labels_and_replaces_privileged_only_where_refused(tmp_path):
    opts = cluster.unprivileged_options(["SYS_RESOURCE"])
    run = ["run", "--name", "n", "--privileged", "--security-opt", "seccomp=unconfined", "img"]
    assert _shim(tmp_path, run, opts) == ["run", "--label=io.meshcert=1", "--label=io.meshcert.run=r", "--name", "n",
                                          "--cap-add=ALL", "--cap-drop=SYS_RESOURCE", "--security-opt",
                                          "systempaths=unconfined", "--device", "/dev/kmsg", "--security-opt",
                                          "seccomp=unconfined", "img"]
    assert _shim(tmp_path, ["exec", "--privileged", "-i", "n", "sh", "-c", "echo a b"], opts) == [
        "exec", "-i", "n", "sh", "-c", "echo a b"]
    assert _shim(tmp_path, ["network", "create", "-d=bridge", "k"], opts) == [
        "network", "create", "--label=io.meshcert=1", "--label=io.meshcert.run=r", "-d=bridge", "k"]
    assert _shim(tmp_path, ["ps", "-a"], opts) == ["ps", "-a"]
    # an engine that grants --privileged: kind's arguments untouched, only labelled
    assert _shim(tmp_path, run, []) == ["run", "--label=io.meshcert=1", "--label=io.meshcert.run=r", *run[1:]]
    assert _shim(tmp_path, ["exec", "--privileged", "n", "true"], []) == ["exec", "--privileged", "n", "true"]


def test_merge_config_merges_maps_extends_lists_and_copies():
    doc = {"a": {"b": 1, "c": [1]}, "l": ["x"]}
    out = cluster.merge_config(doc, {"a": {"d": 2, "c": [2]}, "l": ["y"], "n": {"k": "v"}})
    assert out == {"a": {"b": 1, "c": [1, 2], "d": 2}, "l": ["x", "y"], "n": {"k": "v"}}
    assert doc == {"a": {"b": 1, "c": [1]}, "l": ["x"]}
