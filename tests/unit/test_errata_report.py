"""ERRATA-1's last sentence, "the report MUST name the erratum", checked the way the conformance
test checks it (no engine): the report rendered from a run's results names the guide's commands
and their working equivalents; a report that leaves the erratum out fails ERRATA-1."""

import pytest

from meshcert.checks import ClauseFailure
from meshcert.checks import world_clauses as wc
from meshcert.report import render as report


class LogsOnly:
    """The one thing a clause check needs of a world when it fails: a folder for its logs."""

    def __init__(self, root):
        self.root = root

    def failure_logs(self, clause):
        d = self.root / clause
        d.mkdir(parents=True, exist_ok=True)
        return d


def test_the_report_names_the_erratum(tmp_path):
    wc.errata1_report_names_it(LogsOnly(tmp_path), {"clauses": {"TYPE-1": {"outcome": "passed", "tests": []}}})


def test_a_report_without_the_errata_section_fails_errata1(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "_md_errata", lambda summary: [])
    with pytest.raises(ClauseFailure) as ei:
        wc.errata1_report_names_it(LogsOnly(tmp_path))
    assert ei.value.clause == "ERRATA-1"
    assert "report.md: an entry for ERRATA-1 in its Guide errata section" in str(ei.value)
    assert "report.html" not in str(ei.value)


def test_an_html_errata_list_without_the_entry_fails_errata1(tmp_path, monkeypatch):
    real = report._html_errata
    monkeypatch.setattr(report, "_html_errata",
                        lambda summary: [x for x in real(summary) if "ERRATA-1" not in x])
    with pytest.raises(ClauseFailure) as ei:
        wc.errata1_report_names_it(LogsOnly(tmp_path))
    assert "report.html: an entry for ERRATA-1 in its Guide errata section" in str(ei.value)


def test_an_entry_that_quotes_the_guide_but_not_the_fix_fails_errata1(tmp_path, monkeypatch):
    """Naming the erratum is naming what is wrong and what works: an entry with the guide's
    command and no replacement is not enough."""
    real = report._md_errata
    monkeypatch.setattr(report, "_md_errata", lambda summary: [
        line.split("}.", 1)[0] if "ERRATA-1" in line else line for line in
        [x.replace("”. ", "}. ", 1) for x in real(summary)]])
    with pytest.raises(ClauseFailure) as ei:
        wc.errata1_report_names_it(LogsOnly(tmp_path))
    msg = str(ei.value)
    assert "report.md: the ERRATA-1 entry names `headscale nodes approve-routes`" in msg
    assert "names `headscale routes enable`" not in msg
