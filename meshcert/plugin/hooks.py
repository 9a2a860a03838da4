"""meshcert's pytest hooks: options, markers, the clause marks collected (and checked against
the catalog), each clause's result recorded, the report written at session end, CRED-1's scan
of meshcert's own outputs. Session state lives in pytest's stash (meshcert/plugin/state.py)."""

from __future__ import annotations

import datetime
import json
import os
import signal
import time
from pathlib import Path

import pytest

from meshcert.errors import InputError
from meshcert.k8s import kind
from meshcert.plugin import marks, parallel, state
from meshcert.report.render import write_report
from meshcert.secrets import describe, redact, register, registered, scan_files, scrub_file

MARKERS = {
    "clause(*ids)": "the guide clause(s) this test asserts (see clauses.yaml)",
    "acl": "ACL scoping clauses (real tailnet)",
    "route": "subnet routing clauses (real tailnet)",
    "engine": "needs a Docker engine and builds a real world",
    "property": "property-based differential tests against the oracle",
    "kind": "needs a kind cluster (skipped, and no clause recorded, unless --cluster kind and a node image)",
    "chaos": "chaos scenarios",
    "slow": "takes more than a minute (slow(minutes=N): about N; under xdist the longest start first)",
    "sut": "asserted against the SUT running in its pod",
}
# an item skipped because it needs kind and this run does not use kind: its clauses are not
# recorded as skipped (the HELM clauses are asserted on the engine alone then)
KIND_SKIP = pytest.StashKey[str]()
# xdist: a worker's collection error (bad clause marks), for the controller to end the run with
USAGE_ERROR = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("meshcert", "meshcert: Legator connectivity conformance")
    g.addoption("--report-dir", default=os.environ.get("MESHCERT_REPORT_DIR"),
                help="folder for this run's report (default reports/<timestamp>)")
    g.addoption("--keep-world", action="store_true", help="leave the world running at the end (debugging)")
    g.addoption("--sut-image", default=None, help="certify this SUT image instead of the bundled reference")
    g.addoption("--sut-port", type=int, default=8080, help="port of the SUT's HTTP contract inside the pod")
    g.addoption("--policy", default=None, help="run the world with this ACL policy (HuJSON) instead of the "
                "guide's; the ACL clauses still assert the guide's intent")
    g.addoption("--spec", default=None, help="environment spec (YAML) whose spec.connectivity the SUT clauses use")
    g.addoption("--chart", default=None, help="certify this Helm chart (its folder) against the HELM clauses "
                "instead of the bundled meshcert/k8s/charts/reference-agent")
    g.addoption("--cluster", choices=("docker", "kind"), default=os.environ.get("MESHCERT_CLUSTER", "docker"),
                help="where the kind-marked HELM clauses run: docker (default: pod-from-chart on the engine only) "
                "or kind (also on a kind cluster; skipped with one line when no kind node image can be had)")


def pytest_configure(config: pytest.Config) -> None:
    for m, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{m}: {doc}")
    rd = config.getoption("--report-dir", default=None)
    if parallel.is_worker(config):  # the controller's folder: one report, every world's logs in it
        rd = config.workerinput.get(parallel.KEY, {}).get("report_dir") or rd
    if not rd:
        rd = str(Path("reports") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    config.stash[state.REPORT_DIR] = Path(rd)
    config.stash[state.RESULTS] = {}
    config.stash[state.EXTRA] = {}
    config.stash[state.CLAUSE_TESTS] = {}
    config.pluginmanager.register(ClauseRecorder(config), "meshcert-clause-recorder")
    # SIGTERM ends a run like Ctrl-C does, so session teardown removes the world.
    if hasattr(signal, "SIGTERM"):
        def _term(signum, frame):
            raise KeyboardInterrupt("SIGTERM")
        try:
            signal.signal(signal.SIGTERM, _term)
        except ValueError:
            pass  # not the main thread


def pytest_itemcollected(item: pytest.Item) -> None:
    marks.record(item)


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselect: every collected item is checked
def pytest_collection_finish(session: pytest.Session) -> None:
    marks.dump_if_asked(session.config)  # only in a child of marks.collect_clause_tests


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[state.CLAUSE_TESTS_WHOLE] = marks.whole(config)
    problems = marks.problems(items, config)
    if problems:
        # one collection error naming every bad mark; nothing runs
        message = "meshcert: clause marks the catalog (clauses.yaml) cannot take:\n  " + "\n  ".join(problems)
        if parallel.is_worker(config):
            # xdist cannot carry a worker's UsageError: the worker runs nothing and hands the
            # message over; the controller prints it and ends with the serial run's exit status
            config.stash[USAGE_ERROR] = message
            items[:] = []
            return
        raise pytest.UsageError(message)
    _skip_kind(items, config)
    if parallel.is_worker(config):
        parallel.order_for_workers(items)


def _skip_kind(items: list[pytest.Item], config: pytest.Config) -> None:
    """Items marked ``kind`` run only with ``--cluster kind`` and a kind node image at hand;
    otherwise each is skipped with one reason (decided once, before any fixture is set up)."""
    needs_kind = [i for i in items if i.get_closest_marker("kind") is not None]
    if not needs_kind:
        return
    why = kind.skip_reason()
    if why is None and config.getoption("--cluster", default="docker") != "kind":
        why = "kind clauses run with --cluster kind (a kind node image is available here)"
    if why:
        for item in needs_kind:
            item.stash[KIND_SKIP] = why
            item.add_marker(pytest.mark.skip(reason=why))
    else:  # they run: the node image now, outside every test's timeout (a cold build exceeds it)
        kind.prepare()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Puts on the report what the clause results are made from (``meshcert_clauses``; an input
    error: ``meshcert_input_error``), so a serial run and xdist's controller, which receives the
    workers' reports, record the same verdicts from the same reports (pytest_runtest_logreport)."""
    outcome = yield
    rep = outcome.get_result()
    if call.excinfo is not None and isinstance(call.excinfo.value, InputError):
        # Bad input (a SUT answering garbage, a malformed file): one clear error ends the run,
        # which is then "not tested" with that reason -- the clause is not recorded as failed.
        rep.meshcert_input_error = call.excinfo.value.one_line()
        item.session.shouldstop = f"input error: {call.excinfo.value.one_line()}"
        return
    if rep.when != "call" and not (rep.when == "setup" and rep.outcome != "passed"):
        return
    if KIND_SKIP in item.stash:
        return  # not run here by choice (no kind): no clause verdict either way
    clauses = marks.clause_ids(item)
    if clauses:
        rep.meshcert_clauses = [str(c) for c in clauses]


class ClauseRecorder:
    """Records each clause's result from the reports (registered per session in pytest_configure:
    pytest_runtest_logreport gets no config)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        config = self.config
        input_error = getattr(report, "meshcert_input_error", None)
        if input_error:
            config.stash[state.INPUT_ERROR] = input_error
            dsession = config.pluginmanager.getplugin("dsession")
            if dsession is not None and not dsession.shouldstop:  # xdist's controller: stop every worker
                dsession.shouldstop = f"input error: {input_error}"
            return
        res = config.stash[state.RESULTS]
        for c in getattr(report, "meshcert_clauses", None) or ():
            entry = res.setdefault(c, {"tests": [], "outcome": "passed"})
            entry["tests"].append({"test": report.nodeid, "outcome": report.outcome,
                                   "duration_s": round(report.duration, 3),
                                   "message": str(report.longrepr.reprcrash.message) if report.failed and
                                   hasattr(report.longrepr, "reprcrash") else None})
            if report.failed:
                entry["outcome"] = "failed"
            elif report.skipped and entry["outcome"] == "passed":
                entry["outcome"] = "skipped"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist's controller, per worker: the report folder every worker writes its logs to."""
    node.workerinput[parallel.KEY] = {"report_dir": str(node.config.stash[state.REPORT_DIR].absolute())}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist's controller, as a worker ends: merge what its session kept into this one."""
    got = getattr(node, "workeroutput", {}).get(parallel.KEY)
    if not got:
        return
    stash = node.config.stash
    parallel.merge_extra(stash[state.EXTRA], got.get("extra") or {})
    parallel.merge_clause_tests(stash[state.CLAUSE_TESTS], got.get("clause_tests") or {})
    stash[state.CLAUSE_TESTS_WHOLE] = bool(got.get("whole"))
    if got.get("not_tested") and state.NOT_TESTED not in stash:
        stash[state.NOT_TESTED] = got["not_tested"]
    if got.get("usage_error"):
        stash[USAGE_ERROR] = got["usage_error"]
    if got.get("input_error") and state.INPUT_ERROR not in stash:
        stash[state.INPUT_ERROR] = got["input_error"]
    for value in got.get("secrets") or ():  # for CRED-1's scan of the report, done here
        register(value)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """conformance/ and scenarios/ one work unit each (parallel.SharedWorldScheduling) under
    --dist load (xdist's default for -n) and loadgroup; any other --dist is xdist's own."""
    if config.getvalue("dist") in ("load", "loadgroup"):
        return parallel.SharedWorldScheduling(config, log)
    return None


# How long xdist's controller waits, at its end, for a worker to end before it kills it (xdist's
# own default is 10 s): after Ctrl-C every worker is removing its world, which takes ~5-20 s on a
# loaded 2-core machine (World.stop, measured); killed mid-way it would leave the world to the
# next run's sweep. A worker that has nothing to tear down ends at once, so this costs nothing.
WORKER_EXIT_S = 180


@pytest.hookimpl(hookwrapper=True, specname="pytest_sessionfinish")
def pytest_sessionfinish_let_workers_tear_down(session):
    """xdist's controller, before it shuts its workers down: after Ctrl-C it waits for every
    worker to report its end (each got the SIGINT too and is removing its world). Shut down at
    once, a worker still busy is interrupted after 5 s and ended (os._exit) 10 s later by
    execnet, mid-way through its world's removal (seen in CI under load: networks and volumes left)."""
    dsession = session.config.pluginmanager.getplugin("dsession")
    manager = getattr(dsession, "nodemanager", None)
    if manager is not None:
        manager.EXIT_TIMEOUT = max(manager.EXIT_TIMEOUT, WORKER_EXIT_S)
        sched = getattr(dsession, "sched", None)
        if session.exitstatus == pytest.ExitCode.INTERRUPTED and sched is not None:
            nodes = list(sched.nodes)
            deadline = time.monotonic() + WORKER_EXIT_S
            # xdist marks a node down (its private _down) when its "finished" or "errordown" arrives
            while time.monotonic() < deadline and not all(getattr(n, "_down", True) for n in nodes):
                time.sleep(0.2)  # polling the workers' end events, not waiting on time
    yield


def _hand_over(session) -> None:
    """An xdist worker's end: what its session kept goes to the controller, which writes the report."""
    stash = session.config.stash
    session.config.workeroutput[parallel.KEY] = {
        "extra": stash.get(state.EXTRA, None) or {},
        "clause_tests": stash.get(state.CLAUSE_TESTS, None) or {},
        "whole": stash.get(state.CLAUSE_TESTS_WHOLE, False),
        "not_tested": stash.get(state.NOT_TESTED, None),
        "input_error": stash.get(state.INPUT_ERROR, None),
        "usage_error": stash.get(USAGE_ERROR, None),
        # every key this worker's worlds made, so the controller's CRED-1 scan knows them all
        # (in memory, over xdist's pipe between the two processes; never written anywhere)
        "secrets": registered(),
    }


def pytest_sessionfinish(session, exitstatus) -> None:
    if parallel.is_worker(session.config):
        _hand_over(session)
        return
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    usage_error = session.config.stash.get(USAGE_ERROR, None)
    if usage_error:  # a worker's (xdist): what a serial run's UsageError says, and its exit status
        if tr is not None:
            tr.write_line(f"ERROR: {usage_error}", red=True)
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
        return
    if tr is not None and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        ran = sum(len(tr.stats.get(k, ())) for k in ("passed", "failed", "error", "xfailed", "xpassed"))
        if not ran and tr.stats.get("skipped"):
            # e.g. `pytest -m kind` where kind cannot run: every selected test skipped with its
            # reason (the skip line says why). A run that tested nothing is not a success: exit 5
            # (pytest's "no tests ran"), whatever was skipped.
            session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
    stash = session.config.stash
    res = stash.get(state.RESULTS, None)
    extra = stash.get(state.EXTRA, None)
    input_error = stash.get(state.INPUT_ERROR, None)
    # A run that could not test the SUT (its image missing, no /healthz, bad input): "not tested".
    not_tested = stash.get(state.NOT_TESTED, None) or (
        {"reason": input_error, "log": []} if input_error else None)
    if not res and not extra and not not_tested:
        return
    d = stash[state.REPORT_DIR]
    d.mkdir(parents=True, exist_ok=True)
    results = {"finished": time.time(), "clauses": res or {}, "not_tested": not_tested}
    (d / "results.json").write_text(redact(json.dumps({**results, "extra": extra, "input_error": input_error},
                                                      indent=1)))
    write_report(d, results, marks.session_catalog(session.config), extra=extra)


@pytest.hookimpl(trylast=True, specname="pytest_sessionfinish")
def pytest_sessionfinish_no_secret_in_outputs(session, exitstatus) -> None:
    """CRED-1, meshcert's own half: nothing of a key in results.json, the report, saved logs,
    replay files or a junit file. Runs last (after the report and junit are written), in the
    process that made every key of the run, so every secret is known: each file of the report
    folder (and ``--junitxml``) is searched for every registered secret, any run of >= 8
    characters of one's secret part, and anything key-shaped. A finding is masked in place (it
    must not stay on disk), named with its file and position, recorded as a failure of CRED-1
    in results.json and the report, and fails the session."""
    if parallel.is_worker(session.config):
        return  # the controller scans, knowing every worker's secrets (pytest_testnodedown)
    d = session.config.stash.get(state.REPORT_DIR, None)
    junit = getattr(session.config.option, "xmlpath", None)
    paths = [p for p in (d, junit) if p and Path(p).exists()]
    if not paths:
        return
    found = scan_files(paths)
    if not found:
        return
    lines = []
    for f, (text, leaks) in found.items():
        scrub_file(f, text, leaks)
        lines.append(f"{f}: {describe(leaks, text)}")
    message = ("meshcert's own outputs held a secret (masked in place now): " + " | ".join(lines))
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"meshcert: CRED-1 failed: {message}", red=True, bold=True)
    if d is not None and Path(d).is_dir():
        results_file = Path(d) / "results.json"
        try:
            doc = json.loads(results_file.read_text())
        except (OSError, ValueError):  # none written (nothing marked a clause) or unreadable
            doc = {"finished": time.time(), "clauses": {}, "extra": {}, "input_error": None}
        entry = doc.setdefault("clauses", {}).setdefault("CRED-1", {"tests": [], "outcome": "failed"})
        entry["outcome"] = "failed"
        entry.setdefault("tests", []).append({"test": "meshcert: session-end scan of its own outputs",
                                              "outcome": "failed", "duration_s": 0.0, "message": message})
        results_file.write_text(json.dumps(doc, indent=1))
        write_report(d, {"finished": doc.get("finished"), "clauses": doc["clauses"]},
                     marks.session_catalog(session.config), extra=doc.get("extra"))
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a worse status (bad input: 2) is kept
