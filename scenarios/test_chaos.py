"""Chaos scenarios: the guide's promises hold, or fail clearly, while the network misbehaves.
The scenario bodies live in meshcert/scenarios.py (journals go into the report)."""

import pytest

from meshcert import scenarios as s

pytestmark = [pytest.mark.chaos, pytest.mark.engine]


def test_control_plane_outage_keeps_established_paths(world, report_extra):
    s.control_plane_outage(world, report_extra)


def test_control_plane_latency_keeps_paths_and_admits_new_nodes(world, report_extra):
    s.control_plane_latency(world, report_extra)


def test_sidecar_crash_is_a_warning_and_recovers(world, report_extra):
    s.sidecar_crash(world, report_extra)


def test_frozen_sidecar_does_not_hold_the_prerun(world, report_extra):
    s.sidecar_frozen(world, report_extra)


def test_partition_between_agent_and_one_target(world, report_extra):
    s.partition_one_target(world, report_extra)


def test_slow_and_dead_endpoints_in_direct_mode(world, report_extra):
    s.slow_and_dead_endpoints_direct(world, report_extra)


def test_derp_only_with_latency_on_the_derp_path(world, report_extra):
    s.derp_latency_visible(world, report_extra)


def test_expired_key_and_expired_node_are_told_clearly(world, report_extra):
    s.expired_key(world, report_extra)


def test_subnet_router_ha_failover(world, report_extra):
    s.subnet_router_ha(world, report_extra)
