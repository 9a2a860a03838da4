"""The clause catalog: clauses.yaml loads, agrees with the tests' clause marks, and malformed
catalogs or drifting trees are reported in plain words (no pytest run, no engine)."""

import os
import textwrap
from pathlib import Path

import pytest

from meshcert.report.catalog import (DEFAULT_TEST_DIRS, GROUPS, Clause, collect_marked_tests, drift, gaps, load_catalog, misquoted, parse_catalog)
from meshcert.errors import InputError

REPO = Path(__file__).resolve().parents[1]  # this checkout (the tests do not ship)

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
    assert any(c.tests for c in catalog)  # which ones exactly is the drift test's business


def test_catalog_and_tests_do_not_drift():
    """THE drift test: fails as soon as clauses.yaml and the @pytest.mark.clause marks in
    conformance/ and scenarios/ disagree."""
    problems = drift(load_catalog(), collect_marked_tests(DEFAULT_TEST_DIRS, root=REPO))
    assert problems == [], "clauses.yaml and the tests drifted apart:\n" + "\n".join(problems)


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

def _clause(cid, group, tests=(), guide="a sentence", extra=""):
    tests_yaml = "[]" if not tests else "\n" + "".join(f"    - {t}\n" for t in tests)
    return (f"- id: {cid}\n  group: {group}\n  guide: {guide!r}\n  must: it MUST hold\n"
            f"  since: \"0.1.0\"\n  tests: {tests_yaml.rstrip()}\n{extra}")


def _yaml(*clauses):
    return "clauses:\n" + "\n".join(clauses) + "\n"


ACL_TESTS = '''\
import pytest

pytestmark = [pytest.mark.acl, pytest.mark.engine]


@pytest.mark.clause("ACL-1")
def test_allowed(world):
    pass


@pytest.mark.clause("ACL-2")
def test_denied(world):
    pass


def helper_not_a_test():
    pass
'''


def _tree(tmp_path, files: dict[str, str], catalog: str):
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    (tmp_path / "clauses.yaml").write_text(catalog)
    return load_catalog(tmp_path / "clauses.yaml"), collect_marked_tests(["conformance", "scenarios"], root=tmp_path)


AGREEING = _yaml(_clause("ACL-1", "acl", ["conformance/test_acl.py::test_allowed"]),
                 _clause("ACL-2", "acl", ["conformance/test_acl.py::test_denied"]))


def test_agreeing_tree_has_no_drift(tmp_path):
    catalog, marked = _tree(tmp_path, {"conformance/test_acl.py": ACL_TESTS}, AGREEING)
    assert dict(marked) == {"ACL-1": {"conformance/test_acl.py::test_allowed"},
                            "ACL-2": {"conformance/test_acl.py::test_denied"}}
    assert drift(catalog, marked) == []


def test_drift_removed_test(tmp_path):
    text = ACL_TESTS.replace('@pytest.mark.clause("ACL-2")\ndef test_denied(world):\n    pass\n', "")
    catalog, marked = _tree(tmp_path, {"conformance/test_acl.py": text}, AGREEING)
    assert drift(catalog, marked) == [
        "ACL-2 lists conformance/test_acl.py::test_denied, but conformance/test_acl.py has no test test_denied"]


def test_drift_removed_file(tmp_path):
    catalog, marked = _tree(tmp_path, {"conformance/test_other.py": "def test_x():\n    pass\n"}, AGREEING)
    problems = drift(catalog, marked)
    assert len(problems) == 2
    assert problems[0].startswith("ACL-1 lists conformance/test_acl.py::test_allowed, "
                                  "but conformance/test_acl.py does not exist")


def test_drift_listed_test_lost_its_mark(tmp_path):
    text = ACL_TESTS.replace('@pytest.mark.clause("ACL-1")\n', "")
    catalog, marked = _tree(tmp_path, {"conformance/test_acl.py": text}, AGREEING)
    assert drift(catalog, marked) == [
        'ACL-1 lists conformance/test_acl.py::test_allowed, but that test is not marked '
        '@pytest.mark.clause("ACL-1") (it has no clause mark)']


def test_drift_unlisted_marked_test(tmp_path):
    text = ACL_TESTS + '\n\n@pytest.mark.clause("ACL-1")\ndef test_allowed_again(world):\n    pass\n'
    catalog, marked = _tree(tmp_path, {"conformance/test_acl.py": text}, AGREEING)
    assert drift(catalog, marked) == [
        "conformance/test_acl.py::test_allowed_again is marked with clause ACL-1, "
        "but clauses.yaml does not list it under ACL-1"]


def test_drift_unknown_clause_id(tmp_path):
    scenario = '''\
    import pytest


    @pytest.mark.clause("ACL-1", "CHAOS-9")
    def test_partition(world):
        pass
    '''
    catalog_text = _yaml(_clause("ACL-1", "acl", ["conformance/test_acl.py::test_allowed",
                                                  "scenarios/test_chaos.py::test_partition"]),
                         _clause("ACL-2", "acl", ["conformance/test_acl.py::test_denied"]))
    catalog, marked = _tree(tmp_path, {"conformance/test_acl.py": ACL_TESTS,
                                       "scenarios/test_chaos.py": scenario}, catalog_text)
    assert drift(catalog, marked) == [
        "scenarios/test_chaos.py::test_partition is marked with clause CHAOS-9, which clauses.yaml does not define"]


def test_drift_test_marked_with_another_clause(tmp_path):
    catalog_text = _yaml(_clause("ACL-1", "acl", ["conformance/test_acl.py::test_allowed",
                                                  "conformance/test_acl.py::test_denied"]),
                         _clause("ACL-2", "acl", ["conformance/test_acl.py::test_denied"]))
    catalog, marked = _tree(tmp_path, {"conformance/test_acl.py": ACL_TESTS}, catalog_text)
    assert drift(catalog, marked) == [
        'ACL-1 lists conformance/test_acl.py::test_denied, but that test is not marked '
        '@pytest.mark.clause("ACL-1") (it is marked ACL-2)']


def test_marks_are_found_in_every_place_pytest_takes_them(tmp_path):
    text = '''\
    import pytest
    from pytest import mark

    CLAUSE = "HEALTH-2"
    pytestmark = [pytest.mark.engine, pytest.mark.clause("HEALTH-1")]


    def test_module_mark_only():
        pass


    @mark.clause("HEALTH-3")
    async def test_async_and_bare_mark():
        pass


    @pytest.mark.clause(CLAUSE)
    def test_constant_id():
        pass


    @pytest.mark.parametrize("x", [1, pytest.param(2, marks=pytest.mark.clause("HEALTH-4"))])
    def test_param_marks(x):
        pass


    @pytest.mark.clause("HEALTH-5")
    class TestGroup:
        pytestmark = pytest.mark.clause("TYPE-1")

        def test_method(self):
            pass

        def helper(self):
            pass


    class NotATestClass:
        @pytest.mark.clause("TYPE-2")
        def test_ignored(self):
            pass
    '''
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "test_many.py").write_text(textwrap.dedent(text))
    marked = collect_marked_tests(["scenarios"], root=tmp_path)
    f = "scenarios/test_many.py"
    every = {f"{f}::{n}" for n in ("test_module_mark_only", "test_async_and_bare_mark", "test_constant_id",
                                   "test_param_marks", "TestGroup::test_method")}
    assert dict(marked) == {
        "HEALTH-1": every,
        "HEALTH-2": {f"{f}::test_constant_id"},
        "HEALTH-3": {f"{f}::test_async_and_bare_mark"},
        "HEALTH-4": {f"{f}::test_param_marks"},
        "HEALTH-5": {f"{f}::TestGroup::test_method"},
        "TYPE-1": {f"{f}::TestGroup::test_method"},
    }
    assert set(marked.all_tests) == every


def test_missing_test_folder_holds_no_tests(tmp_path):
    assert dict(collect_marked_tests(["scenarios", "conformance"], root=tmp_path)) == {}


@pytest.mark.parametrize("source, message", [
    ("import pytest\n\n@pytest.mark.clause(ids[0])\ndef test_x():\n    pass\n",
     "line 3: a clause id that is not a string literal"),
    ("import pytest\n\n@pytest.mark.clause()\ndef test_x():\n    pass\n", "line 3: a clause mark without a clause id"),
    ("def test_x(:\n    pass\n", "line 1: not valid Python"),
])
def test_unreadable_marks_name_the_file(tmp_path, source, message):
    (tmp_path / "conformance").mkdir()
    (tmp_path / "conformance" / "test_bad.py").write_text(source)
    with pytest.raises(InputError) as e:
        collect_marked_tests(["conformance"], root=tmp_path)
    assert e.value.what == "conformance/test_bad.py"
    assert e.value.message.startswith(message)
    assert e.value.fix


# ----------------------------------------------------------------------------- malformed catalogs

GOOD = _clause("ACL-1", "acl")


@pytest.mark.parametrize("text, message", [
    ("clauses: [\n  - id: ACL-1\n", "not valid YAML: line"),
    ("- id: ACL-1\n", "expected a mapping with a 'clauses' list"),
    ("clauses: []\n", "'clauses' must be a non-empty list"),
    ("version: 2\nclauses:\n" + GOOD, "unknown top-level key(s): version"),
    (_yaml(GOOD, "- just a string"), "clauses[1] is a str, not a mapping"),
    (_yaml(GOOD, GOOD), "clause ACL-1 (clauses[1]): id ACL-1 is already used by clauses[0]"),
    (_yaml(GOOD, "- id: ACL-2\n  group: acl\n  guide: x\n  must: y\n  since: \"0.1.0\"\n"),
     "clause ACL-2 (clauses[1]) lacks tests"),
    (_yaml("- group: acl\n  guide: x\n  must: y\n  since: \"0.1.0\"\n  tests: []\n"), "clauses[0] lacks id"),
    (_yaml(_clause("acl-1", "acl")), "clause acl-1 (clauses[0]): id 'acl-1' is not of the form PREFIX-N"),
    (_yaml(_clause("ACL-1", "firewall")), "clause ACL-1 (clauses[0]): unknown group 'firewall'"),
    (_yaml(_clause("ACL-1", "route")), "clause ACL-1 (clauses[0]): id ACL-1 does not fit group route"),
    (_yaml(GOOD.replace('"0.1.0"', "0.1")), "clause ACL-1 (clauses[0]): since 0.1 is not a release"),
    (_yaml(GOOD.replace("tests: []", "tests: conformance/test_acl.py::test_x")),
     "clause ACL-1 (clauses[0]): tests must be a list"),
    (_yaml(_clause("ACL-1", "acl", ["conformance/test_acl.py::test_x[a]"])),
     "clause ACL-1 (clauses[0]): 'conformance/test_acl.py::test_x[a]' is not a pytest node id"),
    (_yaml(_clause("ACL-1", "acl", ["c/test_a.py::test_x", "c/test_a.py::test_x"])),
     "clause ACL-1 (clauses[0]): lists c/test_a.py::test_x more than once"),
    (_yaml(GOOD.replace("must: it MUST hold", "must: ''")), "clause ACL-1 (clauses[0]): must must be a non-empty"),
    (_yaml(GOOD.replace("guide: 'a sentence'", "guide: null")), "clause ACL-1 (clauses[0]): guide is null but notes"),
    (_yaml(GOOD + "  owner: me\n"), "clause ACL-1 (clauses[0]) has unknown key(s): owner"),
    (_yaml(GOOD + "  tests: []\n"), "not valid YAML: line 8, column 3: found a duplicate key 'tests'"),
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


def test_missing_catalog_file(tmp_path):
    with pytest.raises(InputError) as e:
        load_catalog(tmp_path / "clauses.yaml")
    assert e.value.what.endswith("clauses.yaml") and "does not exist" in e.value.message


def test_derived_clause_with_notes_loads():
    c = parse_catalog(_yaml(_clause("TYPE-4", "types", guide=None, extra="  notes: derived from the type list\n")
                            .replace("guide: None", "guide: null")))
    assert c[0].guide is None and c[0].notes == "derived from the type list"
    assert gaps(c) == c


def test_out_of_scope_needs_a_reason_and_no_tests():
    c = parse_catalog(_yaml(_clause("CRED-3", "credentials", extra="  out_of_scope: the credential layer's job\n")))
    assert c[0].out_of_scope == "the credential layer's job"
    with pytest.raises(InputError, match="out_of_scope but lists tests"):
        parse_catalog(_yaml(_clause("CRED-3", "credentials", tests=("conformance/test_x.py::test_y",),
                                    extra="  out_of_scope: not ours\n")))


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
    t = ("conformance/test_p.py::test_p",)
    catalog = parse_catalog(_yaml(_clause("PERF-1", "performance", tests=t, extra="  measured: true\n"),
                                  _clause("PERF-3", "performance", tests=t)))
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
        parse_catalog(_yaml(_clause("PERF-2", "performance", tests=t, extra="  measured: yes please\n")))
