"""Connectivity types, asserted against the SUT in its pod."""

import pytest

from meshcert.checks import sut as c

pytestmark = [pytest.mark.engine, pytest.mark.sut]


@pytest.mark.clause("TYPE-1")
def test_direct_is_the_default_and_omitted_means_direct(world):
    c.type1_direct_is_default(world)


@pytest.mark.clause("TYPE-2")
def test_headscale_with_control_server_and_secret_is_accepted(world):
    c.type2_headscale_accepted(world)


@pytest.mark.clause("TYPE-3")
def test_tailscale_with_empty_control_server_is_accepted(world):
    c.type3_tailscale_empty_control(world)


@pytest.mark.clause("TYPE-4")
def test_unknown_type_is_rejected(world):
    c.type4_unknown_rejected(world)


@pytest.mark.clause("TYPE-5")
def test_headscale_without_control_server_or_secret_is_rejected(world):
    c.type5_headscale_incomplete_rejected(world)


@pytest.mark.clause("TYPE-6")
@pytest.mark.parametrize("pod", ["agent", "agent-us"])
def test_tools_and_prerun_dial_through_the_sidecar(world, pod):
    c.type6_tools_dial_through_the_mesh(world, pod)


@pytest.mark.clause("TYPE-6")
@pytest.mark.parametrize("pod", ["agent", "agent-us"])
def test_targets_the_mesh_does_not_deliver_are_reported_unreachable(world, pod):
    c.type6_unreachable_reported_unreachable(world, pod)


@pytest.mark.clause("TYPE-6")
@pytest.mark.parametrize("pod", ["agent", "agent-us"])
def test_ipv6_and_magicdns_endpoints_are_dialled_like_ipv4(world, pod):
    c.type6_endpoint_forms(world, pod)
