"""HELM clauses on a real Kubernetes pod: the chart applied to a kind cluster whose node joins
the world's WAN, its sidecar Running in the tailnet (``pytest --cluster kind``).

Where no kind node image can be had (meshcert's cannot be built here and none is named with
MESHCERT_KIND_NODE_IMAGE), or without ``--cluster kind``, the whole module skips with one line.
"""

import pytest

from meshcert.k8s import kind
from meshcert.checks import helm

pytestmark = [pytest.mark.kind, pytest.mark.engine, pytest.mark.slow]

_why = kind.skip_reason()
if _why is None and kind.SELECTED != "kind":
    _why = "kind clauses run with --cluster kind (a kind node image is available here)"
if _why:
    pytest.skip(_why, allow_module_level=True)


@pytest.fixture(scope="module")
def chart(pytestconfig, report_dir) -> helm.Chart:
    path = pytestconfig.getoption("--chart") or helm.REFERENCE_CHART
    return helm.Chart(path, log_root=report_dir / "logs")


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
    helm.kind_pod_joins(world, cluster, chart)
