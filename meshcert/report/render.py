"""report.md and report.html of a run, from its results.json and the clause catalog.

The clause matrix is grouped like the guide and shows every catalog clause: a clause absent from
the results is shown as "no test", never left out, and a clause in the results but not in the
catalog is listed on its own. Every piece of text is passed through
:func:`meshcert.secrets.redact` before it is written, and escaped for HTML. The HTML is one
self-contained file: inline CSS, no script, nothing loaded from elsewhere.

    results = load_results("reports/20261125-120105")
    write_report(Path("reports/20261125-120105"), results, load_catalog(),
                 extra={"latency": [...], "mutants": {...}, "scenarios": {name: journal}})
"""

from __future__ import annotations

import datetime
import html
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from meshcert.errors import InputError
from meshcert.report.catalog import GROUPS, Clause
from meshcert.report.matrix import holds
from meshcert.report.svg import latency_svg, timeline_legend_html, timeline_svg
from meshcert.secrets import redact
from meshcert.sut.reference.runtime import MUTANTS

OUTCOMES = ("passed", "failed", "skipped")
NO_TEST = "no test"
OUT_OF_SCOPE = "out of scope"
MEASURED = "measured"  # a measured-only clause (catalog `measured: true`) whose test ran: never "passed"
NOT_TESTED = "not tested"  # the run could not test the SUT (results' "not_tested": its reason)
GUIDE_LATENCY_CLAIM = "~3-5 ms added latency"
GUIDE_LATENCY_SENTENCE = "WireGuard overhead is minimal (~3-5ms added latency)"
GUIDE_LATENCY_MS = (3.0, 5.0)
LATENCY_PATHS = ("direct", "mesh", "mesh via subnet router", "derp")  # display order; others follow, sorted


# ----------------------------------------------------------------------------- input

def load_results(path: str | os.PathLike[str]) -> dict:
    """results.json of a run (the file, or the run's report folder holding it), checked for
    the shape meshcert's plugin writes: {"finished": ts, "clauses": {id: {"outcome", "tests"}}}."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    what = str(p)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(what, "the file does not exist", "give a run's report folder or its results.json") from None
    except OSError as exc:
        raise InputError(what, f"cannot read it: {exc.strerror}", "check the path") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(what, f"not valid JSON ({exc})", "use the results.json meshcert wrote") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clauses"), dict):
        raise InputError(what, "expected an object with a 'clauses' object",
                         "use the results.json meshcert wrote")
    for cid, entry in doc["clauses"].items():
        if not isinstance(entry, dict):
            raise InputError(what, f"clauses.{cid} is not an object", "use the results.json meshcert wrote")
        if entry.get("outcome") not in OUTCOMES:
            raise InputError(what, f"clauses.{cid}.outcome is {entry.get('outcome')!r}, not one of "
                             f"{', '.join(OUTCOMES)}", "use the results.json meshcert wrote")
        tests = entry.get("tests", [])
        if not isinstance(tests, list) or not all(isinstance(t, dict) for t in tests):
            raise InputError(what, f"clauses.{cid}.tests is not a list of objects",
                             "use the results.json meshcert wrote")
    return doc


# ----------------------------------------------------------------------------- model

@dataclass
class Row:
    id: str
    must: str
    outcome: str  # passed | failed | skipped | no test
    tests: list[dict]  # results' test entries: test, outcome, duration_s, message
    detail: str = ""  # why "no test": none written yet, or listed tests not run
    clause: Clause | None = None


@dataclass
class Summary:
    finished: float | None
    groups: dict[str, list[Row]]  # group -> rows, in GROUPS order, catalog order inside
    outside: list[Row]  # clauses in the results that the catalog does not define
    totals: dict[str, int] = field(default_factory=dict)
    not_tested: dict | None = None  # {"reason", "log"}: the SUT could not be tested at all

    @property
    def verdict(self) -> str:
        if self.not_tested:
            return NOT_TESTED
        if self.totals.get("failed") or any(r.outcome == "failed" for r in self.outside):
            return "failed"
        # Like `meshcert certify`: a clause with no test (or only skips) makes the run incomplete.
        if self.totals.get(NO_TEST) or self.totals.get("skipped") or not self.totals.get("passed"):
            return "incomplete"
        return "passed"


def _outcome(entry: dict) -> str:
    out = entry.get("outcome")
    if out in OUTCOMES:
        return out
    outs = [t.get("outcome") for t in entry.get("tests", []) if isinstance(t, dict)]
    if "failed" in outs:
        return "failed"
    if outs and all(o == "passed" for o in outs):
        return "passed"
    return "skipped" if outs else NO_TEST


def summarize(results: dict, catalog: Iterable[Clause]) -> Summary:
    clauses = (results or {}).get("clauses") or {}
    not_tested = _not_tested(results)
    groups: dict[str, list[Row]] = {g: [] for g in GROUPS}
    totals = {o: 0 for o in (*OUTCOMES, MEASURED, NO_TEST, OUT_OF_SCOPE, NOT_TESTED)}
    catalog = list(catalog)
    ran = (((results or {}).get("extra") or {}).get("versions") or {}) if isinstance(results, dict) else {}
    versions = {"tailscale": ran.get("tailscale_default"), "headscale": ran.get("headscale")}
    for c in catalog:
        entry = clauses.get(c.id)
        na = (c.holds_for and all(versions.values()) and not holds(c.holds_for, versions)
              and (entry is None or _outcome(entry) == "skipped"))
        if entry is None and c.out_of_scope:
            row = Row(c.id, c.must, OUT_OF_SCOPE, [], c.out_of_scope, c)
        elif na:  # holds only for other versions than this run's (catalog holds_for): not applicable
            row = Row(c.id, c.must, OUT_OF_SCOPE, [], "not applicable to this run's versions: holds for "
                      + ", ".join(f"{n} {b}" for n, b in c.holds_for)
                      + f" (ran tailscale {versions['tailscale']}, headscale {versions['headscale']})", c)
        elif entry is None and not_tested:
            row = Row(c.id, c.must, NOT_TESTED, [], "the run could not test the SUT (see above)", c)
        elif entry is None:
            # c.tests: the marked tests a collection found; None when this session collected
            # only part of the suite and none of this clause's tests
            detail = (f"not run in this session ({len(c.tests)} test{'s' if len(c.tests) != 1 else ''} "
                      f"marked with it)" if c.tests else "not run in this session" if c.tests is None
                      else "no test asserts this clause yet")
            row = Row(c.id, c.must, NO_TEST, [], detail, c)
        else:
            out = _outcome(entry)
            row = Row(c.id, c.must, MEASURED if out == "passed" and c.measured else out,
                      list(entry.get("tests") or []), "", c)
        totals[row.outcome] += 1
        groups[c.group].append(row)
    known = {c.id for c in catalog}
    outside = [Row(cid, "(not in the catalog)", _outcome(entry or {}), list((entry or {}).get("tests") or []),
                   "marked in a test but not defined in clauses.yaml")
               for cid, entry in sorted(clauses.items()) if cid not in known]
    totals["clauses"] = len(catalog)
    finished = results.get("finished") if isinstance(results, dict) else None
    return Summary(finished if isinstance(finished, (int, float)) else None, groups, outside, totals, not_tested)


def _not_tested(results: dict | None) -> dict | None:
    """results' "not_tested" ({"reason", "log"}); an older results.json's input_error counts too."""
    nt = (results or {}).get("not_tested") if isinstance(results, dict) else None
    if isinstance(nt, dict) and nt.get("reason"):
        log = nt.get("log") if isinstance(nt.get("log"), list) else []
        return {"reason": str(nt["reason"]), "log": [str(x) for x in log]}
    if isinstance(nt, str) and nt:
        return {"reason": nt, "log": []}
    ie = (results or {}).get("input_error") if isinstance(results, dict) else None
    return {"reason": str(ie), "log": []} if ie else None


# ----------------------------------------------------------------------------- summary table

TABLE_COLUMNS = ("passed", "failed", MEASURED, NOT_TESTED, OUT_OF_SCOPE)


def summary_rows(summary: Summary, extra: dict | None = None) -> list[tuple[str, dict[str, int]]]:
    """(label, {passed, failed, not tested, out of scope}) per group that has clauses, then the
    chaos scenarios (when any ran), then the total of the clauses. "not tested" counts every
    clause without a passing or failing run: skipped, no test yet, or the SUT not testable."""
    def count(rows: list[Row]) -> dict[str, int]:
        c = dict.fromkeys(TABLE_COLUMNS, 0)
        for r in rows:
            c[r.outcome if r.outcome in ("passed", "failed", MEASURED, OUT_OF_SCOPE) else NOT_TESTED] += 1
        return c
    out = [(GROUPS[g], count(rows)) for g, rows in summary.groups.items() if rows]
    if summary.outside:
        out.append(("outside the catalog", count(summary.outside)))
    out.append(("all clauses", {k: sum(c[k] for _, c in out) for k in TABLE_COLUMNS}))
    scen = _scenarios(extra)
    if scen:
        c = dict.fromkeys(TABLE_COLUMNS, 0)
        for _, j, _, _ in scen:
            o = _scenario_outcome(j)
            c["passed" if o == "passed" else NOT_TESTED if o == "running" else "failed"] += 1
        c[OUT_OF_SCOPE] = c[MEASURED] = None  # a scenario is never out of scope nor only measured: "–"
        out.append(("chaos scenarios", c))
    return out


def summary_table(summary: Summary, extra: dict | None = None) -> str:
    """The run's summary as a small plain-text table (what `certify` and `meshcert report` print)."""
    rows = summary_rows(summary, extra)
    cols = [c for c in TABLE_COLUMNS if c not in (OUT_OF_SCOPE, MEASURED) or any(r.get(c) for _, r in rows)]
    w0 = max(len("group"), *(len(label) for label, _ in rows))
    ws = [max(len(c), 3) for c in cols]

    def line(cells: list) -> str:
        return "  ".join([cells[0].ljust(w0), *(str(v).rjust(w) for v, w in zip(cells[1:], ws))]).rstrip()

    out = [line(["group", *cols]), line(["-" * w0, *("-" * w for w in ws)])]
    for label, c in rows:
        if label in ("all clauses", "chaos scenarios"):
            out.append(line(["-" * w0, *("-" * w for w in ws)]))
        out.append(line([label, *(c[k] if c.get(k) is not None else "–" for k in cols)]))
    return "\n".join(out)


# ----------------------------------------------------------------------------- formatting

def _t(value) -> str:
    """Any value as redacted text."""
    return redact("" if value is None else str(value))


def _h(value) -> str:
    """Any value as redacted, HTML-escaped text."""
    return html.escape(_t(value), quote=True)


# Inline Markdown of the catalog's sentences: `code`, **bold**, *italic*. Anything else is text.
_INLINE = re.compile(r"(`+)(.+?)\1|\*\*(?=\S)(.+?)(?<=\S)\*\*|(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])",
                     re.S)


def md_inline(value) -> str:
    """Redacted text with its inline Markdown (code spans, bold, italic) as HTML; every other
    character escaped, so nothing in a sentence can open a tag."""
    return _inline(_t(value))


def _inline(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()], quote=True))
        if m.group(1):
            code = m.group(2)
            if code.startswith(" ") and code.endswith(" ") and code.strip():
                code = code[1:-1]  # CommonMark: one space each side is padding
            out.append(f"<code>{html.escape(code, quote=True)}</code>")
        elif m.group(3) is not None:
            out.append(f"<strong>{_inline(m.group(3))}</strong>")
        else:
            out.append(f"<em>{_inline(m.group(4))}</em>")
        pos = m.end()
    out.append(html.escape(text[pos:], quote=True))
    return "".join(out)


def when(ts: float | None) -> str:
    if ts is None:
        return "unknown"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _secs(v) -> str:
    return f"{v:.3f} s" if isinstance(v, (int, float)) and not isinstance(v, bool) else "–"


def _ms(v) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return f"{v:.1f}"
    return "–"


def _num(v) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _md_cell(value) -> str:
    return _t(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_code(value) -> str:
    text = _t(value)
    fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}\n{text}\n{fence}"


def _md_inline_code(value, cell: bool = True) -> str:
    """`value` as an inline code span; ``cell`` escapes it for a table cell (outside a table a
    backslash inside a code span is shown as is, so it is left out there)."""
    text = _md_cell(value) if cell else " ".join(_t(value).splitlines())
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


# ----------------------------------------------------------------------------- latency

def _latency_rows(extra: dict | None) -> list[dict]:
    rows = (extra or {}).get("latency") or []
    return [r for r in rows if isinstance(r, dict)]


def _path_order(path: str) -> tuple:
    return (LATENCY_PATHS.index(path), "") if path in LATENCY_PATHS else (len(LATENCY_PATHS), path)


def _added(rows: list[dict]) -> list[dict]:
    """Per target measured both directly and over another path: that path's p50 minus the
    direct p50 (the mesh's overhead on the same target)."""
    direct = {r.get("target"): _num(r.get("p50_ms")) for r in rows if r.get("path") == "direct"}
    out = []
    for r in sorted(rows, key=lambda r: (str(r.get("target")), _path_order(str(r.get("path"))))):
        base, p50 = direct.get(r.get("target")), _num(r.get("p50_ms"))
        if r.get("path") == "direct" or base is None or p50 is None:
            continue
        delta = p50 - base
        lo, hi = GUIDE_LATENCY_MS
        if r.get("path") == "mesh":
            verdict = "within the guide's ~3-5 ms" if lo <= delta <= hi else (
                "below the guide's ~3-5 ms" if delta < lo else "above the guide's ~3-5 ms")
        elif r.get("path") == "derp":
            verdict = ("more than direct, as the guide says of DERP relays" if delta > 0
                       else "not more than direct, though the guide says DERP relays add latency")
        else:
            verdict = "–"
        out.append({"target": r.get("target"), "path": r.get("path"), "added_ms": delta, "verdict": verdict})
    return out


# ----------------------------------------------------------------------------- mutants

def _mutant_descriptions() -> dict[str, str]:
    return dict(MUTANTS)


MUTANT_KINDS = {"mutant": "mutants of the reference SUT", "world": "broken world settings",
                "chart": "broken charts"}


@dataclass(frozen=True)
class FaultRow:
    """One fault of the scoreboard (tests/common/faults.py): killed only when its target's assertion failed."""
    name: str
    kind: str
    target: list[str]
    killed: bool
    caught_by: list[str]
    why: str      # why it is not killed (empty when killed)
    about: str


def _mutants(extra: dict | None) -> list[FaultRow]:
    zoo = (extra or {}).get("mutants") or {}
    if not isinstance(zoo, dict):
        return []
    about = _mutant_descriptions()

    def strs(v) -> list[str]:
        return [str(c) for c in v] if isinstance(v, (list, tuple)) else ([str(v)] if v else [])
    rows = []
    for name, info in zoo.items():
        info = info if isinstance(info, dict) else {}
        name = str(name)
        kind = str(info.get("kind") or "mutant")
        short = name.split(":", 1)[1] if ":" in name else name
        killed = bool(info.get("killed"))
        rows.append(FaultRow(name, kind, strs(info.get("target")), killed, strs(info.get("clauses")),
                             "" if killed else str(info.get("why") or "not killed"),
                             str(info.get("about") or about.get(short, ""))))
    return sorted(rows, key=lambda r: (r.killed, r.kind, r.name))  # not killed first


def _mutant_score(rows: list[FaultRow]) -> tuple[str, str]:
    """(the score, its breakdown by kind): the denominator is every fault of the board."""
    killed = sum(1 for r in rows if r.killed)
    pct = 100.0 * killed / len(rows) if rows else 0.0
    parts = []
    for kind, label in MUTANT_KINDS.items():
        of = [r for r in rows if r.kind == kind]
        if of:
            parts.append(f"{label} {sum(1 for r in of if r.killed)}/{len(of)}")
    return f"{killed}/{len(rows)} faults killed ({pct:.0f}%)", ", ".join(parts)


def _caught_text(r: FaultRow) -> str:
    return f"caught by {', '.join(r.caught_by)}" if r.killed else f"not killed: {r.why}"


# ----------------------------------------------------------------------------- chaos scenarios

def _amount(v: float) -> str:
    """A number with at most two decimals and no trailing zeros: 11.5, 31.03, 120."""
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _duration(v) -> str:
    """Seconds, readably: 0.18 s, 31.03 s, 2 min 5.5 s; "–" for no number."""
    v = _num(v)
    if v is None:
        return "–"
    v = round(v, 2)
    if v < 60:
        return f"{_amount(v)} s"
    minutes, rest = divmod(v, 60)
    return f"{int(minutes)} min {_amount(rest)} s"


def _value(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, float) and _num(v) is not None:
        return _amount(v)
    return str(v)


def _figure(key, v) -> str:
    """key=value; a key ending in _s is seconds and one ending in _ms milliseconds, so the
    value gets the unit instead of the key: failover_s 11.5 -> "failover=11.5 s"."""
    key = str(key)
    if key.endswith("_ms") and len(key) > 3 and _num(v) is not None:
        return f"{key[:-3]}={_amount(float(v))} ms"
    if key.endswith("_s") and len(key) > 2 and _num(v) is not None:
        return f"{key[:-2]}={_duration(v)}"
    return f"{key}={_value(v)}"


def _scenarios(extra: dict | None) -> list[tuple[str, dict, list[str], list[tuple[str, str, list[str]]]]]:
    """(name, journal, figures as key=value, events as (time, event, [key=value, ...])) in the
    order the scenarios ran."""
    book = (extra or {}).get("scenarios") or {}
    if not isinstance(book, dict):
        return []
    out = []
    for name, j in book.items():
        j = j if isinstance(j, dict) else {}
        figures = j.get("figures") if isinstance(j.get("figures"), dict) else {}
        events = []
        for e in j.get("events") if isinstance(j.get("events"), list) else []:
            e = e if isinstance(e, dict) else {"event": e}
            t = _num(e.get("t_s"))
            events.append((f"{t:.2f} s" if t is not None else "–", str(e.get("event", "–")),
                           [_figure(k, v) for k, v in e.items() if k not in ("t_s", "event")]))
        out.append((str(name), j, [_figure(k, v) for k, v in figures.items()], events))
    return out


def _scenario_outcome(j: dict) -> str:
    return str(j.get("outcome") or "unknown")


def _scenario_tally(rows: list) -> str:
    counts: dict[str, int] = {}
    for _, j, _, _ in rows:
        counts[_scenario_outcome(j)] = counts.get(_scenario_outcome(j), 0) + 1
    return (f"{len(rows)} scenario{'s' if len(rows) != 1 else ''}: "
            + ", ".join(f"{n} {o}" for o, n in counts.items()) + ".")


# ----------------------------------------------------------------------------- markdown

def render_markdown(summary: Summary, catalog: list[Clause], extra: dict | None = None) -> str:
    t = summary.totals
    out = ["# meshcert report", "",
           f"- Run finished: {when(summary.finished)}",
           f"- Verdict: **{summary.verdict}**",
           f"- Clauses in the catalog: {t['clauses']} — passed {t['passed']}, failed {t['failed']}, "
           f"measured (reported, not asserted) {t[MEASURED]}, skipped {t['skipped']}, no test {t[NO_TEST]}, out of scope {t[OUT_OF_SCOPE]}"
           + (f", not tested {t[NOT_TESTED]}" if t.get(NOT_TESTED) else "")]
    if summary.outside:
        out.append(f"- Clauses outside the catalog: {len(summary.outside)}")
    if summary.not_tested:
        nt = summary.not_tested
        out += ["", "## Not tested", "", "The SUT could not be tested; no clause was judged against it.", "",
                f"Reason: {' '.join(_t(nt['reason']).split())}", ""]
        if nt.get("log"):
            out += ["The last lines of the SUT container's log:", "", _md_code("\n".join(nt["log"])), ""]
    out += ["", "## Summary", "", _md_summary(summary, extra), "", "## Clause matrix", ""]
    failures: list[tuple[str, dict]] = []
    for group, rows in summary.groups.items():
        if not rows:
            continue
        out += [f"### {GROUPS[group]}", "", "| Clause | MUST | Outcome | Tests |", "|---|---|---|---|"]
        for r in rows:
            out.append(_md_row(r, failures))
        out.append("")
    if summary.outside:
        out += ["### Outside the catalog", "", "| Clause | Note | Outcome | Tests |", "|---|---|---|---|"]
        for r in summary.outside:
            out.append(_md_row(r, failures, note=r.detail))
        out.append("")
    if failures:
        out += ["## Failures", ""]
        for cid, test in failures:
            out += [f"### {_md_cell(cid)}: {_md_inline_code(test.get('test'))}", "",
                    _md_code(test.get("message") or "(no message)"), ""]
    out += _md_latency(extra)
    out += _md_scenarios(extra)
    out += _md_mutants(extra)
    out += _md_errata(summary)
    return redact("\n".join(out).rstrip() + "\n")


def _md_summary(summary: Summary, extra: dict | None) -> str:
    rows = summary_rows(summary, extra)
    out = ["| Group | " + " | ".join(TABLE_COLUMNS) + " |", "|---|" + "---:|" * len(TABLE_COLUMNS)]
    for label, c in rows:
        cells = [_md_cell(label), *("–" if c[k] is None else str(c[k]) for k in TABLE_COLUMNS)]
        if label == "all clauses":
            cells = [f"**{x}**" for x in cells]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _md_row(r: Row, failures: list, note: str | None = None) -> str:
    badge = f"**{r.outcome}**" if r.outcome in ("failed", NO_TEST, NOT_TESTED) else r.outcome
    if r.tests:
        parts = []
        for test in r.tests:
            parts.append(f"{_md_inline_code(test.get('test'))} {_md_cell(test.get('outcome'))} "
                         f"{_secs(test.get('duration_s'))}")
            if test.get("outcome") == "failed":
                failures.append((r.id, test))
        tests = "<br>".join(parts)
    else:
        tests = _md_cell(r.detail)
    return f"| {_md_cell(r.id)} | {_md_cell(note if note is not None else r.must)} | {badge} | {tests} |"


def _md_latency(extra: dict | None) -> list[str]:
    rows = _latency_rows(extra)
    if not rows:
        return []
    out = ["## Latency", "", f"The guide: “{GUIDE_LATENCY_SENTENCE}” (PERF-1; reported, not asserted).", "",
           "| Path | Target | p50 ms | p95 ms | n |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (_path_order(str(r.get("path"))), str(r.get("target")))):
        out.append(f"| {_md_cell(r.get('path'))} | {_md_cell(r.get('target'))} | {_ms(r.get('p50_ms'))} | "
                   f"{_ms(r.get('p95_ms'))} | {_md_cell(r.get('n', '–'))} |")
    added = _added(rows)
    if added:
        out += ["", f"Added latency over the direct path (p50), beside the guide's claim “{GUIDE_LATENCY_CLAIM}”:",
                "", "| Target | Path | Added p50 ms | Against the guide |", "|---|---|---|---|"]
        for a in added:
            out.append(f"| {_md_cell(a['target'])} | {_md_cell(a['path'])} | {a['added_ms']:+.1f} | "
                       f"{_md_cell(a['verdict'])} |")
    out.append("")
    return out


def _md_scenarios(extra: dict | None) -> list[str]:
    rows = _scenarios(extra)
    if not rows:
        return []
    out = ["## Chaos scenarios", "", _md_cell(_scenario_tally(rows)), "",
           "| Scenario | Outcome | Duration | Figures | Replay file |", "|---|---|---|---|---|"]
    for name, j, figures, _ in rows:
        outcome = _scenario_outcome(j)
        badge = _md_cell(outcome) if outcome == "passed" else f"**{_md_cell(outcome)}**"
        replay = _md_inline_code(j["replay_file"]) if j.get("replay_file") else "–"
        out.append(f"| {_md_cell(name)} | {badge} | {_duration(j.get('duration_s'))} | "
                   f"{_md_cell(', '.join(figures) or '–')} | {replay} |")
    for name, _j, _, events in rows:
        out += ["", f"### Journal: {_md_cell(name)}", ""]
        for t, event, detail in events:
            out.append(f"- {t} **{_md_cell(event)}**" + "".join(f" {_md_inline_code(d, cell=False)}" for d in detail))
        if not events:
            out.append("- (no events)")
    out.append("")
    return out


def _md_mutants(extra: dict | None) -> list[str]:
    rows = _mutants(extra)
    if not rows:
        return []
    score, parts = _mutant_score(rows)
    out = ["## Mutation score", "",
           f"{score}: {parts}. The denominator is every fault meshcert must catch (tests/common/faults.py); a "
           "fault whose test failed, errored, was skipped or not run counts as not killed.", "",
           "| Fault | Kind | Target | Result | Fault description |", "|---|---|---|---|---|"]
    for r in rows:
        result = _caught_text(r) if r.killed else f"**{_caught_text(r)}**"
        out.append(f"| {_md_cell(r.name)} | {_md_cell(r.kind)} | {_md_cell(', '.join(r.target) or '–')} | "
                   f"{_md_cell(result)} | {_md_cell(r.about or '–')} |")
    out.append("")
    return out


def _errata(summary: Summary) -> list[Row]:
    return summary.groups.get("errata", [])


def _md_errata(summary: Summary) -> list[str]:
    rows = _errata(summary)
    if not rows:
        return []
    out = ["## Guide errata", "", "Where the guide's instructions do not work on the components it names "
           "(as pinned by meshcert), and what does.", ""]
    for r in rows:
        quote = " ".join((r.clause.guide or "").split()) if r.clause else ""
        out += [f"- **{_md_cell(r.id)}** ({r.outcome}) — the guide: “{_md_cell(quote)}”. {_md_cell(r.must)}"]
    out.append("")
    return out


# ----------------------------------------------------------------------------- html

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:72rem;
color:#1d2433;line-height:1.4;padding:0 1rem}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
h3{margin-top:1.4rem}
table{border-collapse:collapse;width:100%;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f8}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em;word-break:break-all}
pre{background:#fbeaea;border:1px solid #e5b5b5;padding:.4rem .6rem;white-space:pre-wrap;
word-break:break-word;margin:.3rem 0;font-size:.85rem}
.badge{display:inline-block;padding:.08rem .5rem;border-radius:.7rem;font-weight:600;font-size:.82rem;
white-space:nowrap}
.passed,.killed{background:#dafbe1;color:#116329}.failed,.survived{background:#ffebe9;color:#a40e26}
.skipped{background:#fff8c5;color:#7d4e00}.measured{background:#ddf4ff;color:#0a3069}.notest{background:#eaeef2;color:#57606a;border:1px dashed #8c959f}
.incomplete{background:#fff8c5;color:#7d4e00}
.totals td,.totals th{text-align:center}
.muted{color:#57606a;font-size:.85rem}
.quote{color:#57606a;font-style:italic}
ul.tests{list-style:none;margin:0;padding:0}ul.tests li{margin:.1rem 0}
details{margin:.3rem 0}summary{cursor:pointer}
ul.journal{list-style:none;margin:.2rem 0 .6rem;padding-left:1rem;font-size:.88rem}ul.journal li{margin:.1rem 0}
ol.journal{margin:.2rem 0 .6rem;padding-left:2rem;font-size:.88rem}ol.journal li{margin:.1rem 0}
.nottested{background:#fff8c5;border:1px solid #d4a72c;border-radius:.4rem;padding:.2rem 1rem .6rem;margin:1rem 0}
.nottested h2{margin-top:.6rem;border:none}
pre.log{background:#f6f8fa;border:1px solid #d0d7de}
table.summary{width:auto;min-width:32rem}table.summary td:not(:first-child),table.summary th:not(:first-child)
{text-align:right;font-variant-numeric:tabular-nums}
table.summary tr.total td{font-weight:700;border-top:2px solid #8c959f}
.cell-passed{color:#116329}.cell-failed{color:#a40e26;font-weight:700}.cell-skipped{color:#7d4e00}
svg.chart{display:block;max-width:100%;height:auto;margin:.6rem 0}
p.legend{font-size:.82rem;color:#57606a}.lg{white-space:nowrap;margin-right:1rem}
.lg .sw,.lg .dot{display:inline-block;width:.8rem;height:.8rem;vertical-align:-.1rem;margin-right:.3rem;
border:1px solid #d0d7de}.lg .dot{border-radius:50%;border:none;width:.6rem;height:.6rem}
"""


def _badge(outcome: str) -> str:
    cls = "notest" if outcome in (NO_TEST, OUT_OF_SCOPE, NOT_TESTED) else re.sub(r"[^a-z]", "", outcome) or "notest"
    return f'<span class="badge {cls}">{_h(outcome)}</span>'


def _verdict_badge(verdict: str) -> str:
    """The run's verdict; "not tested" in yellow (nothing was judged), not the grey of a row."""
    if verdict == NOT_TESTED:
        return f'<span class="badge skipped">{_h(verdict)}</span>'
    return _badge(verdict)


def render_html(summary: Summary, catalog: list[Clause], extra: dict | None = None) -> str:
    t = summary.totals
    h = ['<!DOCTYPE html>', '<html lang="en">', "<head>", '<meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         "<title>meshcert report</title>", f"<style>{CSS}</style>", "</head>", "<body>",
         "<h1>meshcert report</h1>",
         f'<p class="muted">Run finished {_h(when(summary.finished))} · verdict {_verdict_badge(summary.verdict)}</p>']
    h += _html_not_tested(summary)
    h += ['<table class="totals"><thead><tr><th>Clauses</th><th>passed</th><th>failed</th><th>measured</th><th>skipped</th>'
          "<th>no test</th><th>out of scope</th>" + ("<th>not tested</th>" if t.get(NOT_TESTED) else "")
          + ("<th>outside the catalog</th>" if summary.outside else "") + "</tr></thead>",
          f"<tbody><tr><td>{t['clauses']}</td><td>{t['passed']}</td><td>{t['failed']}</td><td>{t[MEASURED]}</td>"
          f"<td>{t['skipped']}</td>"
          f"<td>{t[NO_TEST]}</td><td>{t[OUT_OF_SCOPE]}</td>" + (f"<td>{t[NOT_TESTED]}</td>" if t.get(NOT_TESTED) else "")
          + (f"<td>{len(summary.outside)}</td>" if summary.outside else "") + "</tr></tbody></table>"]
    h += _html_summary(summary, extra)
    h += ['<h2 id="matrix">Clause matrix</h2>']
    for group, rows in summary.groups.items():
        if not rows:
            continue
        h.append(f'<h3 id="group-{_h(group)}">{_h(GROUPS[group])}</h3>')
        h.append(_html_table(rows, "MUST"))
    if summary.outside:
        h.append('<h3 id="outside">Outside the catalog</h3>')
        h.append(_html_table(summary.outside, "Note", use_detail=True))
    h += _html_latency(extra)
    h += _html_scenarios(extra)
    h += _html_mutants(extra)
    h += _html_errata(summary)
    h += ["</body>", "</html>"]
    return redact("\n".join(h) + "\n")


def _html_not_tested(summary: Summary) -> list[str]:
    nt = summary.not_tested
    if not nt:
        return []
    out = ['<div class="nottested"><h2 id="not-tested">Not tested</h2>',
           "<p>The SUT could not be tested; no clause was judged against it.</p>",
           f"<p><strong>Reason:</strong> {md_inline(nt['reason'])}</p>"]
    if nt.get("log"):
        out.append("<p>The last lines of the SUT container's log:</p>")
        out.append(f'<pre class="log">{_h(chr(10).join(nt["log"]))}</pre>')
    out.append("</div>")
    return out


def _html_summary(summary: Summary, extra: dict | None) -> list[str]:
    rows = summary_rows(summary, extra)
    out = ['<table class="summary"><thead><tr><th>Group</th>'
           + "".join(f"<th>{_h(c)}</th>" for c in TABLE_COLUMNS) + "</tr></thead><tbody>"]
    for label, c in rows:
        cls = ' class="total"' if label == "all clauses" else ""
        cells = []
        for k in TABLE_COLUMNS:
            hot = {"passed": "passed", "failed": "failed", NOT_TESTED: "skipped"}.get(k) if c[k] else None
            attr = f' class="cell-{hot}"' if hot else ""
            cells.append(f"<td{attr}>{'–' if c[k] is None else c[k]}</td>")
        out.append(f"<tr{cls}><td>{_h(label)}</td>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return out


def _html_table(rows: list[Row], second: str, use_detail: bool = False) -> str:
    out = [f"<table><thead><tr><th>Clause</th><th>{_h(second)}</th><th>Outcome</th><th>Tests</th></tr></thead>",
           "<tbody>"]
    for r in rows:
        text = _h(r.detail) if use_detail else md_inline(r.must)
        if r.clause is not None and r.clause.guide and not use_detail:
            text += f'<br><span class="quote">the guide: “{md_inline(" ".join(r.clause.guide.split()))}”</span>'
        if r.tests:
            items = []
            for test in r.tests:
                item = (f"<li><code>{_h(test.get('test'))}</code> {_badge(str(test.get('outcome')))} "
                        f'<span class="muted">{_h(_secs(test.get("duration_s")))}</span>')
                if test.get("outcome") == "failed":
                    item += f"<pre>{_h(test.get('message') or '(no message)')}</pre>"
                items.append(item + "</li>")
            tests = '<ul class="tests">' + "".join(items) + "</ul>"
        else:
            tests = f'<span class="muted">{_h(r.detail)}</span>'
        out.append(f'<tr id="{_h(r.id)}"><td><strong>{_h(r.id)}</strong></td><td>{text}</td>'
                   f"<td>{_badge(r.outcome)}</td><td>{tests}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _html_latency(extra: dict | None) -> list[str]:
    rows = _latency_rows(extra)
    if not rows:
        return []
    out = ['<h2 id="latency">Latency</h2>',
           f"<p>The guide: <span class=\"quote\">“{_h(GUIDE_LATENCY_SENTENCE)}”</span> "
           "(PERF-1; measured and reported, not asserted).</p>",
           latency_svg(sorted(rows, key=lambda r: (_path_order(str(r.get("path"))), str(r.get("target")))),
                       guide_ms=GUIDE_LATENCY_MS),
           "<table><thead><tr><th>Path</th><th>Target</th><th>p50 ms</th><th>p95 ms</th><th>n</th></tr></thead>"
           "<tbody>"]
    for r in sorted(rows, key=lambda r: (_path_order(str(r.get("path"))), str(r.get("target")))):
        out.append(f"<tr><td>{_h(r.get('path'))}</td><td>{_h(r.get('target'))}</td><td>{_ms(r.get('p50_ms'))}</td>"
                   f"<td>{_ms(r.get('p95_ms'))}</td><td>{_h(r.get('n', '–'))}</td></tr>")
    out.append("</tbody></table>")
    added = _added(rows)
    if added:
        out += [f"<p>Added latency over the direct path (p50), beside the guide's claim "
                f"“{_h(GUIDE_LATENCY_CLAIM)}”:</p>",
                "<table><thead><tr><th>Target</th><th>Path</th><th>Added p50 ms</th><th>Against the guide</th>"
                "</tr></thead><tbody>"]
        for a in added:
            out.append(f"<tr><td>{_h(a['target'])}</td><td>{_h(a['path'])}</td><td>{a['added_ms']:+.1f}</td>"
                       f"<td>{_h(a['verdict'])}</td></tr>")
        out.append("</tbody></table>")
    return out


def _scenario_badge(outcome: str) -> str:
    cls = {"passed": "passed", "running": "skipped"}.get(outcome, "failed")
    return f'<span class="badge {cls}">{_h(outcome)}</span>'


def _html_scenarios(extra: dict | None) -> list[str]:
    rows = _scenarios(extra)
    if not rows:
        return []
    out = ['<h2 id="scenarios">Chaos scenarios</h2>', f"<p>{_h(_scenario_tally(rows))}</p>",
           "<table><thead><tr><th>Scenario</th><th>Outcome</th><th>Duration</th><th>Figures</th>"
           "<th>Replay file</th></tr></thead><tbody>"]
    for i, (name, j, figures, _) in enumerate(rows, 1):
        replay = f"<code>{_h(j['replay_file'])}</code>" if j.get("replay_file") else "–"
        out.append(f'<tr><td><a href="#scenario-{i}">{_h(name)}</a></td>'
                   f"<td>{_scenario_badge(_scenario_outcome(j))}</td><td>{_h(_duration(j.get('duration_s')))}</td>"
                   f"<td>{_h(', '.join(figures) or '–')}</td><td>{replay}</td></tr>")
    out.append("</tbody></table>")
    out.append("<p>Each scenario's timeline: what the world was doing (bands) and each journal event (numbered "
               "as in the journal under it).</p>" + timeline_legend_html())
    for i, (name, j, _, events) in enumerate(rows, 1):
        opened = " open" if _scenario_outcome(j) != "passed" else ""
        out += [f'<h3 id="timeline-{i}">{_h(name)} {_scenario_badge(_scenario_outcome(j))}</h3>',
                timeline_svg({**j, "scenario": name}),
                f'<details id="scenario-{i}"{opened}><summary>Journal: <strong>{_h(name)}</strong> '
                f'<span class="muted">{len(events)} event{"s" if len(events) != 1 else ""} (numbered as on the '
                f"timeline)</span></summary>", '<ol class="journal">']
        for t, event, detail in events:
            out.append(f'<li><span class="muted">{_h(t)}</span> <strong>{_h(event)}</strong>'
                       + "".join(f" <code>{_h(d)}</code>" for d in detail) + "</li>")
        if not events:
            out.append('<li class="muted">(no events)</li>')
        out += ["</ol>", "</details>"]
    return out


def _html_mutants(extra: dict | None) -> list[str]:
    rows = _mutants(extra)
    if not rows:
        return []
    score, parts = _mutant_score(rows)
    out = ['<h2 id="mutants">Mutation score</h2>',
           f"<p><strong>{_h(score)}</strong>: {_h(parts)}. The denominator is every fault meshcert must catch "
           "(tests/common/faults.py); a fault whose test failed, errored, was skipped or not run counts as not killed.</p>",
           "<table><thead><tr><th>Fault</th><th>Kind</th><th>Target</th><th>Result</th><th>Fault description</th>"
           "</tr></thead><tbody>"]
    for r in rows:
        out.append(f"<tr><td><code>{_h(r.name)}</code></td><td>{_h(r.kind)}</td>"
                   f"<td>{_h(', '.join(r.target) or '–')}</td>"
                   f"<td>{_badge('killed' if r.killed else 'survived')} {_h(_caught_text(r))}</td>"
                   f"<td>{_h(r.about or '–')}</td></tr>")
    out.append("</tbody></table>")
    return out


def _html_errata(summary: Summary) -> list[str]:
    rows = _errata(summary)
    if not rows:
        return []
    out = ['<h2 id="errata">Guide errata</h2>',
           "<p>Where the guide's instructions do not work on the components it names (as pinned by meshcert), "
           "and what does.</p>", "<ul>"]
    for r in rows:
        quote = " ".join((r.clause.guide or "").split()) if r.clause else ""
        out.append(f'<li><strong>{_h(r.id)}</strong> {_badge(r.outcome)} — the guide: '
                   f'<span class="quote">“{md_inline(quote)}”</span>. {md_inline(r.must)}</li>')
    out.append("</ul>")
    return out


# ----------------------------------------------------------------------------- output

def write_report(report_dir: str | os.PathLike[str], results: dict, catalog: Iterable[Clause], *,
                 extra: dict | None = None) -> tuple[Path, Path]:
    """Write report.md and report.html into report_dir; returns their paths."""
    d = Path(report_dir)
    d.mkdir(parents=True, exist_ok=True)
    catalog = list(catalog)
    summary = summarize(results, catalog)
    md, page = d / "report.md", d / "report.html"
    md.write_text(render_markdown(summary, catalog, extra), encoding="utf-8")
    page.write_text(render_html(summary, catalog, extra), encoding="utf-8")
    return md, page
