"""The clause marks, collected: ``@pytest.mark.clause("<id>")`` is the one place a test is
registered for a clause. During any session the plugin records clause -> node ids as items are
collected (before -k/-m deselection); :func:`collect_clause_tests` runs a collect-only pytest
in a child process for the tools that need the whole map outside a session (``meshcert clauses``, the
README's catalog block, tests/test_catalog.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from meshcert.errors import InputError
from meshcert.plugin import state
from meshcert.report.catalog import DEFAULT_TEST_DIRS, Clause, default_path, drift, load_catalog, with_tests
from meshcert.toolchain.paths import bytecode_env, suite_root


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


MARKS_OUT = "MESHCERT_MARKS_OUT"  # set by collect_clause_tests: the child writes its map there


def dump_if_asked(config: pytest.Config) -> None:
    """Called by the plugin when collection finishes: in a child started by
    :func:`collect_clause_tests`, write clause -> node ids to the file it names."""
    out = os.environ.get(MARKS_OUT)
    if out:
        Path(out).write_text(json.dumps({k: list(v) for k, v in config.stash.get(state.CLAUSE_TESTS, {}).items()}))


def collect_clause_tests(paths: Iterable[str | os.PathLike[str]] = DEFAULT_TEST_DIRS,
                         root: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """Clause id -> node ids of the tests marked with it, from a real collection (``pytest
    --collect-only`` in a child process, so nothing it imports can clash with this process's
    modules) of ``paths`` (relative ones from ``root``, the suite's root by default). Raises
    InputError when the collection fails (an import error, a mark naming an unknown clause),
    with pytest's own words."""
    base = Path(root) if root is not None else suite_root()
    args = [str(base / p) for p in paths if (base / p).exists()]
    if not args:
        return {}
    # one collection per process for unchanged sources (the README's catalog block, the drift
    # checks and certify ask for the same one; each takes a child pytest, seconds): the key holds
    # every Python file's path, size and mtime under the collected paths, so an edit recollects
    key = (str(base), tuple(args), _sources_stamp(args))
    if key not in _COLLECTED:
        _COLLECTED[key] = _collect(base, args, paths)
    return {k: list(v) for k, v in _COLLECTED[key].items()}


_COLLECTED: dict[tuple, dict[str, list[str]]] = {}


def _sources_stamp(args: list[str]) -> tuple:
    files = []
    for a in [*args, str(default_path())]:  # the catalog too: a mark naming an unknown clause fails
        p = Path(a)
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            try:
                st = f.stat()
            except OSError:  # gone meanwhile (or a missing MESHCERT_CLAUSES: the collection says so)
                continue
            files.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(files)


def _collect(base: Path, args: list[str], paths) -> dict[str, list[str]]:
    with tempfile.TemporaryDirectory(prefix="meshcert-marks-") as tmp:
        out = Path(tmp) / "marks.json"
        p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-qq", "-p", "no:cacheprovider",
                            "--rootdir", str(base), *args], cwd=base, capture_output=True, text=True,
                           env={**bytecode_env(dict(os.environ)), MARKS_OUT: str(out)})
        if p.returncode not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED) or not out.exists():
            lines = [ln.strip() for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
            raise InputError(", ".join(str(x) for x in paths), "collecting the tests' clause marks failed: "
                             + " | ".join(lines[-8:]), "fix what pytest names above")
        return json.loads(out.read_text())
