"""The clause catalog (clauses.yaml) and the check that it and the tests' marks agree.

Like Kubernetes conformance's catalog, every testable promise of the Connectivity Guide is one
entry -- id, the guide's sentence, a MUST-language description, the release that introduced it.
Which tests assert a clause is written once, on the test: ``@pytest.mark.clause("<id>")``.
meshcert's pytest plugin collects the marks (clause -> node ids) at collection time and gives
the catalog its tests from them (:func:`with_tests`); a mark naming a clause the catalog does
not define is a collection error (:func:`drift`), a clause no test is marked with is a gap
("no test" in the report and in ``certify``).

    catalog = load_catalog()                                   # the repo's clauses.yaml, no tests
    marked = meshcert.plugin.marks.collect_clause_tests()      # a real (collect-only) pytest run
    problems = drift(catalog, marked)                          # [] when every mark is known
    missing = gaps(with_tests(catalog, marked))                # clauses nobody tests yet
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from meshcert.errors import InputError
from meshcert.toolchain.paths import package_file, source_tree
from meshcert.versions import CONSTRAINT_RE

# Report order follows the guide: connectivity types, the pre-run health check, ACLs, subnet
# routes, direct deployments, credentials, troubleshooting, Helm values, errata, performance.
GROUPS: dict[str, str] = {
    "types": "Connectivity types",
    "health": "Pre-run health check",
    "acl": "Network scoping via ACLs",
    "route": "Subnet routers",
    "direct": "Deployment without mesh VPN",
    "credentials": "Credential integration",
    "troubleshooting": "Troubleshooting",
    "helm": "Helm values",
    "errata": "Guide errata",
    "performance": "Performance",
}
# The id prefix of each group: "HELM-3" must be in group helm.
PREFIXES: dict[str, str] = {
    "TYPE": "types", "HEALTH": "health", "ACL": "acl", "ROUTE": "route", "DIRECT": "direct",
    "CRED": "credentials", "TROUBLE": "troubleshooting", "HELM": "helm", "ERRATA": "errata",
    "PERF": "performance",
}
REQUIRED = ("id", "group", "guide", "must", "since")
OPTIONAL = ("section", "notes", "out_of_scope", "measured", "holds_for")
# holds_for: {tailscale|headscale: ">=v0.26.0" / "<v0.26.0" / "==v0.27.1", or several of them joined
# by commas, all of which must hold: ">=v0.26.0,<v0.28.0", and such groups joined by "|", one of
# which must hold: "==v1.80.3|==v1.102.3"}: the versions a clause holds for (issue 14)
HOLDS_FOR_RE = CONSTRAINT_RE  # meshcert/versions.py
TOP_LEVEL = ("guide", "clauses")
DEFAULT_TEST_DIRS = ("conformance", "scenarios")

ID_RE = re.compile(r"^([A-Z]+)-([1-9][0-9]*)$")
SINCE_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")


@dataclass(frozen=True)
class Clause:
    id: str
    group: str
    guide: str | None  # the guide's words, verbatim; None when the promise is derived
    must: str
    since: str
    # the node ids marked @pytest.mark.clause(<id>), from a collection (with_tests); None: not
    # known (the catalog as read from clauses.yaml, or a session that collected only part)
    tests: tuple[str, ...] | None = None
    section: str = ""
    notes: str = ""
    out_of_scope: str = ""  # why the connectivity layer cannot be held to it (never a silent gap)
    measured: bool = False  # a figure to report, not a promise to assert: shown as "measured", never "passed"
    # the component versions the clause holds for, e.g. (("headscale", ">=v0.26.0"),); (): every version
    holds_for: tuple[tuple[str, str], ...] = ()

    @property
    def title(self) -> str:
        return GROUPS[self.group]


def default_path() -> Path:
    """MESHCERT_CLAUSES, else the catalog shipped in the package (meshcert/report/clauses.yaml)."""
    return Path(os.environ.get("MESHCERT_CLAUSES") or package_file("report", "clauses.yaml"))


def _display(path: Path) -> str:
    tree = source_tree()
    try:
        return str(path.resolve().relative_to(tree)) if tree is not None else str(path)
    except ValueError:
        return str(path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last one silently,
    which would drop, say, a clause's first ``must:`` without a word)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"found a duplicate key {key!r}",
                key_node.start_mark)
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_catalog(path: str | os.PathLike[str] | None = None) -> list[Clause]:
    """Read and validate the catalog; clauses in file order.

    Raises InputError(<file>, <what is wrong, with the clause id or index>, <fix>).
    """
    p = Path(path) if path is not None else default_path()
    what = _display(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(what, "the file does not exist", "create it (see meshcert/report/clauses.yaml)") from None
    except OSError as exc:
        raise InputError(what, f"cannot read it: {exc.strerror}", "check the path and its permissions") from None
    except UnicodeDecodeError as exc:
        raise InputError(what, f"not UTF-8 text ({exc.reason} at byte {exc.start})", "save it as UTF-8") from None
    return parse_catalog(text, what)


def parse_catalog(text: str, what: str = "clauses.yaml", listed_tests_ok: bool = False) -> list[Clause]:
    """``listed_tests_ok``: the catalog of an older result bundle, whose clauses still listed
    their tests (``tests:``, dropped since the marks are collected): those lists are ignored."""
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(what, f"not valid YAML: {where}{problem}",
                         "fix the YAML syntax (indentation, quotes, one key per line)") from None
    if not isinstance(doc, dict) or "clauses" not in doc:
        raise InputError(what, "expected a mapping with a 'clauses' list at the top level",
                         "start the file with 'clauses:' followed by '- id: ...' entries")
    extra = sorted(set(map(str, doc)) - set(TOP_LEVEL))
    if extra:
        raise InputError(what, f"unknown top-level key(s): {', '.join(extra)}",
                         f"use only {', '.join(TOP_LEVEL)}")
    items = doc["clauses"]
    if not isinstance(items, list) or not items:
        raise InputError(what, "'clauses' must be a non-empty list", "list the clauses as '- id: ...' entries")

    out: list[Clause] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if listed_tests_ok and isinstance(item, dict):
            item = {k: v for k, v in item.items() if k != "tests"}
        out.append(_clause(item, index, what, seen))
    return out


def _clause(item, index: int, what: str, seen: dict[str, int]) -> Clause:
    where = f"clauses[{index}]"
    if not isinstance(item, dict):
        raise InputError(what, f"{where} is a {type(item).__name__}, not a mapping",
                         "write each clause as a mapping: '- id: X-1' then group, guide, must, since")
    cid = item.get("id")
    if isinstance(cid, str) and cid:
        where = f"clause {cid} ({where})"
    missing = [k for k in REQUIRED if k not in item]
    if missing:
        raise InputError(what, f"{where} lacks {', '.join(missing)}",
                         f"give every clause {', '.join(REQUIRED)} (guide may be null)")
    if "tests" in item:
        raise InputError(what, f"{where} has a tests: list, but a clause's tests are the tests marked "
                         f"@pytest.mark.clause(\"{cid}\") (collected by pytest), listed nowhere else",
                         "remove the tests: list; mark each test asserting the clause instead")
    unknown = sorted(set(map(str, item)) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise InputError(what, f"{where} has unknown key(s): {', '.join(unknown)}",
                         f"use only {', '.join(REQUIRED + OPTIONAL)}")

    if not isinstance(cid, str) or not ID_RE.match(cid):
        raise InputError(what, f"{where}: id {cid!r} is not of the form PREFIX-N",
                         f"use one of {', '.join(f'{p}-N' for p in PREFIXES)}, N from 1")
    if cid in seen:
        raise InputError(what, f"{where}: id {cid} is already used by clauses[{seen[cid]}]",
                         "give every clause its own id")
    seen[cid] = index

    group = item["group"]
    if group not in GROUPS:
        raise InputError(what, f"{where}: unknown group {group!r}", f"use one of {', '.join(GROUPS)}")
    prefix = ID_RE.match(cid).group(1)
    if PREFIXES.get(prefix) != group:
        expected = PREFIXES.get(prefix)
        why = f"prefix {prefix} belongs to group {expected}" if expected else f"prefix {prefix} is unknown"
        raise InputError(what, f"{where}: id {cid} does not fit group {group} ({why})",
                         f"name clauses of group {group} "
                         f"{next(p for p, g in PREFIXES.items() if g == group)}-N")

    guide = item["guide"]
    notes = item.get("notes", "") or ""
    if guide is not None and not (isinstance(guide, str) and guide.strip()):
        raise InputError(what, f"{where}: guide must be the guide's sentence (a non-empty string) or null",
                         "quote the guide verbatim, or write null and explain in notes")
    if not isinstance(notes, str):
        raise InputError(what, f"{where}: notes must be a string", "write notes as text")
    if guide is None and not notes.strip():
        raise InputError(what, f"{where}: guide is null but notes does not say where the promise comes from",
                         "quote the guide, or explain in notes how the clause follows from it")
    must = item["must"]
    if not isinstance(must, str) or not must.strip():
        raise InputError(what, f"{where}: must must be a non-empty string",
                         "describe what is asserted, in MUST language")
    since = item["since"]
    if not isinstance(since, str) or not SINCE_RE.match(since):
        raise InputError(what, f"{where}: since {since!r} is not a release like \"0.1.0\"",
                         "write the release as a quoted string, e.g. since: \"0.1.0\"")
    section = item.get("section", "") or ""
    if not isinstance(section, str):
        raise InputError(what, f"{where}: section must be a string", "write the guide heading as text")

    oos = item.get("out_of_scope", "") or ""
    if not isinstance(oos, str):
        raise InputError(what, f"{where}: out_of_scope must be a sentence saying why", "")
    measured = item.get("measured", False)
    if not isinstance(measured, bool):
        raise InputError(what, f"{where}: measured must be true or false", "write measured: true or leave it out")
    holds_for = item.get("holds_for") or {}
    if not isinstance(holds_for, dict) or any(k not in ("tailscale", "headscale") or not isinstance(v, str)
                                              or not HOLDS_FOR_RE.match(v) for k, v in holds_for.items()):
        raise InputError(what, f"{where}: holds_for must map tailscale/headscale to \">=vX.Y.Z\", \"<vX.Y.Z\" "
                         "or \"==vX.Y.Z\" (several joined by commas: all hold; groups joined by |: one holds)",
                         'e.g. holds_for: {headscale: ">=v0.26.0"}')
    return Clause(id=cid, group=group, guide=guide.strip() if guide else None, must=" ".join(must.split()),
                  since=since, section=section, notes=" ".join(notes.split()),
                  out_of_scope=" ".join(oos.split()), measured=measured,
                  holds_for=tuple(sorted(holds_for.items())))


def by_id(catalog: Iterable[Clause]) -> dict[str, Clause]:
    return {c.id: c for c in catalog}


def gaps(catalog: Iterable[Clause]) -> list[Clause]:
    """The clauses no test asserts yet (of a catalog given its tests by :func:`with_tests`)."""
    return [c for c in catalog if not c.tests]


# ----------------------------------------------------------------------------- marked tests

def with_tests(catalog: Iterable[Clause], marked: Mapping[str, Iterable[str]], whole: bool = True) -> list[Clause]:
    """The catalog with each clause's tests: the node ids marked ``@pytest.mark.clause(<id>)``
    that a pytest collection found (``marked``: clause id -> node ids, as the plugin records
    them). ``whole``: the collection covered every test folder, so a clause nobody marked has
    no test (``()``, a gap); otherwise it is unknown (``None``: "not run in this session")."""
    return [replace(c, tests=tuple(sorted(set(marked[c.id]))) if c.id in marked else (() if whole else None))
            for c in catalog]


def drift(catalog: Iterable[Clause], marked: Mapping[str, Iterable[str]]) -> list[str]:
    """Every clause mark the catalog cannot take, one sentence each ([] = none): a mark naming a
    clause clauses.yaml does not define, or one that is out of the connectivity layer's scope.
    (The other direction, a clause no test is marked with, is a gap, not drift: the report and
    ``certify`` show it as "no test".)"""
    known = by_id(catalog)
    problems: list[str] = []
    for cid in sorted(marked):
        for t in sorted(set(marked[cid])):
            if cid not in known:
                problems.append(f'{t} is marked @pytest.mark.clause("{cid}"), which clauses.yaml does not define')
            elif known[cid].out_of_scope:
                problems.append(f'{t} is marked @pytest.mark.clause("{cid}"), which clauses.yaml declares '
                                f"out of scope (drop the mark or the out_of_scope)")
    return problems


# ----------------------------------------------------------------------------- guide quotes

def _normal(text: str) -> str:
    return " ".join(text.replace("**", "").split())


def misquoted(catalog: Iterable[Clause], guide_text: str) -> list[str]:
    """Clauses whose ``guide`` is not, verbatim, in the guide (whitespace and **bold** aside)."""
    doc = _normal(guide_text)
    return [f"{c.id}: its guide sentence is not in the guide: {c.guide!r}"
            for c in catalog if c.guide is not None and _normal(c.guide) not in doc]
