"""What `meshcert sweep` and the next kind run remove of a kind cluster killed with -9: its
kubeconfig files in meshcert's cache once its node container is gone (the node and its network
carry meshcert's labels: the world's sweeper removes them), never a live cluster's, never a file
of a create under way; and only the stale kind-base/kind-node tags under `--images`."""

import os
import time

import docker.errors

from meshcert.k8s import cluster, nodeimage
from meshcert.world import labels


class _Containers:
    def __init__(self, nodes, runs):
        self.nodes, self.runs = nodes, runs

    def list(self, all=False, filters=None, sparse=False):  # noqa: A002 (docker's own keyword)
        class C:
            def __init__(self, labels):
                self.attrs = {"Labels": labels}
        nodes = [C({cluster.CLUSTER_LABEL: n, labels.RUN: n}) for n in self.nodes]
        if cluster.CLUSTER_LABEL in (filters or {}).get("label", []):
            return nodes
        return nodes + [C({labels.RUN: r}) for r in self.runs]


class _Client:
    def __init__(self, live=(), runs=()):
        self.containers = _Containers(list(live), list(runs))


def _files(d, name, age_s):
    made = []
    for f in (f"{name}.yaml", f"{name}.kind-config.yaml"):
        p = d / f
        p.write_text("x")
        os.utime(p, (time.time() - age_s,) * 2)
        made.append(f)
    lock = d / f"{name}.lock"
    lock.mkdir()
    os.utime(lock, (time.time() - age_s,) * 2)
    return made + [lock.name]


def test_only_gone_clusters_lose_their_kubeconfigs(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "kubeconfig_dir", lambda: tmp_path)
    dead = _files(tmp_path, "meshcert-mcdead1", 5)          # a world's cluster: neither node nor world left
    live = _files(tmp_path, "meshcert-mclive1", 3600)       # its node runs
    creating = _files(tmp_path, "meshcert-mcmake1", 5)      # no node yet, its world runs: a create under way
    other_old = _files(tmp_path, "mc-kindtest-old", 3600)   # not a world's: by age
    other_young = _files(tmp_path, "mc-kindtest-new", 5)
    removed = cluster.sweep_kubeconfigs(_Client(live=["meshcert-mclive1"], runs=["mcmake1"]))
    assert sorted(removed) == sorted(dead + other_old)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(live + creating + other_young)


def test_stale_node_images_removed_and_in_use_kept(monkeypatch):
    monkeypatch.setattr(nodeimage, "stale_images", lambda c: ["meshcert/kind-node:old", "meshcert/kind-base:used"])

    class Images:
        removed = []

        def remove(self, tag):
            if tag.endswith(":used"):
                raise docker.errors.APIError("conflict", response=type("R", (), {"status_code": 409})())
            self.removed.append(tag)

    class C:
        images = Images()
    assert nodeimage.remove_stale_images(C()) == (["meshcert/kind-node:old"], ["meshcert/kind-base:used"])
