"""What `meshcert sweep` and the next kind run remove of a kind cluster killed with -9: its
kubeconfig files in meshcert's cache once its node container is gone (the node and its network
carry meshcert's labels: the world's sweeper removes them), never a live cluster's, never a file
of a create under way; and only the stale kind-base/kind-node tags under `--images`."""

import os
import time

import docker.errors

from meshcert.k8s import cluster, nodeimage


class _Containers:
    def __init__(self, names):
        self.names = names

    def list(self, all=False, filters=None):  # noqa: A002 (docker's own keyword)
        class C:
            def __init__(self, n):
                self.labels = {cluster.CLUSTER_LABEL: n}
        return [C(n) for n in self.names]


class _Client:
    def __init__(self, live=()):
        self.containers = _Containers(list(live))


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


def test_only_dead_old_clusters_lose_their_kubeconfigs(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "kubeconfig_dir", lambda: tmp_path)
    dead = _files(tmp_path, "meshcert-mcdead1", 3600)
    live = _files(tmp_path, "meshcert-mclive1", 3600)
    young = _files(tmp_path, "meshcert-mcyoung", 5)
    removed = cluster.sweep_kubeconfigs(_Client(live=["meshcert-mclive1"]))
    assert sorted(removed) == sorted(dead)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(live + young)


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
