"""Everything meshcert's plugin keeps for a session, in one place: keys of pytest's stash
(``config.stash[KEY]``), never private attributes set on the config.

Set in ``pytest_configure`` (REPORT_DIR, RESULTS, EXTRA) or when it happens (INPUT_ERROR,
NOT_TESTED) or at collection (CLAUSE_TESTS, CLAUSE_TESTS_WHOLE); read by the fixtures, the
report written at session end, and tests/conftest.py (EXTRA: the mutation board).
"""

from __future__ import annotations

from pathlib import Path

import pytest

# the folder this run's report goes to (--report-dir, else reports/<timestamp>)
REPORT_DIR = pytest.StashKey[Path]()
# clause id -> {"tests": [{test, outcome, duration_s, message}], "outcome": ...}: results.json "clauses"
RESULTS = pytest.StashKey[dict]()
# sections a test adds to the report ("mutants", "latency", "scenarios", ...): results.json "extra"
EXTRA = pytest.StashKey[dict]()
# one line: the bad input that ended the run ("not tested" with that reason)
INPUT_ERROR = pytest.StashKey[str]()
# {"reason", "log", "run"}: the world or the SUT could not be brought up; nothing was tested
NOT_TESTED = pytest.StashKey[dict]()
# clause id -> node ids (function level, no parameter ids) of the collected tests marked with it,
# before any -k/-m deselection: the catalog's test lists are derived from this
CLAUSE_TESTS = pytest.StashKey[dict]()
# True when this session collected the whole of every default test folder (conformance/,
# scenarios/): a clause absent from CLAUSE_TESTS then has no test at all (a gap), not merely
# none in this session's selection
CLAUSE_TESTS_WHOLE = pytest.StashKey[bool]()
