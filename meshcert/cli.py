"""The `meshcert` command: doctor, setup, test, certify, report, replay, world, sweep, clauses."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from meshcert.errors import InputError, MeshcertError
from meshcert.k8s import cluster, existing, kind, nodeimage
from meshcert.k8s.kind import node_image_availability
from meshcert.plugin import parallel
from meshcert.plugin.marks import collect_clause_tests
from meshcert.policy import load_policy
from meshcert.replay.faults_schema import FAULT_KINDS
from meshcert.replay.model import load_replay
from meshcert.report import matrix as report_matrix
from meshcert.report.bundle import read_bundle, write_bundle
from meshcert.report.catalog import load_catalog, parse_catalog, with_tests
from meshcert.report.render import NOT_TESTED, OUT_OF_SCOPE, load_results, summarize, summary_table, when, write_report
from meshcert.secrets import redact
from meshcert.spec import load_spec
from meshcert.sut.client import SutNotTestable, require_image
from meshcert.toolchain import components, engine, images, matrix, progress
from meshcert.toolchain.images import remove_stale_images
from meshcert.toolchain.paths import bytecode_env, source_tree, suite_root
from meshcert.world import World, labels
from meshcert.world.headscale_versions import dialect
from meshcert.world.topology import guide_topology

GO_TOOLS = ("tailscale", "headscale", "toxiproxy", "helm")  # kind: built only for --cluster kind


def cmd_doctor(args) -> int:
    ok = True

    def line(what: str, state: str, detail: str = "") -> None:
        print(f"{what:<28} {state:<9} {detail}")

    c = None
    try:
        c = engine.ensure_engine(install=False)
        line("docker engine", "present", engine.engine_summary(c))
    except MeshcertError as e:
        how = "will install docker.io + iptables and start dockerd" if os.geteuid() == 0 and \
            os.path.exists("/etc/debian_version") else e.fix
        line("docker engine", "missing", how)
    for binary, pkg in engine.DEBIAN_PACKAGES.items():
        have = shutil.which(binary) or os.path.exists(f"/usr/sbin/{binary}")
        line(f"debian {pkg}", "present" if have else "missing", "" if have else "will apt-get install")
    try:
        line("go toolchain", "present", components.go_version())
    except MeshcertError as e:
        ok = False
        line("go toolchain", "missing", e.fix)
    for name, comp in components.COMPONENTS.items():
        try:
            line(f"{name} {comp.version}", "present" if comp.present() else "missing",
                 str(comp.out_dir) if comp.present() else f"will go build (meshcert/toolchain/tools/{name}, go.sum-verified)")
        except MeshcertError as e:
            line(name, "unknown", str(e))
    for name in components.VERSIONED:  # the other versions the matrix may use (issue 14)
        for v in sorted(set(components.pinned_versions(name)) | set(components.failed_pins(name)),
                        key=components.version_key, reverse=True):
            if v != components.COMPONENTS[name].version:
                st = matrix.status(name, v)
                line(f"{name} {v}", {"built": "present"}.get(st.state, st.state), st.reason)
    if c is not None:
        for img, version in sorted((i.tags[0], (i.labels or {}).get(images.VERSION_LABEL))
                                   for i in c.images.list(filters={"label": images.LABEL}) if i.tags):
            line("image", "present", img + (f" ({img.split('/')[1].split(':')[0]} {version})" if version else ""))
    line("/dev/net/tun", "present" if os.path.exists("/dev/net/tun") else "missing",
         "" if os.path.exists("/dev/net/tun") else "tailnet nodes need TUN (kernel mode)")
    nft = shutil.which("nft") or os.path.exists("/usr/sbin/nft")
    line("nftables", "present" if nft else "missing", "" if nft else "will apt-get install nftables")
    a = node_image_availability(c) if c is not None else None
    if a is not None and a.ok:
        line("kind node image", "present", a.node_image or "")
    else:
        line("kind node image", "missing", a.reason if a else "no engine to look in: kind tests skip")
    return 0 if ok else 2


def cmd_setup(args=None) -> None:
    with progress.step("setup: engine, pinned components, images"):
        c = engine.ensure_engine()
        for n in GO_TOOLS:
            components.COMPONENTS[n].ensure()
        images.ensure_images(c, images.CERTIFY_IMAGES)
    if args is not None and getattr(args, "kind", False):
        with progress.step("setup --kind: the pinned kind and its node image"):
            components.COMPONENTS["kind"].ensure()
            progress.say(f"kind node image: {kind.ensure_node_image(c)}")


# the pytest children running now (certify --matrix runs several side by side): a Ctrl-C or
# SIGTERM, which only the main thread receives, is passed to each of them
_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()


def _pytest(pytest_args: list[str], cwd: Path, env: dict[str, str] | None = None,
            log: Path | None = None) -> int:
    """Run pytest as a child in a session of its own, so Ctrl-C reaches it exactly once: from us.

    (subprocess.call would SIGKILL the child on our KeyboardInterrupt, leaving its world for the
    next run to sweep; a terminal's Ctrl-C sent to both of us could interrupt its teardown twice.)
    On Ctrl-C or SIGTERM we send the child's process group (pytest, and under -n its xdist workers,
    each with a world) one SIGINT and wait until it has torn its worlds down. ``env``: set in the
    child's environment (not ours: children may run side by side, from threads); ``log``: its
    output goes there instead of our terminal.
    """
    child_env = bytecode_env({**os.environ, **(env or {})})  # compiled once per machine, not once per process
    cmd = [sys.executable, "-m", "pytest", *pytest_args]
    progress.say("running: " + " ".join(cmd[2:]) + (f" (output: {log})" if log else ""))
    out = open(log, "w") if log else None  # noqa: SIM115 -- closed below, after the child ends
    try:
        child = subprocess.Popen(cmd, cwd=str(cwd), env=child_env, start_new_session=True,
                                 stdout=out, stderr=subprocess.STDOUT if out else None)
        with _CHILDREN_LOCK:
            _CHILDREN.add(child)
        try:
            return child.wait()
        except KeyboardInterrupt:
            _interrupt_children()
            raise
        finally:
            with _CHILDREN_LOCK:
                _CHILDREN.discard(child)
    finally:
        if out:
            out.close()


def _interrupt_children() -> None:
    """Ctrl-C or SIGTERM in the main thread: one SIGINT to each running pytest child's process
    group, then wait until every one has torn its worlds down (a second Ctrl-C keeps waiting)."""
    with _CHILDREN_LOCK:
        children = [c for c in _CHILDREN if c.poll() is None]
    if children:
        progress.say("interrupted: pytest is tearing its world(s) down ...")
    for child in children:
        try:
            os.killpg(child.pid, signal.SIGINT)  # its own session: the group is pytest + its workers
        except ProcessLookupError:
            pass
    for child in children:
        while True:
            try:
                child.wait()
                break
            except KeyboardInterrupt:
                progress.say("still tearing down; waiting (a kill -9 leaves it for the next run to sweep)")


# `meshcert test` runs this many pytest-xdist workers unless told otherwise (MESHCERT_TEST_WORKERS,
# or -n/-p no:xdist among the arguments). The suite waits far more than it computes (handshakes,
# pod start-ups, timeouts), each worker with a world of its own. Measured, clean-clone .ci/run on
# 2 cores (bench/results/speed-2026-12-02-*.json, one run each): 3 workers 1294 s (b3320b4, load
# median 7.0); 4 workers 1017 s (eba8f95, load median 11.4, the cores busy 75 % of the time);
# 5 workers (51ffdf8): load median 24.5, the cores busy 92.5 %, saturated: no faster once the
# work one worker's failed start skipped is counted; measured again with every test passing
# (8bc3339): 1131 s at load median 21.2, the cores 90.8 % busy, against 4 workers' 1068 s
# (abd555c). So 4.
TEST_WORKERS = 4
# `meshcert certify` runs conformance/'s four units (plugin/parallel.py UNIT_OF_FILE: property,
# pods, credential runs, the rest) side by side, each on a world of its own, as many workers as
# units (more would idle); the verdict is the same as a serial run's (tests/unit/test_parallel.py),
# and a SUT that cannot be tested stops every worker as a serial run stops (exit 2, "not tested",
# no failed test: plugin/fixtures.py _stop_session; tests/engine/test_bad_sut.py).
# MESHCERT_CERTIFY_WORKERS=0: serial.
CERTIFY_WORKERS = 4
# arguments after which `meshcert test` adds no -n: the user chose, or xdist cannot do it
# (a debugger, collection only)
_SERIAL_ARGS = ("-n", "--numprocesses", "--pdb", "--trace", "--collect-only", "--co", "--setup-plan")


def parallel_args(pytest_args: list[str], env: dict[str, str] | None = None, *,
                  var: str = "MESHCERT_TEST_WORKERS", default: int = TEST_WORKERS) -> list[str]:
    """``-n N`` for `meshcert test` (N: MESHCERT_TEST_WORKERS, default TEST_WORKERS; 0 or 1: a
    serial run) or `certify` (``var``/``default``: MESHCERT_CERTIFY_WORKERS, CERTIFY_WORKERS),
    unless the arguments already decide."""
    env = os.environ if env is None else env
    for i, a in enumerate(pytest_args):
        if a.split("=", 1)[0] in _SERIAL_ARGS or (a.startswith("-n") and a[2:].isdigit()):
            return []
        if a in ("no:xdist", "-pno:xdist") and (a.startswith("-p") or pytest_args[i - 1:i] == ["-p"]):
            return []
    raw = env.get(var, "").strip()
    if raw and not raw.isdigit():
        raise InputError(var, f"{raw!r} is not a number of workers", "give 0 (serial) or N")
    n = int(raw) if raw else default
    if parallel.one_unit([a for a in pytest_args if not a.startswith("-")]):
        return []  # one shared-world unit (e.g. conformance/test_property.py): one world, no workers
    return ["-n", str(n)] if n > 1 else []


def cluster_args(pytest_args: list[str], env: dict[str, str] | None = None) -> list[str]:
    """``--cluster kind`` for `meshcert test` (so the README's test command and `.ci/run` run the
    kind tests; where kind cannot run they are skipped with one reason), unless the arguments
    (``--cluster``, ``--kubeconfig``) or MESHCERT_CLUSTER decide."""
    env = os.environ if env is None else env
    if env.get("MESHCERT_CLUSTER") or any(a.split("=", 1)[0] in ("--cluster", "--kubeconfig") for a in pytest_args):
        return []
    return ["--cluster", "kind"]


def cmd_test(pytest_args: list[str]) -> int:
    """pytest with meshcert's defaults: in a checkout, from its root (tests, conformance,
    scenarios when no path is given); installed, from the current directory (the installed
    conformance and scenarios when no path is given: meshcert's own tests/ do not ship).
    In parallel: ``-n`` TEST_WORKERS xdist workers unless told otherwise (:func:`parallel_args`).
    The tests marked ``kind`` run too (:func:`cluster_args`)."""
    pytest_args = [*parallel_args(pytest_args), *cluster_args(pytest_args), *pytest_args]
    cmd_setup()
    tree = source_tree()
    cwd = tree or Path.cwd()
    if not any(not a.startswith("-") and os.path.exists(cwd / a.split("::")[0]) for a in pytest_args):
        suite = suite_root()
        pytest_args = [*pytest_args, *(["tests", "conformance", "scenarios"] if tree else
                                       [str(suite / "conformance"), str(suite / "scenarios")])]
    return _pytest(pytest_args, cwd)


def cmd_certify(args) -> int:
    """Exit 0: every catalog clause (and with --chaos every scenario) passed. 1: a clause or a
    scenario failed. 2: not tested -- bad input (policy, spec, a SUT answering garbage), a SUT
    image not on the engine, a SUT that never answers /healthz, a world that could not be built.
    3: nothing failed but some clauses have no test yet (an incomplete certification is not a
    pass). The report folder also gets the result bundle (meshcert-results-<ts>.tar.gz)."""
    # Bad input is refused before anything is built or started.
    if args.policy:
        load_policy(args.policy)
    if args.spec:
        load_spec(args.spec)
    if args.kubeconfig:
        if args.cluster == "kind":
            raise InputError("--kubeconfig", "given with --cluster kind", "choose one cluster: drop one of them")
        args.kubeconfig = str(Path(args.kubeconfig).absolute())  # pytest runs in the checkout, not here
        existing.check_kubeconfig(args.kubeconfig, args.kube_context)  # one line, exit 2, when it does not answer
    if args.kind_config:
        args.kind_config = str(Path(args.kind_config).absolute())
        kind.check_config(args.kind_config)  # malformed, unknown field: one line, exit 2
    if args.chart:
        args.chart = str(Path(args.chart).resolve())  # pytest runs in the checkout, not here
        if not (Path(args.chart) / "Chart.yaml").is_file():
            raise InputError("--chart", f"{args.chart} is not a chart (no Chart.yaml)", "pass the chart's folder")
    catalog = load_catalog()
    # Absolute: pytest runs from the suite's root (so node ids match clauses.yaml), not from here.
    report = Path(args.report_dir or Path("reports") / time.strftime("%Y%m%d-%H%M%S")).absolute()
    try:
        _require_sut_image(args.sut_image, before_setup=True)
        cmd_setup()
        _require_sut_image(args.sut_image, before_setup=False)
    except SutNotTestable as e:
        return _not_tested(report, e.to_data(), catalog, args)
    if args.matrix:
        return _certify_matrix(args, report)
    pytest_args = ["conformance", *(["scenarios"] if args.chaos else []), "-q", "--report-dir", str(report),
                   "--junitxml", str(report / "junit.xml")]
    for opt in ("sut_image", "policy", "spec", "chart"):
        if getattr(args, opt):
            value = getattr(args, opt)
            pytest_args += [f"--{opt.replace('_', '-')}", value if opt == "sut_image" else str(Path(value).absolute())]
    if args.sut_image:
        pytest_args += ["--sut-port", str(args.sut_port)]
    if args.cluster:
        pytest_args += ["--cluster", args.cluster]  # kind: the plugin builds the node image before any test
    pytest_args += kubeconfig_args(args)
    if args.kind_config:
        pytest_args += ["--kind-config", args.kind_config]
    pytest_args = [*parallel_args(pytest_args, var="MESHCERT_CERTIFY_WORKERS",
                                  default=CERTIFY_WORKERS), *pytest_args]
    saved = os.environ.get("MESHCERT_CERTIFY")
    os.environ["MESHCERT_CERTIFY"] = "1"  # the plugin leaves saying why a run was not tested to us
    try:
        rc = _pytest(pytest_args, suite_root())
    finally:
        if saved is None:
            os.environ.pop("MESHCERT_CERTIFY", None)
        else:
            os.environ["MESHCERT_CERTIFY"] = saved
    try:
        results = json.loads((report / "results.json").read_text())
    except (OSError, ValueError):
        print(f"meshcert: certify: pytest ended (exit {rc}) without writing {report / 'results.json'}", file=sys.stderr)
        return 1
    bundle = _bundle(report, args.sut_image)
    return print_verdict(results, catalog, report, bundle, rc=rc, chaos=args.chaos)


def kubeconfig_args(args) -> list[str]:
    """pytest's options for ``certify --kubeconfig`` and its companions ([] without it)."""
    if not getattr(args, "kubeconfig", None):
        return []
    out = ["--kubeconfig", args.kubeconfig]
    for opt in ("kube_context", "image_prefix", "pull_policy"):
        if getattr(args, opt, None):
            out += [f"--{opt.replace('_', '-')}", getattr(args, opt)]
    for node in getattr(args, "cluster_node", None) or []:
        out += ["--cluster-node", node]
    return out


def _certify_matrix(args, report: Path) -> int:
    """certify --matrix (issue 14): the tailnet-level clauses (report.matrix.MATRIX_CLAUSES) once
    per combination of the chosen tailscale and headscale versions (report/hs-<version>/, whose
    results.json records the versions). A version that cannot be pinned or built keeps its
    columns, "not built" with the reason.
    Writes report/matrix.json + matrix.md; exit 1 a clause failed (naming the combination),
    3 incomplete (a column not built / not tested, a clause with no outcome), else 0.
    One world per headscale version, reused across the tailscale versions (only the nodes
    restart), one pytest session each (report/hs-<version>/); a world per combination on a
    headscale where a rejoined router never becomes primary (report/hs-<v>_ts-<v>/)."""
    versions = _matrix_versions(args)
    c = engine.ensure_engine()
    ready: dict[tuple[str, str], matrix.Status] = {}
    for name, vs in versions.items():  # each version built once (binaries, then its image), one line each
        for v in vs:
            st = matrix.build(name, v)
            if st.state == matrix.BUILT:
                try:
                    images.ensure_images(c, (images.versioned(name, v),))
                except MeshcertError as e:
                    st = matrix.Status(name, v, matrix.NOT_BUILT, e.one_line())
            ready[(name, v)] = st
            print(st.line() if st.state != matrix.BUILT else f"{name} {v}: built", flush=True)
    tests_of = collect_clause_tests()
    clause_ids = [cid for cid in report_matrix.MATRIX_CLAUSES if tests_of.get(cid)]
    holds_for = {c.id: c.holds_for for c in load_catalog()}
    columns: dict[tuple[str, str], dict] = {}
    jobs: list[tuple[str, list[str], dict, bool]] = []
    for hs in versions["headscale"]:
        # one pytest session (one world) per headscale version, switched across its tailscale
        # versions (only the nodes restart: World.switch_tailscale)
        runs: list[str] = []
        for ts in versions["tailscale"]:
            missing = [ready[k] for k in (("tailscale", ts), ("headscale", hs)) if ready[k].state != matrix.BUILT]
            if missing:
                columns[(ts, hs)] = report_matrix.column(
                    ts, hs, report_matrix.NOT_BUILT, reason="; ".join(f"{m.name} {m.version}: {m.reason}" for m in missing))
            else:
                runs.append(ts)
        if not runs:
            continue
        na = {ts: tuple(cid for cid in clause_ids if not report_matrix.holds(
            holds_for.get(cid, ()), {"tailscale": ts, "headscale": hs})) for ts in runs}
        # a headscale on which a router that joins again never becomes primary: a world per
        # tailscale version (switching a world rejoins every node)
        groups = [[ts] for ts in runs] if dialect(hs).rejoined_router_never_primary else [runs]
        jobs += [(hs, group, na, len(groups) > 1) for group in groups]
    for got in _run_matrix_sessions(args, report, jobs, clause_ids, tests_of):
        columns.update(got)
    columns = [columns[(c.tailscale, c.headscale)]
               for c in matrix.combinations(versions["tailscale"], versions["headscale"])]
    where = report_matrix.write(report, versions, clause_ids, columns)
    print(report_matrix.table(columns, clause_ids))
    code, lines = report_matrix.verdict(columns, clause_ids)
    for line in lines:
        print(line)
    print(f"matrix certification: {({0: 'PASS', 1: 'FAIL', 3: 'INCOMPLETE'})[code]}; {where}")
    return code


# certify --matrix runs this many of its pytest sessions (one world each) side by side
# (MESHCERT_MATRIX_JOBS; 1: one after the other). The sessions wait far more than they compute
# (joins, handshakes, route propagation), so two at once; measured in bench/results/matrix-cost.json.
MATRIX_JOBS = 2


def _run_matrix_sessions(args, report: Path, jobs: list[tuple[str, list[str], dict, bool]], clause_ids: list[str],
                         tests_of: dict) -> list[dict[tuple[str, str], dict]]:
    """The matrix's sessions, MATRIX_JOBS at a time, each world on a VLAN of its own (the
    session VLAN moved up by the job's slot, as xdist's workers are: parallel.session_vlan).
    Ctrl-C (in the main thread, waiting here) interrupts every running session, which tears its
    world down first."""
    raw = os.environ.get("MESHCERT_MATRIX_JOBS", "").strip()
    if raw and not raw.isdigit():
        raise InputError("MESHCERT_MATRIX_JOBS", f"{raw!r} is not a number of sessions", "give 1 (one at a time) or N")
    n = max(1, min(int(raw) if raw else MATRIX_JOBS, len(jobs)))
    slots = list(range(n))  # a session takes a free slot: its VLAN is the session VLAN + slot
    lock = threading.Lock()

    def run(job) -> dict[tuple[str, str], dict]:
        with lock:
            slot = slots.pop(0)
        try:
            vlan = parallel.session_vlan(f"gw{slot}" if slot else None)
            return _matrix_session(args, report, *job, clause_ids, tests_of, vlan=vlan, quiet=n > 1)
        finally:
            with lock:
                slots.append(slot)

    if n == 1:
        return [run(job) for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix="matrix") as ex:
        futures = [ex.submit(run, job) for job in jobs]
        try:
            concurrent.futures.wait(futures)
        except KeyboardInterrupt:
            _interrupt_children()
            concurrent.futures.wait(futures)
            raise
        return [f.result() for f in futures]


def _matrix_session(args, report: Path, hs: str, group: list[str], na: dict, apart: bool, clause_ids: list[str],
                    tests_of: dict, vlan: str | None = None, quiet: bool = False) -> dict[tuple[str, str], dict]:
    """One pytest session (one world, on ``vlan``) of headscale ``hs`` run with each tailscale
    version of ``group`` in turn (World.switch_tailscale between them); its columns by
    (tailscale, headscale). ``quiet``: sessions side by side, each one's output in its folder."""
    out: dict[tuple[str, str], dict] = {}
    # every test of a clause that holds for one of them (the plugin skips, per tailscale
    # version, a test whose clauses all hold elsewhere), and the recorded findings
    tests = sorted({t for ts in group for cid in clause_ids if cid not in na[ts] for t in tests_of[cid]}) \
        + [report_matrix.FINDINGS_TEST]
    sub = report / (f"hs-{hs}_ts-{group[0]}" if apart else f"hs-{hs}")
    sub.mkdir(parents=True, exist_ok=True)
    progress.say(f"matrix: headscale {hs} with tailscale {', '.join(group)} (one world) -> {sub}")
    # MESHCERT_TAILSCALE (a pin of some nodes) would override the column's version: emptied
    env = {"MESHCERT_MATRIX_TAILSCALE": ",".join(group), "MESHCERT_HEADSCALE": hs, "MESHCERT_CERTIFY": "1",
           "MESHCERT_TAILSCALE": "", **({"MESHCERT_VLAN": vlan} if vlan else {})}
    t0 = time.monotonic()
    rc = _pytest([*tests, "-q", "--report-dir", str(sub), "--junitxml", str(sub / "junit.xml"),
                  *(["--sut-image", args.sut_image, "--sut-port", str(args.sut_port)] if args.sut_image else [])],
                 suite_root(), env=env, log=sub / "pytest.log" if quiet else None)
    progress.say(f"matrix: headscale {hs} with tailscale {', '.join(group)}: pytest exit {rc} in "
                 f"{time.monotonic() - t0:.0f} s" + (f" (output: {sub / 'pytest.log'})" if quiet else ""))
    try:
        results = json.loads((sub / "results.json").read_text())
    except (OSError, ValueError):
        results = None
    findings = report_matrix.findings_from_junit(sub / "junit.xml")
    for ts in group:
        col = report_matrix.column_from_results(ts, hs, report_matrix.results_of(results, ts), sub, rc, na[ts])
        col["findings"] = findings.get(ts) or findings.get(None, {})
        out[(ts, hs)] = col
    return out


def _require_sut_image(image: str | None, before_setup: bool) -> None:
    """A --sut-image the engine does not have is refused before anything starts. Before set-up
    only when an engine already answers (set-up may be what starts it)."""
    if not image:
        return
    if before_setup:
        try:
            c = engine.ensure_engine(install=False)
        except MeshcertError:
            return
    else:
        c = engine.ensure_engine()
    require_image(c, image)


def _bundle(report: Path, sut_image: str | None) -> Path | None:
    try:
        return write_bundle(report, sut_image=sut_image)
    except OSError as e:  # the verdict still stands without its bundle
        print(f"meshcert: result bundle not written: {e}", file=sys.stderr)
        return None


def _not_tested(report: Path, data: dict, catalog, args) -> int:
    """Nothing could be tested (refused before the run): results.json and the report say *not
    tested* with the reason; the bundle is written; exit 2."""
    report.mkdir(parents=True, exist_ok=True)
    results = {"finished": time.time(), "clauses": {}, "not_tested": data}
    (report / "results.json").write_text(redact(json.dumps({**results, "extra": {}, "input_error": None}, indent=1)))
    write_report(report, results, catalog, extra={})
    bundle = _bundle(report, args.sut_image)
    return print_verdict(results, catalog, report, bundle, rc=2, chaos=args.chaos)


def print_verdict(results: dict, catalog, report: Path | None, bundle: Path | None, rc: int = 0,
                  chaos: bool = False, where: str = "") -> int:
    """Print a run's verdict (the summary table, what failed, where the report and the bundle
    are) and return certify's exit code for it. Shared by `certify` and `meshcert report`."""
    summary = summarize(results, catalog)
    extra = results.get("extra") or {}
    files = "".join([f"; report: {report}/report.html" if report else "", f"; bundle: {bundle}" if bundle else "",
                     where])
    if summary.not_tested:
        print(f"meshcert: {summary.not_tested['reason']}", file=sys.stderr)
        for line in summary.not_tested.get("log") or []:
            print(f"  | {line}", file=sys.stderr)
        print(f"certification: {NOT_TESTED} (no clause was judged against the SUT){files}")
        return 2
    print(summary_table(summary, extra))
    clauses = results.get("clauses", {})
    failed = sorted(c for c, v in clauses.items() if v.get("outcome") == "failed")
    gaps = sorted(r.id for rows in summary.groups.values() for r in rows if r.outcome != OUT_OF_SCOPE and
                  (r.id not in clauses or clauses[r.id].get("outcome") == "skipped"))
    out = sorted(c.id for c in catalog if c.out_of_scope)
    print(f"certification: {summary.verdict}{files}")
    if out:
        print("out of the connectivity layer's scope (listed in the report with the reason): " + ", ".join(out))
    scenarios = extra.get("scenarios") or {}
    bad_scenarios = sorted(n for n, j in scenarios.items() if j.get("outcome") != "passed")
    if chaos or scenarios:
        print(f"chaos: {len(scenarios) - len(bad_scenarios)}/{len(scenarios)} scenarios passed"
              + "".join(f"\n  not passed: {n} ({scenarios[n].get('outcome')})"
                        + (f", replay: ./meshcert.sh replay {scenarios[n]['replay_file']}"
                           if scenarios[n].get("replay_file") else "") for n in bad_scenarios))
    if failed:
        print("failed: " + ", ".join(failed))
        return 1
    if bad_scenarios:
        return 1
    if rc not in (0,):
        print(f"pytest exited {rc} with no failed clause: see {report}")
        return 1
    if gaps:
        print("not certified yet (gaps): " + ", ".join(gaps))
        return 3
    return 0


def cmd_report(args) -> int:
    """Print a run's summary again from its result bundle (or its report folder / results.json);
    the exit code is the one certify gave it."""
    src = Path(args.source)
    if src.is_dir() or src.name.endswith(".json"):
        results, catalog, manifest = load_results(src), load_catalog(), {}
    else:
        doc = read_bundle(src)
        results, manifest = doc["results"], doc["manifest"]
        # an older bundle's catalog may still list each clause's tests: ignored
        catalog = parse_catalog(doc["catalog_text"], f"{src}:clauses.yaml", listed_tests_ok=True) \
            if doc["catalog_text"] else load_catalog()
    sut = manifest.get("sut") or {}
    v = manifest.get("versions") or {}
    print(f"meshcert results {src.name}: finished {when(results.get('finished'))}")
    if sut:
        print(f"SUT: {sut.get('image') or '?'}{' (the bundled reference SUT)' if sut.get('reference') else ''}"
              f"; image id {sut.get('id') or sut.get('error') or '?'}"
              + (f"; digests {', '.join(sut['repo_digests'])}" if sut.get("repo_digests") else ""))
    if v:
        print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    return print_verdict(results, catalog, None, None, rc=0, chaos=False)


def cmd_replay(args) -> int:
    """Rerun replay files alone (a failed chaos scenario's, a property example's, a field bug's)
    in a fresh world. Exit 0: the world did what every file expects; 1: it did not (the report
    says where); 2: a file is malformed (refused before anything starts)."""
    paths = [Path(p).resolve() for p in args.files]
    for p in paths:
        r = load_replay(p)  # one clear error naming the file and the field
        for i, f in enumerate(r.faults):
            if f["kind"] not in FAULT_KINDS:
                raise InputError(r.source, f"faults[{i}].kind: unknown fault kind {f['kind']!r}",
                                 f"use one of {', '.join(FAULT_KINDS)}")
        print(f"replay {r.name}: {len(r.faults)} fault(s), {len(r.probes)} probe(s), {len(r.prerun)} pre-run(s)"
              + (f" (scenario {r.scenario})" if r.scenario else ""))
    cmd_setup()
    report = Path(args.report_dir or Path("reports") / time.strftime("replay-%Y%m%d-%H%M%S")).absolute()
    os.environ["MESHCERT_REPLAY"] = os.pathsep.join(str(p) for p in paths)
    # The test is package code (meshcert/replay/session.py), not a file of the checkout: this
    # works from an installed meshcert too.
    rc = _pytest(["--pyargs", "meshcert.replay.session", "-q", "-p", "no:cacheprovider",
                  "--report-dir", str(report), *(["--keep-world"] if args.keep_world else [])], suite_root())
    print(("replayed: the world does what the file(s) expect" if rc == 0 else
           "replayed: the world differs from what the file(s) expect") + f"; report: {report}/report.html")
    return 0 if rc == 0 else 1


def cmd_clauses(args) -> int:
    # each clause's tests: the tests marked with it, from a collect-only pytest run
    for c in with_tests(load_catalog(), collect_clause_tests()):
        tests = f"{len(c.tests)} test(s)" if c.tests else ("out-scope" if c.out_of_scope else "NO TEST")
        print(f"{c.id:<10} {c.group:<16} {tests:<10} {' '.join(c.must.split())[:110]}")
    return 0


def cmd_matrix(args) -> int:
    """The version matrix's components (issue 14). ``add``: pin versions (writes
    meshcert/toolchain/tools/<name>@<version>/go.mod+go.sum). ``build``: build the binaries and
    images of the chosen (default: the default matrix's) versions, one line each; exit 3 when one
    is not built. ``list`` (default): each version's state, nothing built."""
    if args.action == "add":
        if len(args.args) < 2 or args.args[0] not in components.VERSIONED:
            raise InputError("matrix add", "needs a component and version(s)",
                             f"meshcert matrix add {{{','.join(components.VERSIONED)}}} VERSION...")
        bad = 0
        for v in args.args[1:]:
            try:
                print(f"pinned {args.args[0]} {v}: {components.pin(args.args[0], v)}")
            except MeshcertError as e:
                bad += 1
                print(f"meshcert: {e.one_line()}", file=sys.stderr)
        return 2 if bad else 0
    versions = _matrix_versions(args)
    if args.action == "list":
        for name, vs in versions.items():
            for v in vs:
                print(matrix.status(name, v).line())
        return 0
    c = engine.ensure_engine()
    rc = 0
    for name, vs in versions.items():
        for v in vs:
            st = matrix.build(name, v)
            if st.state == matrix.BUILT:
                try:
                    tag = images.ensure_images(c, (images.versioned(name, v),))[images.versioned(name, v)]
                    st = matrix.Status(name, v, matrix.BUILT, tag)
                except MeshcertError as e:
                    st = matrix.Status(name, v, matrix.NOT_BUILT, e.one_line())
            rc = rc or (3 if st.state != matrix.BUILT else 0)
            print(st.line(), flush=True)
    return rc


def _matrix_versions(args) -> dict[str, list[str]]:
    given = {n: [v.strip() for v in (getattr(args, n) or "").split(",") if v.strip()] for n in components.VERSIONED}
    if all(given.values()):
        return given
    default = matrix.default_versions()
    return {n: given[n] or default[n] for n in components.VERSIONED}


def cmd_world(args) -> int:
    w = World(topology=guide_topology(args.vlan) if args.vlan else guide_topology())
    try:
        w.start()
        print(f"run {w.run_id}", flush=True)
        print("ready " + " ".join(f"{k}={v:.1f}s" for k, v in w.timings.items()), flush=True)
        if args.hold:
            _hold()
    finally:
        w.stop()
    return 0


def _hold() -> None:
    """Block until SIGINT/SIGTERM; the caller's ``finally`` tears the world down."""
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_sweep(args) -> int:
    c = engine.ensure_engine(install=False)
    counts = labels.remove_run(c) if args.all else labels.sweep(c)
    print(f"removed {counts}")
    kubeconfigs = cluster.sweep_kubeconfigs(c)  # of kind clusters whose node is gone (swept just above)
    if kubeconfigs:
        print(f"removed {len(kubeconfigs)} kind kubeconfig file(s) of gone clusters")
    if args.kubeconfig:  # the user's cluster: meshcert's namespaces whose run's process is gone
        existing.check_kubeconfig(args.kubeconfig, args.kube_context)
        user = existing.ExistingCluster(existing.ClusterOptions(Path(args.kubeconfig), args.kube_context), "sweep")
        gone = existing.sweep_namespaces(user)
        print(f"deleted {len(gone)} namespace(s) of killed runs in {args.kubeconfig}" + "".join(f"\n  {n}" for n in gone))
    if args.images:
        removed, kept = remove_stale_images(c)
        kind_removed, kind_kept = nodeimage.remove_stale_images(c)
        removed, kept = removed + kind_removed, kept + kind_kept
        print(f"removed {len(removed)} stale image(s)" + "".join(f"\n  {r}" for r in removed))
        for k in kept:
            print(f"kept (in use): {k}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="meshcert", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("doctor", help="one line per prerequisite: present, missing, or how it will be obtained")
    st = sub.add_parser("setup", help="install/build what is missing (engine, Go tools, images)")
    st.add_argument("--kind", action="store_true",
                    help="also the pinned kind and its node image (Kubernetes built here from pinned modules)")
    sub.add_parser("test", help="set up, then run pytest (every further argument goes to pytest; "
                                "default paths: tests conformance scenarios) in parallel: -n 4 xdist workers, "
                                "each with a world (MESHCERT_TEST_WORKERS=N; 0: serial)")
    cf = sub.add_parser("certify", help="the main job: certify the SUT against every clause and write the report")
    cf.add_argument("--sut-image", help="certify this image instead of the bundled reference SUT")
    cf.add_argument("--sut-port", type=int, default=8080)
    cf.add_argument("--report-dir")
    cf.add_argument("--cluster", choices=("docker", "kind"),
                    help="kind: also run the chart's pod on a real kubelet (a kind cluster; default: $MESHCERT_CLUSTER "
                         "or docker)")
    cf.add_argument("--kind-config", metavar="PATH",
                    help="--cluster kind: the kind cluster config (default: meshcert/k8s/charts/kind-config.yaml)")
    cf.add_argument("--kubeconfig", metavar="PATH",
                    help="also run the kind-marked (pod-level HELM/HEALTH/ACL/TROUBLE) clauses on the cluster this "
                         "kubeconfig names, in namespaces of the run that are removed afterwards")
    cf.add_argument("--kube-context", metavar="NAME", help="--kubeconfig: the context (default: its current one)")
    cf.add_argument("--image-prefix", metavar="REGISTRY/PATH",
                    help="--kubeconfig: the pods run <prefix>/<meshcert's image name> (you pushed them there; "
                         "default: meshcert's names, which you loaded into the cluster's nodes)")
    cf.add_argument("--pull-policy", choices=existing.PULL_POLICIES,
                    help="--kubeconfig: imagePullPolicy of the chart's images (default Never; IfNotPresent with "
                         "--image-prefix)")
    cf.add_argument("--cluster-node", action="append", metavar="CONTAINER",
                    help="--kubeconfig: a Docker container of this engine that is one of the cluster's nodes, "
                         "attached to the world's WAN for the run (repeatable)")
    cf.add_argument("--chaos", action="store_true", help="also run the chaos scenarios (scenarios/)")
    cf.add_argument("--policy", help="run the world with this ACL policy (HuJSON); ACL clauses assert the guide's intent")
    cf.add_argument("--spec", help="an environment spec (YAML) whose spec.connectivity the SUT is given")
    cf.add_argument("--chart", help="certify this Helm chart (its folder) against the HELM clauses instead of the "
                                    "bundled reference chart")
    cf.add_argument("--matrix", action="store_true",
                    help="run the tailnet-level clauses once per tailscale x headscale combination (report/matrix.md)")
    cf.add_argument("--tailscale", help="--matrix: comma-separated tailscale versions (default: newest served, "
                                        "newest served and buildable, pinned, oldest the pinned headscale supports)")
    cf.add_argument("--headscale", help="--matrix: comma-separated headscale versions (default: pinned, previous "
                                        "minor, 0.25.1)")
    rp = sub.add_parser("replay", help="rerun replay files alone in a fresh world (exit 0 as expected, 1 differs, "
                                       "2 malformed file)")
    rp.add_argument("files", nargs="+", metavar="FILE", help="replay file(s) (YAML; a failed scenario writes one "
                                                            "into <report>/replays/)")
    rp.add_argument("--report-dir")
    rp.add_argument("--keep-world", action="store_true", help="leave the world running afterwards for inspection")
    rb = sub.add_parser("report", help="print a run's summary again from its result bundle "
                                       "(meshcert-results-<ts>.tar.gz), report folder or results.json")
    rb.add_argument("source", metavar="BUNDLE", help="a meshcert-results-*.tar.gz certify wrote (or a report folder)")
    sub.add_parser("clauses", help="list the clause catalog (clauses.yaml) with each clause's test count")
    w = sub.add_parser("world", help="build the guide's world, print its timings, tear it down")
    w.add_argument("--hold", action="store_true", help="keep it until Ctrl-C / SIGTERM / stdin closes")
    w.add_argument("--vlan", help="the subnet router's VLAN CIDR (default the guide's 10.20.5.0/24)")
    mx = sub.add_parser("matrix", help="the version matrix's components: list (default), build, add NAME VERSION...")
    mx.add_argument("action", nargs="?", choices=("list", "build", "add"), default="list")
    mx.add_argument("args", nargs="*", metavar="ARG", help="add: tailscale|headscale VERSION...")
    mx.add_argument("--tailscale", help="comma-separated tailscale versions (default: newest served, newest "
                                        "served and buildable, pinned, oldest the pinned headscale supports)")
    mx.add_argument("--headscale", help="comma-separated headscale versions (default: pinned, previous minor, 0.25.1)")
    s = sub.add_parser("sweep", help="remove containers/networks/volumes left by killed runs")
    s.add_argument("--all", action="store_true", help="remove every meshcert object, live runs' too")
    s.add_argument("--kubeconfig", metavar="PATH", help="also delete meshcert's namespaces of killed runs in the "
                                                         "cluster this kubeconfig names (label io.meshcert=1)")
    s.add_argument("--kube-context", metavar="NAME", help="--kubeconfig: the context (default: its current one)")
    s.add_argument("--images", action="store_true", help="also remove meshcert images this checkout no longer uses "
                                                         "(older hash tags)")
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `meshcert clauses | head` ends quietly
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["test"]:  # everything after `test` belongs to pytest, untouched
        args = argparse.Namespace(cmd="test", pytest_args=argv[1:])
    else:
        args = ap.parse_args(argv)
    # SIGTERM behaves like Ctrl-C so every `finally` tears the world down.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # A shell starts background jobs with SIGINT ignored; Ctrl-C/SIGINT must still tear down.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        handler = {"doctor": cmd_doctor, "setup": lambda a: cmd_setup(a) or 0, "test": lambda a: cmd_test(a.pytest_args),
                   "certify": cmd_certify, "replay": cmd_replay, "world": cmd_world, "sweep": cmd_sweep,
                   "clauses": cmd_clauses, "report": cmd_report, "matrix": cmd_matrix}[args.cmd]
        return handler(args)
    except MeshcertError as e:
        print(f"meshcert: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("meshcert: interrupted; what this run started was removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
