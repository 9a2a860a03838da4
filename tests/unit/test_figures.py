"""The README's figures come from artifacts: bench/figures.py rewrites its blocks from
bench/results/ only, and the committed README is what that rewrite gives (no typed figure)."""

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def figures(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("figures", "stamp"):
        sys.modules.pop(name, None)
    return importlib.import_module("figures")


def test_the_readme_blocks_are_what_the_artifacts_give(figures):
    text = figures.README.read_text()
    assert figures.rewrite_readme(text) == text, \
        "README figures differ from bench/results/: run `.venv/bin/python bench/figures.py --steps readme`"


def test_blocks_read_only_artifacts_and_say_when_there_is_none(figures, tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "RESULTS", tmp_path)
    text = "a\n<!-- figures:mutants -->\nold 99/99\n<!-- /figures:mutants -->\n" + "".join(
        f"<!-- figures:{n} -->\n<!-- /figures:{n} -->\n" for n in figures.BLOCKS if n != "mutants")
    out = figures.rewrite_readme(text)
    assert "99/99" not in out and "No figure yet: `bench/results/mutants.json`" in out
    st = {"commit": "abc", "machine": {"cores": 2, "memory_mib": 4096}, "generated": "2026-12-01T00:00:00Z"}
    (tmp_path / "mutants.json").write_text(json.dumps({**st, "suite_exit_code": 0, "board": {
        "mutant:a": {"kind": "mutant", "target": ["HEALTH-1"], "killed": True, "clauses": ["HEALTH-1"]},
        "world:b": {"kind": "world", "target": ["ACL-2"], "killed": False, "why": "its test was skipped: x"}}}))
    out = figures.rewrite_readme(out)
    assert "**1/2 faults killed (50%)**" in out and "commit abc, 2 cores, 4.0 GiB" in out
    assert "| `world:b` | ACL-2 | **not killed**: its test was skipped: x |" in out
    assert figures.rewrite_readme(out) == out  # idempotent


def test_a_readme_without_a_block_is_an_error(figures):
    with pytest.raises(RuntimeError, match="lacks the figures block"):
        figures.rewrite_readme("no blocks here")
