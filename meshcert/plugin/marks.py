"""The clause marks, collected: ``@pytest.mark.clause("<id>")`` is the one place a test is
registered for a clause. During any session the plugin records clause -> node ids as items are
collected (before -k/-m deselection); :func:`collect_clause_tests` runs a collect-only pytest
in-process for the tools that need the whole map outside a session (``meshcert clauses``, the
README's catalog block, tests/test_catalog.py)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from meshcert.errors import InputError
from meshcert.plugin import state
from meshcert.report.catalog import DEFAULT_TEST_DIRS, Clause, drift, load_catalog, with_tests
from meshcert.toolchain.paths import suite_root


def function_id(item: pytest.Item) -> str:
    """The item's node id at function level: without its parameter ids ("...::test_x[a]" ->
    "...::test_x"), as the report and the catalog count tests."""
    return item.nodeid.split("[", 1)[0]


def clause_ids(item: pytest.Item) -> list[str]:
    return [c for m in item.iter_markers("clause") for c in m.args]


def record(item: pytest.Item) -> None:
    """pytest_itemcollected: note the item's clause marks."""
    marked = item.config.stash.setdefault(state.CLAUSE_TESTS, {})
    for cid in clause_ids(item):
        tests = marked.setdefault(str(cid), [])
        if function_id(item) not in tests:
            tests.append(function_id(item))


def problems(items: Iterable[pytest.Item], config: pytest.Config) -> list[str]:
    """Every clause mark of the collected items the catalog cannot take (one sentence each)."""
    out = [f"{function_id(i)} has a clause mark without a clause id (write @pytest.mark.clause(\"ID\"))"
           for i in items if any(not m.args for m in i.iter_markers("clause"))]
    marked = config.stash.get(state.CLAUSE_TESTS, {})
    if marked:
        try:
            out += drift(load_catalog(), marked)
        except InputError as e:
            out.append(f"the clause catalog cannot be read: {e.one_line()}")
    return out


def whole(config: pytest.Config) -> bool:
    """This session collected every default test folder (conformance/, scenarios/) whole."""
    root = Path(config.rootpath)
    here = Path(config.invocation_params.dir)
    given = [(here / a).resolve() for a in config.args if "::" not in a]
    for d in DEFAULT_TEST_DIRS:
        folder = (root / d).resolve()
        if folder.is_dir() and not any(folder == g or g in folder.parents for g in given):
            return False
    return True


def session_catalog(config: pytest.Config) -> list[Clause]:
    """The catalog with the tests this session collected (``tests`` unknown, None, for clauses
    it did not see when it collected only part of the suite)."""
    return with_tests(load_catalog(), config.stash.get(state.CLAUSE_TESTS, {}),
                      whole=config.stash.get(state.CLAUSE_TESTS_WHOLE, False))


class _Grab:
    def __init__(self):
        self.marked: dict[str, list[str]] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session):
        self.marked = dict(session.config.stash.get(state.CLAUSE_TESTS, {}))


def collect_clause_tests(paths: Iterable[str | os.PathLike[str]] = DEFAULT_TEST_DIRS,
                         root: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """Clause id -> node ids of the tests marked with it, from a real collection (``pytest
    --collect-only``, in this process) of ``paths`` (relative ones from ``root``, the suite's
    root by default). Raises InputError when the collection fails (an import error, a mark naming an
    unknown clause), with pytest's own words."""
    base = Path(root) if root is not None else suite_root()
    args = [str(base / p) for p in paths if (base / p).exists()]
    if not args:
        return {}
    grab = _Grab()
    out = io.StringIO()
    # The test modules are imported under their basenames (test_acl, ...): forget them and the
    # sys.path entries the collection added, so another collection (another tree, or the
    # session this runs in) imports its own files. meshcert's own modules stay (one copy each).
    modules, path = set(sys.modules), list(sys.path)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = pytest.main(["--collect-only", "-qq", "-p", "no:cacheprovider", "--rootdir", str(base), *args],
                             plugins=[grab])
    finally:
        for name in set(sys.modules) - modules:
            if name != "meshcert" and not name.startswith("meshcert."):
                del sys.modules[name]
        sys.path[:] = path
    if rc not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        lines = [ln.strip() for ln in out.getvalue().splitlines() if ln.strip()]
        raise InputError(", ".join(str(p) for p in paths), "collecting the tests' clause marks failed: "
                         + " | ".join(lines[-8:]), "fix what pytest names above")
    return grab.marked
