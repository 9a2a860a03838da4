"""Property-based differential test: random ACL policies and route settings set live on the real
headscale, the whole reachability matrix probed from inside the nodes, compared with the oracle
(meshcert.property.oracle: the documented ACL and subnet-route semantics).

- ``test_live_acls_and_routes_match_the_oracle``: 50 drawn examples per run (Hypothesis; a new
  random seed each run, printed; ``MESHCERT_PROPERTY_SEED`` fixes it). A difference fails with
  the shrunk policy, the differing pairs, and a replay file in ``<report dir>/replays/``.
  The Hypothesis database lives in ``meshcert.toolchain.paths.cache_dir() / "hypothesis"``.
- ``test_replay_file``: reruns replay files alone: ``MESHCERT_REPLAY=<file>[:<file>...]``.
- ``test_known_finding``: every replay file in ``conformance/replays/`` that records a finding
  (real headscale disagreeing with its documented semantics) is a strict xfail.

No container is restarted between examples: policy, route approval and acceptRoutes change live.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from meshcert.toolchain.paths import cache_dir
from meshcert.property.runner import Runner, Shape, edge_examples, examples, run_seed
from meshcert.replay.run import ReplayMismatch, load_replay, run_replay
from meshcert.world.topology import guide_topology

pytestmark = [pytest.mark.property, pytest.mark.engine]

SEED = run_seed()
SHAPE = Shape.of(guide_topology())
FINDINGS = Path(__file__).parent / "replays"


def _say(config, line: str) -> None:
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(line)


@pytest.fixture(scope="module")
def property_runner(world, pytestconfig, report_dir, report_extra):
    problems = SHAPE.same_as(Shape.of(world.topology))
    assert not problems, f"the session world is not the guide topology the strategies draw from: {problems}"
    _say(pytestconfig, f"\nmeshcert property: hypothesis seed {SEED} (rerun with MESHCERT_PROPERTY_SEED={SEED})")
    runner = Runner(world, report_dir / "replays", seed=SEED, log_path=report_dir / "property-examples.jsonl")
    try:
        yield runner
    finally:
        figures = runner.figures()
        report_extra["property"] = figures
        _say(pytestconfig, f"\nmeshcert property: {figures}")
        world.reset()


@pytest.mark.timeout(1500)
@settings(max_examples=50, deadline=None, print_blob=True,
          database=DirectoryBasedExampleDatabase(str(cache_dir() / "hypothesis")),
          suppress_health_check=[HealthCheck.too_slow])
@seed(SEED)
@given(ex=examples(SHAPE))
def test_live_acls_and_routes_match_the_oracle(property_runner, ex):
    property_runner.check(ex)


for _edge in reversed(edge_examples(SHAPE)):  # explicit examples run first, on every run
    test_live_acls_and_routes_match_the_oracle = example(ex=_edge)(test_live_acls_and_routes_match_the_oracle)


def _replay_paths() -> list:
    env = os.environ.get("MESHCERT_REPLAY", "")
    paths = [p for p in env.split(os.pathsep) if p.strip()]
    if not paths:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason="set MESHCERT_REPLAY=<replay file>[:<file>...] to rerun replay files alone"))]
    return paths


@pytest.mark.parametrize("path", _replay_paths())
def test_replay_file(steady_world, report_extra, path):
    """Reruns one replay file (``meshcert replay FILE`` runs this); its journal goes into the
    report's scenarios section: each probe as observed, each pre-run problem."""
    from meshcert.chaos.experiment import Journal
    journal = Journal(f"replay {Path(path).name}")
    book = report_extra.setdefault("scenarios", {})
    book[journal.scenario] = journal.to_data()
    try:
        result = run_replay(path, steady_world, check=False)
    except BaseException as e:
        journal.outcome = "failed"
        journal.log("error", error=str(e)[:600])
        raise
    finally:
        book[journal.scenario] = journal.to_data()
    for pair, obs in result.outcome.observations.items():
        journal.events.append({"t_s": obs.after_s, "event": "probe", "pair": f"{pair.src} -> {pair.dst}:{pair.port}",
                               "expected": "allowed" if result.outcome.verdicts[pair].allowed else "denied",
                               "observed": "connected" if obs.reached(pair) else (obs.error or "no banner"),
                               "attempts": obs.attempts})
    for p in result.prerun_problems:
        journal.log("pre-run problem", problem=p)
    journal.figures.update({k + "_s": round(v, 2) for k, v in result.outcome.seconds.items()})
    journal.outcome = "passed" if result.ok else "failed"
    book[journal.scenario] = journal.to_data()
    if not result.ok:
        raise ReplayMismatch(result)


def _findings() -> list:
    out = []
    for p in sorted(FINDINGS.glob("*.yaml")):
        r = load_replay(p)
        if r.finding:
            out.append(pytest.param(p, id=p.stem, marks=pytest.mark.xfail(
                strict=True, raises=ReplayMismatch, reason=r.finding)))
    return out or [pytest.param(None, marks=pytest.mark.skip(reason="no known findings recorded"))]


@pytest.mark.parametrize("path", _findings())
def test_known_finding(steady_world, path):
    """Replays a recorded deviation of headscale from the documented semantics: fails while
    headscale still deviates (strict xfail: passing means it was fixed -- update the file)."""
    run_replay(path, steady_world)
