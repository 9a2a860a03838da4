"""meshcert's plugin under pytest-xdist (`meshcert test -n N`), without an engine: the same
tree run serially and with two workers gives the same clause verdicts, report sections, exit
status and CRED-1 finding; each worker's world gets a VLAN of its own; conformance/ and
scenarios/ stay one work unit each; `meshcert test` adds -n unless told otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from meshcert.cli import CERTIFY_WORKERS, TEST_WORKERS, parallel_args
from meshcert.errors import InputError
from meshcert.plugin import parallel

TREE = {
    "test_a.py": '''
        import pytest

        @pytest.mark.clause("ACL-1")
        def test_passes():
            pass

        @pytest.mark.clause("ACL-2")
        def test_fails():
            assert False, "ACL-2 observed a denial that should connect"

        @pytest.mark.clause("ACL-1")
        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_more(n):
            pass
    ''',
    "test_b.py": '''
        import pytest

        @pytest.mark.clause("ROUTE-2")
        def test_skipped():
            pytest.skip("not here")

        @pytest.mark.clause("ROUTE-1")
        def test_adds_sections(report_extra):
            report_extra.setdefault("scenarios", {})["one"] = {"figures": {"x": 1}}
            report_extra["latency"] = [1, 2]

        def test_adds_another(report_extra):
            report_extra.setdefault("scenarios", {})["two"] = {"figures": {"y": 2}}

        @pytest.mark.kind
        @pytest.mark.clause("HELM-1")
        def test_on_kind():
            pass
    ''',
}


def _run(tmp_path, name: str, *args: str, tree: dict[str, str] = TREE) -> tuple[int, str, dict]:
    d = tmp_path / name
    d.mkdir()
    for f, text in tree.items():
        (d / f).write_text(textwrap.dedent(text))
    rd = d / "report"
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--report-dir", str(rd),
                        *args, "."], cwd=d, capture_output=True, text=True, timeout=300)
    results = json.loads((rd / "results.json").read_text()) if (rd / "results.json").exists() else {}
    return p.returncode, p.stdout + p.stderr, results


def _verdicts(results: dict) -> dict:
    return {c: (e["outcome"], sorted((t["test"], t["outcome"], t["message"]) for t in e["tests"]))
            for c, e in results.get("clauses", {}).items()}


def test_two_workers_give_the_serial_runs_verdicts_sections_and_exit(tmp_path):
    rc1, out1, serial = _run(tmp_path, "serial", "-p", "no:xdist")
    rc2, out2, par = _run(tmp_path, "parallel", "-n", "2")
    assert "bringing up nodes" in out2, out2[-1500:]  # xdist's own line: the run had workers
    assert rc1 == rc2 == pytest.ExitCode.TESTS_FAILED, (out1[-800:], out2[-800:])
    assert _verdicts(par) == _verdicts(serial)
    assert _verdicts(par)["ACL-2"][0] == "failed" and _verdicts(par)["ROUTE-2"][0] == "skipped"
    assert "HELM-1" not in par["clauses"]  # kind not used: skipped by choice, no verdict either way
    assert par["extra"] == serial["extra"] == {"scenarios": {"one": {"figures": {"x": 1}}, "two": {"figures": {"y": 2}}},
                                                "latency": [1, 2]}
    for name in ("report.md", "report.html"):  # the controller wrote the report, with every clause's row
        assert (tmp_path / "parallel" / "report" / name).is_file()
    md = (tmp_path / "parallel" / "report" / "report.md").read_text()
    assert md.count("| ACL-2 |") == (tmp_path / "serial" / "report" / "report.md").read_text().count("| ACL-2 |")


def test_an_all_skipped_parallel_run_exits_5_as_a_serial_one(tmp_path):
    tree = {"test_s.py": "import pytest\n\n@pytest.mark.parametrize('n', [1, 2, 3])\n"
                         "def test_x(n):\n    pytest.skip('no')\n"}
    rc1, out1, _ = _run(tmp_path, "serial", "-p", "no:xdist", tree=tree)
    rc2, out2, _ = _run(tmp_path, "parallel", "-n", "2", tree=tree)
    assert rc1 == rc2 == pytest.ExitCode.NO_TESTS_COLLECTED, (out1[-800:], out2[-800:])


def test_a_mark_the_catalog_cannot_take_fails_a_parallel_run_as_a_serial_one(tmp_path):
    tree = {"test_u.py": "import pytest\n\n@pytest.mark.clause('NOPE-9')\ndef test_x():\n    pass\n"}
    rc1, out1, _ = _run(tmp_path, "serial", "-p", "no:xdist", tree=tree)
    rc2, out2, _ = _run(tmp_path, "parallel", "-n", "2", tree=tree)
    assert rc1 != 0 and rc2 != 0
    for out in (out1, out2):
        assert "NOPE-9" in out and "clause marks the catalog" in out, out[-1500:]
        assert " passed" not in out


def test_a_secret_a_worker_made_is_found_in_the_report_by_the_controller(tmp_path):
    """CRED-1's scan runs in the controller, which writes the report: it knows the secrets each
    worker's worlds registered (handed over at the worker's end) and finds one in a saved log."""
    secret = "hskey-auth-abcdefghijkl-" + "s3cr3tV4lue" * 6
    tree = {"test_k.py": f'''
        from meshcert.secrets import register

        def test_writes_a_log(report_dir):
            register({secret!r})
            (report_dir / "logs").mkdir(exist_ok=True)
            (report_dir / "logs" / "node.log").write_text("joined with " + {secret[-20:]!r} + "\\n")
    '''}
    for name, args in (("serial", ("-p", "no:xdist")), ("parallel", ("-n", "2"))):
        rc, out, results = _run(tmp_path, name, *args, tree=tree)
        assert rc == pytest.ExitCode.TESTS_FAILED, (name, out[-1500:])
        assert results["clauses"]["CRED-1"]["outcome"] == "failed", name
        assert secret[-20:] not in (tmp_path / name / "report" / "logs" / "node.log").read_text()  # masked


def test_an_input_error_stops_a_parallel_run_as_a_serial_one(tmp_path):
    """Bad input (here raised by a test, as a SUT answering garbage does) ends the run: not
    tested, with its one line; the other workers stop too."""
    tree = {"test_i.py": '''
        import pytest
        from meshcert.errors import InputError

        @pytest.mark.clause("ACL-1")
        def test_bad_input():
            raise InputError("the SUT's /connect answer", "not JSON", "answer the contract")

        @pytest.mark.parametrize("n", range(6))
        def test_other(n):
            pass
    '''}
    got = {}
    for name, args in (("serial", ("-p", "no:xdist")), ("parallel", ("-n", "2"))):
        rc, out, results = _run(tmp_path, name, *args, tree=tree)
        got[name] = (rc, results["not_tested"]["reason"], results["input_error"], results["clauses"])
    assert got["parallel"] == got["serial"], got
    assert got["serial"][0] == pytest.ExitCode.INTERRUPTED and "not JSON" in got["serial"][1]
    assert got["serial"][3] == {}  # not recorded as a failed clause


@pytest.mark.parametrize("vlan, worker, want", [
    (None, None, "10.20.5.0/24"),
    (None, "gw0", "10.20.5.0/24"),
    (None, "gw2", "10.20.7.0/24"),
    ("10.20.50.0/24", "gw0", "10.20.50.0/24"),
    ("10.20.50.0/24", "gw3", "10.20.53.0/24"),
    ("10.20.42.0/24", None, "10.20.42.0/24"),
])
def test_each_workers_world_gets_its_own_vlan(vlan, worker, want):
    env = {"MESHCERT_VLAN": vlan} if vlan else {}
    assert parallel.session_vlan(worker, env) == want


def test_a_worker_vlan_beyond_the_private_range_is_refused():
    with pytest.raises(ValueError, match="not a private network"):
        parallel.session_vlan("gw5", {"MESHCERT_VLAN": "10.255.253.0/24"})


def test_conformance_and_scenarios_are_one_unit_each_every_other_test_its_own():
    split = parallel.SharedWorldScheduling._split_scope
    assert split(None, "conformance/test_acl.py::test_a") == split(None, "conformance/test_types.py::test_b[x]")
    assert split(None, "scenarios/test_chaos.py::test_scenario[a]") == split(None, "scenarios/test_x.py::t")
    assert split(None, "conformance/test_acl.py::test_a") != split(None, "scenarios/test_chaos.py::t")
    assert split(None, "tests/engine/test_mutants.py::test_m[a]") != split(None, "tests/engine/test_mutants.py::test_m[b]")
    assert split(None, "../site-packages/meshcert/suite/conformance/test_acl.py::t") == \
        split(None, "conformance/test_acl.py::u")  # the installed suite too
    assert split(None, "tests/unit/test_x.py::t@grp") == split(None, "tests/unit/test_y.py::u@grp")  # xdist_group


def test_conformance_is_three_units_property_pods_and_the_rest():
    split = parallel.SharedWorldScheduling._split_scope
    prop = split(None, "conformance/test_property.py::test_live_acls_and_routes_match_the_oracle")
    pods = split(None, "conformance/test_helm.py::t")
    rest = split(None, "conformance/test_acl.py::test_a")
    assert len({prop, pods, rest}) == 3
    assert pods == split(None, "conformance/test_health.py::t") == split(None, "conformance/test_troubleshooting.py::t")
    assert rest == split(None, "conformance/test_types.py::t") == split(None, "conformance/test_tailnet.py::t[x]")
    assert prop == split(None, "conformance/test_route.py::t") == split(None, "conformance/test_direct.py::t[a]")
    cred = split(None, "conformance/test_credential_runs.py::t")
    assert len({prop, pods, rest, cred}) == 4
    assert prop == split(None, "../site-packages/meshcert/suite/conformance/test_property.py::t")
    assert split(None, "tests/engine/test_property.py::t") != prop  # a file of that name elsewhere is not it


def test_a_run_of_one_unit_gets_no_workers():
    assert parallel_args(["-q", "conformance/test_property.py"], {}) == []
    assert parallel_args(["conformance/test_property.py", "conformance/test_route.py::t"], {}) == []
    assert parallel_args(["conformance/test_property.py", "conformance/test_acl.py"], {}) == ["-n", str(TEST_WORKERS)]
    assert parallel_args(["conformance"], {}) == ["-n", str(TEST_WORKERS)]
    assert parallel_args(["tests/engine/test_mutants.py"], {}) == ["-n", str(TEST_WORKERS)]  # one unit per test there


def test_certify_runs_its_own_worker_count():
    assert parallel_args([], {}, var="MESHCERT_CERTIFY_WORKERS", default=CERTIFY_WORKERS) == ["-n", "4"]
    assert parallel_args([], {"MESHCERT_CERTIFY_WORKERS": "3"}, var="MESHCERT_CERTIFY_WORKERS",
                         default=CERTIFY_WORKERS) == ["-n", "3"]
    assert parallel_args([], {"MESHCERT_CERTIFY_WORKERS": "0", "MESHCERT_TEST_WORKERS": "5"},
                         var="MESHCERT_CERTIFY_WORKERS", default=CERTIFY_WORKERS) == []
    with pytest.raises(InputError, match="MESHCERT_CERTIFY_WORKERS"):
        parallel_args([], {"MESHCERT_CERTIFY_WORKERS": "x"}, var="MESHCERT_CERTIFY_WORKERS", default=2)


@pytest.mark.parametrize("args, env, want", [
    ([], {}, ["-n", str(TEST_WORKERS)]),
    (["-q", "tests"], {"MESHCERT_TEST_WORKERS": "4"}, ["-n", "4"]),
    ([], {"MESHCERT_TEST_WORKERS": "0"}, []),
    ([], {"MESHCERT_TEST_WORKERS": "1"}, []),
    (["-n", "2"], {}, []),
    (["-n2"], {}, []),
    (["--numprocesses=2"], {}, []),
    (["-p", "no:xdist"], {}, []),
    (["--pdb"], {}, []),
    (["--collect-only"], {}, []),
])
def test_meshcert_test_runs_workers_unless_told_otherwise(args, env, want):
    assert parallel_args(args, env) == want


def test_a_bad_worker_count_is_one_clear_line():
    with pytest.raises(InputError, match="MESHCERT_TEST_WORKERS"):
        parallel_args([], {"MESHCERT_TEST_WORKERS": "many"})
