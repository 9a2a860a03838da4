"""Deployment without mesh VPN: type direct."""

import pytest

from meshcert.checks import sut as c

pytestmark = [pytest.mark.engine, pytest.mark.sut]


@pytest.mark.clause("DIRECT-1")
@pytest.mark.parametrize("pod", ["agent", "agent-us"])  # agent-us: a SOCKS5 proxy the SUT must not use
def test_direct_mode_needs_no_sidecar_and_uses_the_cluster_network(steady_world, pod):
    c.direct1_no_sidecar(steady_world, pod)
