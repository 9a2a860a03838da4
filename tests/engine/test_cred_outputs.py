"""CRED-1's meshcert half on a real world: when a SUT leaks a part of its key (a mutant), the
clause catches it, and nothing meshcert itself writes about it -- the failure message, the
container logs it saves, a report carrying the failure -- holds any of the key. (Every session
also scans its whole report folder at its end: meshcert.plugin.pytest_sessionfinish_no_secret_in_outputs.)"""

import pytest

from meshcert.checks import ClauseFailure, sut
from meshcert.report.catalog import load_catalog
from meshcert.report.render import write_report
from meshcert.secrets import leaks, scan_files

pytestmark = [pytest.mark.engine]


@pytest.mark.parametrize("mutant", ["leak-key-tail", "leak-key-altered"])
def test_meshcert_writes_nothing_of_a_key_the_sut_leaks_in_part(steady_world, tmp_path, mutant):
    key = steady_world.pod_key("agent")
    steady_world.start_sut("agent", mutant=mutant)
    with pytest.raises(ClauseFailure) as ei:
        sut.cred1_auth_key_never_shown(steady_world)
    assert leaks(steady_world.raw_logs("agent-sut"), key), "the SUT's own log holds a part of the key"
    assert key not in steady_world.raw_logs("agent-sut"), "but not the whole key (the old check's blind spot)"
    message = str(ei.value)
    assert leaks(message, key) == []
    results = {"finished": 0, "clauses": {"CRED-1": {"outcome": "failed", "tests": [
        {"test": "conformance/test_credentials.py::x", "outcome": "failed", "duration_s": 1.0, "message": message}]}}}
    write_report(tmp_path / "report", results, load_catalog())
    steady_world.save_logs(tmp_path / "logs")
    assert scan_files([ei.value.logs, tmp_path], [key]) == {}, "meshcert's own outputs hold nothing of the key"
