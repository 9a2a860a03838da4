"""meshcert's pytest plugin (registered through the pytest11 entry point).

Options live in the "meshcert" group; markers are registered here; the session world and the
per-test reset fixtures are defined here so any checkout of the package can run the suite.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import time
from pathlib import Path

import pytest

MARKERS = {
    "clause(*ids)": "the guide clause(s) this test asserts (see clauses.yaml)",
    "acl": "ACL scoping clauses (real tailnet)",
    "route": "subnet routing clauses (real tailnet)",
    "engine": "needs a Docker engine and builds a real world",
    "property": "property-based differential tests against the oracle",
    "kind": "needs a kind cluster",
    "chaos": "chaos scenarios",
    "slow": "takes more than a minute",
    "sut": "asserted against the SUT running in its pod",
}


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
    if not rd:
        rd = str(Path("reports") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    config._meshcert_report_dir = Path(rd)
    config._meshcert_results = {}
    config._meshcert_extra = {}
    from meshcert.k8s import kind
    kind.SELECTED = config.getoption("--cluster", default="docker")  # read by the kind test module at import
    # SIGTERM ends a run like Ctrl-C does, so session teardown removes the world.
    if hasattr(signal, "SIGTERM"):
        def _term(signum, frame):
            raise KeyboardInterrupt("SIGTERM")
        try:
            signal.signal(signal.SIGTERM, _term)
        except ValueError:
            pass  # not the main thread


@pytest.fixture(scope="session")
def report_dir(pytestconfig) -> Path:
    d = pytestconfig._meshcert_report_dir
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def report_extra(pytestconfig) -> dict:
    """Sections a test adds to the report (e.g. "mutants", "latency")."""
    return pytestconfig._meshcert_extra


@pytest.fixture(scope="session")
def world(pytestconfig, report_dir):
    """The guide's world, built once per session and removed at its end (Ctrl-C included)."""
    from meshcert.errors import MeshcertError
    from meshcert.world import World
    from meshcert.world.topology import guide_topology

    vlan = os.environ.get("MESHCERT_VLAN")  # two sessions on one engine need different VLANs
    topo = guide_topology(vlan) if vlan else guide_topology()
    try:
        if pytestconfig.getoption("--policy"):
            from meshcert.policy import load_policy
            topo.policy = json.loads(load_policy(pytestconfig.getoption("--policy")).to_json())
        spec = None
        if pytestconfig.getoption("--spec"):
            from meshcert.spec import load_spec
            spec = load_spec(pytestconfig.getoption("--spec"))
    except MeshcertError as e:
        pytestconfig._meshcert_input_error = e.one_line()
        pytest.exit(f"meshcert: {e.one_line()}", returncode=2)
    w = World(topology=topo, sut_image=pytestconfig.getoption("--sut-image"),
              sut_port=pytestconfig.getoption("--sut-port"))
    w.connectivity_spec = spec
    w.log_root = report_dir / "logs"
    try:
        w.start()
    except MeshcertError as e:
        # Nothing can be tested: not a failed certification. The run stops here (the world is
        # built once, never again per test), no clause is recorded, results say "not tested".
        from meshcert.sut.client import SutNotTestable
        data = e.to_data() if isinstance(e, SutNotTestable) else \
            {"reason": f"the world could not be built: {e.one_line()}", "log": []}
        data["run"] = w.run_id  # its objects are gone: World.start removes what it built
        pytestconfig._meshcert_not_tested = data
        pytest.exit(_not_tested_exit_message(data), returncode=2)
    (report_dir / "world.json").write_text(json.dumps({"run": w.run_id, "timings": w.timings, "images": w.images,
                                                      "sut_image": w.sut_image}, indent=1))
    try:
        yield w
    finally:
        if not pytestconfig.getoption("--keep-world"):
            w.stop()


def _not_tested_exit_message(data: dict) -> str:
    """The line pytest prints when it stops; under `meshcert certify` (which prints the reason
    and the log itself, once) only a pointer, so the reason is not printed twice."""
    if os.environ.get("MESHCERT_CERTIFY"):
        return "not tested (meshcert certify says why below)"
    return "\n".join([f"meshcert: not tested: {data['reason']}", *(f"  | {line}" for line in data.get("log") or [])])


@pytest.fixture
def steady_world(world):
    """The session world, returned to its steady state after a test that changed it."""
    yield world
    world.reset()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    from meshcert.errors import InputError
    if call.excinfo is not None and isinstance(call.excinfo.value, InputError):
        # Bad input (a SUT answering garbage, a malformed file): one clear error ends the run,
        # which is then "not tested" with that reason -- the clause is not recorded as failed.
        item.config._meshcert_input_error = call.excinfo.value.one_line()
        item.session.shouldstop = f"input error: {call.excinfo.value.one_line()}"
        return
    if rep.when != "call" and not (rep.when == "setup" and rep.outcome != "passed"):
        return
    clauses = [c for m in item.iter_markers("clause") for c in m.args]
    if not clauses:
        return
    res = item.config._meshcert_results
    for c in clauses:
        entry = res.setdefault(c, {"tests": [], "outcome": "passed"})
        entry["tests"].append({"test": item.nodeid, "outcome": rep.outcome,
                               "duration_s": round(rep.duration, 3),
                               "message": str(rep.longrepr.reprcrash.message) if rep.failed and
                               hasattr(rep.longrepr, "reprcrash") else None})
        if rep.failed:
            entry["outcome"] = "failed"
        elif rep.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"


def pytest_sessionfinish(session, exitstatus) -> None:
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        ran = sum(len(tr.stats.get(k, ())) for k in ("passed", "failed", "error", "xfailed", "xpassed"))
        if not ran and tr.stats.get("skipped"):
            # e.g. `pytest -m kind` where kind cannot run: every selected test skipped with its
            # reason (the skip line says why). A run that tested nothing is not a success: exit 5
            # (pytest's "no tests ran"), whatever was skipped.
            session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
    res = getattr(session.config, "_meshcert_results", None)
    extra = getattr(session.config, "_meshcert_extra", None)
    input_error = getattr(session.config, "_meshcert_input_error", None)
    # A run that could not test the SUT (its image missing, no /healthz, bad input): "not tested".
    not_tested = getattr(session.config, "_meshcert_not_tested", None) or (
        {"reason": input_error, "log": []} if input_error else None)
    if not res and not extra and not not_tested:
        return
    from meshcert.report.catalog import load_catalog
    from meshcert.report.render import write_report
    from meshcert.secrets import redact
    d = session.config._meshcert_report_dir
    d.mkdir(parents=True, exist_ok=True)
    results = {"finished": time.time(), "clauses": res or {}, "not_tested": not_tested}
    (d / "results.json").write_text(redact(json.dumps({**results, "extra": extra, "input_error": input_error},
                                                      indent=1)))
    write_report(d, results, load_catalog(), extra=extra)


@pytest.hookimpl(trylast=True, specname="pytest_sessionfinish")
def pytest_sessionfinish_no_secret_in_outputs(session, exitstatus) -> None:
    """CRED-1, meshcert's own half: nothing of a key in results.json, the report, saved logs,
    replay files or a junit file. Runs last (after the report and junit are written), in the
    process that made every key of the run, so every secret is known: each file of the report
    folder (and ``--junitxml``) is searched for every registered secret, any run of >= 8
    characters of one's secret part, and anything key-shaped. A finding is masked in place (it
    must not stay on disk), named with its file and position, recorded as a failure of CRED-1
    in results.json and the report, and fails the session."""
    from meshcert.secrets import describe, scan_files, scrub_file
    d = getattr(session.config, "_meshcert_report_dir", None)
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
        from meshcert.report.catalog import load_catalog
        from meshcert.report.render import write_report
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
        write_report(d, {"finished": doc.get("finished"), "clauses": doc["clauses"]}, load_catalog(),
                     extra=doc.get("extra"))
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a worse status (bad input: 2) is kept
