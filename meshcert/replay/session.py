"""The pytest session of ``meshcert replay FILE``: one test per replay file named in MESHCERT_REPLAY.

``meshcert replay`` runs ``pytest --pyargs meshcert.replay.session``: package code, so the
command works from an installed meshcert outside a checkout (the world and report fixtures come
from meshcert's pytest plugin). In a checkout, ``conformance/test_property.py`` collects the
same test: ``MESHCERT_REPLAY=<file>[:<file>...] pytest conformance/test_property.py::test_replay_file``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshcert.chaos.experiment import Journal
from meshcert.replay.run import ReplayMismatch, run_replay

pytestmark = [pytest.mark.engine]


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
