"""The guide's performance figures, measured on this world and reported (never asserted)."""

import pytest

from meshcert.checks import perf

pytestmark = [pytest.mark.engine]


@pytest.mark.clause("PERF-1", "PERF-2")
def test_mesh_direct_and_subnet_router_latency_are_measured(world, report_extra):
    rows = perf.perf_report(world, report_extra)
    print("\n" + "\n".join(f"{r['path']:<24} {r['target']:<30} p50 {r['p50_ms']:.2f} ms  p95 {r['p95_ms']:.2f} ms"
                           for r in rows))


@pytest.mark.clause("PERF-3")
def test_derp_relays_when_direct_udp_is_blocked(world, report_extra):
    rows = perf.perf3_derp_fallback(world, report_extra)
    print("\n" + "\n".join(f"{r['path']:<6} {r['target']:<26} p50 {r['p50_ms']:.2f} ms  p95 {r['p95_ms']:.2f} ms"
                           for r in rows) + f"\nfallback took {report_extra['derp_fallback_s']} s")
