"""HELM clauses on a real Kubernetes pod: the chart applied to a kind cluster whose node joins
the world's WAN, its sidecar Running in the tailnet (``pytest --cluster kind``).

Where no kind node image can be had (meshcert's cannot be built here and none is named with
MESHCERT_KIND_NODE_IMAGE), or without ``--cluster kind``, meshcert's plugin skips every test
marked ``kind`` with one reason, before any fixture (no world is built for it).
"""

import pytest

from meshcert.checks import helm_pod
from meshcert.k8s import kind
from meshcert.k8s.chart import REFERENCE_CHART, Chart

pytestmark = [pytest.mark.kind, pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def chart(pytestconfig, report_dir) -> Chart:
    path = pytestconfig.getoption("--chart") or REFERENCE_CHART
    return Chart(path, log_root=report_dir / "logs")


@pytest.fixture(scope="module")
def cluster(world):
    c = kind.KindCluster(f"meshcert-{world.run_id}", kind.ensure_node_image(world.client), run_id=world.run_id,
                         client=world.client).create()
    try:
        c.connect(world.client, world.networks["wan"].name)
        c.load(kind.images_to_load(world.images, world.sut_image))
        yield c
    finally:
        c.delete()


@pytest.mark.clause("HELM-1", "HELM-3", "HELM-4")
def test_chart_on_kind_runs_its_sidecar_in_the_tailnet(world, cluster, chart):
    helm_pod.kind_pod_joins(world, cluster, chart)
