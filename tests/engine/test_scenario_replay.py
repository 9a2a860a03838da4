"""A failing chaos scenario writes its replay file; the file reproduces the failure alone, passes
against the faithful SUT, and `meshcert replay FILE` runs it end to end in a fresh world."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshcert.chaos import scenarios as s
from meshcert.replay.model import load_replay
from meshcert.replay.run import run_replay
from tests.common.cli import meshcert

pytestmark = [pytest.mark.engine, pytest.mark.chaos]

NAME = "partition agent | server"


@pytest.fixture
def failed_partition(steady_world, tmp_path):
    """The partition scenario run against a SUT that ignores `critical` (it says ready although
    a critical endpoint is unreachable): it fails and writes its replay file."""
    w = steady_world
    root, w.log_root = w.log_root, tmp_path / "logs"
    extra: dict = {}
    try:
        w.start_sut("agent", mutant="ignore-critical")
        with pytest.raises(AssertionError) as failure:
            s.partition_one_target(w, extra)
    finally:
        w.log_root = root
        w.start_sut("agent")
    return failure.value, extra["scenarios"][NAME]


def test_a_failing_scenario_writes_its_replay_file(failed_partition):
    error, journal = failed_partition
    assert journal["outcome"] == "failed"
    path = Path(journal["replay_file"])
    assert path.parent.name == "replays" and path.exists()
    assert any(f"meshcert replay {path}" in n for n in getattr(error, "__notes__", [])), \
        "the failure message must say where the replay file is and how to rerun it"
    r = load_replay(path)
    assert r.scenario == NAME and [f["kind"] for f in r.faults] == ["nft"]
    assert "${ip:server}" in r.faults[0]["rules"], "addresses are written as symbols (the file reruns anywhere)"
    assert r.prerun and r.prerun[0]["expect"]["ready"] is False
    assert {(p.src, p.dst, p.port, p.expect) for p in r.probes} >= {("agent", "server", 22, False),
                                                                     ("agent", "database", 5432, True)}


def test_the_replay_file_reproduces_the_failure_and_passes_the_faithful_sut(steady_world, failed_partition):
    path = failed_partition[1]["replay_file"]
    w = steady_world
    try:
        w.start_sut("agent", mutant="ignore-critical")
        bad = run_replay(path, w, check=False, restore=False)
    finally:
        w.start_sut("agent")
    assert not bad.ok and not bad.differences, "the network did as expected; the SUT did not"
    problem = str(failed_partition[0]).split("pre-run during the partition: ")[1].splitlines()[0]
    assert any(problem in p for p in bad.prerun_problems), \
        f"the replay must fail as the scenario did ({problem!r}); it found {bad.prerun_problems}"
    good = run_replay(path, w, check=False)
    assert good.ok, (good.differences, good.prerun_problems)
    from meshcert.world.extra import netns_heal
    assert netns_heal(w, "agent-pause") is False, "the replay's fault was undone"


def test_meshcert_replay_command_runs_a_file_in_a_fresh_world(failed_partition, tmp_path):
    """End to end through the CLI, in a world of its own (another VLAN), against the reference SUT."""
    from tests.common.engine import free_vlan
    path = failed_partition[1]["replay_file"]
    env = {**os.environ, "MESHCERT_VLAN": free_vlan()}
    p = meshcert("replay", path, "--report-dir", str(tmp_path / "r"), env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "1 fault(s)" in p.stdout and "scenario partition agent | server" in p.stdout
    assert (tmp_path / "r" / "results.json").exists()


def test_meshcert_replay_refuses_a_malformed_file_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = Path(__file__).parents[2].joinpath("fixtures", "replays", "scenarios", "partition-agent-server.yaml").read_text()
    bad.write_text(text.replace("kind: nft", "kind: unplug"))
    p = meshcert("replay", str(bad), timeout=60)
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "unplug" in lines[0] and "kind" in lines[0], p.stderr
    assert "Traceback" not in p.stderr
