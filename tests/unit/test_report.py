"""report.md / report.html from synthetic results: every catalog clause shown (absent ones as
"no test"), secrets never written, failure messages escaped, HTML self-contained and balanced."""

import json
from html.parser import HTMLParser

import pytest

from meshcert.errors import InputError
from meshcert.report.catalog import load_catalog, parse_catalog, with_tests
from meshcert.report.render import load_results, write_report
from meshcert.secrets import register

REGISTERED = "registered-s3cret-value-7f1c"
KEY_SHAPED = "hskey-auth-Zm9vYmFyYmF6cXV4MTIz"

CATALOG = with_tests(parse_catalog("""\
clauses:
- id: TYPE-1
  group: types
  guide: "Or simply omit the `connectivity` field entirely."
  must: omitted connectivity MUST mean direct
  since: "0.1.0"
- id: HEALTH-1
  group: health
  guide: "Sidecar health — Tailscale daemon is running and connected"
  must: health MUST be BackendState Running
  since: "0.1.0"
- id: HEALTH-3
  group: health
  guide: "If the sidecar is not ready, the check logs a warning."
  must: a not-ready sidecar MUST be a warning
  since: "0.1.0"
- id: ACL-1
  group: acl
  guide: "Headscale ACLs restrict which targets each agent can reach:"
  must: the agent MUST reach servers:22
  since: "0.1.0"
- id: CRED-3
  group: credentials
  guide: "Credentials expire with the run"
  must: credentials MUST expire with the run
  since: "0.1.0"
- id: ERRATA-1
  group: errata
  guide: "Approve in Headscale: `headscale routes enable --route 10.20.5.0/24`"
  must: use `headscale nodes approve-routes -i ID -r CIDR` instead
  since: "0.1.0"
"""), {"TYPE-1": ["conformance/test_types.py::test_omitted"], "HEALTH-1": ["conformance/test_health.py::test_state"],
     "HEALTH-3": ["conformance/test_health.py::test_warning"], "ACL-1": ["conformance/test_acl.py::test_allowed"]})


RESULTS = {
    "finished": 1795608101.0,
    "clauses": {
        "TYPE-1": {"outcome": "passed", "tests": [
            {"test": "conformance/test_types.py::test_omitted", "outcome": "passed", "duration_s": 0.25,
             "message": None}]},
        "HEALTH-1": {"outcome": "failed", "tests": [
            {"test": "conformance/test_health.py::test_state", "outcome": "failed", "duration_s": 1.5,
             "message": f"AssertionError: <script>alert('x')</script> & ready with key {REGISTERED} "
                        f"and {KEY_SHAPED}"}]},
        "HEALTH-3": {"outcome": "skipped", "tests": [
            {"test": "conformance/test_health.py::test_warning", "outcome": "skipped", "duration_s": 0.0,
             "message": None}]},
        "CHAOS-7": {"outcome": "passed", "tests": [
            {"test": "scenarios/test_chaos.py::test_partition", "outcome": "passed", "duration_s": 9.0,
             "message": None}]},
    },
}

EXTRA = {
    "latency": [
        {"path": "direct", "target": "server:22", "p50_ms": 0.5, "p95_ms": 1.2, "n": 40},
        {"path": "mesh", "target": "server:22", "p50_ms": 4.5, "p95_ms": 7.9, "n": 40},
        {"path": "derp", "target": "server:22", "p50_ms": 21.0, "p95_ms": 35.5, "n": 40},
    ],
    "mutants": {
        "health-tcp-41112": {"killed": True, "clauses": ["HEALTH-1"]},
        "sequential-dials": {"killed": True, "clauses": ["HEALTH-2"]},
        "wrong-port": {"killed": False, "clauses": []},
    },
    "scenarios": {
        "subnet router HA failover": {
            "scenario": "subnet router HA failover", "outcome": "passed", "duration_s": 31.03,
            "figures": {"failover_s": 11.5, "derp_p50_ms": 2.4, "slow_probe_s": 125.25, "probes": 41},
            "events": [
                {"t_s": 0.18, "event": "inject", "kind": "toxic", "proxy": "control", "what": "latency 40 ms"},
                {"t_s": 12.4, "event": "rollback", "what": "toxic on control", "seconds": 0.5},
            ]},
        "partition agent | server": {
            "scenario": "partition agent | server", "outcome": "failed", "duration_s": 7.5, "figures": {},
            "replay_file": "/tmp/reports/replays/scenario-partition.yaml",
            "events": [
                {"t_s": 0.2, "event": "inject", "kind": "nft", "what": "drop agent -> server"},
                {"t_s": 6.9, "event": "failed",
                 "error": f"AssertionError: <script>alert(1)</script> with key {REGISTERED}"},
            ]},
    },
}


class Balanced(HTMLParser):
    """Fails on a closing tag that does not close the innermost open element."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.attrs, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.attrs += attrs
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture
def report(tmp_path):
    register(REGISTERED)
    md, page = write_report(tmp_path / "run", RESULTS, CATALOG, extra=EXTRA)
    return md.read_text(encoding="utf-8"), page.read_text(encoding="utf-8")


def _parse(page):
    p = Balanced()
    p.feed(page)
    p.close()
    return p


def test_files_written(tmp_path):
    md, page = write_report(tmp_path / "new" / "dir", RESULTS, CATALOG)
    assert md == tmp_path / "new" / "dir" / "report.md" and md.is_file()
    assert page == tmp_path / "new" / "dir" / "report.html" and page.is_file()


def test_html_is_well_formed_and_self_contained(report):
    _, page = report
    p = _parse(page)
    assert p.errors == [] and p.stack == []
    assert page.startswith("<!DOCTYPE html>")
    low = page.lower()
    assert "<script" not in low and "<link" not in low and "<img" not in low and "url(" not in low
    assert not [v for k, v in p.attrs if k in ("href", "src") and v and not v.startswith("#")]


def test_header_totals_and_matrix(report):
    md, page = report
    assert "2026-11-25 12:01:41 UTC" in md and "2026-11-25 12:01:41 UTC" in page
    assert "Clauses in the catalog: 6 — passed 1, failed 1, measured (reported, not asserted) 0, skipped 1, no test 3" in md
    assert "Verdict: **failed**" in md
    # grouped like the guide, in its order
    order = [md.index(h) for h in ("### Connectivity types", "### Pre-run health check",
                                   "### Network scoping via ACLs", "### Credential integration", "### Guide errata")]
    assert order == sorted(order)
    assert "| TYPE-1 | omitted connectivity MUST mean direct | passed | `conformance/test_types.py::test_omitted` " \
           "passed 0.250 s |" in md
    assert "| HEALTH-3 | a not-ready sidecar MUST be a warning | skipped |" in md
    text = "".join(_parse(page).text)
    for cid in ("TYPE-1", "HEALTH-1", "HEALTH-3", "ACL-1", "CRED-3", "ERRATA-1"):
        assert cid in text


def test_clause_without_results_shows_no_test(report):
    md, page = report
    # ACL-1 has a test in the catalog that did not run; CRED-3 has none at all
    assert "| ACL-1 | the agent MUST reach servers:22 | **no test** | not run in this session " \
           "(1 test marked with it) |" in md
    assert "| CRED-3 | credentials MUST expire with the run | **no test** | no test asserts this clause yet |" in md
    # the matrix rows of ACL-1, CRED-3 and ERRATA-1, and ERRATA-1 again in the errata list
    assert page.count('<span class="badge notest">no test</span>') == 4
    assert '<tr id="CRED-3"><td><strong>CRED-3</strong></td>' in page
    text = " ".join(" ".join(_parse(page).text).split())
    assert "not run in this session (1 test marked with it)" in text


def test_clause_outside_the_catalog_is_listed(report):
    md, page = report
    assert "### Outside the catalog" in md and "CHAOS-7" in md
    assert "Clauses outside the catalog: 1" in md
    assert 'id="outside"' in page and "CHAOS-7" in page


def test_secrets_never_written(report):
    md, page = report
    for out in (md, page):
        assert REGISTERED not in out
        assert KEY_SHAPED not in out and "hskey-" not in out
        assert "«redacted»" in out


def test_failure_message_escaped(report):
    md, page = report
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; ready with key «redacted»" in page
    # markdown: in a fenced block, under Failures
    assert "## Failures" in md
    assert "```\nAssertionError: <script>alert('x')</script> & ready with key «redacted» and «redacted»\n```" in md


def test_latency_section(report):
    md, page = report
    assert "## Latency" in md and 'id="latency"' in page
    assert "~3-5ms added latency" in md and "~3-5 ms added latency" in md
    assert "| mesh | server:22 | 4.5 | 7.9 | 40 |" in md
    assert "| server:22 | mesh | +4.0 | within the guide's ~3-5 ms |" in md
    assert "| server:22 | derp | +20.5 | more than direct, as the guide says of DERP relays |" in md
    assert "<td>+4.0</td>" in page


def test_mutation_score_section(report):
    md, page = report
    assert "## Mutation score" in md and "2/3 faults killed (67%): mutants of the reference SUT 2/3." in md
    assert ("| wrong-port | mutant | – | **not killed: not killed** | every dial goes to port+1 (the wrong "
            "service) |") in md
    assert "| health-tcp-41112 | mutant | – | caught by HEALTH-1 |" in md
    assert "<strong>2/3 faults killed (67%)</strong>" in page and '<span class="badge survived">survived</span>' in page


def test_mutation_score_names_why_and_what_caught(tmp_path):
    """A board of every kind: the denominator counts them all, each row says what caught it or why not."""
    from meshcert.report.render import render_markdown
    board = {"mutant:a": {"kind": "mutant", "target": ["HEALTH-1"], "killed": True, "clauses": ["HEALTH-1"],
                          "why": "", "about": "fault a"},
             "world:b": {"kind": "world", "target": ["ACL-2"], "killed": False, "clauses": [],
                         "why": "its test was deselected (-k/-m)", "about": "fault b"},
             "chart:c": {"kind": "chart", "target": ["HELM-2"], "killed": False, "clauses": [],
                         "why": "its test was skipped: no helm", "about": "fault c"}}
    from meshcert.report.render import summarize
    md = render_markdown(summarize({"clauses": {}}, []), [], {"mutants": board})
    assert ("1/3 faults killed (33%): mutants of the reference SUT 1/1, broken world settings 0/1, "
            "broken charts 0/1.") in md
    assert "| world:b | world | ACL-2 | **not killed: its test was deselected (-k/-m)** | fault b |" in md
    assert "| mutant:a | mutant | HEALTH-1 | caught by HEALTH-1 | fault a |" in md


def test_chaos_scenarios_section(report):
    md, page = report
    assert "## Chaos scenarios" in md and 'id="scenarios"' in page
    assert "2 scenarios: 1 passed, 1 failed." in md
    # one row per scenario; figures with their units, the replay file of the failed one
    assert "| subnet router HA failover | passed | 31.03 s | failover=11.5 s, derp_p50=2.4 ms, " \
           "slow_probe=2 min 5.25 s, probes=41 | – |" in md
    assert "| partition agent \\| server | **failed** | 7.5 s | – | " \
           "`/tmp/reports/replays/scenario-partition.yaml` |" in md
    # the journals, as lists
    assert "### Journal: subnet router HA failover" in md
    assert "- 0.18 s **inject** `kind=toxic` `proxy=control` `what=latency 40 ms`" in md
    assert "- 12.40 s **rollback** `what=toxic on control` `seconds=0.5`" in md
    assert "- 6.90 s **failed** `error=AssertionError: <script>alert(1)</script> with key «redacted»`" in md
    # html: the table, the journals in <details>, the failed one open, the error escaped and redacted
    assert "<td>failover=11.5 s, derp_p50=2.4 ms, slow_probe=2 min 5.25 s, probes=41</td>" in page
    assert "<td><code>/tmp/reports/replays/scenario-partition.yaml</code></td>" in page
    assert '<details id="scenario-1"><summary>' in page and '<details id="scenario-2" open><summary>' in page
    assert "<code>error=AssertionError: &lt;script&gt;alert(1)&lt;/script&gt; with key «redacted»</code>" in page
    assert "<script>" not in page and REGISTERED not in page and REGISTERED not in md
    section = page[page.index('id="scenarios"'):page.index('id="mutants"')]
    assert section.count("<details") == 2 and section.count("<li>") == 4
    assert _parse(page).errors == []


def test_no_scenarios_section_without_journals(tmp_path):
    md, page = write_report(tmp_path, RESULTS, CATALOG, extra={"scenarios": {}})
    assert "Chaos scenarios" not in md.read_text() and "Chaos scenarios" not in page.read_text()


def test_errata_section(report):
    md, page = report
    assert "## Guide errata" in md
    section = md[md.index("## Guide errata"):]
    assert "ERRATA-1" in section and "headscale routes enable --route 10.20.5.0/24" in section
    assert "approve-routes -i ID -r CIDR" in section
    assert 'id="errata"' in page


def test_sections_absent_without_extra(tmp_path):
    md, page = write_report(tmp_path, {"clauses": {}}, CATALOG)
    md = md.read_text()
    assert "## Latency" not in md and "## Mutation score" not in md and "## Chaos scenarios" not in md
    assert "Run finished: unknown" in md and "no test 6" in md and "Verdict: **incomplete**" in md
    assert _parse(page.read_text()).errors == []


def test_real_catalog_renders_every_clause(tmp_path):
    catalog = load_catalog()
    md, page = write_report(tmp_path, RESULTS, catalog, extra=EXTRA)
    html_text = page.read_text()
    p = _parse(html_text)
    assert p.errors == [] and p.stack == []
    for c in catalog:
        assert f'id="{c.id}"' in html_text
        assert f"| {c.id} |" in md.read_text()
    assert "https://" not in "".join(v or "" for _, v in p.attrs)


def test_load_results(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(RESULTS))
    assert load_results(tmp_path) == RESULTS
    assert load_results(tmp_path / "results.json") == RESULTS


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ("[]", "expected an object with a 'clauses' object"),
    ('{"clauses": {"ACL-1": {"outcome": "green", "tests": []}}}', "clauses.ACL-1.outcome is 'green'"),
    ('{"clauses": {"ACL-1": {"outcome": "passed", "tests": "x"}}}', "clauses.ACL-1.tests is not a list"),
])
def test_load_results_malformed(tmp_path, text, message):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(InputError) as e:
        load_results(tmp_path)
    assert e.value.what.endswith("results.json") and e.value.message.startswith(message)
    with pytest.raises(InputError):
        load_results(tmp_path / "absent")


def test_verdict_is_incomplete_while_a_clause_has_no_test():
    from meshcert.report.render import summarize
    catalog = load_catalog()
    first = catalog[0].id
    all_passed = {"clauses": {c.id: {"outcome": "passed", "tests": []} for c in catalog}}
    assert summarize(all_passed, catalog).verdict == "passed"
    del all_passed["clauses"][first]
    assert summarize(all_passed, catalog).verdict == "incomplete"
    all_passed["clauses"][catalog[1].id]["outcome"] = "failed"
    assert summarize(all_passed, catalog).verdict == "failed"


# ------------------------------------------------------------------ inline Markdown, charts, not tested, summary

def test_markdown_in_clause_sentences_is_rendered_in_html(report):
    _, page = report
    assert "the guide: “Or simply omit the <code>connectivity</code> field entirely.”" in page
    assert "use <code>headscale nodes approve-routes -i ID -r CIDR</code> instead" in page
    text = "".join(_parse(page).text)
    matrix = text[text.index("Clause matrix"):text.index("Latency")]
    assert "`" not in matrix, "a backtick of the catalog is shown as is"


@pytest.mark.parametrize("src,html_out", [
    ("a `b<c>` d", "a <code>b&lt;c&gt;</code> d"),
    ("**MUST** be *ready*", "<strong>MUST</strong> be <em>ready</em>"),
    ("**`x`** and ``a ` b``", "<strong><code>x</code></strong> and <code>a ` b</code>"),
    ("<script>alert(1)</script> & *:22 and 5 * 3", "&lt;script&gt;alert(1)&lt;/script&gt; &amp; *:22 and 5 * 3"),
    ("an unclosed `tick and **bold", "an unclosed `tick and **bold"),
    (f"key {KEY_SHAPED} in `{KEY_SHAPED}`", "key «redacted» in <code>«redacted»</code>"),
])
def test_md_inline_renders_code_bold_italic_and_escapes_the_rest(src, html_out):
    from meshcert.report.render import md_inline
    assert md_inline(src) == html_out


def test_latency_chart_is_inline_svg_with_p50_and_p95_per_path(report):
    _, page = report
    section = page[page.index('id="latency"'):page.index('id="scenarios"')]
    assert section.count("<svg") == 1 and 'xmlns="http://www.w3.org/2000/svg"' in section
    svg = section[section.index("<svg"):section.index("</svg>")]
    for path, p50, p95 in (("direct", "0.50", "1.20"), ("mesh", "4.50", "7.90"), ("derp", "21.0", "35.5")):
        assert f">{path}<title>" in svg and f"{p50} / {p95} ms" in svg, path
    assert "log scale" in svg  # 0.5 ms beside 35.5 ms: a linear axis would hide the direct path
    assert "guide: direct + 3-5 ms" in svg
    assert _parse(page).errors == []


def test_latency_chart_escapes_names_and_leaves_out_non_numbers():
    from meshcert.report.svg import latency_svg
    svg = latency_svg([{"path": "<b>x</b>", "target": "t&t", "p50_ms": 1.0, "p95_ms": 2.0},
                       {"path": "nan", "target": "t", "p50_ms": float("nan"), "p95_ms": 1.0},
                       {"path": "str", "target": "t", "p50_ms": "3", "p95_ms": 1.0}])
    assert "&lt;b&gt;x&lt;/b&gt;" in svg and "t&amp;t" in svg and "<b>" not in svg
    assert ">nan<" not in svg and ">str<" not in svg
    assert latency_svg([]) == "" and latency_svg([{"path": "x", "p50_ms": None}]) == ""


def test_each_scenario_has_a_timeline_numbered_like_its_journal(report):
    _, page = report
    section = page[page.index('id="scenarios"'):page.index('id="mutants"')]
    assert section.count("<svg") == 2 and section.count('class="legend"') == 1
    ha = section[section.index('id="timeline-1"'):section.index('id="timeline-2"')]
    assert "<title>1. 0.18 s inject</title>" in ha and "<title>2. 12.40 s rollback</title>" in ha
    assert "faults held: 0.18–12.40 s" in ha  # from the injection to the first rollback
    part = section[section.index('id="timeline-2"'):]
    assert "<title>2. 6.90 s failed</title>" in part
    assert "<script>" not in section


def test_timeline_phases_follow_the_journal():
    from meshcert.report.svg import phases
    evs = [(0.3, "steady state holds (before)"), (1.0, "inject"), (2.0, "inject"), (9.0, "probes held"),
           (10.0, "rollback"), (12.0, "rollback"), (20.0, "steady state holds (after)"), (20.5, "nothing left behind")]
    assert phases(evs, 21.0) == [("steady", 0.0, 1.0), ("faults", 1.0, 10.0), ("rollback", 10.0, 12.0),
                                 ("settle", 12.0, 20.0), ("after", 20.0, 21.0)]
    assert phases([(0.2, "steady state holds (before)"), (3.0, "failed")], 3.5) == []


NOT_TESTED = {"finished": 1795608101.0, "clauses": {}, "not_tested": {
    "reason": "SUT in pod agent: never answered GET /healthz on port 8080 (last: connection refused); image "
              "me/x:1 runs CMD `serve`", "log": ["<boot> starting", f"using {KEY_SHAPED}"]}}


def test_a_run_that_could_not_test_the_sut_says_not_tested_and_fails_nothing(tmp_path):
    md, page = write_report(tmp_path, NOT_TESTED, CATALOG)
    md, page = md.read_text(), page.read_text()
    assert "Verdict: **not tested**" in md and "## Not tested" in md
    assert "Reason: SUT in pod agent: never answered GET /healthz on port 8080" in md
    assert "<boot> starting" in md and KEY_SHAPED not in md and KEY_SHAPED not in page
    assert "failed 0" in md and "**failed**" not in md and "## Failures" not in md
    for c in CATALOG:
        assert f"| {c.id} | " in md and "| **not tested** |" in md.split(f"| {c.id} | ")[1].splitlines()[0]
    assert 'id="not-tested"' in page and "&lt;boot&gt; starting" in page and "runs CMD <code>serve</code>" in page
    assert 'class="badge failed"' not in page and '<span class="badge notest">not tested</span>' in page
    assert _parse(page).errors == []


def test_an_older_results_input_error_counts_as_not_tested():
    from meshcert.report.render import summarize
    s = summarize({"clauses": {}, "input_error": "SUT in pod agent POST /prerun: non-JSON"}, CATALOG)
    assert s.verdict == "not tested" and s.not_tested["reason"].endswith("non-JSON")


def test_summary_table_groups_by_outcome(report):
    from meshcert.report.render import summarize, summary_table
    md, page = report
    table = summary_table(summarize(RESULTS, CATALOG), EXTRA).splitlines()
    assert table[0].split() == ["group", "passed", "failed", "not", "tested"]  # no out-of-scope clause here
    rows = {line[:28].strip(): line[28:].split() for line in table[2:] if not line.startswith("-")}
    assert rows["Pre-run health check"] == ["0", "1", "1"]  # HEALTH-1 failed, HEALTH-3 skipped
    assert rows["Connectivity types"] == ["1", "0", "0"]
    assert rows["all clauses"] == ["2", "1", "4"]  # + CHAOS-7 (outside the catalog) passed
    assert rows["chaos scenarios"] == ["1", "1", "0"]
    assert "## Summary" in md and "| **all clauses** | **2** | **1** | **0** | **4** | **0** |" in md
    assert '<table class="summary">' in page
