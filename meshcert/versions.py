"""Version constraints of Tailscale and Headscale, in one place: the syntax the catalog's
``holds_for`` and a replay file's ``versions:`` share, and whether a constraint holds.

A term is ``>=vX.Y.Z``, ``<vX.Y.Z`` or ``==vX.Y.Z``; terms joined by commas must all hold
(``>=v0.26.0,<v0.28.0``); such groups joined by ``|`` hold when one does (``==v1.80.3|==v1.102.3``).
"""

from __future__ import annotations

import re

_TERM = r"(>=|<|==)v[0-9]+\.[0-9]+\.[0-9]+"
_GROUP = rf"{_TERM}(,{_TERM})*"
CONSTRAINT_RE = re.compile(rf"^{_GROUP}(\|{_GROUP})*$")


def version_tuple(version: str) -> tuple[int, ...]:
    """(major, minor, patch) of ``v1.102.3`` (a suffix such as ``-t1234`` ignored)."""
    return tuple(int(x) for x in re.findall(r"\d+", version.split("-")[0])[:3])


def holds(holds_for: tuple[tuple[str, str], ...], versions: dict[str, str]) -> bool:
    """Whether every constraint of ``holds_for`` (e.g. (("headscale", ">=v0.26.0"),)) holds for
    ``versions`` ({"tailscale": v, "headscale": v})."""
    def term_holds(have: tuple[int, ...], term: str) -> bool:
        op = term[:2] if term[:2] in (">=", "==") else term[:1]
        bound = version_tuple(term[len(op):])
        return have >= bound if op == ">=" else have < bound if op == "<" else have == bound

    for name, constraint in holds_for:
        have = version_tuple(versions[name])
        if not any(all(term_holds(have, t) for t in group.split(",")) for group in constraint.split("|")):
            return False
    return True
