"""Each kind check of the chart's pod on a real kubelet (meshcert/checks/helm_pod.py kind_*,
meshcert/checks/kind_pod.py) FAILS on a broken chart (fixtures/charts/*.patch), a broken SUT
(a reference mutant, set through the chart's controller.env) or a broken world setting -- and
it is the assertion aimed at that fault that fails. The reference passes the same checks in
conformance/test_helm_kind.py.

Engine + kind (``pytest --cluster kind tests/engine/test_kind_kills.py``): one world, one
cluster for the module, one helm release per kill. These are not registered faults of the
mutation score (tests/common/faults.py): a run without kind would count them as not killed.
"""

import pytest

from meshcert.checks import ClauseFailure, helm_pod, kind_pod
from meshcert.k8s import kind
from meshcert.k8s.chart import REFERENCE_CHART, Chart
from meshcert.world.topology import DB_TAG
from tests.common.charts import broken_chart

pytestmark = [pytest.mark.kind, pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(world):
    with kind.world_cluster(world) as c:
        yield c


def fails(fn, clause: str, *aimed: str) -> ClauseFailure:
    """``fn()`` raises the ClauseFailure of ``clause`` and each ``aimed`` assertion is among its violations."""
    with pytest.raises(ClauseFailure) as ei:
        fn()
    assert ei.value.clause == clause, f"wanted {clause} to fail, {ei.value.clause} failed first: {ei.value}"
    for text in aimed:
        assert text in str(ei.value), f"{clause} failed, but not on {text!r}: {ei.value}"
    return ei.value


def test_wrong_secret_key_chart_fails_helm2_on_the_kubelet(world, cluster, tmp_path):
    """TS_AUTHKEY's secretKeyRef names key `authkey`: the kubelet refuses the sidecar."""
    chart = Chart(broken_chart("wrong-secret-key", tmp_path))
    with helm_pod.kind_release(world, cluster, chart) as rel:
        fails(lambda: helm_pod.kind_pod_joins(world, rel), "HELM-2",
              f"the pod's TS_AUTHKEY a secretKeyRef to {rel.secret}/{rel.secret_key}",
              "the kubelet started the sidecar with the Secret present", "CreateContainerConfigError")


def test_no_controller_proxy_chart_fails_helm6_on_the_kubelet(world, cluster, tmp_path):
    chart = Chart(broken_chart("no-controller-proxy", tmp_path))
    with helm_pod.kind_release(world, cluster, chart) as rel:
        fails(lambda: helm_pod.kind_pod_joins(world, rel), "HELM-6",
              "the controller's own dial reaches server:22 through the mesh")


def test_sidecar_when_disabled_chart_fails_helm7_on_the_kubelet(world, cluster, tmp_path):
    chart = Chart(broken_chart("sidecar-when-disabled", tmp_path))
    fails(lambda: helm_pod.kind_disabled(world, cluster, chart), "HELM-7",
          "no sidecar container in the pod the kubelet runs")


def test_silent_missing_secret_mutant_fails_trouble1_on_the_kubelet(world, cluster):
    """The kubelet's part (HELM-2) holds; the SUT names no Secret."""
    fails(lambda: helm_pod.kind_missing_secret(world, cluster, Chart(REFERENCE_CHART),
                                               controller_env={"SUT_MUTANT": "silent-missing-secret"}),
          "TROUBLE-1", "a warning naming the Secret")


def test_health_ignores_state_mutant_fails_health1_on_the_kubelet(world, cluster):
    with helm_pod.kind_release(world, cluster, Chart(REFERENCE_CHART),
                               controller_env={"SUT_MUTANT": "health-ignores-state"}) as rel:
        fails(lambda: kind_pod.kind_health1(world, rel), "HEALTH-1",
              "after `tailscale down` in the kind pod's sidecar")


def test_not_ready_skips_dials_mutant_fails_health3_on_the_kubelet(world, cluster):
    with helm_pod.kind_release(world, cluster, Chart(REFERENCE_CHART),
                               controller_env={"SUT_MUTANT": "not-ready-skips-dials"}) as rel:
        fails(lambda: kind_pod.kind_health3(world, rel), "HEALTH-3",
              "dialled and reported reachable", "the server saw a connection")


def _with_policy(world, policy: dict, fn):
    world.set_policy(policy)
    try:
        fn()
    finally:
        world.set_policy(world.topology.policy)


def test_a_policy_that_opens_everything_fails_acl2_from_the_kind_pod(world, cluster):
    """A broken world setting: the policy also accepts everything."""
    opened = {**world.topology.policy,
              "acls": [*world.topology.policy["acls"], {"action": "accept", "src": ["*"], "dst": ["*:*"]}]}
    with helm_pod.kind_release(world, cluster, Chart(REFERENCE_CHART), acceptRoutes=True) as rel:
        fails(lambda: _with_policy(world, opened, lambda: kind_pod.kind_acl(world, rel)), "ACL-2",
              "expected unreachable", "observed reachable")


def test_a_policy_without_the_database_grant_fails_acl1_from_the_kind_pod(world, cluster):
    """A broken world setting: the guide's database grant left out."""
    narrowed = {**world.topology.policy,
                "acls": [a for a in world.topology.policy["acls"] if not any(DB_TAG in d for d in a["dst"])]}
    with helm_pod.kind_release(world, cluster, Chart(REFERENCE_CHART), acceptRoutes=True) as rel:
        fails(lambda: _with_policy(world, narrowed, lambda: kind_pod.kind_acl(world, rel)), "ACL-1",
              f"{helm_pod.KIND_AGENT} -> database", ":5432: expected reachable")


def test_an_untagged_key_fails_helm4_on_the_kubelet(world, cluster):
    """A broken world setting: the Secret holds an untagged pre-auth key (the guide's own
    `preauthkeys create --user`): the pod joins, but not as tag:agent-runtime."""
    untagged = world.headscale.preauth_key((), user_id=world.user_id, expiration="1h")
    try:
        with helm_pod.kind_release(world, cluster, Chart(REFERENCE_CHART), auth_key=untagged) as rel:
            fails(lambda: helm_pod.kind_pod_joins(world, rel), "HELM-4",
                  f"the node's own status carries {helm_pod.AGENT_TAG}",
                  f"headscale lists {rel.hostname} carrying {helm_pod.AGENT_TAG}")
    finally:
        world.headscale.expire_preauth_key(untagged)


def test_a_control_alias_that_misses_toxiproxy_fails_helm3_on_the_kubelet(world, cluster):
    """A broken world setting: the pod's `control` resolves to the server node (no control server
    there): the sidecar starts and reads its key, but never gets Running."""
    with helm_pod.kind_release(world, cluster, Chart(REFERENCE_CHART),
                               control_ip=world.nodes["server"].wan_ip) as rel:
        fails(lambda: helm_pod.kind_pod_joins(world, rel), "HELM-3", "BackendState Running with a valid pre-auth key")


def test_health_tcp_41112_mutant_fails_health1_on_the_kubelet(world, cluster):
    """The SUT calls the sidecar healthy when TCP 127.0.0.1:41112 accepts (kind_health1 keeps a
    listener there in the pod)."""
    with helm_pod.kind_release(world, cluster, Chart(REFERENCE_CHART),
                               controller_env={"SUT_MUTANT": "health-tcp-41112"}) as rel:
        fails(lambda: kind_pod.kind_health1(world, rel), "HEALTH-1", "127.0.0.1:41112 accepting in the pod")


def test_accept_routes_ignored_chart_fails_helm5_on_the_kubelet(world, cluster, tmp_path):
    chart = Chart(broken_chart("accept-routes-ignored", tmp_path))
    fails(lambda: helm_pod.kind_accept_routes(world, cluster, chart), "HELM-5",
          "acceptRoutes true: the sidecar's RouteAll pref is True", "acceptRoutes true: the legacy host")
