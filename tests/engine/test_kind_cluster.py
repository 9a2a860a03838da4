"""A real kind cluster here: meshcert's node image (built when missing), the pinned kind, the
node Ready; a pod with a Secret volume and a secretKeyRef env var runs; a pod whose Secret does
not exist gets the real kubelet's CreateContainerConfigError; the machine's host-wide /proc/sys
values are the same after the cluster as before; nothing is left on the engine.

Engine test (``pytest -m kind tests/test_kind_cluster.py``): one cluster for the module, removed
in teardown even when a test fails; a killed run leaves labelled containers for the sweeper.
"""

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from meshcert.k8s import kind, nodeimage
from meshcert.toolchain import engine, images
from meshcert.world import labels

pytestmark = [pytest.mark.kind, pytest.mark.engine, pytest.mark.slow]

_why = kind.skip_reason()
if _why:
    pytest.skip(_why, allow_module_level=True)

SECRET_VALUE = "meshcert-kind-test-value"  # test data, not a credential
# Values that change on their own; everything else under these folders must not move.
VOLATILE = ("kernel/random/", "kernel/ns_last_pid", "kernel/pty/nr", "kernel/tainted", "fs/dentry-state",
            "fs/file-nr", "fs/inode-nr", "fs/inode-state", "fs/aio-nr", "fs/quota/", "vm/stat_refresh",
            "kernel/sched_domain/", "fs/binfmt_misc/", "vm/nr_", "kernel/perf_event_max_sample_rate")


def host_sysctls() -> dict[str, str]:
    """The machine's host-wide values (not net: per network namespace)."""
    out = {}
    for top in ("kernel", "vm", "fs"):
        for p in sorted(Path("/proc/sys", top).rglob("*")):
            key = str(p.relative_to("/proc/sys"))
            if key.startswith(VOLATILE) or not p.is_file():
                continue
            try:
                out[key] = p.read_text().strip()
            except OSError:
                continue
    return out


def wait_until(what: str, probe, timeout: float):
    """Poll ``probe`` until it returns something true; fail naming ``what`` and the last answer."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = probe()
        if last and last[0]:
            return last
        time.sleep(0.5)  # poll interval, not a wait for a condition
    pytest.fail(f"{what}: not within {timeout:.0f} s; last observed: {last[1] if last else None}")


@pytest.fixture(scope="module")
def client():
    return engine.ensure_engine()


@pytest.fixture(scope="module")
def cluster(client):
    node_image = kind.ensure_node_image(client)
    workload = images.base_image(client)
    before = host_sysctls()
    run_id = f"kindtest-{uuid.uuid4().hex[:8]}"
    c = kind.KindCluster(f"mc-{run_id}", node_image, run_id=run_id, client=client)
    try:
        t0 = time.monotonic()
        c.create()
        c.created_s = time.monotonic() - t0
        c.load([workload])
        c.workload, c.sysctls_before = workload, before
        yield c
    finally:
        c.delete()
        left = labels.leftovers(client, c.label_run)
        assert not any(left.values()), f"kind cluster {c.name} left {left}"


def _pod(name: str, secret: str, image: str, secret_volume: bool = True) -> dict:
    volumes = [{"name": "shared", "emptyDir": {}}]
    if secret_volume:
        volumes.append({"name": "s", "secret": {"secretName": secret}})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"restartPolicy": "Never", "volumes": volumes,
                     "containers": [
                         {"name": "writer", "image": image, "imagePullPolicy": "Never",
                          "command": ["sh", "-c", "cat /secret/key > /shared/copy; echo $KEY > /shared/env; sleep 3600"],
                          "env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": "key"}}}],
                          "volumeMounts": [{"name": "s", "mountPath": "/secret"}, {"name": "shared", "mountPath": "/shared"}]},
                         {"name": "reader", "image": image, "imagePullPolicy": "Never",
                          "command": ["sh", "-c", "sleep 3600"],
                          "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}]}}
    if not secret_volume:
        writer = pod["spec"]["containers"][0]
        writer["volumeMounts"] = [m for m in writer["volumeMounts"] if m["name"] != "s"]
    return pod


def _pod_status(cluster, name: str) -> dict:
    out = cluster.kubectl("get", "pod", name, "-o", "json", check=False)
    return json.loads(out)["status"] if out.strip() else {}


def test_the_node_is_ready_and_carries_meshcerts_labels(cluster, client):
    node = json.loads(cluster.kubectl("get", "node", cluster.node, "-o", "json"))
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready
    assert node["status"]["nodeInfo"]["kubeletVersion"] == nodeimage.plan().k8s_version
    assert cluster.node in labels.leftovers(client, cluster.label_run)["containers"], \
        "the node container carries the run's labels (the sweeper finds it after a kill)"


def test_a_pod_with_a_secret_volume_and_secret_key_ref_runs(cluster):
    cluster.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "present", "namespace": "default"},
                    "stringData": {"key": SECRET_VALUE}},
                   _pod("with-secret", "present", cluster.workload)])
    wait_until("pod with-secret Running with both containers ready",
               lambda: ((s := _pod_status(cluster, "with-secret")).get("phase") == "Running"
                        and all(c.get("ready") for c in s.get("containerStatuses", [])), s), 120)
    def read(path: str) -> str:
        return cluster.kubectl("exec", "with-secret", "-c", "reader", "--", "cat", path).strip()
    assert (read("/shared/copy"), read("/shared/env")) == (SECRET_VALUE, SECRET_VALUE), \
        "the reader sees what the writer read from the Secret volume and from its secretKeyRef env var"


def _events(cluster, pod: str) -> list[str]:
    items = yaml.safe_load(cluster.kubectl("get", "events", "--field-selector", f"involvedObject.name={pod}",
                                           "-o", "yaml"))["items"]
    return [e.get("message", "") for e in items]


def test_a_missing_secret_is_the_kubelets_create_container_config_error(cluster):
    """secretKeyRef to a Secret that does not exist: the kubelet's CreateContainerConfigError."""
    cluster.apply([_pod("without-secret", "does-not-exist", cluster.workload, secret_volume=False)])

    def waiting():
        s = _pod_status(cluster, "without-secret")
        reasons = {(c.get("state", {}).get("waiting") or {}).get("reason") for c in s.get("containerStatuses", [])}
        return "CreateContainerConfigError" in reasons, s
    wait_until("pod without-secret waiting with CreateContainerConfigError", waiting, 120)
    events = _events(cluster, "without-secret")
    assert any('secret "does-not-exist" not found' in m for m in events), events


def test_a_missing_secret_volume_stops_the_pod_at_mount(cluster):
    """A Secret volume whose Secret does not exist: the kubelet never creates the containers
    (FailedMount, ContainerCreating), so no CreateContainerConfigError is ever shown."""
    cluster.apply([_pod("without-secret-volume", "does-not-exist", cluster.workload)])
    want = 'MountVolume.SetUp failed for volume "s" : secret "does-not-exist" not found'

    def failed_mount():
        ev = _events(cluster, "without-secret-volume")
        return any(want in m for m in ev), ev
    wait_until("FailedMount event for pod without-secret-volume", failed_mount, 120)
    s = _pod_status(cluster, "without-secret-volume")
    assert s.get("phase") == "Pending" and {(c.get("state", {}).get("waiting") or {}).get("reason")
                                            for c in s.get("containerStatuses", [])} == {"ContainerCreating"}, s


def test_the_host_keeps_its_sysctls(cluster):
    """kubelet sees its own values inside the node; the host's are what they were."""
    inside = {k: _node_read(cluster, k) for k in nodeimage.KUBELET_SYSCTLS}
    assert inside == nodeimage.KUBELET_SYSCTLS
    after = host_sysctls()
    changed = {k: (v, after.get(k)) for k, v in cluster.sysctls_before.items() if after.get(k) != v}
    assert not changed, f"host-wide /proc/sys values changed while a kind node ran: {changed}"


def _node_read(cluster, key: str) -> str:
    return subprocess.run(["docker", "exec", cluster.node, "cat", f"/proc/sys/{key}"], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_asking_the_engine_about_privileged_leaves_no_container(client):
    """The --privileged question (k8s/cluster.py) runs a throw-away container; refused or not, it
    is gone afterwards (a refused one never ran, so `run(remove=True)` left it behind, "Created",
    on every kind start)."""
    from meshcert.k8s import cluster
    image = images.base_image(client)

    def probes() -> set[str]:  # this process's: other workers' kind starts ask the same question meanwhile
        return {x.id for x in client.containers.list(all=True, filters={"label": [
            "io.meshcert.kind-probe=1", f"{labels.OWNER}={labels.owner_token()}"]})}
    before = probes()
    cluster._verdict.pop(image, None)  # asked again, not answered from this process's memory
    cluster.engine_refuses_privileged(client, image)
    assert probes() - before == set(), "the privileged probe container was left on the engine"
