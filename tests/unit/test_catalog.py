"""The clause catalog: clauses.yaml loads, agrees with the tests' clause marks, and malformed
catalogs or drifting trees are reported in plain words (no pytest run, no engine)."""

import os
import re
from pathlib import Path

import pytest

from meshcert.errors import InputError
from meshcert.plugin.marks import collect_clause_tests
from meshcert.report.catalog import (
    DEFAULT_TEST_DIRS,
    GROUPS,
    Clause,
    drift,
    gaps,
    load_catalog,
    misquoted,
    parse_catalog,
    with_tests,
)

REPO = Path(__file__).resolve().parents[2]  # this checkout (the tests do not ship)

pytest_plugins = ["pytester"]

GUIDE = Path(os.environ.get("MESHCERT_GUIDE", "/work/shared/spec/connectivity-guide.md"))

REQUIRED_IDS = (
    [f"TYPE-{n}" for n in range(1, 6)] + [f"HEALTH-{n}" for n in range(1, 6)]
    + ["ACL-1", "ACL-2", "ROUTE-1", "DIRECT-1", "CRED-1", "CRED-2"]
    + [f"TROUBLE-{n}" for n in range(1, 6)] + ["ERRATA-1", "PERF-1", "HELM-1"]
)


# ----------------------------------------------------------------------------- the real catalog

def test_the_real_catalog_loads():
    catalog = load_catalog()
    ids = [c.id for c in catalog]
    assert len(ids) == len(set(ids))
    assert set(REQUIRED_IDS) <= set(ids)
    assert all(isinstance(c, Clause) and c.group in GROUPS and c.since == "0.1.0" for c in catalog)
    assert {c.group for c in catalog} == set(GROUPS)  # every group of the guide has clauses
    assert all(c.tests is None for c in catalog)  # clauses.yaml lists no tests: the marks do


def test_catalog_and_tests_do_not_drift():
    """THE drift test, on a real collection (``pytest --collect-only`` of conformance/ and
    scenarios/, in this process): every clause mark names a clause of clauses.yaml (in scope),
    and every clause the catalog has in scope is asserted by a marked test."""
    marked = collect_clause_tests(DEFAULT_TEST_DIRS, root=REPO)
    catalog = load_catalog()
    problems = drift(catalog, marked)
    assert problems == [], "the tests' clause marks and clauses.yaml drifted apart:\n" + "\n".join(problems)
    assert [c.id for c in gaps(with_tests(catalog, marked)) if not c.out_of_scope] == [], \
        "clauses no test is marked with (the report shows them as 'no test')"


@pytest.mark.skipif(not GUIDE.is_file(), reason=f"the guide is not at {GUIDE} (set MESHCERT_GUIDE)")
def test_catalog_quotes_the_guide_verbatim():
    assert misquoted(load_catalog(), GUIDE.read_text(encoding="utf-8")) == []


def test_misquote_is_detected():
    c = parse_catalog(_yaml(_clause("PERF-1", "performance", guide="WireGuard adds 1ms")))
    assert misquoted(c, "WireGuard overhead is **minimal** (~3-5ms\n added latency)") == [
        "PERF-1: its guide sentence is not in the guide: 'WireGuard adds 1ms'"]
    ok = parse_catalog(_yaml(_clause("PERF-1", "performance", guide="overhead is minimal (~3-5ms added")))
    assert misquoted(ok, "WireGuard overhead is **minimal** (~3-5ms\n added latency)") == []


# ----------------------------------------------------------------------------- synthetic trees

def _clause(cid, group, guide="a sentence", extra=""):
    return f"- id: {cid}\n  group: {group}\n  guide: {guide!r}\n  must: it MUST hold\n  since: \"0.1.0\"\n{extra}"


def _yaml(*clauses):
    return "clauses:\n" + "\n".join(clauses) + "\n"


ACL_TESTS = '''\
import pytest

pytestmark = [pytest.mark.acl]


@pytest.mark.clause("ACL-1")
def test_allowed():
    pass


@pytest.mark.parametrize("port", [22, pytest.param(80, marks=pytest.mark.clause("ACL-2"))])
def test_denied(port):
    pass


class TestRoutes:
    pytestmark = pytest.mark.clause("ROUTE-1")

    def test_route(self):
        pass

    @pytest.mark.clause("ACL-1")
    def test_both(self):
        pass


def helper_not_a_test():
    pass
'''
CATALOG = _yaml(_clause("ACL-1", "acl"), _clause("ACL-2", "acl"), _clause("ROUTE-1", "route"),
                _clause("CRED-2", "credentials"), _clause("CRED-3", "credentials", extra="  out_of_scope: layer 3\n"))


@pytest.fixture
def tree(pytester, monkeypatch):
    """A checkout in miniature: conformance/test_acl.py (marks on functions, a parameter, a
    class and its pytestmark), its clauses.yaml (MESHCERT_CLAUSES), a pytest.ini at its root."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    (pytester.path / "conformance").mkdir()
    (pytester.path / "conformance" / "test_acl.py").write_text(ACL_TESTS)
    (pytester.path / "clauses.yaml").write_text(CATALOG)
    monkeypatch.setenv("MESHCERT_CLAUSES", str(pytester.path / "clauses.yaml"))
    return pytester


def test_a_collection_gives_each_clause_its_marked_tests(tree):
    assert collect_clause_tests(["conformance", "scenarios"], root=tree.path) == {
        "ACL-1": ["conformance/test_acl.py::test_allowed", "conformance/test_acl.py::TestRoutes::test_both"],
        "ACL-2": ["conformance/test_acl.py::test_denied"],  # function level: no parameter id
        "ROUTE-1": ["conformance/test_acl.py::TestRoutes::test_route", "conformance/test_acl.py::TestRoutes::test_both"],
    }
    catalog = with_tests(load_catalog(), collect_clause_tests(["conformance"], root=tree.path))
    assert [c.id for c in gaps(catalog)] == ["CRED-2", "CRED-3"]
    assert with_tests(load_catalog(), {}, whole=False)[0].tests is None  # a partial collection knows less
    (tree.path / "conformance" / "test_new.py").write_text(
        'import pytest\n\n@pytest.mark.clause("CHAOS-9")\ndef test_x():\n    pass\n')
    with pytest.raises(InputError, match=re.escape('conformance/test_new.py::test_x is marked '
                                                   '@pytest.mark.clause("CHAOS-9"), which clauses.yaml does not define')):
        collect_clause_tests(["conformance"], root=tree.path)


def test_a_clause_no_test_is_marked_with_is_reported_as_no_test(tree):
    """Drift one way: CRED-2 is in the catalog, no test is marked with it. The run goes on (a
    gap is not an error) and its report says so; certify calls it a gap (exit 3)."""
    rd = tree.path / "report"
    result = tree.runpytest_inprocess("-p", "no:cacheprovider", "--report-dir", str(rd), "conformance")
    assert result.ret == pytest.ExitCode.OK
    md = (rd / "report.md").read_text()
    assert "| CRED-2 | it MUST hold | **no test** | no test asserts this clause yet |" in md
    assert "| ACL-1 | it MUST hold | passed |" in md
    assert "layer 3" in md  # out of scope, with its reason: not a gap


def test_a_narrow_run_says_not_run_not_untested(tree):
    rd = tree.path / "report"
    result = tree.runpytest_inprocess("-p", "no:cacheprovider", "--report-dir", str(rd), "-k", "test_allowed",
                                      "conformance")
    assert result.ret == pytest.ExitCode.OK
    md = (rd / "report.md").read_text()
    assert "| ROUTE-1 | it MUST hold | **no test** | not run in this session (2 tests marked with it) |" in md
    result = tree.runpytest_inprocess("-p", "no:cacheprovider", "--report-dir", str(rd),
                                      "conformance/test_acl.py::test_allowed")
    assert "| ROUTE-1 | it MUST hold | **no test** | not run in this session |" in (rd / "report.md").read_text()


@pytest.mark.parametrize("source, problem", [
    ('import pytest\n\n@pytest.mark.clause("ACL-1", "CHAOS-9")\ndef test_x():\n    pass\n',
     'conformance/test_new.py::test_x is marked @pytest.mark.clause("CHAOS-9"), which clauses.yaml does not define'),
    ('import pytest\n\n@pytest.mark.clause("CRED-3")\ndef test_x():\n    pass\n',
     'conformance/test_new.py::test_x is marked @pytest.mark.clause("CRED-3"), which clauses.yaml declares out of scope'),
    ('import pytest\n\n@pytest.mark.clause()\ndef test_x():\n    pass\n',
     "conformance/test_new.py::test_x has a clause mark without a clause id"),
])
def test_a_mark_the_catalog_cannot_take_is_one_collection_error(tree, source, problem):
    """Drift the other way: a mark naming an unknown (or out-of-scope) clause stops the run at
    collection with one error naming the test and the clause, even when -k deselects it."""
    (tree.path / "conformance" / "test_new.py").write_text(source)
    result = tree.runpytest_inprocess("-p", "no:cacheprovider", "-k", "test_allowed", "conformance")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert err.count("ERROR: meshcert: clause marks the catalog (clauses.yaml) cannot take") == 1, err
    assert problem in err and "test_acl.py" not in err
    assert "passed" not in result.stdout.str()  # nothing ran


# ----------------------------------------------------------------------------- malformed catalogs

GOOD = _clause("ACL-1", "acl")


@pytest.mark.parametrize("text, message", [
    ("clauses: [\n  - id: ACL-1\n", "not valid YAML: line"),
    ("- id: ACL-1\n", "expected a mapping with a 'clauses' list"),
    ("clauses: []\n", "'clauses' must be a non-empty list"),
    ("version: 2\nclauses:\n" + GOOD, "unknown top-level key(s): version"),
    (_yaml(GOOD, "- just a string"), "clauses[1] is a str, not a mapping"),
    (_yaml(GOOD, GOOD), "clause ACL-1 (clauses[1]): id ACL-1 is already used by clauses[0]"),
    (_yaml(GOOD, "- id: ACL-2\n  group: acl\n  guide: x\n  must: y\n"),
     "clause ACL-2 (clauses[1]) lacks since"),
    (_yaml(GOOD, "- id: ACL-2\n  group: acl\n  guide: x\n  must: y\n  since: \"0.1.0\"\n  tests: []\n"),
     "clause ACL-2 (clauses[1]) has a tests: list, but a clause's tests are the tests marked"),
    (_yaml("- group: acl\n  guide: x\n  must: y\n  since: \"0.1.0\"\n"), "clauses[0] lacks id"),
    (_yaml(_clause("acl-1", "acl")), "clause acl-1 (clauses[0]): id 'acl-1' is not of the form PREFIX-N"),
    (_yaml(_clause("ACL-1", "firewall")), "clause ACL-1 (clauses[0]): unknown group 'firewall'"),
    (_yaml(_clause("ACL-1", "route")), "clause ACL-1 (clauses[0]): id ACL-1 does not fit group route"),
    (_yaml(GOOD.replace('"0.1.0"', "0.1")), "clause ACL-1 (clauses[0]): since 0.1 is not a release"),
    (_yaml(GOOD.replace("must: it MUST hold", "must: ''")), "clause ACL-1 (clauses[0]): must must be a non-empty"),
    (_yaml(GOOD.replace("guide: 'a sentence'", "guide: null")), "clause ACL-1 (clauses[0]): guide is null but notes"),
    (_yaml(GOOD + "  owner: me\n"), "clause ACL-1 (clauses[0]) has unknown key(s): owner"),
    (_yaml(GOOD + "  must: again\n"), "not valid YAML: line 7, column 3: found a duplicate key 'must'"),
])
def test_malformed_catalog_raises_input_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "clauses.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        load_catalog(path)
    assert e.value.what.endswith("clauses.yaml")
    assert e.value.message.startswith(message), e.value.message
    assert e.value.fix
    assert str(e.value).startswith(f"{e.value.what}: ")


def test_an_older_bundles_catalog_with_tests_lists_still_reads():
    old = _yaml(GOOD + "  tests:\n    - conformance/test_acl.py::test_allowed\n")
    with pytest.raises(InputError, match="has a tests: list"):
        parse_catalog(old)
    assert parse_catalog(old, "bundle:clauses.yaml", listed_tests_ok=True)[0].tests is None


def test_missing_catalog_file(tmp_path):
    with pytest.raises(InputError) as e:
        load_catalog(tmp_path / "clauses.yaml")
    assert e.value.what.endswith("clauses.yaml") and "does not exist" in e.value.message


def test_derived_clause_with_notes_loads():
    c = parse_catalog(_yaml(_clause("TYPE-4", "types", guide=None, extra="  notes: derived from the type list\n")
                            .replace("guide: None", "guide: null")))
    assert c[0].guide is None and c[0].notes == "derived from the type list"
    assert gaps(c) == c  # tests unknown (None) until a collection gives them
    assert gaps(with_tests(c, {"TYPE-4": ["conformance/test_t.py::test_t"]})) == []


def test_out_of_scope_needs_a_reason_and_no_marked_test():
    c = parse_catalog(_yaml(_clause("CRED-3", "credentials", extra="  out_of_scope: the credential layer's job\n")))
    assert c[0].out_of_scope == "the credential layer's job"
    assert drift(c, {"CRED-3": ["conformance/test_x.py::test_y"]}) == [
        'conformance/test_x.py::test_y is marked @pytest.mark.clause("CRED-3"), which clauses.yaml declares '
        "out of scope (drop the mark or the out_of_scope)"]


def test_out_of_scope_clause_is_shown_with_its_reason_not_as_a_gap(tmp_path):
    from meshcert.report.render import OUT_OF_SCOPE, summarize, write_report
    catalog = parse_catalog(_yaml(_clause("CRED-3", "credentials", extra="  out_of_scope: layer 3\n"),
                                  _clause("CRED-1", "credentials")))
    s = summarize({"clauses": {"CRED-1": {"outcome": "passed", "tests": []}}}, catalog)
    assert s.totals[OUT_OF_SCOPE] == 1 and s.verdict == "passed"
    write_report(tmp_path, {"clauses": {}}, catalog)
    assert "layer 3" in (tmp_path / "report.md").read_text()


def test_a_measured_clause_is_shown_as_measured_never_as_passed(tmp_path):
    """PERF-1/2 promise a figure, not a behaviour: a run of their test is "measured", so the
    report and certify's table never count it among the passed promises; a failure still fails."""
    from meshcert.report.render import MEASURED, summarize, summary_table, write_report
    catalog = parse_catalog(_yaml(_clause("PERF-1", "performance", extra="  measured: true\n"),
                                  _clause("PERF-3", "performance")))
    assert catalog[0].measured and not catalog[1].measured
    s = summarize({"clauses": {"PERF-1": {"outcome": "passed", "tests": []},
                               "PERF-3": {"outcome": "passed", "tests": []}}}, catalog)
    assert [r.outcome for r in s.groups["performance"]] == [MEASURED, "passed"]
    assert s.totals["passed"] == 1 and s.totals[MEASURED] == 1 and s.verdict == "passed"
    table = summary_table(s)
    assert table.splitlines()[0].split() == ["group", "passed", "failed", "measured", "not", "tested"]
    write_report(tmp_path, {"clauses": {"PERF-1": {"outcome": "passed", "tests": []}}}, catalog)
    assert "measured (reported, not asserted) 1" in (tmp_path / "report.md").read_text()
    failed = summarize({"clauses": {"PERF-1": {"outcome": "failed", "tests": []}}}, catalog)
    assert failed.groups["performance"][0].outcome == "failed" and failed.verdict == "failed"
    with pytest.raises(InputError, match="measured must be true or false"):
        parse_catalog(_yaml(_clause("PERF-2", "performance", extra="  measured: yes please\n")))
