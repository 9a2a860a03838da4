"""The clause catalog (clauses.yaml) and the check that it and the tests agree.

Like Kubernetes conformance's catalog, every testable promise of the Connectivity Guide is one
entry -- id, the guide's sentence, a MUST-language description, the release that introduced
it, and the tests asserting it -- and a drift check fails whenever the catalog and the tests'
``@pytest.mark.clause`` marks disagree. The marks are read statically with :mod:`ast`, so the
check needs no pytest run and no world.

    catalog = load_catalog()                                   # meshcert/report/clauses.yaml
    marked = collect_marked_tests(["conformance", "scenarios"])
    problems = drift(catalog, marked)                          # [] when they agree
    missing = gaps(catalog)                                    # clauses nobody tests yet
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from meshcert.errors import InputError
from meshcert.toolchain.paths import package_file, source_tree, suite_root

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
REQUIRED = ("id", "group", "guide", "must", "since", "tests")
OPTIONAL = ("section", "notes", "out_of_scope", "measured")
TOP_LEVEL = ("guide", "clauses")
DEFAULT_TEST_DIRS = ("conformance", "scenarios")

ID_RE = re.compile(r"^([A-Z]+)-([1-9][0-9]*)$")
SINCE_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
NODEID_RE = re.compile(r"^[^\s:\[\]]+\.py(::[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class Clause:
    id: str
    group: str
    guide: str | None  # the guide's words, verbatim; None when the promise is derived
    must: str
    since: str
    tests: tuple[str, ...]
    section: str = ""
    notes: str = ""
    out_of_scope: str = ""  # why the connectivity layer cannot be held to it (never a silent gap)
    measured: bool = False  # a figure to report, not a promise to assert: shown as "measured", never "passed"

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
    which would drop, say, a clause's first ``tests:`` list without a word)."""


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


def parse_catalog(text: str, what: str = "clauses.yaml") -> list[Clause]:
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
        out.append(_clause(item, index, what, seen))
    return out


def _clause(item, index: int, what: str, seen: dict[str, int]) -> Clause:
    where = f"clauses[{index}]"
    if not isinstance(item, dict):
        raise InputError(what, f"{where} is a {type(item).__name__}, not a mapping",
                         "write each clause as a mapping: '- id: X-1' then group, guide, must, since, tests")
    cid = item.get("id")
    if isinstance(cid, str) and cid:
        where = f"clause {cid} ({where})"
    missing = [k for k in REQUIRED if k not in item]
    if missing:
        raise InputError(what, f"{where} lacks {', '.join(missing)}",
                         f"give every clause {', '.join(REQUIRED)} (guide may be null, tests may be [])")
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

    tests = item["tests"]
    if tests is None or not isinstance(tests, list):
        raise InputError(what, f"{where}: tests must be a list of pytest node ids",
                         "write tests: [] when no test exists yet")
    for t in tests:
        if not isinstance(t, str) or not NODEID_RE.match(t):
            raise InputError(what, f"{where}: {t!r} is not a pytest node id like path/test_x.py::test_name",
                             "list test functions by node id, without parameter ids like [a]")
    oos = item.get("out_of_scope", "") or ""
    if not isinstance(oos, str):
        raise InputError(what, f"{where}: out_of_scope must be a sentence saying why", "")
    if oos and tests:
        raise InputError(what, f"{where}: out_of_scope but lists tests", "drop out_of_scope or the tests")
    measured = item.get("measured", False)
    if not isinstance(measured, bool):
        raise InputError(what, f"{where}: measured must be true or false", "write measured: true or leave it out")
    dups = sorted({t for t in tests if tests.count(t) > 1})
    if dups:
        raise InputError(what, f"{where}: lists {', '.join(dups)} more than once", "list each test once")

    return Clause(id=cid, group=group, guide=guide.strip() if guide else None, must=" ".join(must.split()),
                  since=since, tests=tuple(tests), section=section, notes=" ".join(notes.split()),
                  out_of_scope=" ".join(oos.split()), measured=measured)


def by_id(catalog: Iterable[Clause]) -> dict[str, Clause]:
    return {c.id: c for c in catalog}


def gaps(catalog: Iterable[Clause]) -> list[Clause]:
    """The clauses no test asserts yet."""
    return [c for c in catalog if not c.tests]


# ----------------------------------------------------------------------------- marked tests

class MarkedTests(dict):
    """clause id -> node ids marked with it; also every test function seen and every file read,
    so :func:`drift` can tell "does not exist" from "is not marked"."""

    def __init__(self):
        super().__init__()
        self.all_tests: dict[str, tuple[str, ...]] = {}  # node id -> its clause ids
        self.files: set[str] = set()  # node-id paths of the files read


def _test_files(paths: Iterable[str | os.PathLike[str]], root: Path) -> list[Path]:
    files: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if not p.is_absolute():
            p = root / p
        if p.is_dir():
            for f in p.rglob("*.py"):
                if (f.name.startswith("test_") or f.name.endswith("_test.py")) and "__pycache__" not in f.parts:
                    files.add(f)
        elif p.is_file():
            files.add(p)
        # a path that does not exist holds no tests (scenarios/ may be empty or absent)
    return sorted(files)


def _nodeid_path(f: Path, root: Path) -> str:
    try:
        return f.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return f.as_posix()


def _is_clause_mark(call: ast.AST) -> bool:
    """pytest.mark.clause(...), mark.clause(...) (from pytest import mark), or
    <anything>.mark.clause(...)."""
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
        return False
    if call.func.attr != "clause":
        return False
    base = call.func.value
    return (isinstance(base, ast.Name) and base.id == "mark") or (
        isinstance(base, ast.Attribute) and base.attr == "mark")


class _Reader:
    def __init__(self, what: str, constants: dict[str, str]):
        self.what = what
        self.constants = constants

    def clause_ids(self, expr: ast.AST | None) -> list[str]:
        """Clause ids of every clause mark inside expr (a decorator, a pytestmark value,
        pytest.param(..., marks=...) inside a parametrize)."""
        if expr is None:
            return []
        ids: list[str] = []
        for node in ast.walk(expr):
            if not _is_clause_mark(node):
                continue
            if not node.args:
                raise InputError(self.what, f"line {node.lineno}: a clause mark without a clause id",
                                 'write @pytest.mark.clause("ID")')
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    ids.append(arg.value)
                elif isinstance(arg, ast.Name) and arg.id in self.constants:
                    ids.append(self.constants[arg.id])
                else:
                    raise InputError(self.what, f"line {node.lineno}: a clause id that is not a string literal",
                                     'write the clause id literally, e.g. @pytest.mark.clause("ACL-1")')
        return ids


def _module_constants(tree: ast.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
            out[stmt.targets[0].id] = stmt.value.value
    return out


def _pytestmark(body: list[ast.stmt], reader: _Reader) -> list[str]:
    ids: list[str] = []
    for stmt in body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark"
                                                for t in stmt.targets):
            ids = reader.clause_ids(stmt.value)  # a later assignment replaces an earlier one
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) \
                and stmt.target.id == "pytestmark":
            ids = reader.clause_ids(stmt.value)
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name) \
                and stmt.target.id == "pytestmark":
            ids = ids + reader.clause_ids(stmt.value)
    return ids


def _collect_body(body: list[ast.stmt], prefix: str, inherited: list[str], reader: _Reader,
                  out: MarkedTests) -> None:
    inherited = inherited + _pytestmark(body, reader)
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name.startswith("test"):
            ids = list(inherited)
            for dec in stmt.decorator_list:
                ids += reader.clause_ids(dec)
            nodeid = f"{prefix}::{stmt.name}"
            out.all_tests[nodeid] = tuple(dict.fromkeys(ids))
            for cid in ids:
                out.setdefault(cid, set()).add(nodeid)
        elif isinstance(stmt, ast.ClassDef) and stmt.name.startswith("Test"):
            ids = list(inherited)
            for dec in stmt.decorator_list:
                ids += reader.clause_ids(dec)
            _collect_body(stmt.body, f"{prefix}::{stmt.name}", ids, reader, out)


def collect_marked_tests(paths: Iterable[str | os.PathLike[str]] = DEFAULT_TEST_DIRS,
                         root: str | os.PathLike[str] | None = None) -> MarkedTests:
    """Clause id -> node ids of the tests marked with it, read statically from the test files
    under ``paths`` (files or folders; relative ones are taken from ``root``, the repo by
    default). Node ids are relative to ``root``, as pytest writes them in results.json.

    Marks are found on test functions (and methods of Test* classes), on their classes, in
    module- and class-level ``pytestmark``, and in ``pytest.param(..., marks=...)``.
    """
    base = Path(root) if root is not None else suite_root()
    out = MarkedTests()
    for f in _test_files(paths, base):
        rel = _nodeid_path(f, base)
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"), filename=str(f))
        except SyntaxError as exc:
            raise InputError(rel, f"line {exc.lineno}: not valid Python ({exc.msg})",
                             "fix the syntax error") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(rel, f"cannot read it ({exc})", "check the file") from None
        out.files.add(rel)
        _collect_body(tree.body, rel, [], _Reader(rel, _module_constants(tree)), out)
    return out


# ----------------------------------------------------------------------------- drift

def drift(catalog: Iterable[Clause], marked: dict[str, set[str]]) -> list[str]:
    """Every disagreement between the catalog and the tests' clause marks, one sentence each;
    [] when they agree."""
    catalog = list(catalog)
    known = {c.id for c in catalog}
    all_tests: dict[str, tuple[str, ...]] | None = getattr(marked, "all_tests", None)
    files: set[str] | None = getattr(marked, "files", None)
    problems: list[str] = []

    for c in catalog:
        here = marked.get(c.id, set())
        for t in c.tests:
            if t in here:
                continue
            path = t.split("::", 1)[0]
            if all_tests is None:
                problems.append(f"{c.id} lists {t}, but no test by that id is marked "
                                f'@pytest.mark.clause("{c.id}") (it does not exist or is not marked)')
            elif files is not None and path not in files:
                problems.append(f"{c.id} lists {t}, but {path} does not exist "
                                f"(or is outside the scanned test folders)")
            elif t not in all_tests:
                problems.append(f"{c.id} lists {t}, but {path} has no test "
                                f"{t.split('::', 1)[1]}")
            else:
                has = all_tests[t]
                now = f"it is marked {', '.join(has)}" if has else "it has no clause mark"
                problems.append(f'{c.id} lists {t}, but that test is not marked @pytest.mark.clause("{c.id}") '
                                f"({now})")

    listed = {c.id: set(c.tests) for c in catalog}
    for cid in sorted(marked):
        for t in sorted(marked[cid]):
            if cid not in known:
                problems.append(f"{t} is marked with clause {cid}, which clauses.yaml does not define")
            elif t not in listed[cid]:
                problems.append(f"{t} is marked with clause {cid}, but clauses.yaml does not list it "
                                f"under {cid}")
    return problems


# ----------------------------------------------------------------------------- guide quotes

def _normal(text: str) -> str:
    return " ".join(text.replace("**", "").split())


def misquoted(catalog: Iterable[Clause], guide_text: str) -> list[str]:
    """Clauses whose ``guide`` is not, verbatim, in the guide (whitespace and **bold** aside)."""
    doc = _normal(guide_text)
    return [f"{c.id}: its guide sentence is not in the guide: {c.guide!r}"
            for c in catalog if c.guide is not None and _normal(c.guide) not in doc]
