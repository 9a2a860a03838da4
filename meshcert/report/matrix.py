"""The version matrix's report (``certify --matrix``, issue 14): clause x combination.

A combination (a tailscale version with a headscale version) is one column. Its state is
``run`` (its clauses carry the outcomes of its own pytest session, whose results.json records
the versions), ``not built`` (a version could not be pinned or built: the reason, one line) or
``not tested`` (its world could not be built: the reason). Nothing is dropped: every column of
the requested matrix appears, and only a matrix whose every column ran and passed every
selected clause is a pass.
"""

from __future__ import annotations

import html
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from meshcert.toolchain import components
from meshcert.versions import holds  # noqa: F401  (report.matrix.holds: the catalog's holds_for, judged)

# the tailnet-level clauses the matrix runs per combination (issue 14, item 3): the ACL and route
# clauses, TYPE-6/7, HEALTH-1, TROUBLE-2..5 and the errata
MATRIX_CLAUSES = ("TYPE-6", "TYPE-7", "HEALTH-1", "ACL-1", "ACL-2", "ROUTE-1", "ROUTE-2", "ROUTE-3",
                  "TROUBLE-2", "TROUBLE-3", "TROUBLE-4", "TROUBLE-5", "ERRATA-1", "ERRATA-2", "ERRATA-3")
RUN, NOT_BUILT, NOT_TESTED = "run", "not built", "not tested"
NOT_APPLICABLE = "n/a"  # the clause does not hold for this combination's versions (catalog holds_for)


def finding_skip(constraints: tuple[tuple[str, str], ...], versions: dict[str, str],
                 only: tuple[str, ...] | None = None) -> str:
    """Why a recorded finding whose ``versions:`` say ``constraints`` does not run with
    ``versions`` ({"tailscale": v, "headscale": v}); "" when it runs. ``only``: the components
    judged now (the others' constraints judged later, e.g. against a world's own versions)."""
    if holds(tuple((n, c) for n, c in constraints if only is None or n in only), versions):
        return ""
    return (f"a finding of {' '.join(f'{n} {c}' for n, c in constraints)}; this session runs "
            f"tailscale {versions['tailscale']}, headscale {versions['headscale']}")


def session_versions() -> dict[str, str]:
    """{"tailscale": v, "headscale": v} of a session: what MESHCERT_TAILSCALE (its default, ``v``
    or ``*=v``) and MESHCERT_HEADSCALE choose, else the pinned versions."""
    ts = {}
    for part in (p.strip() for p in os.environ.get("MESHCERT_TAILSCALE", "").split(",")):
        if part:
            name, _, version = part.rpartition("=")
            ts[name.strip() or "*"] = version.strip()
    return {"tailscale": ts.get("*") or components.COMPONENTS["tailscale"].version,
            "headscale": os.environ.get("MESHCERT_HEADSCALE") or components.COMPONENTS["headscale"].version}


def column(tailscale: str, headscale: str, state: str, *, reason: str = "", clauses: dict | None = None,
           report: str = "") -> dict:
    """One combination's column of matrix.json."""
    return {"tailscale": tailscale, "headscale": headscale, "state": state, "reason": reason,
            "clauses": clauses or {}, "report": report}


def column_from_results(tailscale: str, headscale: str, results: dict | None, report: Path, rc: int,
                        not_applicable: tuple[str, ...] = ()) -> dict:
    """A combination's column from its session's results.json (None: it wrote none);
    ``not_applicable``: the clauses that do not hold for its versions (not run: "n/a")."""
    na = {cid: NOT_APPLICABLE for cid in not_applicable}
    if results is None:
        return column(tailscale, headscale, NOT_TESTED, reason=f"pytest ended (exit {rc}) without results.json",
                      clauses=na, report=str(report))
    nt = results.get("not_tested")
    if nt:  # one line in the column (a CLI's usage text after it stays in the session's report)
        first = (nt.get("reason") or "?").strip().splitlines()[0]
        return column(tailscale, headscale, NOT_TESTED, reason=first, clauses=na, report=str(report))
    outcomes = {cid: v.get("outcome", "?") for cid, v in (results.get("clauses") or {}).items()}
    outcomes.update({cid: NOT_APPLICABLE for cid in not_applicable})
    return column(tailscale, headscale, RUN, clauses=outcomes, report=str(report))


# the recorded findings (fixtures/replays/findings/, strict xfails), run in every combination:
# those of other versions skip themselves
FINDINGS_TEST = "conformance/test_property.py::test_known_finding"


def _ts_param(text: str) -> tuple[str | None, str]:
    """(tailscale version, the rest) of a test id's parameters: ``ts-v1.80.3-name`` ->
    ("v1.80.3", "name"); no ``ts-`` part (a session of one version): (None, text)."""
    m = re.search(r"(?:^|-)ts-(v\d+\.\d+\.\d+)(?=-|$)", text)
    if not m:
        return None, text
    return m.group(1), (text[:m.start()] + text[m.end():]).strip("-")


def results_of(results: dict | None, tailscale: str) -> dict | None:
    """A matrix session's results.json (one world, several tailscale versions: its tests carry
    ``[ts-<version>]``) narrowed to one tailscale version: each clause's tests of that version
    and its outcome from them (failed if one failed, passed if all passed, else skipped); the
    versions under extra.versions. A session of one version: unchanged."""
    if not results or results.get("not_tested"):
        return results
    clauses = {}
    for cid, entry in (results.get("clauses") or {}).items():
        tests = []
        for t in entry.get("tests") or []:
            m = re.search(r"\[(.*)\]$", str(t.get("test", "")))
            ts = _ts_param(m.group(1))[0] if m else None
            if ts is None or ts == tailscale:
                tests.append(t)
        if not tests:
            continue
        outs = [t.get("outcome") for t in tests]
        out = "failed" if "failed" in outs else "passed" if all(o == "passed" for o in outs) else "skipped"
        clauses[cid] = {**entry, "tests": tests, "outcome": out}
    extra = dict(results.get("extra") or {})
    ran = dict(extra.get("versions") or {})
    extra["versions"] = {**ran, "tailscale_default": tailscale,
                         "tailscale": {n: tailscale for n in (ran.get("tailscale") or {})}}
    return {**results, "clauses": clauses, "extra": extra}


def findings_from_junit(junit: Path) -> dict[str | None, dict[str, str]]:
    """{tailscale version (None: a session of one): {finding file's stem: xfailed | skipped |
    failed | passed}} of a session's junit.xml: an xfailed finding still reproduces; "failed"
    (a strict xfail that passed, or an error) means the combination no longer behaves as the
    finding says."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return {}
    out: dict[str | None, dict[str, str]] = {}
    for case in root.iter("testcase"):
        m = re.match(r"test_known_finding\[(.+)\]$", case.get("name", ""))
        if not m:
            continue
        ts, stem = _ts_param(m.group(1))
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif skipped is not None:
            outcome = "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"
        else:
            outcome = "passed"
        out.setdefault(ts, {})[stem] = outcome
    return out


def label(col: dict) -> str:
    return f"tailscale {col['tailscale']} + headscale {col['headscale']}"


def verdict(columns: list[dict], clause_ids: list[str]) -> tuple[int, list[str]]:
    """(certify's exit code, the lines that explain it): 1 when a clause failed in a combination
    (each failure names its combination), 3 when a column is not built / not tested or a
    selected clause has no outcome there (incomplete), else 0."""
    failed, incomplete = [], []
    for col in columns:
        if col["state"] != RUN:
            incomplete.append(f"{label(col)}: {col['state']}: {col['reason']}")
            continue
        for cid in clause_ids:
            out = col["clauses"].get(cid)
            if out == "failed":
                failed.append(f"{cid} failed with {label(col)} (report: {col['report']})")
            elif out not in ("passed", NOT_APPLICABLE):
                incomplete.append(f"{cid} {out or 'not run'} with {label(col)}")
        for name, out in (col.get("findings") or {}).items():
            if out == "failed":
                failed.append(f"finding {name} did not behave as recorded with {label(col)} (strict xfail; "
                              f"report: {col['report']})")
    if failed:
        return 1, ["failed: " + f for f in failed] + ["incomplete: " + i for i in incomplete]
    if incomplete:
        return 3, ["incomplete: " + i for i in incomplete]
    return 0, []


def table(columns: list[dict], clause_ids: list[str]) -> str:
    """Clause x combination as a text (markdown) table; a column not run says why under it."""
    heads = [f"ts {c['tailscale']} / hs {c['headscale']}" for c in columns]
    rows = ["| clause | " + " | ".join(heads) + " |", "|---|" + "---|" * len(columns)]
    for cid in clause_ids:
        cells = [c["clauses"].get(cid) or ("not run" if c["state"] == RUN else c["state"]) for c in columns]
        rows.append(f"| {cid} | " + " | ".join(cells) + " |")
    names = sorted({n for c in columns for n in (c.get("findings") or {})})
    for n in names:
        rows.append(f"| finding: {n} | " + " | ".join((c.get("findings") or {}).get(n, "–") for c in columns) + " |")
    notes = [f"- {label(c)}: {c['state']}: {c['reason']}" for c in columns if c["state"] != RUN]
    return "\n".join(rows + ([""] + notes if notes else []))


def html_page(versions: dict, clause_ids: list[str], columns: list[dict]) -> str:
    """matrix.html: the clause x combination table as a page of its own (no script, no external
    resource), each cell coloured by its outcome, each column linking its session's report."""
    def h(x) -> str:
        return html.escape(str(x))

    def cls(out: str) -> str:
        return {"passed": "ok", "xfailed": "known", "failed": "bad", NOT_APPLICABLE: "na"}.get(out, "other")

    heads = "".join(f'<th>tailscale {h(c["tailscale"])}<br>headscale {h(c["headscale"])}'
                    + (f'<br><a href="{h(Path(c["report"]).name)}/report.html">report</a>' if c.get("report") else "")
                    + "</th>" for c in columns)
    rows = []
    for cid in clause_ids:
        cells = [c["clauses"].get(cid) or ("not run" if c["state"] == RUN else c["state"]) for c in columns]
        rows.append(f"<tr><th>{h(cid)}</th>" + "".join(f'<td class="{cls(x)}">{h(x)}</td>' for x in cells) + "</tr>")
    for n in sorted({n for c in columns for n in (c.get("findings") or {})}):
        cells = [(c.get("findings") or {}).get(n, "–") for c in columns]
        rows.append(f"<tr><th>finding: {h(n)}</th>" + "".join(f'<td class="{cls(x)}">{h(x)}</td>' for x in cells)
                    + "</tr>")
    notes = "".join(f"<li>{h(label(c))}: {h(c['state'])}: {h(c['reason'])}</li>" for c in columns if c["state"] != RUN)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>meshcert version matrix</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}th,td{border:1px solid #d0d7de;"
            "padding:4px 8px;text-align:left}.ok{background:#dafbe1}.bad{background:#ffebe9;font-weight:700}"
            ".known{background:#fff8c5}.na{color:#57606a}.other{background:#eaeef2}</style></head><body>"
            "<h1>Version matrix</h1><p>Each column is one combination (one world per headscale version, "
            "its nodes restarted for each tailscale version). n/a: the clause holds for other versions "
            "(the catalog's holds_for); xfailed: a recorded finding still reproduces.</p>"
            f"<table><thead><tr><th>clause</th>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + (f"<ul>{notes}</ul>" if notes else "") + "</body></html>\n")


def write(report: Path, versions: dict, clause_ids: list[str], columns: list[dict]) -> Path:
    """matrix.json (versions, clauses, columns), matrix.md (the table) and matrix.html in ``report``."""
    report.mkdir(parents=True, exist_ok=True)
    (report / "matrix.json").write_text(json.dumps({"versions": versions, "clauses": clause_ids,
                                                    "combinations": columns}, indent=1))
    (report / "matrix.md").write_text("# Version matrix\n\n" + table(columns, clause_ids) + "\n")
    (report / "matrix.html").write_text(html_page(versions, clause_ids, columns))
    return report / "matrix.json"
