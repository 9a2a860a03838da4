"""The mutation score of meshcert's own tests, over the whole registry of faults (tests/common/faults.py).

Every fault in the registry is scored, whatever this session selected: killed only when the test
aimed at it ran, passed, and named (through the ``caught`` fixture) the clause(s) or scenario
whose assertion failed, covering the fault's target. Otherwise it is not killed and the board
says why (survived, errored, skipped, deselected, not collected, no target, caught by something
else). The board goes to the report (``extra.mutants`` of results.json) and is printed.
"""

from __future__ import annotations

import pytest

from meshcert.plugin import state
from tests.common import faults as F

CAUGHT = pytest.StashKey[list]()
OUTCOME = pytest.StashKey[str]()
FAULTS = pytest.StashKey[dict]()  # fault name -> {"test", "status", "why", "caught_by"}
FAULT_TESTS_SEEN = pytest.StashKey[bool]()  # a test aimed at a fault was collected (or deselected)


@pytest.fixture
def caught(request):
    """``caught(*by)``: the clause ids (or ``scenario: NAME``) whose assertion failed on this
    test's fault. Call it after the assertions that show the kill."""
    def record(*by: str) -> None:
        request.node.stash[CAUGHT] = [str(b) for b in by]
    return record


def _fault_names(item) -> list[str]:
    return [n for m in item.iter_markers("fault") for n in m.args]


def pytest_configure(config):
    config.addinivalue_line("markers", "fault(name): the test shows this fault of tests/common/faults.py caught")
    config.stash[FAULTS] = {}
    config.stash[FAULT_TESTS_SEEN] = False
    config.pluginmanager.register(FaultRecorder(config), "meshcert-fault-recorder")


def pytest_deselected(items):
    for item in items:
        for name in _fault_names(item):
            item.config.stash[FAULT_TESTS_SEEN] = True
            item.config.stash[FAULTS].setdefault(name, {"test": item.nodeid, "status": "deselected",
                                                           "why": "its test was deselected (-k/-m)", "caught_by": []})


def pytest_collection_finish(session):
    for item in session.items:
        for name in _fault_names(item):
            session.config.stash[FAULT_TESTS_SEEN] = True
            session.config.stash[FAULTS][name] = {"test": item.nodeid, "status": "not run",
                                                     "why": "its test was selected but never ran (run stopped)",
                                                     "caught_by": []}


def _first_line(rep) -> str:
    crash = getattr(rep.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(rep.longrepr or "")
    return (text.strip().splitlines() or [""])[0][:300]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """What each phase's report says of the item's faults goes on the report
    (``meshcert_faults``), so a serial run and xdist's controller (which receives the workers'
    reports) score from the same reports (FaultRecorder)."""
    outcome = yield
    rep = outcome.get_result()
    names = _fault_names(item)
    if not names:
        return
    if rep.skipped:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        update = {"status": "skipped", "why": f"its test was skipped: {reason}"}
    elif rep.failed and rep.when != "call":
        update = {"status": "error", "why": f"its test errored in {rep.when}: {_first_line(rep)}"}
    elif rep.failed:
        update = {"status": "failed", "why": f"its test failed (survived): {_first_line(rep)}"}
    elif rep.when == "call":
        update = {"status": "passed", "why": "", "caught_by": list(item.stash.get(CAUGHT, []))}
    else:
        update = {}
    rep.meshcert_faults = {name: update for name in names}


class FaultRecorder:
    """Each report's fault statuses onto the board (registered per session: pytest_runtest_logreport
    gets no config)."""

    def __init__(self, config):
        self.config = config

    def pytest_runtest_logreport(self, report):
        faults = getattr(report, "meshcert_faults", None)
        if not faults:
            return
        board = self.config.stash[FAULTS]
        self.config.stash[FAULT_TESTS_SEEN] = True
        for name, update in faults.items():
            board.setdefault(name, {"test": report.nodeid, "status": "not run", "caught_by": [],
                                    "why": "its test was selected but never ran (run stopped)"}).update(update)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist's controller, as a worker ends: the faults of tests it collected but this session
    has no report of (deselected, or selected and never run) come from the worker's board."""
    got = getattr(node, "workeroutput", {}).get("meshcert_faults")
    if not got:
        return
    board = node.config.stash[FAULTS]
    for name, entry in got["faults"].items():
        if entry.get("status") in ("deselected", "not run"):
            board.setdefault(name, entry)
    if got["seen"]:
        node.config.stash[FAULT_TESTS_SEEN] = True


def scoreboard(config) -> dict[str, dict]:
    """The board over the whole registry: {fault: {kind, target, killed, clauses, why, test}}."""
    seen = config.stash.get(FAULTS, {})
    board = {}
    for name, fault in F.registry().items():
        s = seen.get(name)
        caught_by = (s or {}).get("caught_by") or []
        if not fault.target:
            killed, why = False, "no target: the mutant has no entry in TARGETS or SCENARIO_TARGETS"
        elif s is None:
            killed, why = False, "its test was not collected in this session"
        elif s["status"] != "passed":
            killed, why = False, s["why"]
        elif not caught_by:
            killed, why = False, "its test passed without naming what caught it (the caught fixture)"
        elif not set(fault.target) <= set(caught_by):
            killed, why = False, (f"caught by {', '.join(caught_by)}, not by its target "
                                  f"{', '.join(fault.target)}")
        else:
            killed, why = True, ""
        board[name] = {"kind": fault.kind, "target": list(fault.target), "killed": killed,
                       "clauses": caught_by if killed else [], "why": why, "about": fault.about,
                       "test": (s or {}).get("test", "")}
    return board


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):  # an xdist worker: its board goes to the controller, which scores
        session.config.workeroutput["meshcert_faults"] = {"faults": session.config.stash.get(FAULTS, {}),
                                                          "seen": session.config.stash.get(FAULT_TESTS_SEEN, False)}
        return
    # before meshcert's plugin writes results.json and the report
    if session.config.stash.get(FAULT_TESTS_SEEN, False):
        session.config.stash[state.EXTRA]["mutants"] = scoreboard(session.config)


def score_line(board: dict[str, dict]) -> str:
    killed = sum(1 for v in board.values() if v["killed"])
    parts = []
    for kind, label in F.KINDS.items():
        rows = [v for v in board.values() if v["kind"] == kind]
        parts.append(f"{label} {sum(1 for v in rows if v['killed'])}/{len(rows)}")
    pct = 100.0 * killed / len(board) if board else 0.0
    return f"mutation score: {killed}/{len(board)} faults killed ({pct:.0f}%): " + ", ".join(parts)


def pytest_terminal_summary(terminalreporter, config):
    board = config.stash.get(state.EXTRA, {}).get("mutants")
    if not board:
        return
    terminalreporter.write_sep("-", "mutation score (tests/common/faults.py: every fault meshcert must catch)")
    terminalreporter.write_line(score_line(board))
    unselected = [n for n, v in board.items() if not v["killed"] and "deselected" in (v.get("why") or "")]
    for name, v in board.items():
        if not v["killed"] and name not in unselected:
            terminalreporter.write_line(f"  not killed: {name} -> {', '.join(v['target']) or '(no target)'}: "
                                        f"{v['why']}")
    if unselected:  # one line, not one per fault, for a run that selected a subset (-m/-k)
        terminalreporter.write_line(f"  not killed: {len(unselected)} faults whose tests this run deselected "
                                    f"(-m/-k); the report lists them")


@pytest.fixture
def pytester(pytester):
    """pytest's pytester, its inner sessions configured as meshcert's own (pyproject.toml): the
    async tests' fixture loop scope set, so pytest-asyncio has nothing to warn about."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester
