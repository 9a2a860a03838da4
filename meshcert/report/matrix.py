"""The version matrix's report (``certify --matrix``, issue 14): clause x combination.

A combination (a tailscale version with a headscale version) is one column. Its state is
``run`` (its clauses carry the outcomes of its own pytest session, whose results.json records
the versions), ``not built`` (a version could not be pinned or built: the reason, one line) or
``not tested`` (its world could not be built: the reason). Nothing is dropped: every column of
the requested matrix appears, and only a matrix whose every column ran and passed every
selected clause is a pass.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# the tailnet-level clauses the matrix runs per combination (issue 14, item 3): the ACL and route
# clauses, TYPE-6/7, HEALTH-1, TROUBLE-2..5 and the errata
MATRIX_CLAUSES = ("TYPE-6", "TYPE-7", "HEALTH-1", "ACL-1", "ACL-2", "ROUTE-1", "ROUTE-2",
                  "TROUBLE-2", "TROUBLE-3", "TROUBLE-4", "TROUBLE-5", "ERRATA-1", "ERRATA-2", "ERRATA-3")
RUN, NOT_BUILT, NOT_TESTED = "run", "not built", "not tested"
NOT_APPLICABLE = "n/a"  # the clause does not hold for this combination's versions (catalog holds_for)


def _v(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("-")[0])[:3])


def holds(holds_for: tuple[tuple[str, str], ...], versions: dict[str, str]) -> bool:
    """Whether a clause whose catalog entry says ``holds_for`` (e.g. (("headscale", ">=v0.26.0"),))
    holds for ``versions`` ({"tailscale": v, "headscale": v})."""
    for name, constraint in holds_for:
        op, bound = (">=", constraint[2:]) if constraint.startswith(">=") else ("<", constraint[1:])
        have = _v(versions[name])
        if (op == ">=" and have < _v(bound)) or (op == "<" and have >= _v(bound)):
            return False
    return True


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
    notes = [f"- {label(c)}: {c['state']}: {c['reason']}" for c in columns if c["state"] != RUN]
    return "\n".join(rows + ([""] + notes if notes else []))


def write(report: Path, versions: dict, clause_ids: list[str], columns: list[dict]) -> Path:
    """matrix.json (versions, clauses, columns) and matrix.md (the table) in ``report``."""
    report.mkdir(parents=True, exist_ok=True)
    (report / "matrix.json").write_text(json.dumps({"versions": versions, "clauses": clause_ids,
                                                    "combinations": columns}, indent=1))
    (report / "matrix.md").write_text("# Version matrix\n\n" + table(columns, clause_ids) + "\n")
    return report / "matrix.json"
