"""The chart's pod on a real kubelet (``pytest --cluster kind``): the chart installed with the
pinned helm into a kind cluster whose node joins the world's WAN, meshcert's images loaded with
``kind load``, the pod's sidecar joined to the world's headscale through toxiproxy with
tag:agent-runtime. Asserted on that pod, from inside it: HELM-1..7 (the kubelet's own pod
status, events, mounts and environment), TROUBLE-1 (a missing Secret), HEALTH-1/3 (a sidecar not
ready), ACL-1/2 (meshcert's node agent dialling from the pod).

Where no kind node image can be had (meshcert's cannot be built here and none is named with
MESHCERT_KIND_NODE_IMAGE), or without ``--cluster kind``, meshcert's plugin skips every test
marked ``kind`` with one reason, before any fixture (no world is built for it).
"""

import pytest

from meshcert.checks import helm_pod, kind_pod
from meshcert.k8s import kind
from meshcert.k8s.chart import REFERENCE_CHART, Chart

pytestmark = [pytest.mark.kind, pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def chart(pytestconfig, report_dir) -> Chart:
    path = pytestconfig.getoption("--chart") or REFERENCE_CHART
    return Chart(path, log_root=report_dir / "logs")


@pytest.fixture(scope="module")
def cluster(world):
    with kind.world_cluster(world) as c:
        yield c


@pytest.fixture(scope="module")
def release(world, cluster, chart):
    """The chart installed once with the world's values (acceptRoutes on, the Secret present)."""
    with helm_pod.kind_release(world, cluster, chart, acceptRoutes=True) as rel:
        yield rel


@pytest.mark.clause("HELM-1", "HELM-2", "HELM-3", "HELM-4", "HELM-6")
def test_chart_on_kind_runs_its_sidecar_in_the_tailnet(world, release):
    helm_pod.kind_pod_joins(world, release)


@pytest.mark.clause("HEALTH-1")
def test_kind_pod_sidecar_ready_iff_running(world, release):
    kind_pod.kind_health1(world, release)


@pytest.mark.clause("HEALTH-3")
def test_kind_pod_not_ready_sidecar_is_a_warning(world, release):
    kind_pod.kind_health3(world, release)


@pytest.mark.acl
@pytest.mark.clause("ACL-1", "ACL-2")
def test_kind_pod_acl_from_inside_the_pod(world, release):
    kind_pod.kind_acl(world, release)


@pytest.mark.clause("HELM-2", "TROUBLE-1")
def test_kind_pod_without_the_secret_or_key(world, cluster, chart):
    helm_pod.kind_missing_secret(world, cluster, chart)


@pytest.mark.route
@pytest.mark.clause("HELM-5")
def test_kind_pod_reaches_the_vlan_only_with_accept_routes(world, cluster, chart):
    helm_pod.kind_accept_routes(world, cluster, chart)


@pytest.mark.clause("HELM-7")
def test_kind_pod_disabled_runs_the_controller_alone(world, cluster, chart):
    helm_pod.kind_disabled(world, cluster, chart)
