"""CI's version matrix (issue 14, item 6): a real 2 x 2 `certify --matrix` -- tailscale {pinned,
oldest the pinned headscale supports} x headscale {pinned, 0.25.1 (before the routes API
changed)} -- the cheapest real 2 x 2 that still crosses the routes-API change (0.25.1 runs
ROUTE-3 and the recorded finding instead of the three errata). It checks what the matrix
promises, not a fixed pass: every column ran, one world per headscale version (the second
tailscale version switched nodes only), the versions are recorded per column, the pinned pair
passes every clause it runs, a clause holding only for other versions shows n/a, the finding
of headscale < 0.26 reproduces (xfailed) there and nowhere else, and every failure names its
combination."""

from __future__ import annotations

import json
import os
import time

import pytest

from meshcert.report import matrix as report_matrix
from meshcert.toolchain import components
from tests.common.cli import meshcert
from tests.common.engine import free_vlan

# Two worlds, one tailscale switch each, ~20 tests per column. Measured here (2 cores shared with
# other sessions, load 8-14): see the report of the session that added it; 3600 s covers a cold
# image build of a version on top.
pytestmark = [pytest.mark.engine, pytest.mark.slow(minutes=12), pytest.mark.timeout(3600)]

OLD_TS, OLD_HS = "v1.80.3", "v0.25.1"
FINDING = "headscale-0.25-route-enable-leaves-router-without-peers"


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    pinned = {n: components.COMPONENTS[n].version for n in ("tailscale", "headscale")}
    report = tmp_path_factory.mktemp("matrix")
    env = {k: v for k, v in os.environ.items() if k not in ("MESHCERT_TAILSCALE", "MESHCERT_HEADSCALE",
                                                           "PYTEST_XDIST_WORKER", "PYTEST_CURRENT_TEST")}
    # two headscale sessions side by side (MATRIX_JOBS): two worlds, MESHCERT_VLAN + 0 and + 1
    env.update(MESHCERT_VLAN=free_vlan(count=2), MESHCERT_CERTIFY_WORKERS="0")
    t0 = time.monotonic()
    r = meshcert("certify", "--matrix", "--tailscale", f"{pinned['tailscale']},{OLD_TS}",
                 "--headscale", f"{pinned['headscale']},{OLD_HS}", "--report-dir", str(report), env=env, timeout=3300)
    wall = time.monotonic() - t0
    out = r.stdout + r.stderr
    assert (report / "matrix.json").is_file(), f"certify --matrix wrote no matrix.json (exit {r.returncode}):\n{out[-3000:]}"
    return {"rc": r.returncode, "out": out, "pinned": pinned, "report": report, "wall": wall,
            "doc": json.loads((report / "matrix.json").read_text())}


def _col(m, ts, hs) -> dict:
    return next(c for c in m["doc"]["combinations"] if (c["tailscale"], c["headscale"]) == (ts, hs))


def test_every_column_ran_in_one_world_per_headscale(matrix):
    m, p = matrix, matrix["pinned"]
    cols = m["doc"]["combinations"]
    assert {(c["tailscale"], c["headscale"]) for c in cols} == {
        (ts, hs) for ts in (p["tailscale"], OLD_TS) for hs in (p["headscale"], OLD_HS)}
    assert all(c["state"] == report_matrix.RUN for c in cols), [(c["tailscale"], c["headscale"], c["state"],
                                                                 c["reason"]) for c in cols]
    assert sorted(d.name for d in m["report"].iterdir() if d.is_dir()) == [f"hs-{OLD_HS}", f"hs-{p['headscale']}"]
    for hs in (p["headscale"], OLD_HS):
        world = json.loads((m["report"] / f"hs-{hs}" / "world.json").read_text())
        results = json.loads((m["report"] / f"hs-{hs}" / "results.json").read_text())
        assert results["extra"]["versions"]["headscale"] == hs
        # the second tailscale version ran on the same world (its run id), only its nodes restarted
        switches = results["extra"].get("world_switches") or {}
        assert list(switches) == [OLD_TS] and switches[OLD_TS]["run"] == world["run"], (switches, world["run"])


def test_the_pinned_pair_passes_and_clauses_of_other_versions_are_na(matrix):
    m, p = matrix, matrix["pinned"]
    pinned = _col(m, p["tailscale"], p["headscale"])
    bad = {c: o for c, o in pinned["clauses"].items() if o not in ("passed", report_matrix.NOT_APPLICABLE)}
    assert not bad, f"the pinned pair: {bad} (report {pinned['report']})"
    assert pinned["clauses"]["ROUTE-3"] == report_matrix.NOT_APPLICABLE
    for ts in (p["tailscale"], OLD_TS):
        old = _col(m, ts, OLD_HS)
        assert {old["clauses"][c] for c in ("ERRATA-1", "ERRATA-2", "ERRATA-3")} == {report_matrix.NOT_APPLICABLE}
        assert old["clauses"].get("ROUTE-3") in ("passed", "failed"), old["clauses"]


def test_the_old_headscale_finding_reproduces_there_only(matrix):
    m, p = matrix, matrix["pinned"]
    for ts in (p["tailscale"], OLD_TS):
        assert _col(m, ts, OLD_HS)["findings"].get(FINDING) == "xfailed", _col(m, ts, OLD_HS)["findings"]
        assert _col(m, ts, p["headscale"])["findings"].get(FINDING) == "skipped"
    assert f"finding: {FINDING}" in (m["report"] / "matrix.md").read_text()
    assert "xfailed" in (m["report"] / "matrix.html").read_text()


def test_exit_code_and_failures_name_their_combination(matrix):
    m = matrix
    failed = [(c["tailscale"], c["headscale"], cid) for c in m["doc"]["combinations"]
              for cid, o in c["clauses"].items() if o == "failed"]
    assert m["rc"] == (1 if failed else 0), f"exit {m['rc']} with failures {failed}:\n{m['out'][-2000:]}"
    for ts, hs, cid in failed:
        assert f"{cid} failed with tailscale {ts} + headscale {hs}" in m["out"]
    print(f"certify --matrix 2x2: {m['wall']:.0f} s wall, exit {m['rc']}, failures {failed}")
