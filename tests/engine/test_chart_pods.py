"""meshcert's own engine tests of the HELM pod checks and the pod runner (the render-level tests
without an engine are tests/unit/test_chart_variants.py): the runner's containers share one
network namespace and their volumes, a missing Secret is an error (not an imitated kubelet
status: kind shows the real one), and nothing is left after removal; the no-controller-proxy variant is caught by
HELM-6 on a running pod; headscale refuses advertised tags with a pre-auth key; a pod joined
with an untagged key fails HELM-4.
"""


import pytest

from meshcert.checks import ClauseFailure
from meshcert.checks import helm_pod as hp
from meshcert.k8s import chart as h
from meshcert.k8s import podrunner
from meshcert.world import labels as lbl
from meshcert.world.base import wait_for
from tests.common.charts import broken_chart
from tests.common.faults import aims_at

# ----------------------------------------------------------------------------- render clauses










# ----------------------------------------------------------------------------- the variant patches










# ----------------------------------------------------------------------------- a user's chart


# ----------------------------------------------------------------------------- reading a sidecar








# ----------------------------------------------------------------------------- the pod runner (no engine)
SECRETS = {"auth": {"key": b"hskey-secret-value"}}
FIELDS = {"metadata.name": "p", "metadata.namespace": "ns", "status.podIP": "10.0.0.9", "labels:app": "agent"}










# ----------------------------------------------------------------------------- on the engine
@pytest.mark.engine
def test_pod_runner_shares_a_namespace_and_volumes_and_leaves_nothing(world):
    host = world.images["host"]
    template = {"metadata": {"labels": {"app": "t"}}, "spec": {
        "securityContext": {"fsGroup": 2000},
        "containers": [
            {"name": "reader", "image": host, "command": ["sleep", "infinity"],
             "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": True},
             "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
             "volumeMounts": [{"name": "key", "mountPath": "/run/key", "readOnly": True},
                              {"name": "scratch", "mountPath": "/scratch"}]},
            {"name": "peer", "image": host, "command": ["sleep", "infinity"],
             "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
        ],
        "volumes": [{"name": "key", "secret": {"secretName": "auth", "defaultMode": 0o400}},
                    {"name": "scratch", "emptyDir": {}}]}}
    with podrunner.run_in_world(world, template, "runner-t", secrets={"auth": {"key": "s3cret-value"}}) as pod:
        assert pod.exec("reader", ["cat", "/run/key/key"]) == (0, "s3cret-value")  # 0400|0440, group fsGroup
        assert pod.exec("reader", ["stat", "-c", "%u:%g %a", "/run/key/key"])[1].strip() == "0:2000 440"
        assert pod.exec("reader", ["sh", "-c", "echo x > /scratch/f && echo $POD && id -u"])[1].split() == [
            "runner-t", "1000"]
        assert pod.exec("peer", ["cat", "/scratch/f"]) == (0, "x\n"), "the emptyDir is shared"
        ips = {n: pod.exec(n, ["hostname", "-i"])[1].split() for n in ("reader", "peer")}
        assert ips["reader"] == ips["peer"], f"one network namespace: {ips}"
        assert pod.exec("reader", ["touch", "/etc/x"])[0] != 0  # readOnlyRootFilesystem
        assert "runner-t-reader" in world.boxes
        name = pod.run("reader").container.name
    assert "runner-t-reader" not in world.boxes
    left = lbl.leftovers(world.client, world.run_id)
    assert not [x for kind in left.values() for x in kind if "runner-t" in x], left
    assert name not in left["containers"]


@pytest.mark.engine
def test_pod_runner_refuses_a_missing_secret_without_imitating_the_kubelet(world):
    """No CreateContainerConfigError string of meshcert's own (kind shows the kubelet's): an error, nothing left."""
    template = {"spec": {"containers": [
        {"name": "needs-secret", "image": world.images["host"], "command": ["sleep", "infinity"],
         "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}]}}
    with pytest.raises(podrunner.PodRunError) as ei:
        podrunner.run_in_world(world, template, "runner-r")
    assert 'secret "absent" is not in the pod runner' in str(ei.value)
    assert "CreateContainerConfigError" not in str(ei.value)
    left = lbl.leftovers(world.client, world.run_id)
    assert not [x for kind in left.values() for x in kind if "runner-r" in x], left


@pytest.mark.engine
def test_no_controller_proxy_variant_is_caught_by_helm6_on_the_engine(world, tmp_path):
    with pytest.raises(ClauseFailure) as ei:
        hp.pod_joins_tailnet(world, h.Chart(broken_chart("no-controller-proxy", tmp_path)), userspace=True)
    assert ei.value.clause == "HELM-6"
    assert "the controller's own dial reaches server:22 through the mesh" in str(ei.value)


@pytest.mark.engine
def test_advertised_tags_with_a_preauth_key_are_refused_by_headscale(world):
    """Why the reference chart's connectivity.tags defaults to []: headscale >= 0.28 refuses a
    pre-auth key registration that also advertises tags (the key's tags are the node's)."""
    with hp.chart_pod(world, h.Chart(h.REFERENCE_CHART), tags=[hp.AGENT_TAG]) as cp:
        wait_for("the sidecar's login refused", lambda: "are invalid or not permitted" in cp.pod.logs("tailscale"),
                 60, describe=lambda: cp.pod.logs("tailscale")[-600:])
        assert cp.backend_state() != "Running"


@pytest.mark.engine
@aims_at("chart", "untagged-key", "HELM-4", "the chart's Secret holds an untagged pre-auth key (no tags in status)")
def test_a_pod_joined_with_an_untagged_key_fails_helm4(world, caught):
    """A broken setting: the chart's Secret holds an untagged pre-auth key (the guide's own
    `preauthkeys create --user`). The pod joins under its hostname, but the node carries no tag
    and tailscale leaves the empty Tags list out of its status: HELM-4 must read that as no tags."""
    untagged = world.headscale.preauth_key((), user_id=world.user_id, expiration="1h")
    values = h.guide_values()["connectivity"]
    try:
        with hp.chart_pod(world, h.Chart(h.REFERENCE_CHART),
                         secrets={values["authKeySecret"]: {values["authKeySecretKey"]: untagged.reveal()}}) as cp:
            st = cp.wait_running()
            assert "Tags" not in (st.get("Self") or {}), "the untagged node's status has no Tags at all"
            with pytest.raises(ClauseFailure) as ei:
                hp.helm4_joined_under_hostname(world, cp.hostname, st)
    finally:
        world.headscale.expire_preauth_key(untagged)
    assert ei.value.clause == "HELM-4"
    assert f"the node's own status carries {hp.AGENT_TAG} (Self.Tags)" in str(ei.value)
    assert f"headscale lists {cp.hostname} carrying {hp.AGENT_TAG}" in str(ei.value)
    caught(ei.value.clause)
