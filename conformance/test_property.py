"""Property-based differential test: random ACL policies and route settings set live on the real
headscale, the whole reachability matrix probed from inside the nodes, compared with the oracle
(meshcert.property.oracle: the documented ACL and subnet-route semantics).

- ``test_live_acls_and_routes_match_the_oracle``: 5 edge examples, then 45 drawn ones, 50 per run
  (Hypothesis; a new random seed each run, printed; ``MESHCERT_PROPERTY_SEED`` fixes it). A
  difference fails with the shrunk policy, the differing pairs, and a replay file in
  ``<report dir>/replays/``.
  The Hypothesis database lives in ``meshcert.toolchain.paths.cache_dir() / "hypothesis"``.
- ``test_replay_file``: reruns replay files alone: ``MESHCERT_REPLAY=<file>[:<file>...]`` (the
  test of ``meshcert replay``, :mod:`meshcert.replay.session`, collected here too).
- ``test_known_finding``: every replay file in ``fixtures/replays/findings/`` that records a
  finding (real headscale disagreeing with its documented semantics) is a strict xfail.

No container is restarted between examples: policy, route approval and acceptRoutes change live.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from meshcert.plugin.hooks import matrix_tailscale
from meshcert.property.model import Shape
from meshcert.property.runner import Runner, run_seed
from meshcert.property.strategies import edge_examples, examples
from meshcert.replay.model import load_replay
from meshcert.replay.run import ReplayMismatch, run_replay
from meshcert.replay.session import test_replay_file  # noqa: F401  (collected here: MESHCERT_REPLAY=... pytest this file)
from meshcert.report.matrix import finding_skip, session_versions
from meshcert.toolchain import components
from meshcert.toolchain.paths import cache_dir
from meshcert.world.topology import guide_topology, world_versions

pytestmark = [pytest.mark.property, pytest.mark.engine]

SEED = run_seed()
SHAPE = Shape.of(guide_topology())
FINDINGS = Path(__file__).parents[1] / "fixtures" / "replays" / "findings"


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
@settings(max_examples=45, deadline=None, print_blob=True,
          database=DirectoryBasedExampleDatabase(str(cache_dir() / "hypothesis")),
          suppress_health_check=[HealthCheck.too_slow])
@seed(SEED)
@given(ex=examples(SHAPE))
def test_live_acls_and_routes_match_the_oracle(property_runner, ex):
    property_runner.check(ex)


for _edge in reversed(edge_examples(SHAPE)):  # explicit examples run first, on every run
    test_live_acls_and_routes_match_the_oracle = example(ex=_edge)(test_live_acls_and_routes_match_the_oracle)


def _findings() -> list:
    out = []
    files = sorted(FINDINGS.glob("*.yaml"))
    # under certify --matrix a session runs several tailscale versions (its tests carry
    # [ts-<version>]): a finding's tailscale versions are judged in the test, against its world
    only = ("headscale",) if matrix_tailscale() else None
    for p in files:
        r = load_replay(p)
        if r.finding:
            marks = [pytest.mark.xfail(strict=True, raises=ReplayMismatch, reason=r.finding)]
            why = finding_skip(r.versions, session_versions(), only)
            if why:  # a finding of other versions (the matrix runs it where they hold)
                marks.append(pytest.mark.skip(reason=why))
            out.append(pytest.param(p, id=p.stem, marks=marks))
    return out or [pytest.param(None, marks=pytest.mark.skip(
        reason=f"no known findings recorded: {FINDINGS} holds no replay file with a finding: line "
               f"({len(files)} *.yaml file(s) there)"))]


@pytest.mark.parametrize("path", _findings())
def test_known_finding(steady_world, path):
    """Replays a recorded deviation of headscale from the documented semantics: fails while
    headscale still deviates (strict xfail: passing means it was fixed -- update the file).
    Skipped when the world runs other versions than the finding names (under the matrix, its
    tailscale version is known only here)."""
    r = load_replay(path)
    v = world_versions(steady_world.topology, {n: components.COMPONENTS[n].version for n in components.VERSIONED})
    why = finding_skip(r.versions, {"tailscale": v["tailscale_default"], "headscale": v["headscale"]})
    if why:
        pytest.skip(why)
    run_replay(r, steady_world)
