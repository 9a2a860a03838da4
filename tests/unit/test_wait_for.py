"""wait_for's "observed" is what was observed (engine-free): the last HTTP status, connection
error or state the wait saw, its describe() read at the timeout, container logs labelled as
such -- never something else. And a SUT that never serves /healthz is one SutNotTestable line
naming the pod, the port, what /healthz answered, the container's state and its command."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest
import requests

from meshcert.world.base import WorldError, brief_error, container_state, http_state, log_tail, wait_for


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: a connect is refused
    return port


@pytest.fixture
def http_503():
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503)
            self.end_headers()

        def log_message(self, *a):
            pass
    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _timeout_message(*args, **kw) -> str:
    with pytest.raises(WorldError) as ei:
        wait_for(*args, **kw)
    return str(ei.value)


def test_a_refused_connection_is_observed_as_connection_refused():
    url = f"http://127.0.0.1:{_closed_port()}/healthz"
    s = requests.Session()
    s.trust_env = False
    msg = _timeout_message("the thing", lambda: s.get(url, timeout=1).ok, 0.3, interval=0.05)
    assert msg.startswith("world: timed out after 0s waiting for the thing; observed: last check failed: "
                          "connection refused"), msg


def test_an_http_status_is_observed_as_that_status(http_503):
    assert http_state(http_503 + "/health") == "HTTP 503"
    msg = _timeout_message("health", lambda: False, 0.2, interval=0.05,
                           describe=lambda: f"GET /health: {http_state(http_503 + '/health')}")
    assert msg.endswith("observed: GET /health: HTTP 503"), msg


def test_describe_is_read_at_the_timeout_and_a_failing_describe_is_said_so():
    calls = []
    msg = _timeout_message("x", lambda: None, 0.2, interval=0.05, describe=lambda: calls.append(1) or "state 7")
    assert msg.endswith("observed: state 7") and len(calls) == 1, msg

    def broken():
        raise ConnectionRefusedError(111, "Connection refused")

    def fails():
        raise ValueError("the value is not ready")
    msg = _timeout_message("x", fails, 0.2, interval=0.05, describe=broken)
    assert "(could not read the state: connection refused)" in msg
    assert "last check failed: ValueError: the value is not ready" in msg


def test_without_describe_the_last_value_is_reported():
    msg = _timeout_message("x", lambda: 0, 0.1, interval=0.05)
    assert msg.endswith("observed: the check last returned 0"), msg
    msg = _timeout_message("x", lambda: {}, 0.1, interval=0.05)
    assert msg.endswith("observed: the check last returned {}"), msg


def test_the_observation_is_redacted():
    key = "hskey-auth-Zm9vYmFyYmF6cXV4MTIz"
    msg = _timeout_message("x", lambda: None, 0.1, interval=0.05, describe=lambda: f"saw {key}")
    assert key not in msg and "«redacted»" in msg


def test_brief_error_finds_the_root_of_a_requests_error():
    port = _closed_port()
    s = requests.Session()
    s.trust_env = False
    with pytest.raises(requests.ConnectionError) as ei:
        s.get(f"http://127.0.0.1:{port}/", timeout=1)
    assert brief_error(ei.value) == "connection refused"
    assert brief_error(requests.ReadTimeout("read timed out")) == "timed out"
    assert brief_error(RuntimeError("first line\nsecond line")) == "RuntimeError: first line"


class _Container:
    def __init__(self, status="exited", code=1, config=None):
        self.attrs = {"State": {"Status": status, "ExitCode": code}, "Config": config or {}}

    def reload(self):
        pass


class _Box:
    def __init__(self, log: str, **kw):
        self.name = "mc-x-agent-sut"
        self.container = _Container(**kw)
        self._log = log

    def logs(self) -> str:
        return self._log


USAGE = ("tini (tini version 0.19.0)\nUsage: tini [OPTIONS] PROGRAM -- [ARGS] | --version\n\n"
         "  -v: Generate more verbose output. Repeat up to 3 times.\n")


def test_container_state_labels_the_log_as_the_containers_log():
    text = container_state(_Box(USAGE), lines=2)
    assert text.startswith("container mc-x-agent-sut exited with code 1; last 2 log line(s): "), text
    assert "Repeat up to 3 times." in text  # shown as its log, after the state, never as the state
    assert log_tail("a\n\nb\nc\n", 2) == ["b", "c"]
    assert log_tail("2026-12-01T15:25:09.069040956Z   -l: Show license\n2026-12-01T15:25:09.06904Z\n") == \
        ["  -l: Show license"]
    assert log_tail("x" * 300, 1, width=10) == ["x" * 10 + " …"]


# ------------------------------------------------------------------ the SUT that never serves /healthz

class _Client:
    def __init__(self, states, transcript_error: str | None = None):
        self.states = list(states)
        self.transcript_error = transcript_error

    def health_state(self) -> str:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def transcript(self) -> list:
        if self.transcript_error:
            from meshcert.errors import InputError
            raise InputError("SUT GET /transcript", self.transcript_error, "")
        return []


def test_a_sut_whose_container_exits_is_not_testable_at_once_naming_pod_port_command_and_log():
    import time

    from meshcert.sut.client import SutNotTestable, wait_serving
    box = _Box(USAGE, config={"Entrypoint": ["/usr/bin/tini", "-s", "-g", "--"], "Cmd": None})
    t0 = time.monotonic()
    with pytest.raises(SutNotTestable) as ei:
        wait_serving(_Client(["connection refused"]), box, "agent", 8080, "meshcert/host:abc", timeout=30)
    assert time.monotonic() - t0 < 5, "an exited container must end the wait at once"
    line = ei.value.one_line()
    assert "\n" not in line
    for needle in ("SUT in pod agent", "GET /healthz on port 8080", "last: connection refused",
                   "exited with code 1", "meshcert/host:abc", "ENTRYPOINT `/usr/bin/tini -s -g --`, no CMD"):
        assert needle in line, (needle, line)
    assert "verbose output" not in line  # the usage text is the log below, not the observation
    assert ei.value.log[-1] == "  -v: Generate more verbose output. Repeat up to 3 times."
    assert ei.value.to_data() == {"reason": line, "log": ei.value.log}


def test_a_running_sut_that_never_answers_200_times_out_with_the_last_status():
    from meshcert.sut.client import SutNotTestable, wait_serving
    box = _Box("", status="running", code=0, config={"Cmd": ["python3", "/srv/app.py"]})
    with pytest.raises(SutNotTestable) as ei:
        wait_serving(_Client(["connection refused", "HTTP 404"]), box, "agent-us", 9000, "me/app:1",
                     timeout=0.3, interval=0.05)
    line = ei.value.one_line()
    assert "never answered GET /healthz on port 9000 within 0 s (last: HTTP 404)" in line, line
    assert "its container still running" in line and "no ENTRYPOINT" not in line
    assert "CMD `python3 /srv/app.py`" in line and "its log is empty" in line


def test_a_sut_that_answers_200_is_served():
    from meshcert.sut.client import wait_serving
    wait_serving(_Client(["connection refused", "HTTP 200"]), _Box("", status="running"), "agent", 8080, "i",
                 timeout=5, interval=0.01)


def test_a_sut_serving_healthz_but_answering_garbage_is_not_testable_at_once():
    """/healthz 200 and GET /transcript not JSON: said once when the world starts the SUT, as
    not testable (every worker stops), naming the pod and what it answered."""
    from meshcert.sut.client import SutNotTestable, wait_serving
    with pytest.raises(SutNotTestable) as e:
        wait_serving(_Client(["HTTP 200"], "answered HTTP 200 with non-JSON: '<html>garbage</html>'"),
                     _Box("", status="running"), "agent", 8080, "i", timeout=5, interval=0.01)
    line = e.value.one_line()
    assert line.startswith("SUT in pod agent:") and "non-JSON" in line and "README: The SUT contract" in line, line


class _Clock:
    """time.monotonic and time.sleep for wait_for, on a clock that moves only when told."""
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def monotonic(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(round(s, 3))
        self.now += s


def _paced(monkeypatch, cost: float, timeout: float, interval: float = 0.2) -> list[float]:
    import meshcert.world.base as base
    clock = _Clock()
    monkeypatch.setattr(base, "time", clock)

    def check():
        clock.now += cost  # the check itself takes this long
        return False
    with pytest.raises(WorldError):
        wait_for("x", check, timeout, interval=interval)
    return clock.sleeps


def test_a_cheap_check_is_repeated_every_interval(monkeypatch):
    assert set(_paced(monkeypatch, cost=0.01, timeout=2)[:-1]) == {0.2}


def test_a_costly_check_pauses_four_times_its_cost(monkeypatch):
    # e.g. `docker exec <kind node> kubectl get`: its CPU is spent in processes it starts
    sleeps = _paced(monkeypatch, cost=0.15, timeout=10)
    assert set(sleeps[:-1]) == {0.6}


def test_the_pause_is_capped_and_never_passes_the_deadline(monkeypatch):
    sleeps = _paced(monkeypatch, cost=1.5, timeout=5)  # a dial timing out: 1 s more, not 6 s
    assert sleeps[0] == 1.0 and all(s <= 1.0 for s in sleeps)
    # the last pause ends at the deadline, where the check runs once more
    assert _paced(monkeypatch, cost=0.01, timeout=0.5, interval=0.4) == [0.4, 0.08]


def test_a_longer_interval_than_the_cap_is_kept(monkeypatch):
    assert set(_paced(monkeypatch, cost=0.1, timeout=10, interval=2)[:-1]) == {2.0}
