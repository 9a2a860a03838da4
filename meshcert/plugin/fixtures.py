"""meshcert's fixtures: the session world (built once, removed at the end, Ctrl-C included),
the per-test reset, the report folder and the report's extra sections, the clause results."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import signal
from pathlib import Path

import pytest

from meshcert.errors import MeshcertError
from meshcert.k8s import existing, kind
from meshcert.plugin import hooks, parallel, state
from meshcert.policy import load_policy
from meshcert.spec import load_spec
from meshcert.sut.client import SutNotTestable
from meshcert.toolchain import components
from meshcert.world import World
from meshcert.world.credentials import configure_vault, credential_topology, start_sut_with_vault, start_vault_beside
from meshcert.world.topology import guide_topology, parse_versions, with_tailscale, world_versions
from meshcert.world.vault import Vault

# certify --matrix: the session's world, kept across its tailscale versions (see ``world``)
MATRIX_WORLD = pytest.StashKey[World]()


class KindBeside:
    """meshcert's kind cluster, brought up while the session world's nodes start
    (``World.start(beside=...)``: the cluster needs only the world's networks and images) when the
    test that starts the world uses ``k8s_cluster``: the kind units are each the first work of
    their worker, so their world and their cluster used to start one after the other. Handed to
    ``k8s_cluster``, which owns it from then on; a cluster that failed is that module's error, not
    the world's (the world starts without it)."""

    def __init__(self, config: str | os.PathLike):
        self.config = config
        self.cluster: kind.KindCluster | None = None
        self.error: Exception | None = None

    def __call__(self, w: World) -> KindBeside:
        self.cluster = kind.cluster_for(w, self.config)  # before its create: discard() deletes it
        try:
            kind.bring_up(self.cluster, w)
        except Exception as e:  # noqa: BLE001 -- k8s_cluster raises it, in its module
            self.error = e
        return self

    def discard(self) -> None:
        if self.cluster is not None:
            self.cluster, c = None, self.cluster
            c.delete()


# set before a test's fixtures when it uses k8s_cluster (pytest_runtest_setup below); used by the
# session world if that test starts it, then taken by k8s_cluster
KIND_BESIDE = pytest.StashKey[KindBeside]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    config = item.config
    if "k8s_cluster" in getattr(item, "fixturenames", ()) and not hooks.cluster_options(config) \
            and KIND_BESIDE not in config.stash:
        config.stash[KIND_BESIDE] = KindBeside(hooks.kind_config(config))


@pytest.fixture(scope="session")
def report_dir(pytestconfig) -> Path:
    d = pytestconfig.stash[state.REPORT_DIR]
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def report_extra(pytestconfig) -> dict:
    """Sections a test adds to the report (e.g. "mutants", "latency")."""
    return pytestconfig.stash[state.EXTRA]


@pytest.fixture(scope="session")
def clause_results(pytestconfig) -> dict:
    """This session's clause results so far (results.json "clauses": id -> outcome and tests)."""
    return pytestconfig.stash[state.RESULTS]


@pytest.fixture(scope="session")
def tailscale_version(request):
    """The version matrix's tailscale version of the tests that take it (MESHCERT_MATRIX_TAILSCALE
    parametrizes every test using the world with it); None: the session's one."""
    return getattr(request, "param", None)


@pytest.fixture(scope="session")
def world(request, pytestconfig, report_dir, tailscale_version):
    """The guide's world, built once per session and removed at its end (Ctrl-C included).
    Under MESHCERT_MATRIX_TAILSCALE (certify --matrix: one session per headscale version) it is
    built once, for the first tailscale version, and switched to each next one (only the nodes
    and pods restart: World.switch_tailscale); it is removed when the session ends."""
    base = pytestconfig.stash.get(MATRIX_WORLD, None)
    if base is not None:
        try:
            base.switch_tailscale(tailscale_version)
        except MeshcertError as e:
            pytest.fail(f"switching the world to tailscale {tailscale_version}: {e.one_line()}", pytrace=False)
        pytestconfig.stash[state.EXTRA]["versions"] = world_versions(
            base.topology, {n: components.COMPONENTS[n].version for n in components.VERSIONED})
        # results.json: the same world (run id) switched, and what each switch cost
        pytestconfig.stash[state.EXTRA].setdefault("world_switches", {})[tailscale_version] = {
            "run": base.run_id, "seconds": round(base.timings.get(f"switch to tailscale {tailscale_version}", 0), 1)}
        yield base
        return
    yield from _session_world(request, pytestconfig, report_dir, tailscale_version)


def _session_world(request, pytestconfig, report_dir, tailscale_version):
    # two sessions on one engine need different VLANs: MESHCERT_VLAN; xdist's workers each move it
    # up by their number (parallel.session_vlan)
    topo = guide_topology(parallel.session_vlan(parallel.worker_id(pytestconfig)))
    try:
        # the version matrix (certify --matrix): this session's tailscale/headscale versions
        topo = with_tailscale(topo, parse_versions(os.environ.get("MESHCERT_TAILSCALE", "")))
        if tailscale_version:
            topo = with_tailscale(topo, {"*": tailscale_version})
        topo.headscale = os.environ.get("MESHCERT_HEADSCALE") or None
        if pytestconfig.getoption("--policy"):
            topo.policy = json.loads(load_policy(pytestconfig.getoption("--policy")).to_json())
        spec = None
        if pytestconfig.getoption("--spec"):
            spec = load_spec(pytestconfig.getoption("--spec"))
    except KeyError as e:  # MESHCERT_TAILSCALE names no node of the world
        pytestconfig.stash[state.INPUT_ERROR] = f"MESHCERT_TAILSCALE: {e.args[0]}"
        _stop_session(request.session, f"meshcert: MESHCERT_TAILSCALE: {e.args[0]}")
    except MeshcertError as e:
        pytestconfig.stash[state.INPUT_ERROR] = e.one_line()
        _stop_session(request.session, f"meshcert: {e.one_line()}")
    w = World(topology=topo, sut_image=pytestconfig.getoption("--sut-image"),
              sut_port=pytestconfig.getoption("--sut-port"))
    w.connectivity_spec = spec
    wid = parallel.worker_id(pytestconfig)
    # a failing clause's logs go to logs/<clause>-<n>, n counted per world: under xdist each
    # worker's world has a folder of its own (logs/gw0/...), so two worlds' "<clause>-1" never meet
    w.log_root = report_dir / "logs" / wid if wid else report_dir / "logs"
    pytestconfig.stash[state.EXTRA]["versions"] = world_versions(
        topo, {n: components.COMPONENTS[n].version for n in components.VERSIONED})
    beside = pytestconfig.stash.get(KIND_BESIDE, None)
    try:
        try:
            w.start(beside=beside)
        except BaseException:  # the world removed itself; a cluster brought up beside it goes too
            if beside is not None:
                beside.discard()
            raise
    except MeshcertError as e:
        # Nothing can be tested: not a failed certification. The run stops here (the world is
        # built once, never again per test), no clause is recorded, results say "not tested".
        _not_testable(request.session, w, e, "the world")
    about = json.dumps({"run": w.run_id, "timings": w.timings, "images": w.images, "sut_image": w.sut_image},
                       indent=1)
    if wid:  # xdist: one world per worker, each named; world.json (the bundle's) is the first one built
        (report_dir / f"world-{wid}.json").write_text(about)
        try:
            with open(report_dir / "world.json", "x") as f:
                f.write(about)
        except FileExistsError:
            pass
    else:
        (report_dir / "world.json").write_text(about)
    if tailscale_version:  # the matrix: kept for the next tailscale version, removed at the session's end
        pytestconfig.stash[MATRIX_WORLD] = w
        if not pytestconfig.getoption("--keep-world"):
            pytestconfig.add_cleanup(w.stop)
        yield w
        return
    try:
        yield w
    finally:
        if not pytestconfig.getoption("--keep-world"):
            with _no_second_interrupt(wid):
                w.stop()


def _not_testable(session: pytest.Session, w: World, e: MeshcertError, what: str) -> None:
    """Nothing can be tested: not a failed certification. The run stops (a world is built once,
    never again per test), no clause is recorded, results say "not tested" with the reason."""
    data = e.to_data() if isinstance(e, SutNotTestable) else \
        {"reason": f"{what} could not be built: {e.one_line()}", "log": []}
    data["run"] = w.run_id  # its objects are gone: World.start removes what it built
    session.config.stash[state.NOT_TESTED] = data
    _stop_session(session, _not_tested_exit_message(data))


# the exit status a worker stopped by _stop_session ends with: anything but 2, which xdist's
# controller reads as the worker's Ctrl-C and answers with a crash report for each pending test
WORKER_STOP_STATUS = 3


def _stop_session(session: pytest.Session, message: str) -> None:
    """Stop the run, exit status 2 (bad input / not tested), with ``message``, no test failed.

    Serial: ``pytest.exit``. In an xdist worker, the same stop must reach the controller as a
    stop, not as a crash: the worker sets ``session.shouldstop`` (xdist hands it to the
    controller, which shuts the other workers down and ends with pytest's Interrupted, exit
    status 2, printing the message) and exits with WORKER_STOP_STATUS, so the tests it had not
    run yet are not reported as crashed ("worker gw0 crashed while running ..."); the reason
    travels in the worker's stash (INPUT_ERROR / NOT_TESTED) like any other."""
    if parallel.is_worker(session.config):
        session.shouldstop = message
        pytest.exit(message, returncode=WORKER_STOP_STATUS)
    pytest.exit(message, returncode=2)


@contextlib.contextmanager
def _no_second_interrupt(worker: str | None):
    """In an xdist worker, a world's removal is not cut short by a second SIGINT: the one Ctrl-C
    already ended its session, and xdist's shutdown interrupts a worker that is still busy after
    5 s (execnet's gateway, which then waits for it). A serial run: unchanged."""
    if not worker:
        yield
        return
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _not_tested_exit_message(data: dict) -> str:
    """The line pytest prints when it stops; under `meshcert certify` (which prints the reason
    and the log itself, once) only a pointer, so the reason is not printed twice."""
    if os.environ.get("MESHCERT_CERTIFY"):
        return "not tested (meshcert certify says why below)"
    return "\n".join([f"meshcert: not tested: {data['reason']}", *(f"  | {line}" for line in data.get("log") or [])])


@pytest.fixture(scope="module")
def k8s_cluster(request, pytestconfig):
    """The Kubernetes cluster of a module's ``kind`` tests, beside the session world: the user's
    (``--kubeconfig``: namespaces of this run only, removed after the module) or a kind cluster
    of meshcert's (deleted after the module: a kind node does not idle through the rest of the
    worker's tests); Ctrl-C included. Each chart release has a namespace of its own.

    When the test that starts the session world uses this fixture, meshcert's cluster was brought
    up while the world's nodes started (:class:`KindBeside`)."""
    opts = hooks.cluster_options(pytestconfig)
    if opts:
        with existing.world_cluster(request.getfixturevalue("world"), opts) as c:
            yield c
        return
    world = request.getfixturevalue("world")
    beside = pytestconfig.stash.get(KIND_BESIDE, None)
    if beside is not None:
        del pytestconfig.stash[KIND_BESIDE]
        world.beside = None if world.beside is beside else world.beside  # the cluster is this module's
        if beside.error is not None:
            beside.discard()
            raise beside.error
    with kind.world_cluster(world, hooks.kind_config(pytestconfig),
                            started=beside.cluster if beside is not None else None) as c:
        yield c


@dataclasses.dataclass
class CredWorld:
    world: World
    vault: Vault


# The credential world's VLAN: the session's moved up this many /24s, out of the block xdist's
# workers take (parallel.session_vlan: at most a few workers), so both worlds live on one engine.
CRED_VLAN_OFFSET = 64


@pytest.fixture(scope="session")
def cred_world(request, pytestconfig, report_dir):
    """A world with the credential layer (issue 13): the guide's world with real targets (sshd,
    PostgreSQL) and Vault, the SUT started with the run lifecycle's configuration. Built once per
    session on first use, beside the session world, and removed at the end (Ctrl-C included)."""
    net = ipaddress.ip_network(parallel.session_vlan(parallel.worker_id(pytestconfig)))
    vlan = str(ipaddress.ip_network((int(net.network_address) + (CRED_VLAN_OFFSET << 8), net.prefixlen)))
    w = World(topology=credential_topology(vlan), sut_image=pytestconfig.getoption("--sut-image"),
              sut_port=pytestconfig.getoption("--sut-port"))
    wid = parallel.worker_id(pytestconfig)
    w.log_root = report_dir / "logs" / (f"{wid}-cred" if wid else "cred")
    try:
        w.start(beside=start_vault_beside)  # Vault starts, initialises and unseals while the nodes join
        vault = configure_vault(w, w.beside)
        start_sut_with_vault(w, vault)
    except MeshcertError as e:
        w.stop()
        # as the session world: a SUT that cannot be tested (or a world that cannot be built)
        # stops the run, "not tested", once (not one error per test of the credential layer)
        _not_testable(request.session, w, e, "the credential world")
    # what the credential layer cost: the world's timings, Vault's ("vault": its start, init,
    # unseal and configuration after the world converged) and their parts
    (report_dir / (f"cred-world-{wid}.json" if wid else "cred-world.json")).write_text(json.dumps(
        {"run": w.run_id, "timings": w.timings, "vault_timings": vault.timings, "images": w.images}, indent=1))
    try:
        yield CredWorld(w, vault)
    finally:
        if not pytestconfig.getoption("--keep-world"):
            with _no_second_interrupt(wid):
                w.stop()


@pytest.fixture
def steady_world(world):
    """The session world, returned to its steady state after a test that changed it."""
    yield world
    world.reset()
