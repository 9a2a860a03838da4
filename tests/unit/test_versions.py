"""The version matrix's components (issue 14), engine-free and offline: versions pinned by a
go.mod + go.sum of ours beside the pinned one, go's refusals as one line, the capability-version
floor read from headscale's table, a version that is not built keeping its column with the
reason, images tagged per version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshcert import cli
from meshcert.errors import EnvironmentProblem, InputError
from meshcert.report import matrix as report_matrix
from meshcert.report.catalog import default_path, load_catalog, parse_catalog
from meshcert.toolchain import components, images, matrix
from meshcert.world.topology import guide_topology, parse_versions, with_tailscale, world_versions

# go's own stderr, as measured against the module proxy here (2026-12-01; its host name replaced)
PROXY_403 = ("go: github.com/juanfont/headscale/cmd/headscale@v0.28.1: reading https://goproxy.invalid/"
             "github.com/juanfont/headscale/cmd/headscale/@v/v0.28.1.info: 403 Forbidden")
SUMDB_404 = ("go: github.com/juanfont/headscale/cmd/headscale imports\n\tgithub.com/juanfont/headscale/hscontrol imports\n"
             "\tgithub.com/tailscale/tailsql/server/tailsql: github.com/tailscale/tailsql@v0.0.0-20260105194658-"
             "001575c3ca09: verifying module: github.com/tailscale/tailsql@v0.0.0-20260105194658-001575c3ca09: "
             "reading https://goproxy.invalid/sumdb/sum.golang.org/lookup/github.com/tailscale/tailsql@"
             "v0.0.0-20260105194658-001575c3ca09: 404 Not Found")
GO_TOO_OLD = ("go: tailscale.com/cmd/tailscaled@v1.104.7: tailscale.com@v1.104.7 requires go >= 1.27.4 "
              "(running go 1.26.8; GOTOOLCHAIN=local)")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MESHCERT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_go_refusals_are_one_line_naming_what_was_refused():
    assert components.go_refusal(PROXY_403, "github.com/juanfont/headscale", "v0.28.1") == \
        "the module proxy refused github.com/juanfont/headscale/cmd/headscale@v0.28.1 (403 Forbidden)"
    # the refused module is a dependency, not headscale: the line names it
    assert components.go_refusal(SUMDB_404, "github.com/juanfont/headscale", "v0.28.0") == \
        ("the checksum database has no entry for github.com/tailscale/tailsql@v0.0.0-20260105194658-001575c3ca09 "
         "(404 Not Found)")
    assert components.go_refusal(GO_TOO_OLD, "tailscale.com", "v1.104.7") == \
        "tailscale.com@v1.104.7 requires go >= 1.27.4 (this machine's Go is 1.26.8)"
    assert "\n" not in components.go_refusal("go: something\nwent wrong\n", "m", "v1.0.0")


def test_a_failed_build_is_its_first_go_error(tmp_path):
    log = tmp_path / "go-build.log"
    log.write_text("go: downloading x\n# tailscale.com/net/tstun\n/root/go/pkg/mod/tailscale.com@v1.80.3/net/tstun/"
                   "wrap.go:12:3: undefined: foo\n/root/go/pkg/mod/x.go:1:1: other\n")
    assert components.build_error(log) == "failed: /root/go/pkg/mod/tailscale.com@v1.80.3/net/tstun/wrap.go:12:3: undefined: foo"


def test_versions_are_modules_beside_the_pinned_one():
    pinned = components.COMPONENTS["tailscale"]
    assert components.component("tailscale") is pinned
    assert components.component("tailscale", pinned.version) is pinned  # the pinned version is the pinned folder
    old = components.component("tailscale", "v1.80.3")
    assert old.module_dir.name == "tailscale@v1.80.3" and old.pinned() and old.version == "v1.80.3"
    assert components.tool_packages("tailscale") == ["tailscale.com/cmd/tailscale", "tailscale.com/cmd/tailscaled"]
    assert set(components.pinned_versions("tailscale")) >= {pinned.version, "v1.80.3"}
    assert components.pinned_versions("headscale")[0] == components.COMPONENTS["headscale"].version
    with pytest.raises(EnvironmentProblem, match="not a Go module version"):
        components.component("tailscale", "1.80")
    with pytest.raises(EnvironmentProblem, match="only the pinned"):
        components.component("helm", "v3.0.0")


def test_a_version_not_pinned_is_not_built_with_the_reason(cache):
    st = matrix.status("tailscale", "v1.2.3")
    assert st.state == matrix.NOT_BUILT and "meshcert matrix add tailscale v1.2.3" in st.reason
    with pytest.raises(EnvironmentProblem, match="not pinned"):
        components.component("tailscale", "v1.2.3").ensure()
    # a failed pin leaves its one line, shown instead (doctor and the matrix column)
    components._pin_failure("tailscale", "v1.2.3").write_text("tailscale v1.2.3: not pinned: the module proxy "
                                                               "refused tailscale.com@v1.2.3 (403 Forbidden)\n")
    st = matrix.status("tailscale", "v1.2.3")
    assert st.state == matrix.NOT_BUILT and st.reason.endswith("(403 Forbidden)") and "\n" not in st.line()
    assert components.failed_pins("tailscale") == ["v1.2.3"]


def test_a_pinned_version_whose_build_failed_keeps_the_reason(cache):
    comp = components.component("tailscale", "v1.80.3")
    assert matrix.status("tailscale", "v1.80.3").state == matrix.MISSING
    comp.out_dir.parent.mkdir(parents=True, exist_ok=True)
    comp.failure_file.write_text("go build tailscale v1.80.3: failed: x.go:1:1: boom\n")
    st = matrix.status("tailscale", "v1.80.3")
    assert (st.state, st.reason) == (matrix.NOT_BUILT, "go build tailscale v1.80.3: failed: x.go:1:1: boom")


V029 = '''var tailscaleToCapVer = map[string]tailcfg.CapabilityVersion{
\t"v1.78": 109,
\t"v1.80": 113,
\t"v1.82": 115,
}
const MinSupportedCapabilityVersion tailcfg.CapabilityVersion = 113
'''
V025 = '''const MinSupportedCapabilityVersion tailcfg.CapabilityVersion = 88
var tailscaleToCapVer = map[string]tailcfg.CapabilityVersion{
\t"v1.60.1": 87,
\t"v1.62.0": 88,
\t"v1.62.1": 88,
\t"v1.64.0": 90,
}
'''


def test_the_oldest_supported_tailscale_is_read_from_the_capver_table():
    assert matrix.parse_capver(V029) == ("v1.80", 113)
    assert matrix.parse_capver(V025) == ("v1.62", 88)
    with pytest.raises(EnvironmentProblem, match="layout changed"):
        matrix.parse_capver("package capver\n")


def test_combinations_are_grouped_by_headscale_version():
    combos = matrix.combinations(["v1.102.3", "v1.80.3"], ["v0.29.2", "v0.25.1"])
    assert [(c.headscale, c.tailscale) for c in combos] == [
        ("v0.29.2", "v1.102.3"), ("v0.29.2", "v1.80.3"), ("v0.25.1", "v1.102.3"), ("v0.25.1", "v1.80.3")]
    assert combos[0].name == "tailscale v1.102.3 + headscale v0.29.2"


def test_each_version_has_its_own_image_tag(cache):
    pinned, old = components.COMPONENTS["tailscale"], components.component("tailscale", "v1.80.3")
    for comp in (pinned, old):  # fake binaries in the temporary cache: only their bytes matter to the tag
        comp.out_dir.mkdir(parents=True)
        for p in comp.paths().values():
            p.write_text(f"{comp.label} {p.name}")
    assert images.versioned("tailscale", None) == images.versioned("tailscale", pinned.version) == "tailscale"
    assert images.versioned("tailscale", "v1.80.3") == "tailscale@v1.80.3"
    r_pinned, r_old = images.recipe("tailscale"), images.recipe("tailscale@v1.80.3")
    assert r_old.name == "tailscale" and f"{images.VERSION_LABEL}=v1.80.3" in r_old.extra
    t_pinned, t_old = images.image_tag(r_pinned, "meshcert/host:x"), images.image_tag(r_old, "meshcert/host:x")
    assert t_pinned.startswith("meshcert/tailscale:") and t_old.startswith("meshcert/tailscale:") and t_pinned != t_old
    with pytest.raises(EnvironmentProblem):
        images.recipe("toxiproxy@v2.0.0")


def test_matrix_add_refuses_bad_arguments_in_one_line(capsys):
    assert cli.main(["matrix", "add", "helm", "v3.0.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("meshcert: matrix add:")


def test_a_topology_can_mix_tailscale_versions():
    topo = with_tailscale(guide_topology(), {"agent": "v1.80.3", "router": "v1.80.3"})
    assert {n.name: n.tailscale for n in (*topo.nodes, *topo.pods)} == {
        "server": None, "database": None, "router": "v1.80.3", "agent": "v1.80.3", "agent-us": None}
    assert guide_topology().agent.tailscale is None  # the guide's world runs the pinned version everywhere
    with pytest.raises(KeyError, match="nobody"):
        with_tailscale(guide_topology(), {"nobody": "v1.80.3"})


def test_the_matrix_verdict_names_the_combination_and_never_drops_a_column(tmp_path):
    ids = ["ACL-1", "ACL-2"]
    ok = report_matrix.column("v1.102.3", "v0.29.2", report_matrix.RUN, clauses={"ACL-1": "passed", "ACL-2": "passed"})
    assert report_matrix.verdict([ok], ids) == (0, [])
    bad = report_matrix.column("v1.80.3", "v0.29.2", report_matrix.RUN, clauses={"ACL-1": "passed", "ACL-2": "failed"},
                               report="r/ts-v1.80.3_hs-v0.29.2")
    code, lines = report_matrix.verdict([ok, bad], ids)
    assert code == 1 and lines == ["failed: ACL-2 failed with tailscale v1.80.3 + headscale v0.29.2 "
                                   "(report: r/ts-v1.80.3_hs-v0.29.2)"]
    nb = report_matrix.column("v1.104.7", "v0.29.2", report_matrix.NOT_BUILT,
                              reason="tailscale v1.104.7: not built (requires go >= 1.27.4)")
    code, lines = report_matrix.verdict([ok, nb], ids)
    assert code == 3 and "v1.104.7" in lines[0] and "requires go" in lines[0]
    assert report_matrix.verdict([ok, nb, bad], ids)[0] == 1  # a failure outranks incompleteness
    gap = report_matrix.column("v1.102.3", "v0.27.1", report_matrix.RUN, clauses={"ACL-1": "passed"})
    assert report_matrix.verdict([gap], ids) == (3, ["incomplete: ACL-2 not run with tailscale v1.102.3 + "
                                                     "headscale v0.27.1"])
    table = report_matrix.table([ok, nb, bad], ids)
    assert table.splitlines()[0] == ("| clause | ts v1.102.3 / hs v0.29.2 | ts v1.104.7 / hs v0.29.2 | "
                                     "ts v1.80.3 / hs v0.29.2 |")
    assert "| ACL-2 | passed | not built | failed |" in table and "requires go >= 1.27.4" in table
    doc = json.loads(report_matrix.write(tmp_path, {"tailscale": ["v1.102.3"]}, ids, [ok, nb]).read_text())
    assert [c["state"] for c in doc["combinations"]] == ["run", "not built"]


def test_a_session_with_no_results_or_no_world_is_not_tested():
    col = report_matrix.column_from_results("v1.80.3", "v0.25.1", None, Path("r"), 2)
    assert col["state"] == report_matrix.NOT_TESTED and "exit 2" in col["reason"]
    # measured with headscale v0.25.1 (its preauthkeys create wants --user NAME): the reason and its usage text
    reason = ("the world could not be built: world: `headscale preauthkeys create --expiration 2h --reusable --tags "
              "tag:managed-servers` failed (1): Error: required flag(s) \"user\" not set\nUsage:\n  headscale ...")
    col = report_matrix.column_from_results("v1.80.3", "v0.25.1", {"not_tested": {"reason": reason}}, Path("r"), 2)
    assert (col["state"], col["reason"]) == (report_matrix.NOT_TESTED, reason.splitlines()[0])


def test_one_version_for_every_node_reaches_pods_added_later():
    topo = with_tailscale(guide_topology(), parse_versions("v1.80.3"))
    assert topo.tailscale == "v1.80.3" and {n.tailscale for n in (*topo.nodes, *topo.pods)} == {None}
    assert parse_versions("agent=v1.80.3, *=v1.102.3") == {"agent": "v1.80.3", "*": "v1.102.3"}
    assert parse_versions("") == {}
    v = world_versions(with_tailscale(guide_topology(), {"*": "v1.80.3", "server": "v1.102.3"}),
                       {"tailscale": "v1.102.3", "headscale": "v0.29.2"})
    assert v["headscale"] == "v0.29.2" and v["tailscale_default"] == "v1.80.3"
    assert v["tailscale"] == {"server": "v1.102.3", "database": "v1.80.3", "router": "v1.80.3", "agent": "v1.80.3",
                              "agent-us": "v1.80.3"}


def test_errata_hold_only_for_the_headscale_versions_their_catalog_entry_names():
    cat = {c.id: c for c in load_catalog()}
    assert cat["ERRATA-1"].holds_for == (("headscale", ">=v0.26.0"),)
    assert cat["ERRATA-3"].holds_for == (("headscale", ">=v0.28.0"),)
    assert cat["ACL-1"].holds_for == ()
    for hs, applies in (("v0.29.2", True), ("v0.26.0", True), ("v0.25.1", False)):
        assert report_matrix.holds(cat["ERRATA-1"].holds_for, {"tailscale": "v1.80.3", "headscale": hs}) is applies
    assert not report_matrix.holds(cat["ERRATA-3"].holds_for, {"tailscale": "v1.80.3", "headscale": "v0.27.1"})
    assert report_matrix.holds((("tailscale", "<v1.90.0"),), {"tailscale": "v1.80.3", "headscale": "v0.29.2"})
    col = report_matrix.column_from_results("v1.80.3", "v0.25.1", {"clauses": {"ACL-1": {"outcome": "passed"}}},
                                            Path("r"), 0, ("ERRATA-1",))
    assert col["clauses"] == {"ACL-1": "passed", "ERRATA-1": "n/a"}
    assert report_matrix.verdict([col], ["ACL-1", "ERRATA-1"]) == (0, [])  # n/a is not a gap


def test_a_constraint_names_a_bound_one_version_or_a_range():
    at = lambda hs: {"tailscale": "v1.102.3", "headscale": hs}  # noqa: E731
    exact, span = (("headscale", "==v0.27.1"),), (("headscale", ">=v0.26.0,<v0.28.0"),)
    assert [report_matrix.holds(exact, at(v)) for v in ("v0.25.1", "v0.27.0", "v0.27.1", "v0.27.2", "v0.29.2")] \
        == [False, False, True, False, False]
    assert [report_matrix.holds(span, at(v)) for v in ("v0.25.1", "v0.26.0", "v0.27.1", "v0.28.0", "v0.29.2")] \
        == [False, True, True, False, False]
    either = (("tailscale", "==v1.80.3|==v1.102.3"),)
    assert [report_matrix.holds(either, {"tailscale": t, "headscale": "v0.27.1"})
            for t in ("v1.80.3", "v1.90.0", "v1.102.3", "v1.102.5")] == [True, False, True, False]
    assert report_matrix.holds((("headscale", "<v0.26.0|>=v0.29.0,<v0.30.0"),), at("v0.29.2"))
    assert not report_matrix.holds((("headscale", "<v0.26.0|>=v0.29.0,<v0.30.0"),), at("v0.27.1"))
    # the catalog's holds_for reads the same syntax
    text = default_path().read_text().replace(
        'holds_for: {headscale: ">=v0.26.0"}', 'holds_for: {headscale: ">=v0.26.0,<v0.28.0"}', 1)
    assert any(c.holds_for == span for c in parse_catalog(text))
    with pytest.raises(InputError, match="holds_for must map"):
        parse_catalog(text.replace(">=v0.26.0,<v0.28.0", ">=v0.26.0,", 1))


def test_a_malformed_holds_for_is_refused_in_one_line():
    text = default_path().read_text().replace(
        'holds_for: {headscale: ">=v0.26.0"}', 'holds_for: {headscale: "0.26"}', 1)
    with pytest.raises(InputError, match="holds_for must map"):
        parse_catalog(text)


def test_a_column_not_tested_still_shows_which_clauses_do_not_apply():
    col = report_matrix.column_from_results("v1.102.3", "v0.25.1", {"not_tested": {"reason": "no world"}}, Path("r"),
                                            2, ("ERRATA-1",))
    table = report_matrix.table([col], ["ACL-1", "ERRATA-1"])
    assert "| ACL-1 | not tested |" in table and "| ERRATA-1 | n/a |" in table
    assert report_matrix.verdict([col], ["ACL-1", "ERRATA-1"])[0] == 3


def test_a_matrix_session_is_split_per_tailscale_version(tmp_path):
    """One world per headscale version runs every tailscale version (test ids carry
    [ts-<version>]); each column takes its own tests, outcomes and versions."""
    results = {"clauses": {
        "ACL-1": {"outcome": "failed", "tests": [
            {"test": "conformance/test_acl.py::test_a[ts-v1.102.3]", "outcome": "passed"},
            {"test": "conformance/test_acl.py::test_a[ts-v1.80.3]", "outcome": "failed"}]},
        "ROUTE-3": {"outcome": "passed", "tests": [
            {"test": "conformance/test_route.py::test_r[ts-v1.80.3]", "outcome": "passed"}]}},
        "extra": {"versions": {"headscale": "v0.25.1", "tailscale_default": "v1.80.3",
                               "tailscale": {"agent": "v1.80.3"}}}}
    new = report_matrix.results_of(results, "v1.102.3")
    assert new["clauses"] == {"ACL-1": {"outcome": "passed", "tests": [
        {"test": "conformance/test_acl.py::test_a[ts-v1.102.3]", "outcome": "passed"}]}}
    assert new["extra"]["versions"] == {"headscale": "v0.25.1", "tailscale_default": "v1.102.3",
                                        "tailscale": {"agent": "v1.102.3"}}
    old = report_matrix.results_of(results, "v1.80.3")
    assert old["clauses"]["ACL-1"]["outcome"] == "failed" and old["clauses"]["ROUTE-3"]["outcome"] == "passed"
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite>'
        '<testcase name="test_known_finding[ts-v1.80.3-hs-old-route]"><skipped type="pytest.xfail" message="x"/>'
        '</testcase><testcase name="test_known_finding[ts-v1.102.3-hs-old-route]"><failure message="XPASS"/>'
        '</testcase><testcase name="test_known_finding[other]"><skipped type="pytest.skip" message="y"/></testcase>'
        '<testcase name="test_a[ts-v1.80.3]"/></testsuite></testsuites>')
    assert report_matrix.findings_from_junit(junit) == {"v1.80.3": {"hs-old-route": "xfailed"},
                                                        "v1.102.3": {"hs-old-route": "failed"},
                                                        None: {"other": "skipped"}}
    col = report_matrix.column("v1.102.3", "v0.25.1", report_matrix.RUN, clauses={"ACL-1": "passed"})
    col["findings"] = {"hs-old-route": "failed"}
    code, lines = report_matrix.verdict([col], ["ACL-1"])
    assert code == 1 and "finding hs-old-route did not behave as recorded with tailscale v1.102.3" in lines[0]


def test_the_matrix_page_shows_every_column_and_finding(tmp_path):
    cols = [report_matrix.column("v1.102.3", "v0.25.1", report_matrix.RUN, report=str(tmp_path / "hs-v0.25.1"),
                                 clauses={"ACL-1": "passed", "ERRATA-1": "n/a"}),
            report_matrix.column("v1.104.7", "v0.25.1", report_matrix.NOT_BUILT, reason="needs go >= 1.27.4")]
    cols[0]["findings"] = {"hs-old-route": "xfailed"}
    report_matrix.write(tmp_path, {}, ["ACL-1", "ERRATA-1"], cols)
    page = (tmp_path / "matrix.html").read_text()
    assert '<td class="ok">passed</td>' in page and '<td class="na">n/a</td>' in page
    assert "finding: hs-old-route</th><td class=\"known\">xfailed</td>" in page
    assert 'href="hs-v0.25.1/report.html"' in page
    assert "tailscale v1.104.7 + headscale v0.25.1: not built: needs go &gt;= 1.27.4" in page
