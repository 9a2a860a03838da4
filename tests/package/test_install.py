"""An installed meshcert works from any directory: the wheel carries the clause catalog, the Go
tool pins, the charts and the suite (meshcert.suite.conformance / .scenarios), and nothing reads
the checkout. Engine-free and offline: the wheel is built with --no-build-isolation --no-index
from a copy of the source, installed --no-deps into a fresh venv that borrows this venv's
site-packages for the dependencies (a .pth line; the borrowed folder's own .pth files, such as an
editable meshcert's finder, are not run by it), and run from a temporary directory."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2]  # this checkout (the tests do not ship)

PROBE = r"""
import json
from meshcert.plugin.marks import collect_clause_tests
from meshcert.report.catalog import default_path, drift, load_catalog
from meshcert.toolchain import components, paths
catalog = load_catalog()
print(json.dumps({
    "package": str(paths.PACKAGE), "source_tree": str(paths.source_tree()), "suite": str(paths.suite_root()),
    "catalog": str(default_path()), "clauses": len(catalog),
    "drift": drift(catalog, collect_clause_tests()),
    "tools": {n: [str(c.module_dir), c.version] for n, c in components.COMPONENTS.items()},
    "charts": str(paths.charts_dir()),
}))
"""


def _run(cmd: list[str], cwd: Path, env: dict, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode in ok, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A fresh venv with meshcert installed from a wheel of this checkout; returns its bin dir,
    a working directory outside the checkout and the environment to run in."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"  # a copy: setuptools' build/ and egg-info stay out of the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info", ".venv", ".git", ".tox",
                                    "reports", ".hypothesis", ".benchmarks")
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(SRC / name, src / name)
    for name in ("meshcert", "conformance", "scenarios"):
        shutil.copytree(SRC / name, src / name, ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MESHCERT_CLAUSES", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "--disable-pip-version-check", str(src), "-w", str(tmp / "dist")], tmp, env)
    wheel = next((tmp / "dist").glob("meshcert-*.whl"))
    venv.EnvBuilder(with_pip=False).create(tmp / "venv")
    py = tmp / "venv" / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
          "--disable-pip-version-check", str(wheel)], tmp, env)
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        tmp, env).stdout.strip())
    (purelib / "_meshcert_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return {"bin": py.parent, "purelib": purelib, "cwd": elsewhere, "env": env}


def test_the_installed_package_finds_catalog_tools_charts_and_suite_without_the_checkout(installed):
    r = _run([str(installed["bin"] / "python"), "-c", PROBE], installed["cwd"], installed["env"])
    got = json.loads(r.stdout)
    pkg = installed["purelib"] / "meshcert"
    assert got["package"] == str(pkg), f"meshcert imported from {got['package']}, not the installed wheel"
    assert got["source_tree"] == "None", "an installed meshcert must not think it runs from a checkout"
    assert got["suite"] == str(pkg / "suite")
    assert got["catalog"] == str(pkg / "report" / "clauses.yaml") and got["clauses"] > 0
    # the installed suite's node ids (relative to meshcert/suite) are the ones the catalog lists
    assert got["drift"] == [], "installed catalog and installed suite disagree:\n" + "\n".join(got["drift"])
    for name, (module_dir, version) in got["tools"].items():
        assert module_dir == str(pkg / "toolchain" / "tools" / name), name
        assert version.startswith("v"), f"{name}: no pinned version read from the installed go.mod ({version})"
        assert (Path(module_dir) / "go.sum").is_file(), f"{name}: go.sum not installed"
    if (SRC / "meshcert" / "k8s" / "charts").is_dir():  # the chart move (issue 11, helper C) has landed
        charts = Path(got["charts"])
        assert charts == pkg / "k8s" / "charts", got["charts"]
        shipped = {str(p.relative_to(SRC / "meshcert" / "k8s" / "charts"))
                   for p in (SRC / "meshcert" / "k8s" / "charts").rglob("*") if p.is_file()}
        missing = sorted(f for f in shipped if not (charts / f).is_file())
        assert not missing, f"chart files not in the wheel: {missing}"


def test_the_installed_command_runs_from_another_directory(installed):
    meshcert = str(installed["bin"] / "meshcert")
    out = _run([meshcert, "clauses"], installed["cwd"], installed["env"]).stdout
    catalog = _run([str(installed["bin"] / "python"), "-c",
                    "from meshcert.report.catalog import load_catalog; print(len(load_catalog()))"],
                   installed["cwd"], installed["env"]).stdout
    assert len(out.splitlines()) == int(catalog) > 0
    assert "certify" in _run([meshcert, "certify", "--help"], installed["cwd"], installed["env"]).stdout


def test_the_installed_suite_collects_with_the_catalogs_node_ids(installed):
    suite = installed["purelib"] / "meshcert" / "suite"
    # engine-free: collection asks the engine only whether kind can run (it cannot reach this socket)
    env = {**installed["env"], "DOCKER_HOST": f"unix://{installed['cwd']}/no-engine.sock"}
    # exit 5: meshcert's plugin says "no test ran" after a collection, as after an all-skipped run
    r = _run([str(installed["bin"] / "python"), "-m", "pytest", "--collect-only", "-q", str(suite / "conformance"),
              str(suite / "scenarios")], installed["cwd"], env, ok=(0, 5))
    ids = [line for line in r.stdout.splitlines() if "::" in line]
    assert ids and all(i.startswith(("conformance/test_", "scenarios/test_")) for i in ids), r.stdout[-2000:]
    assert not (suite / ".pytest_cache").exists()


def test_the_installed_suite_has_the_checkouts_pytest_settings():
    """meshcert/suite/pytest.ini (the installed suite's) says what pyproject.toml's says, bar testpaths."""
    want = dict(tomllib.loads((SRC / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"])
    ini = configparser.ConfigParser()
    ini.read(SRC / "meshcert" / "suite" / "pytest.ini")
    got = dict(ini["pytest"])
    want.pop("testpaths"), got.pop("testpaths")
    assert got == {k: str(v) for k, v in want.items()}
