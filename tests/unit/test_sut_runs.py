"""The reference SUT's run lifecycle (issue 13) against a fake Vault on loopback: what it asks
Vault for, that a run's end revokes it, and that no credential reaches an answer, the
transcript or the log. (The real Vault, sshd and PostgreSQL: tests/engine/test_vault_world.py.)"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("meshcert_runtime_runs_under_test",
                                              ROOT / "meshcert" / "sut" / "reference" / "runtime.py")
rt = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = rt
spec.loader.exec_module(rt)

pytestmark = pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="needs OpenSSH's ssh-keygen")


@pytest.fixture(autouse=True)
def _runs_keep_their_keys_in_tmp_path(tmp_path, monkeypatch):
    """The runtime's run folders (a run's SSH private key; a mutant or a run never ended keeps
    it) go to the test's tmp_path, not the machine's /tmp: 329 were left there."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

LOGIN_TOKEN = "hvs.CAESIloginTOKENabcdefghijklmnopqrstuvwx"
RUN_TOKEN = "hvs.CAESIrunTOKEN0123456789abcdefghijklmnop"
DB_PASSWORD = "A1a-dbPASSWORDsecret987"
SECRET_ID = "5f1d7a2e-secret-id-0f9e8d7c6b5a"
SA_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bnM6YWdlbnQifQ.c2lnbmF0dXJlLW9mLXRoZS1qd3Q"


class FakeVault(BaseHTTPRequestHandler):
    calls: list = []
    ca_key = ""

    def log_message(self, *a):
        pass

    def do_POST(self):
        self._handle("POST")

    def do_GET(self):
        self._handle("GET")

    def _handle(self, method):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        token = self.headers.get("X-Vault-Token", "")
        FakeVault.calls.append((method, self.path, body, token))
        p = self.path
        if p == "/v1/auth/approle/login" and body.get("secret_id") == SECRET_ID:
            ans = {"auth": {"client_token": LOGIN_TOKEN}}
        elif p == "/v1/auth/kubernetes/login" and body.get("role") != "agent":
            data = json.dumps({"errors": [f"invalid role name \"{body.get('role')}\""]}).encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        elif p == "/v1/auth/kubernetes/login" and body.get("jwt") == SA_JWT:
            ans = {"auth": {"client_token": LOGIN_TOKEN, "metadata": {"role": "agent"}}}
        elif p == "/v1/auth/token/create" and token == LOGIN_TOKEN:
            ans = {"auth": {"client_token": RUN_TOKEN}}
        elif p == "/v1/ssh/sign/run" and token == RUN_TOKEN:
            d = Path(FakeVault.ca_key).parent
            (d / "user.pub").write_text(body["public_key"] + "\n")
            subprocess.run(["ssh-keygen", "-q", "-s", FakeVault.ca_key, "-I", "run", "-n", "agent", "-V", "+1m",
                            str(d / "user.pub")], check=True)
            ans = {"data": {"signed_key": (d / "user-cert.pub").read_text(), "serial_number": "0"}}
        elif p == "/v1/database/creds/run" and token == RUN_TOKEN:
            ans = {"data": {"username": "v-run-abc", "password": DB_PASSWORD}, "lease_id": "database/creds/run/x"}
        elif p == "/v1/auth/token/revoke-self" and token == LOGIN_TOKEN:
            self.send_response(204)
            self.end_headers()
            return
        else:
            data = json.dumps({"errors": ["permission denied"]}).encode()
            self.send_response(403)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        data = json.dumps(ans).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def vault(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca")], check=True)
    FakeVault.ca_key = str(tmp_path / "ca")
    FakeVault.calls = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeVault)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    (tmp_path / "role-id").write_text("role-123")
    (tmp_path / "secret-id").write_text(SECRET_ID)
    yield f"http://127.0.0.1:{srv.server_address[1]}", tmp_path
    srv.shutdown()


def _runtime(addr, d):
    log = io.StringIO()
    r = rt.Runtime(env={"VAULT_ADDR": addr, "VAULT_ROLE_ID_FILE": str(d / "role-id"),
                        "VAULT_SECRET_ID_FILE": str(d / "secret-id"), "TS_SOCKET": str(d / "none.sock")},
                   log_stream=log)
    return r, log


def test_a_run_obtains_its_credentials_uses_them_and_revokes_them_at_its_end(vault):
    addr, d = vault
    r, log = _runtime(addr, d)
    code, ans = r.run_start({"run": "r1", "length_s": 30})
    assert code == 200 and ans["ok"] is True, ans
    assert ans["ttl_s"] == 30 + rt.RUN_TTL_MARGIN_S
    paths = [c[1] for c in FakeVault.calls]
    assert paths == ["/v1/auth/approle/login", "/v1/auth/token/create", "/v1/ssh/sign/run", "/v1/database/creds/run"]
    create = FakeVault.calls[1][2]
    assert create["ttl"] == create["explicit_max_ttl"] == f"{int(30 + rt.RUN_TTL_MARGIN_S)}s"
    assert FakeVault.calls[2][2]["ttl"] == create["ttl"] and FakeVault.calls[2][2]["valid_principals"] == "agent"
    run = r.runs.runs["r1"]
    assert Path(run.key + "-cert.pub").exists()
    # a tool call whose target does not answer: a result, not a crash
    code, res = r.run_exec({"run": "r1", "host": "127.0.0.1", "command": "true", "timeout_s": 2})
    assert code == 200 and res["ok"] is False
    code, end = r.run_end({"run": "r1"})
    assert code == 200 and end["ok"] is True
    assert FakeVault.calls[-1][1] == "/v1/auth/token/revoke-self" and FakeVault.calls[-1][3] == LOGIN_TOKEN
    assert not Path(run.key).exists() and not Path(run.dir).exists()
    with pytest.raises(rt.BadRequest):  # an ended run has no tools any more
        r.run_exec({"run": "r1", "host": "127.0.0.1", "command": "true"})
    shown = json.dumps([ans, res, end, r.transcript()]) + log.getvalue()
    for secret in (LOGIN_TOKEN, RUN_TOKEN, DB_PASSWORD, SECRET_ID, "PRIVATE KEY"):
        assert secret not in shown


def test_a_run_start_without_vault_says_so_and_holds_nothing(vault):
    _, d = vault
    r, _ = _runtime("http://127.0.0.1:9", d)  # nothing listens on the discard port
    code, ans = r.run_start({"run": "r2", "length_s": 10, "deadline_s": 2})
    assert code == 200 and ans["ok"] is False and "did not answer" in ans["error"]
    assert r.runs.runs["r2"].ended
    assert any("no credentials" in e["text"] for e in r.transcript()["entries"])


def test_bad_run_input_gets_one_clear_error(vault):
    addr, d = vault
    r, _ = _runtime(addr, d)
    for body, field in (({"length_s": 5}, "run"), ({"run": "x y"}, "run"),
                        ({"run": "r3", "length_s": 10_000}, "length_s")):
        with pytest.raises(rt.BadRequest) as e:
            r.run_start(body)
        assert e.value.field == field
    with pytest.raises(rt.BadRequest):
        r.run_exec({"run": "never", "host": "h", "command": "true"})


# ------------------------------------------------------------------ Kubernetes auth (VAULT_AUTH=kubernetes)
def _k8s_runtime(addr, d, **env):
    (d / "sa-token").write_text(SA_JWT + "\n")
    log = io.StringIO()
    base = {"VAULT_ADDR": addr, "VAULT_AUTH": "kubernetes", "VAULT_K8S_ROLE": "agent",
            "VAULT_K8S_TOKEN_FILE": str(d / "sa-token"), "TS_SOCKET": str(d / "none.sock")}
    return rt.Runtime(env={k: v for k, v in {**base, **env}.items() if v is not None}, log_stream=log), log


def test_a_run_logs_in_with_the_pods_service_account_token_when_told(vault):
    addr, d = vault
    r, log = _k8s_runtime(addr, d)
    code, ans = r.run_start({"run": "k1", "length_s": 30})
    assert code == 200 and ans["ok"] is True, ans
    assert _paths() == ["/v1/auth/kubernetes/login", "/v1/auth/token/create", "/v1/ssh/sign/run",
                        "/v1/database/creds/run"]
    assert FakeVault.calls[0][2] == {"role": "agent", "jwt": SA_JWT}  # the file's token, its newline stripped
    code, end = r.run_end({"run": "k1"})
    assert end["ok"] is True and FakeVault.calls[-1][1:4:2] == ("/v1/auth/token/revoke-self", LOGIN_TOKEN)
    shown = json.dumps([ans, end, r.transcript()]) + log.getvalue()
    assert SA_JWT not in shown and SA_JWT[-20:] not in shown


@pytest.mark.parametrize("env, cause", [
    ({"VAULT_K8S_ROLE": "nope"}, "kubernetes login to Vault as role 'nope' failed: Vault POST "
                                 "/v1/auth/kubernetes/login answered HTTP 400: invalid role name \"nope\""),
    ({"VAULT_K8S_ROLE": None}, "VAULT_AUTH is kubernetes but VAULT_K8S_ROLE (the Vault role to log in as) is not set"),
    ({"VAULT_K8S_TOKEN_FILE": "/nonexistent/token"}, "no service-account token: VAULT_K8S_TOKEN_FILE "
                                                     "/nonexistent/token cannot be read"),
    ({"VAULT_AUTH": "ldap"}, "VAULT_AUTH 'ldap' is not one of approle, kubernetes"),
])
def test_a_kubernetes_login_that_cannot_happen_is_one_error_naming_its_cause(vault, env, cause):
    addr, d = vault
    r, log = _k8s_runtime(addr, d, **env)
    code, ans = r.run_start({"run": "k2", "length_s": 10, "deadline_s": 3})
    assert code == 200 and ans["ok"] is False and cause in ans["error"] and "\n" not in ans["error"], ans
    assert r.runs.runs["k2"].ended and "/v1/auth/token/create" not in _paths()
    assert SA_JWT not in json.dumps([ans, r.transcript()]) + log.getvalue()


# ------------------------------------------------------------------ the run lifecycle's mutants
def _paths():
    return [c[1] for c in FakeVault.calls]


def _run(addr, d, mutant, run="m1", length=30):
    r, log = _runtime(addr, d)
    r.mutant = mutant  # as SUT_MUTANT would set it
    code, ans = r.run_start({"run": run, "length_s": length})
    assert code == 200 and ans["ok"] is True, ans
    return r, log


def _revoked_at_end(addr, d, mutant):
    r, _ = _run(addr, d, mutant)
    r.run_end({"run": "m1"})
    return "/v1/auth/token/revoke-self" in _paths()


def _served_after_end(addr, d, mutant):
    r, _ = _run(addr, d, mutant)
    r.run_end({"run": "m1"})
    try:
        r.run_exec({"run": "m1", "host": "127.0.0.1", "command": "true", "timeout_s": 1})
        return True
    except rt.BadRequest:
        return False


def _ttl_asked(addr, d, mutant):
    _run(addr, d, mutant)
    return [c[2]["ttl"] for c in FakeVault.calls if c[1] in ("/v1/auth/token/create", "/v1/ssh/sign/run")]


def _signings_for_two_runs(addr, d, mutant):
    r, _ = _run(addr, d, mutant)
    r.run_end({"run": "m1"})
    r.run_start({"run": "m2", "length_s": 30})
    return _paths().count("/v1/ssh/sign/run")


def _password_in_tool_result(addr, d, mutant):
    r, _ = _run(addr, d, mutant)
    _, res = r.run_query({"run": "m1", "host": "127.0.0.1", "sql": "SELECT 1", "timeout_s": 1})
    return DB_PASSWORD in json.dumps(r.redact(res))  # as the HTTP handler answers it


def _principal_asked(addr, d, mutant):
    _run(addr, d, mutant)
    return [c[2]["valid_principals"] for c in FakeVault.calls if c[1] == "/v1/ssh/sign/run"]


def _start_without_vault(addr, d, mutant):
    r, _ = _runtime("http://127.0.0.1:9", d)  # nothing listens on the discard port
    r.mutant = mutant
    code, ans = r.run_start({"run": "m1", "length_s": 10, "deadline_s": 1})
    return ans["ok"]


def _vault_timeout(addr, d, mutant):
    """Whether every Vault call of a run start waits at most RUN_START_MAX_S (its deadline's cap;
    a failed start's revocation gets as much)."""
    r, _ = _runtime(addr, d)
    r.mutant = mutant
    seen = []
    real = rt.urllib.request.urlopen

    def spy(req, timeout=None, context=None):
        seen.append(timeout)
        return real(req, timeout=timeout, context=context)
    rt.urllib.request.urlopen = spy
    try:
        r.run_start({"run": "m1", "length_s": 10, "deadline_s": 5})
    finally:
        rt.urllib.request.urlopen = real
    return bool(seen) and max(seen) <= rt.RUN_START_MAX_S


RUN_MUTANT_CASES = {
    "run-start-no-deadline": (_vault_timeout, True, False),
    "run-start-ok-without-vault": (_start_without_vault, False, True),
    "run-no-revoke": (_revoked_at_end, True, False),
    "run-reuse-after-end": (_served_after_end, False, True),
    "run-long-ttl": (_ttl_asked, [f"{int(30 + rt.RUN_TTL_MARGIN_S)}s"] * 2, ["600s"] * 2),
    "run-shared-creds": (_signings_for_two_runs, 2, 1),
    "run-shows-password": (_password_in_tool_result, False, True),
    "run-signs-wrong-principal": (_principal_asked, ["agent"], ["operator"]),
}


def test_every_run_mutant_has_a_case():
    assert set(RUN_MUTANT_CASES) == {m for m in rt.MUTANTS if m.startswith("run-")}


@pytest.mark.parametrize("mutant", sorted(RUN_MUTANT_CASES))
def test_run_mutant_differs_from_faithful(vault, mutant):
    addr, d = vault
    observe, faithful, mutated = RUN_MUTANT_CASES[mutant]
    assert observe(addr, d, "") == faithful
    FakeVault.calls = []
    assert observe(addr, d, mutant) == mutated


# ------------------------------------------------------------------ userspace mode: tools through SOCKS5
def _socks5_server():
    """A minimal SOCKS5 proxy on loopback (no auth, CONNECT to an IPv4 address); what it was asked."""
    seen = []

    class H(socketserver.BaseRequestHandler):
        def handle(self):
            c = self.request
            c.recv(3)
            c.sendall(b"\x05\x00")
            head = c.recv(4)
            ip = socket.inet_ntoa(c.recv(4))
            port = int.from_bytes(c.recv(2), "big")
            seen.append((ip, port))
            assert head[:2] == b"\x05\x01"
            try:
                up = socket.create_connection((ip, port), timeout=2)
            except OSError:
                c.sendall(b"\x05\x05\x00\x01" + bytes(6))
                return
            c.sendall(b"\x05\x00\x00\x01" + bytes(6))
            pipes = [threading.Thread(target=rt.Relay._pipe, args=(a, b), daemon=True) for a, b in ((c, up), (up, c))]
            for t in pipes:
                t.start()
            for t in pipes:  # the request socket is closed when handle() returns
                t.join(5)

    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, seen


def test_in_userspace_mode_a_tool_reaches_its_target_through_the_socks5_proxy(vault):
    srv, seen = _socks5_server()
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(1)

    def greet():
        c, _ = target.accept()
        c.sendall(b"SSH-2.0-meshcert-target\r\n")
        c.close()
    threading.Thread(target=greet, daemon=True).start()
    relay = rt.Relay(srv.server_address, "127.0.0.1", target.getsockname()[1], 3)
    with socket.create_connection(("127.0.0.1", relay.port), timeout=3) as c:
        assert c.recv(100).startswith(b"SSH-2.0-meshcert-target")
    relay.close()
    assert seen == [("127.0.0.1", target.getsockname()[1])]
    # a target the proxy cannot reach: the tool fails and its result names the mesh path's error
    addr, d = vault
    r, _ = _runtime(addr, d)
    r.proxy = srv.server_address
    code, ans = r.run_start({"run": "p1", "length_s": 30})
    assert ans["ok"] is True
    code, res = r.run_exec({"run": "p1", "host": "127.0.0.1", "command": "true", "timeout_s": 3})
    assert res["ok"] is False and "(mesh path: 127.0.0.1:22: connection refused" in res["stderr"], res
    assert seen[-1] == ("127.0.0.1", 22)
    srv.shutdown()
