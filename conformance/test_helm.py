"""HELM clauses: the guide's Helm values, the pod they render, and that pod run for real.

The render tests need only the pinned helm binary (no engine); the pod tests run the rendered
Deployment's containers sharing a network namespace on the Docker engine in the session world
(not a kubelet: what a kubelet decides -- a missing Secret, the env it resolves -- is asserted
on a real one, conformance/test_helm_kind.py with --cluster kind). ``--chart PATH`` certifies another
chart the same way (default: the bundled meshcert/k8s/charts/reference-agent).
"""

from pathlib import Path

import pytest

from meshcert.checks import helm_pod, helm_render
from meshcert.k8s.chart import REFERENCE_CHART, Chart


@pytest.fixture(scope="module")
def chart(pytestconfig, report_dir) -> Chart:
    path = pytestconfig.getoption("--chart") or REFERENCE_CHART
    return Chart(Path(path), log_root=report_dir / "logs")


# ------------------------------------------------------------------ rendered manifests
@pytest.mark.clause("HELM-1")
def test_enabled_renders_a_tailscale_sidecar_in_the_controller_pod(chart):
    helm_render.helm1_sidecar_rendered(chart)


@pytest.mark.clause("HELM-2")
def test_sidecar_authkey_comes_from_the_named_secret_and_key(chart):
    helm_render.helm2_authkey_from_secret(chart)


@pytest.mark.clause("HELM-3")
def test_sidecar_logs_in_to_control_server_and_empty_means_no_override(chart):
    helm_render.helm3_login_server(chart)


@pytest.mark.clause("HELM-4")
def test_sidecar_joins_under_the_hostname_value(chart):
    helm_render.helm4_hostname(chart)


@pytest.mark.clause("HELM-5")
def test_accept_routes_follows_the_value(chart):
    helm_render.helm5_accept_routes(chart)


@pytest.mark.clause("HELM-6")
def test_socket_shared_with_controller_and_a_data_path_into_the_mesh(chart):
    helm_render.helm6_socket_shared(chart)


@pytest.mark.clause("HELM-7")
def test_disabled_omitted_or_direct_renders_no_sidecar(chart):
    helm_render.helm7_no_sidecar_when_disabled(chart)


# ------------------------------------------------------------------ the rendered pod, run on the engine
@pytest.mark.engine
@pytest.mark.clause("HELM-1", "HELM-2", "HELM-3", "HELM-4", "HELM-6")
@pytest.mark.parametrize("userspace", [True, False], ids=["userspace-proxy", "kernel-tun"])
def test_chart_pod_joins_the_tailnet_and_the_controller_uses_it(world, chart, userspace):
    helm_pod.pod_joins_tailnet(world, chart, userspace=userspace)


@pytest.mark.engine
@pytest.mark.route
@pytest.mark.clause("HELM-5")
def test_chart_pod_reaches_the_vlan_only_with_accept_routes(world, chart):
    helm_pod.pod_accept_routes(world, chart)


@pytest.mark.engine
@pytest.mark.clause("HELM-7")
def test_chart_pod_disabled_runs_the_controller_alone_in_direct_mode(world, chart):
    helm_pod.pod_disabled(world, chart)
