#!/usr/bin/env python3
"""meshcert reference SUT: Legator's connectivity layer, implemented from the guide.

One self-contained file, Python 3.11 standard library only, so it can be copied alone into a
minimal container as /opt/sut/runtime.py and started with ``python3 /opt/sut/runtime.py``.

HTTP/JSON contract (listens on $SUT_HOST:$SUT_PORT, default 0.0.0.0:8080):

  POST /prerun     pre-run health check: sidecar health + concurrent endpoint dials
  POST /connect    open one TCP connection the way the agent's tools would, read a banner
  GET  /transcript everything the runtime would show the LLM
  GET  /healthz    {"ok": true}
  POST /run/start  a run starts: the tool layer obtains its credentials from Vault
  POST /run/exec   an SSH command of the run on a named host; its output comes back
  POST /run/query  an SQL query of the run on a named database host; its rows come back
  POST /run/end    the run ends: what it obtained is revoked

Environment:
  SUT_PORT, SUT_HOST   where to listen
  TS_SOCKET            tailscaled LocalAPI unix socket (default /var/run/tailscale/tailscaled.sock)
  SUT_PROXY            socks5://host:port of a userspace-networking sidecar; mesh-mode dials go
                       through it
  TS_AUTHKEY, TS_AUTHKEY_FILE   the auth key (read only to know it is there; never shown)
  SUT_MUTANT           empty = faithful; otherwise one name of MUTANTS (one deliberate fault)
  VAULT_ADDR, VAULT_CACERT   Vault's address and the CA file its TLS certificate is checked with
  VAULT_AUTH           how the pod logs in to Vault: approle (default) or kubernetes
  VAULT_ROLE_ID_FILE, VAULT_SECRET_ID_FILE   the pod's AppRole (mounted files, as a Secret volume)
  VAULT_K8S_ROLE       kubernetes auth: the Vault role to log in as (required)
  VAULT_K8S_MOUNT      kubernetes auth: the auth method's path (default kubernetes)
  VAULT_K8S_TOKEN_FILE kubernetes auth: the pod's service-account token (default
                       /var/run/secrets/kubernetes.io/serviceaccount/token)
  VAULT_SSH_SIGN_PATH, VAULT_DB_CREDS_PATH   default ssh/sign/run and database/creds/run
  SSH_USER             the account the certificates name (default agent)
The run lifecycle needs the OpenSSH client (ssh, ssh-keygen) and PostgreSQL's psql in the image;
with SUT_PROXY (userspace mode) their connections reach the mesh through a loopback relay over
the sidecar's SOCKS5 proxy (Relay).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Deliberate faults, selected with SUT_MUTANT=<name>. Each is one small branch below, marked
# "# mutant <name>", so the faithful path stays readable.
MUTANTS = {
    "health-socket-exists": "sidecar healthy iff the LocalAPI socket file exists (state never asked)",
    "health-tcp-41112": "sidecar healthy iff TCP 127.0.0.1:41112 accepts (there is no LocalAPI on TCP on Linux)",
    "health-ignores-state": "sidecar healthy whenever the LocalAPI answers, whatever its BackendState",
    "sequential-dials": "endpoints dialled one after another with a fixed 5 s timeout each, deadline_s ignored",
    "no-proxy": "SUT_PROXY ignored: every dial (and a run's ssh and psql) goes straight to the target",
    "sidecar-error-aborts": "a not-ready sidecar is logged as an error and the pre-run aborts (HTTP 503, no dials)",
    "ignore-critical": "unreachable critical endpoints are not told to the agent (agent_context)",
    "noncritical-in-context": "unreachable non-critical endpoints are told to the agent too",
    "leak-authkey": "logs the join command with the auth key in it, and redacts nothing",
    "omitted-is-error": "a null/omitted connectivity is rejected (400) instead of meaning direct",
    "accept-unknown-type": "an unknown connectivity.type is treated as direct instead of rejected (400)",
    "headscale-no-validation": "type headscale accepted without controlServer or authKeySecretRef",
    "tailscale-requires-control": "type tailscale with an empty controlServer is rejected (400)",
    "direct-checks-sidecar": "direct mode checks a sidecar and is not ready when there is none",
    "wrong-port": "every dial goes to port+1 (the wrong service)",
    "headscale-strict-schema": "type headscale rejected when it carries the optional tags/acceptRoutes fields",
    "silent-missing-secret": "a missing auth key Secret is not named: a generic warning, nothing told to the agent",
    "generic-errors": "failed mesh dials are reported as bare timeouts, with no tailnet diagnosis",
    "transcript-shows-credential": "the tool layer's injected credential is written into the transcript",
    "health-dials-control": "sidecar healthy only if the control server accepts a TCP connection (the mesh "
                            "works without it)",
    "localapi-no-timeout": "the LocalAPI is asked with no timeout of its own: a frozen sidecar holds the pre-run",
    "leak-key-tail": "logs the last 12 characters of the auth key (\"key …<tail>\"): the exact key never "
                     "appears",
    "leak-key-altered": "logs a copy of the auth key with one character changed and redacts only exact "
                        "secrets (no key-shaped rule)",
    "context-shows-credential": "the tool layer's injected credential's last 12 characters are told to the "
                                "agent in agent_context",
    "missing-secret-ready": "a missing auth key Secret is warned about and told to the agent, but the pre-run "
                            "still reports the mesh and the sidecar ready",
    "typeless-is-error": "a connectivity object without type ({}) is rejected (400) instead of meaning direct",
    "omitted-probes-sidecar": "an omitted/null connectivity is reported as direct but still probes the sidecar",
    "unknown-type-vague-error": "an unknown connectivity.type is rejected with an error naming the field but not "
                                "the accepted values",
    "headscale-empty-accepted": "type headscale with an empty-string controlServer or authKeySecretRef is accepted "
                                "(only a missing or null one is rejected)",
    "headscale-null-accepted": "type headscale with a null controlServer or authKeySecretRef is accepted (only a "
                               "missing or empty one is rejected)",
    "ready-unless-stopped": "the sidecar counts as ready in every BackendState but Stopped (NeedsLogin, Starting, "
                            "NoState too)",
    "health-41112-fallback": "the sidecar counts as ready when the LocalAPI says Running or, failing that, TCP "
                             "127.0.0.1:41112 accepts",
    "not-ready-skips-dials": "with the sidecar not ready, endpoints are listed unreachable without being dialled",
    "not-ready-fakes-dials": "with the sidecar not ready, endpoints are listed reachable without being dialled",
    "noncritical-blocks-ready": "an unreachable non-critical endpoint makes the pre-run not ready",
    "direct-via-proxy": "direct mode dials through the sidecar's SOCKS5 proxy when SUT_PROXY is set",
    "direct-probes-sidecar": "direct mode probes the sidecar's LocalAPI (sidecar.checked true) and ignores the "
                             "result",
    "double-deadline": "each endpoint dial waits twice its deadline (the deadline applied once per connect "
                       "step)",
    "no-latency": "a reachable endpoint is reported without latency_ms",
    "no-error": "an unreachable endpoint is reported without an error",
    "socks-no-reply": "a SOCKS5 dial counts as connected once the proxy answers the greeting; the CONNECT "
                      "reply is never read (everything looks reachable in userspace mode)",
    "ipv4-only-urls": "endpoint URLs split at the last ':' with no [IPv6] bracket handling",
    "ip-literals-only": "host names are never resolved: only IP literals are dialled (MagicDNS names "
                        "fail)",
    # the run lifecycle (issue 13): judged on a credential world (tests/engine/test_vault_world.py)
    "run-no-revoke": "a run's end forgets its credentials but never revokes them in Vault (the database role "
                     "lives on until its TTL)",
    "run-reuse-after-end": "an ended run keeps its key and certificate and its tools still run",
    "run-long-ttl": "a run's credentials are asked for ten minutes, whatever the run's declared length",
    "run-shared-creds": "every run uses the credentials the first run obtained (one certificate, one "
                        "database role for all)",
    "run-shows-password": "a query's tool result carries its connection string, database password included "
                          "(the password never registered as a secret, so nothing redacts it)",
    "run-signs-wrong-principal": "the run's key is signed for another account Vault allows (operator), not "
                                 "the one the tools log in as",
    "run-start-no-deadline": "Vault is asked with a fixed 60 s timeout: the run start's deadline_s is ignored",
    "run-start-ok-without-vault": "a run start that obtained no credentials still answers ok true, no error",
}

TYPES = ("direct", "headscale", "tailscale")
DEFAULT_PORT = 8080
DEFAULT_SOCKET = "/var/run/tailscale/tailscaled.sock"
LOCALAPI_HOST = "local-tailscaled.sock"
LOCALAPI_TIMEOUT_S = 1.0
# Where a LocalAPI listens on macOS/Windows; on Linux nothing of tailscale's does. Only the mutants
# health-tcp-41112 and health-41112-fallback dial it.
TCP_41112 = ("127.0.0.1", 41112)
LOCALAPI_MAX_BYTES = 32 << 20
DEFAULT_DEADLINE_S = 3.0
MAX_SECONDS = 120.0
SEQUENTIAL_TIMEOUT_S = 5.0  # mutant sequential-dials
JOIN_GRACE_S = 0.25  # how long past the deadline a pre-run waits for a dial thread to report
BANNER_MAX = 256
MAX_BODY = 1 << 20
MAX_ENDPOINTS = 512
MAX_TRANSCRIPT = 10000
REDACTED = "[REDACTED]"
# Things that look like auth keys even when they are not the configured one:
# Tailscale keys (tskey-...), headscale >= 0.26 keys (hskey-...), older headscale keys (48 hex),
# Vault tokens (hvs./hvb./hvr.), JWTs (a service-account token: header.payload.signature), private keys.
KEY_LIKE = re.compile(r"\b(?:tskey|hskey)-[A-Za-z0-9_-]+|\b[0-9a-fA-F]{48}\b|\bhv[sbr]\.[A-Za-z0-9_-]{24,}"
                      r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"
                      r"|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----", re.S)
DEFAULT_PORTS = {"ssh": 22, "http": 80, "https": 443, "postgres": 5432, "postgresql": 5432,
                 "mysql": 3306, "redis": 6379}
SOCKS_REPLIES = {1: "general SOCKS server failure", 2: "connection not allowed by ruleset",
                 3: "network unreachable", 4: "host unreachable", 5: "connection refused",
                 6: "TTL expired", 7: "command not supported", 8: "address type not supported"}


# ----------------------------------------------------------------------------- input parsing

class BadRequest(Exception):
    """An input the caller can fix: becomes HTTP 400 {"error": "<field>: <what was expected>"}."""

    def __init__(self, field: str, message: str, status: int = 400):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


def jtype(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_target(value, field: str) -> tuple[str, int]:
    """'tcp://h:p', 'h:p', 'ssh://h' (default port by scheme), '[::1]:22' -> (host, port)."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(field, f"expected a string like 'tcp://host:port' or 'host:port', got {jtype(value)}")
    text = value.strip()
    if "://" not in text:
        text = "tcp://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise BadRequest(field, f"{value!r} is not a valid host:port ({exc})") from None
    host = parts.hostname
    if not host:
        raise BadRequest(field, f"{value!r} has no host")
    if port is None:
        port = DEFAULT_PORTS.get(parts.scheme.lower())
        if port is None:
            raise BadRequest(field, f"{value!r} has no port (and scheme {parts.scheme!r} has no default port)")
    if not 1 <= port <= 65535:
        raise BadRequest(field, f"{value!r}: port must be 1..65535")
    return host, port


def parse_port(value, field: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise BadRequest(field, f"expected an integer port 1..65535, got {jtype(value)} {value!r}")
    return value


def parse_seconds(value, field: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(field, f"expected a number of seconds, got {jtype(value)}")
    if not math.isfinite(value) or value <= 0 or value > MAX_SECONDS:
        raise BadRequest(field, f"expected seconds in (0, {MAX_SECONDS:g}], got {value!r}")
    return float(value)


def parse_proxy(value: str):
    """SUT_PROXY: '' -> None; 'socks5://host:port', 'socks5h://host:port' or 'host:port' -> (host, port)."""
    value = (value or "").strip()
    if not value:
        return None
    text = value if "://" in value else "socks5://" + value
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"SUT_PROXY {value!r}: {exc}") from None
    if parts.scheme.lower() not in ("socks5", "socks5h"):
        raise ValueError(f"SUT_PROXY {value!r}: only socks5://host:port is supported")
    if parts.username or parts.password:
        raise ValueError(f"SUT_PROXY {value!r}: proxy authentication is not supported")
    if not parts.hostname or not port:
        raise ValueError(f"SUT_PROXY {value!r}: expected socks5://host:port")
    return parts.hostname, port


class Endpoint:
    def __init__(self, name: str, host: str, port: int, critical: bool):
        self.name, self.host, self.port, self.critical = name, host, port, critical

    @property
    def address(self) -> str:
        return hostport(self.host, self.port)


class Spec:
    """A validated spec.connectivity."""

    def __init__(self, type_: str, control_server: str = "", auth_ref: str = "",
                 tags=None, accept_routes=None):
        self.type = type_
        self.control_server = control_server
        self.auth_ref = auth_ref
        self.tags = tags or []
        self.accept_routes = accept_routes

    @property
    def mesh(self) -> bool:
        return self.type != "direct"


def _opt(block: dict, key: str, kind, what: str, field: str):
    value = block.get(key)
    if value is not None and not isinstance(value, kind):
        raise BadRequest(f"{field}.{key}", f"expected {what}, got {jtype(value)}")
    return value


# ----------------------------------------------------------------------------- LocalAPI client

class SidecarError(Exception):
    pass


def _decode_chunked(body: bytes):
    """Decode an HTTP/1.1 chunked body; None if it is not complete yet."""
    out = bytearray()
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(body[pos:eol].split(b";")[0].strip() or b"x", 16)
        except ValueError:
            raise SidecarError("LocalAPI sent a malformed chunked body") from None
        start = eol + 2
        if size == 0:
            return bytes(out)
        if len(body) < start + size + 2:
            return None
        out += body[start:start + size]
        pos = start + size + 2


def _split_response(buf: bytes):
    """(status, headers, body-bytes-so-far) once the header is in, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].decode("iso-8859-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise SidecarError(f"LocalAPI sent a malformed status line {lines[0][:80]!r}") from None
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, buf[end + 4:]


def _body_if_complete(buf: bytes, eof: bool):
    parsed = _split_response(buf)
    if parsed is None:
        if eof:
            raise SidecarError("LocalAPI closed the connection without a complete HTTP response")
        return None
    status, headers, body = parsed
    if "chunked" in headers.get("transfer-encoding", "").lower():
        decoded = _decode_chunked(body)
        if decoded is None and eof:
            raise SidecarError("LocalAPI closed the connection in the middle of its answer")
        return None if decoded is None else (status, decoded)
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        if len(body) >= int(length):
            return status, body[:int(length)]
        if eof:
            raise SidecarError("LocalAPI closed the connection in the middle of its answer")
        return None
    return (status, body) if eof else None


def localapi_get(sock_path: str, path: str, timeout: float):
    """GET <path> from tailscaled's LocalAPI over its unix socket; (status, body bytes).

    The whole exchange (connect, send, receive) is bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    request = (f"GET {path} HTTP/1.1\r\nHost: {LOCALAPI_HOST}\r\nAccept: application/json\r\n"
               f"User-Agent: meshcert-reference-sut\r\nConnection: close\r\n\r\n").encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(sock_path)
        except FileNotFoundError:
            raise SidecarError(f"LocalAPI socket {sock_path} does not exist") from None
        except ConnectionRefusedError:
            raise SidecarError(f"connection refused on LocalAPI socket {sock_path} (tailscaled not listening)") from None
        except PermissionError:
            raise SidecarError(f"permission denied on LocalAPI socket {sock_path}") from None
        sock.sendall(request)
        buf = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError()
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            buf += chunk
            if len(buf) > LOCALAPI_MAX_BYTES:
                raise SidecarError("LocalAPI answer too large")
            done = _body_if_complete(bytes(buf), eof=not chunk)
            if done is not None:
                return done
    except TimeoutError:
        raise SidecarError(f"LocalAPI did not answer within {timeout:g} s") from None
    except SidecarError:
        raise
    except OSError as exc:
        raise SidecarError(f"LocalAPI socket {sock_path}: {exc.strerror or exc}") from None
    finally:
        sock.close()


def query_backend_state(sock_path: str, timeout: float) -> str:
    return query_status(sock_path, timeout)["BackendState"]


def query_status(sock_path: str, timeout: float) -> dict:
    """The LocalAPI's /status document (BackendState, Self, Peer map)."""
    status, body = localapi_get(sock_path, "/localapi/v0/status", timeout)
    if status != 200:
        text = body[:200].decode("utf-8", "replace").strip()
        raise SidecarError(f"LocalAPI answered HTTP {status}: {text}")
    try:
        doc = json.loads(body)
    except ValueError:
        raise SidecarError("LocalAPI /status answer is not JSON") from None
    state = doc.get("BackendState") if isinstance(doc, dict) else None
    if not isinstance(state, str):
        raise SidecarError("LocalAPI /status answer has no BackendState")
    return doc


TAILNET_PREFIXES = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("fd7a:115c:a1e0::/48"))


def diagnose(status: dict, host: str, port: int) -> str:
    """Why a mesh dial may have failed, from the sidecar's own view of the tailnet (the guide's
    troubleshooting: target not on the tailnet / ACL / unapproved route), so the operator is not
    left with a bare timeout."""
    peers = [p for p in (status.get("Peer") or {}).values() if isinstance(p, dict)]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        named = [p for p in peers if host.rstrip(".").lower() in
                 {str(p.get("HostName", "")).lower(), str(p.get("DNSName", "")).rstrip(".").lower()}]
        if not named:
            return ""
        ips = named[0].get("TailscaleIPs") or []
        if not ips:
            return ""
        ip = ipaddress.ip_address(ips[0])
    if any(ip in net for net in TAILNET_PREFIXES):
        owner = next((p for p in peers if str(ip) in (p.get("TailscaleIPs") or [])), None)
        if owner is None:
            return (f"{ip} is not on the tailnet: no peer has this address "
                    f"(check `headscale nodes list`; is the target's tailscale client up?)")
        name = owner.get("HostName") or str(ip)
        if not owner.get("Online"):
            return f"peer {name} is on the tailnet but offline"
        return (f"peer {name} is on the tailnet and online, but the connection to port {port} was not "
                f"allowed or not answered (check the ACL policy lets this agent's tags reach {name}:{port})")
    routers = []
    for p in peers:
        for cidr in p.get("PrimaryRoutes") or []:
            try:
                if ip in ipaddress.ip_network(cidr, strict=False):
                    routers.append((p.get("HostName") or "?", cidr))
            except ValueError:
                continue
    if not routers:
        return (f"no tailnet route to {ip}: no subnet router serves it (is the route advertised and "
                f"approved? `headscale nodes list-routes`)")
    name, cidr = routers[0]
    return (f"{cidr} is routed via subnet router {name}, but the connection was not allowed or not "
            f"answered (is acceptRoutes on? does the ACL policy allow {ip}:{port}?)")


# ----------------------------------------------------------------------------- dialling

class DialError(Exception):
    pass


def _describe(exc: OSError, timeout: float) -> str:
    if isinstance(exc, socket.timeout):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror or exc}"
    return exc.strerror or str(exc) or type(exc).__name__


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError()
    return left


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < n:
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise DialError("SOCKS5 proxy closed the connection")
        data += chunk
    return bytes(data)


def _socks5_address(host: str) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None:
        try:
            name = host.encode("idna")
        except UnicodeError:
            raise DialError(f"host name {host!r} cannot be sent to a SOCKS5 proxy") from None
        if len(name) > 255:
            raise DialError("host name too long for SOCKS5")
        return b"\x03" + bytes([len(name)]) + name
    return (b"\x01" if ip.version == 4 else b"\x04") + ip.packed


def socks5_connect(proxy: tuple[str, int], host: str, port: int, timeout: float,
                   read_reply: bool = True) -> socket.socket:
    """SOCKS5 CONNECT without authentication; names are sent unresolved (the proxy resolves).

    Connected only once the proxy's CONNECT reply says so (``read_reply`` False: mutant socks-no-reply)."""
    deadline = time.monotonic() + timeout
    via = f"via SOCKS5 proxy {hostport(*proxy)}"
    try:
        sock = socket.create_connection(proxy, timeout=_remaining(deadline))
    except OSError as exc:
        raise DialError(f"SOCKS5 proxy {hostport(*proxy)} unreachable: {_describe(exc, timeout)}") from None
    try:
        sock.settimeout(_remaining(deadline))
        sock.sendall(b"\x05\x01\x00")
        version, method = _recv_exact(sock, 2, deadline)
        if version != 5:
            raise DialError(f"{hostport(*proxy)} is not a SOCKS5 proxy")
        if method != 0:
            raise DialError(f"SOCKS5 proxy {hostport(*proxy)} requires authentication (not supported)")
        sock.settimeout(_remaining(deadline))
        sock.sendall(b"\x05\x01\x00" + _socks5_address(host) + port.to_bytes(2, "big"))
        if not read_reply:  # mutant socks-no-reply: the proxy took the request, so "connected"
            return sock
        _ver, reply, _rsv, atyp = _recv_exact(sock, 4, deadline)
        if reply != 0:
            raise DialError(f"{SOCKS_REPLIES.get(reply, f'SOCKS5 reply 0x{reply:02x}')} ({via})")
        if atyp == 1:
            _recv_exact(sock, 4 + 2, deadline)
        elif atyp == 4:
            _recv_exact(sock, 16 + 2, deadline)
        elif atyp == 3:
            _recv_exact(sock, _recv_exact(sock, 1, deadline)[0] + 2, deadline)
        else:
            raise DialError(f"SOCKS5 proxy sent an unknown address type {atyp} ({via})")
        return sock
    except DialError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        raise DialError(f"{_describe(exc, timeout)} ({via})") from None


def direct_connect(host: str, port: int, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise DialError(_describe(exc, timeout)) from None


def read_banner(sock: socket.socket, timeout: float):
    """Up to BANNER_MAX bytes, stopping at the first newline, EOF or the timeout; None if nothing came."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    try:
        while len(data) < BANNER_MAX and b"\n" not in data:
            sock.settimeout(_remaining(deadline))
            chunk = sock.recv(BANNER_MAX - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data.decode("utf-8", "replace") if data else None


# ----------------------------------------------------------------------------- the runtime


def _dial_41112() -> tuple[str, OSError | None]:
    """A TCP connect to TCP_41112 (the 41112 mutants' health check): its address as text, and the
    error when it did not accept."""
    where = "{}:{}".format(*TCP_41112)
    try:
        socket.create_connection(TCP_41112, timeout=LOCALAPI_TIMEOUT_S).close()
        return where, None
    except OSError as exc:
        return where, exc


class Runtime:
    """The connectivity layer: state (transcript, known secrets) + the two operations."""

    def __init__(self, env=None, log_stream=None):
        env = dict(os.environ if env is None else env)
        self.env = env
        self.mutant = (env.get("SUT_MUTANT") or "").strip()
        if self.mutant and self.mutant not in MUTANTS:
            raise ValueError(f"SUT_MUTANT {self.mutant!r} is not one of: {', '.join(sorted(MUTANTS))}")
        self.socket_path = env.get("TS_SOCKET") or DEFAULT_SOCKET
        self.proxy = parse_proxy(env.get("SUT_PROXY", ""))
        self.log_stream = log_stream if log_stream is not None else sys.stderr
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._transcript: list[dict] = []
        self._run_type = None  # connectivity type of the latest pre-run: the mode the tools use
        self._last_cred = None  # mutant context-shows-credential: (user, secret) of the latest /connect
        self.auth_key()  # learn the key now so that it is redacted from the very first line
        self.runs = Runs(self)

    # -- the run lifecycle (Runs, below) ---------------------------------------------------------
    def run_start(self, body: dict):
        return self.runs.start(body)

    def run_exec(self, body: dict):
        return self.runs.exec(body)

    def run_query(self, body: dict):
        return self.runs.query(body)

    def run_end(self, body: dict):
        return self.runs.end(body)

    # -- secrets ------------------------------------------------------------------------------
    def auth_key(self):
        """(key, where it came from) or (None, None). The key is only ever used to redact."""
        key, source = (self.env.get("TS_AUTHKEY") or "").strip(), "TS_AUTHKEY"
        path = self.env.get("TS_AUTHKEY_FILE") or ""
        if not key and path:
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    key, source = fh.read(64 << 10).strip(), f"TS_AUTHKEY_FILE {path}"
            except OSError:
                key = ""
        if not key:
            return None, None
        with self._lock:
            self._secrets.add(key)
        return key, source

    def redact(self, obj):
        """Every string (keys too) with the auth key and key-like strings replaced."""
        if self.mutant == "leak-authkey":  # mutant leak-authkey: nothing is redacted
            return obj
        if isinstance(obj, str):
            with self._lock:
                secrets = [s for s in self._secrets if len(s) >= 4]
            for secret in secrets:
                obj = obj.replace(secret, REDACTED)
            if self.mutant == "leak-key-altered":  # mutant leak-key-altered: exact secrets only
                return obj
            return KEY_LIKE.sub(REDACTED, obj)
        if isinstance(obj, dict):
            return {self.redact(k): self.redact(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.redact(v) for v in obj]
        return obj

    # -- logging ------------------------------------------------------------------------------
    def log(self, logs, level: str, msg: str, **fields):
        """Append to this request's logs (if any) and write one JSON line to the container log."""
        entry = self.redact({"level": level, "msg": msg, **fields})
        if logs is not None:
            logs.append(entry)
        ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = json.dumps({"ts": ts, **entry}, ensure_ascii=False)
        with self._lock:
            try:
                self.log_stream.write(line + "\n")
                self.log_stream.flush()
            except (OSError, ValueError):
                pass

    def _tell(self, kind: str, text: str):
        with self._lock:
            self._transcript.append({"kind": kind, "text": text})
            del self._transcript[:-MAX_TRANSCRIPT]

    def transcript(self) -> dict:
        with self._lock:
            return {"entries": list(self._transcript)}

    # -- validation ---------------------------------------------------------------------------
    def parse_connectivity(self, conn) -> Spec:
        if conn is None:
            return Spec("direct")  # the guide: "Or simply omit the connectivity field entirely."
        if not isinstance(conn, dict):
            raise BadRequest("connectivity", f"expected an object or null, got {jtype(conn)}")
        ctype = conn.get("type")
        if ctype is None:
            if self.mutant == "typeless-is-error":  # mutant typeless-is-error
                raise BadRequest("connectivity.type", f"required; expected one of {', '.join(TYPES)}")
            ctype = "direct"  # type defaults to direct
        if not isinstance(ctype, str):
            raise BadRequest("connectivity.type", f"expected one of {', '.join(TYPES)}, got {jtype(ctype)}")
        if ctype not in TYPES:
            if self.mutant == "unknown-type-vague-error":  # mutant unknown-type-vague-error
                raise BadRequest("connectivity.type", f"unknown type {ctype!r}")
            if self.mutant != "accept-unknown-type":
                raise BadRequest("connectivity.type", f"unknown type {ctype!r}; expected one of {', '.join(TYPES)}")
            ctype = "direct"  # mutant accept-unknown-type
        if ctype == "direct":
            return Spec("direct")
        field = "connectivity.headscale"
        block = conn.get("headscale")
        if block is None:
            block = {}
        if not isinstance(block, dict):
            raise BadRequest(field, f"expected an object, got {jtype(block)}")
        control = (_opt(block, "controlServer", str, "a URL string", field) or "").strip()
        ref = (_opt(block, "authKeySecretRef", str, "a Secret name", field) or "").strip()
        tags = _opt(block, "tags", list, "a list of tags", field)
        if tags is not None and not all(isinstance(t, str) for t in tags):
            raise BadRequest(f"{field}.tags", "expected a list of strings like 'tag:agent-runtime'")
        accept_routes = _opt(block, "acceptRoutes", bool, "true or false", field)
        if self.mutant == "headscale-strict-schema" and (tags is not None or accept_routes is not None):
            raise BadRequest(f"{field}.acceptRoutes", "unknown field")  # mutant headscale-strict-schema
        required = ["controlServer", "authKeySecretRef"] if ctype == "headscale" else ["authKeySecretRef"]
        if ctype == "headscale" and self.mutant == "headscale-no-validation":
            required = []  # mutant headscale-no-validation
        if ctype == "tailscale" and self.mutant == "tailscale-requires-control":
            required.insert(0, "controlServer")  # mutant tailscale-requires-control
        values = {"controlServer": control, "authKeySecretRef": ref}
        for key in required:
            missing = not values[key]
            if self.mutant == "headscale-empty-accepted":  # mutant headscale-empty-accepted
                missing = block.get(key) is None
            if self.mutant == "headscale-null-accepted":  # mutant headscale-null-accepted
                missing = block.get(key, "") == ""
            if missing:
                what = ("the Headscale server URL" if key == "controlServer"
                        else "the name of the Secret holding the pre-auth key")
                raise BadRequest(f"{field}.{key}", f"required for type {ctype} ({what})")
        if control and not control.lower().startswith(("http://", "https://")):
            raise BadRequest(f"{field}.controlServer", f"expected an http(s):// URL, got {control!r}")
        return Spec(ctype, control, ref, tags, accept_routes)

    def target(self, value, field: str) -> tuple[str, int]:
        host, port = parse_target(value, field)
        if self.mutant == "ipv4-only-urls":  # mutant ipv4-only-urls: host, port = rest.rsplit(":", 1)
            host = value.strip().split("://", 1)[-1].rsplit(":", 1)[0]
        return host, port

    def parse_prerun(self, body: dict):
        conn = body.get("connectivity")
        if conn is None and self.mutant == "omitted-is-error":  # mutant omitted-is-error
            raise BadRequest("connectivity", "required")
        spec = self.parse_connectivity(conn)
        raw = body.get("endpoints")
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise BadRequest("endpoints", f"expected an object {{name: {{url, critical}}}}, got {jtype(raw)}")
        if len(raw) > MAX_ENDPOINTS:
            raise BadRequest("endpoints", f"at most {MAX_ENDPOINTS} endpoints")
        endpoints = {}
        for name, item in raw.items():
            field = f"endpoints.{name}"
            if not isinstance(item, dict):
                raise BadRequest(field, f"expected an object {{url, critical}}, got {jtype(item)}")
            host, port = self.target(item.get("url"), f"{field}.url")
            critical = item.get("critical", False)
            if not isinstance(critical, bool):
                raise BadRequest(f"{field}.critical", f"expected true or false, got {jtype(critical)}")
            endpoints[name] = Endpoint(name, host, port, critical)
        deadline = parse_seconds(body.get("deadline_s"), "deadline_s", DEFAULT_DEADLINE_S)
        return spec, endpoints, deadline

    # -- sidecar ------------------------------------------------------------------------------
    def check_sidecar(self) -> dict:
        """The tailscale sidecar is healthy iff its LocalAPI says BackendState == "Running"."""
        result = {"checked": True, "ready": False, "backend_state": None, "detail": ""}
        if self.mutant == "health-socket-exists":  # mutant health-socket-exists
            result["ready"] = os.path.exists(self.socket_path)
            result["detail"] = f"socket {self.socket_path} {'exists' if result['ready'] else 'missing'}"
            return result
        if self.mutant == "health-tcp-41112":  # mutant health-tcp-41112
            where, exc = _dial_41112()
            if exc is None:
                result.update(ready=True, detail=f"{where} accepts")
            else:
                result["detail"] = f"{where}: {_describe(exc, LOCALAPI_TIMEOUT_S)}"
            return result
        try:
            no_timeout = self.mutant == "localapi-no-timeout"  # mutant localapi-no-timeout
            status = query_status(self.socket_path, 3600.0 if no_timeout else LOCALAPI_TIMEOUT_S)
            state = status["BackendState"]
            result["_status"] = status  # kept for diagnosing failed dials; removed from the answer
        except SidecarError as exc:
            result["detail"] = str(exc)
            return self._fallback_41112(result)
        result["backend_state"] = state
        result["ready"] = state == "Running"
        if self.mutant == "health-ignores-state":  # mutant health-ignores-state
            result["ready"] = True
        if self.mutant == "ready-unless-stopped":  # mutant ready-unless-stopped
            result["ready"] = state != "Stopped"
        result["detail"] = f"BackendState is {state}" + ("" if state == "Running" else ", not Running")
        return self._fallback_41112(result)

    def _fallback_41112(self, result: dict) -> dict:
        if self.mutant == "health-41112-fallback" and not result["ready"]:  # mutant health-41112-fallback
            where, exc = _dial_41112()
            if exc is None:
                result.update(ready=True, detail=f"{result['detail']}; but {where} accepts")
        return result

    # -- dialling -----------------------------------------------------------------------------
    def dial(self, host: str, port: int, timeout: float, via_proxy: bool):
        """Open a TCP connection the way the tools do; (socket, latency_ms) or DialError."""
        if self.mutant == "wrong-port":  # mutant wrong-port
            port = port % 65535 + 1
        if self.mutant == "direct-via-proxy":  # mutant direct-via-proxy: the proxy even in direct mode
            via_proxy = True
        if self.mutant == "ip-literals-only":  # mutant ip-literals-only
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise DialError(f"{host!r} is not an IP address") from None
        start = time.monotonic()
        if via_proxy and self.proxy and self.mutant != "no-proxy":  # mutant no-proxy skips the proxy
            sock = socks5_connect(self.proxy, host, port, timeout,
                                  read_reply=self.mutant != "socks-no-reply")  # mutant socks-no-reply
        else:
            sock = direct_connect(host, port, timeout)
        return sock, (time.monotonic() - start) * 1000.0

    def probe(self, ep: Endpoint, timeout: float, via_proxy: bool) -> dict:
        result = {"reachable": False, "latency_ms": None, "error": None, "critical": ep.critical}
        try:
            sock, latency = self.dial(ep.host, ep.port, timeout, via_proxy)
        except DialError as exc:
            result["error"] = str(exc)
        else:
            sock.close()
            result.update(reachable=True, latency_ms=round(latency, 3))
        return result

    def probe_all(self, endpoints: dict, deadline: float, via_proxy: bool) -> dict:
        """Dial every endpoint concurrently, each with its own deadline."""
        if self.mutant == "sequential-dials":  # mutant sequential-dials
            return {n: self.probe(ep, SEQUENTIAL_TIMEOUT_S, via_proxy) for n, ep in endpoints.items()}
        if self.mutant == "double-deadline":  # mutant double-deadline
            deadline *= 2
        results: dict = {}

        def work(name, ep):
            results[name] = self.probe(ep, deadline, via_proxy)

        threads = [threading.Thread(target=work, args=item, daemon=True, name=f"dial-{item[0]}")
                   for item in endpoints.items()]
        for thread in threads:
            thread.start()
        # A dial can outlive its socket timeout only inside name resolution; don't wait for it.
        until = time.monotonic() + deadline + JOIN_GRACE_S
        for thread in threads:
            thread.join(max(0.0, until - time.monotonic()))
        out = {}
        for name, ep in endpoints.items():
            out[name] = results.get(name) or {"reachable": False, "latency_ms": None,
                                               "error": f"timed out after {deadline:g} s",
                                               "critical": ep.critical}
        return out

    # -- POST /prerun -------------------------------------------------------------------------
    def prerun(self, body: dict):
        started = time.monotonic()
        spec, endpoints, deadline = self.parse_prerun(body)
        logs: list = []
        context: list = []
        self.log(logs, "info", f"pre-run check: connectivity {spec.type}, {len(endpoints)} endpoint(s), "
                               f"deadline {deadline:g} s", type=spec.type)
        sidecar = {"checked": False, "ready": False, "backend_state": None,
                   "detail": "direct mode: no sidecar to check"}
        probe = spec.mesh or self.mutant == "direct-checks-sidecar"  # mutant direct-checks-sidecar
        if self.mutant == "omitted-probes-sidecar" and body.get("connectivity") is None:
            probe = True  # mutant omitted-probes-sidecar
        if probe:
            sidecar = self.check_sidecar()
            if sidecar["ready"]:
                self.log(logs, "info", f"tailscale sidecar ready: {sidecar['detail']}", component="sidecar")
            elif self.mutant == "sidecar-error-aborts":  # mutant sidecar-error-aborts
                self.log(logs, "error", f"tailscale sidecar not ready: {sidecar['detail']}", component="sidecar")
                return 503, self._prerun_answer(spec, False, sidecar, f"aborted: tailscale sidecar not ready "
                                                f"({sidecar['detail']})", {}, logs, context, started)
            else:
                self.log(logs, "warning", f"tailscale sidecar not ready: {sidecar['detail']}", component="sidecar")
            if sidecar["ready"] and self.mutant == "health-dials-control" and spec.control_server:
                target = urlsplit(spec.control_server)  # mutant health-dials-control
                try:
                    self.dial(target.hostname or "", target.port or 443, LOCALAPI_TIMEOUT_S, True)[0].close()
                except DialError as exc:
                    sidecar.update(ready=False, detail=f"control server unreachable: {exc}")
        elif self.mutant == "direct-probes-sidecar":  # mutant direct-probes-sidecar: probed, result ignored
            sidecar = self.check_sidecar()
        if spec.mesh:
            self._check_auth_key(spec, sidecar, logs, context)

        status = sidecar.pop("_status", None)
        if sidecar["checked"] and not sidecar["ready"] and self.mutant in ("not-ready-skips-dials",
                                                                            "not-ready-fakes-dials"):
            fake = self.mutant == "not-ready-fakes-dials"  # mutant not-ready-skips-dials / not-ready-fakes-dials
            results = {n: {"reachable": fake, "latency_ms": 0.0 if fake else None,
                           "error": None if fake else "not dialled: tailscale sidecar not ready",
                           "critical": ep.critical} for n, ep in endpoints.items()}
        else:
            results = self.probe_all(endpoints, deadline, via_proxy=spec.mesh)
        if spec.mesh and status and self.mutant != "generic-errors":  # mutant generic-errors: bare timeouts
            for name, ep in endpoints.items():
                why = "" if results[name]["reachable"] else diagnose(status, ep.host, ep.port)
                if why:
                    results[name]["error"] = f"{results[name]['error']}; {why}"
        for name, ep in endpoints.items():
            res = results[name]
            if res["reachable"]:
                self.log(logs, "info", f"endpoint {name} ({ep.address}) reachable in {res['latency_ms']:.1f} ms",
                         endpoint=name)
                if self.mutant == "no-latency":  # mutant no-latency
                    res["latency_ms"] = None
                continue
            kind = "critical" if ep.critical else "non-critical"
            self.log(logs, "warning" if ep.critical else "info",
                     f"{kind} endpoint {name} ({ep.address}) is unreachable: {res['error']}", endpoint=name)
            tell = ep.critical and self.mutant != "ignore-critical"  # mutant ignore-critical
            if self.mutant == "noncritical-in-context":  # mutant noncritical-in-context
                tell = True
            if tell:
                context.append(f"Endpoint {name} ({ep.address}) is unreachable: {res['error']}. "
                               f"Do not attempt operations against it in this run.")
            if self.mutant == "no-error":  # mutant no-error
                res["error"] = None

        if self.mutant == "context-shows-credential" and self._last_cred:  # mutant context-shows-credential
            user, secret = self._last_cred
            context.append(f"Tools authenticate as {user} (credential …{secret[-12:]}).")
        sidecar_ok = sidecar["ready"] or not sidecar["checked"]
        if not spec.mesh and self.mutant == "direct-probes-sidecar":  # mutant direct-probes-sidecar
            sidecar_ok = True
        down_critical = [n for n, ep in endpoints.items() if ep.critical and not results[n]["reachable"]]
        ready = sidecar_ok and not down_critical
        if self.mutant == "missing-secret-ready" and spec.mesh and not self.auth_key()[0]:
            ready = True  # mutant missing-secret-ready
            sidecar.update(ready=True)
        if self.mutant == "noncritical-blocks-ready":  # mutant noncritical-blocks-ready
            ready = ready and all(r["reachable"] for r in results.values())
        up = sum(1 for r in results.values() if r["reachable"])
        if spec.type == "direct" and not sidecar["checked"]:
            mode = "direct connectivity"
        elif sidecar["ready"]:
            mode = f"{spec.type}: tailscale sidecar running"
        else:
            mode = f"{spec.type}: tailscale sidecar not ready ({sidecar['detail']})"
        message = f"{'ready' if ready else 'not ready'}: {mode}; {up}/{len(endpoints)} endpoints reachable"
        if down_critical:
            message += f"; critical endpoint(s) unreachable: {', '.join(down_critical)}"
        down_other = [n for n, ep in endpoints.items() if not ep.critical and not results[n]["reachable"]]
        if down_other:
            message += f"; non-critical unreachable: {', '.join(down_other)}"
        self.log(logs, "info" if ready else "warning", f"pre-run check done: {message}")
        self._run_type = spec.type
        return 200, self._prerun_answer(spec, ready, sidecar, message, results, logs, context, started)

    def _check_auth_key(self, spec: Spec, sidecar: dict, logs: list, context: list):
        key, source = self.auth_key()
        ref = spec.auth_ref or "(no authKeySecretRef)"
        if key:
            self.log(logs, "info", f"auth key secret {ref} is available to the pod ({source})", component="auth")
            if self.mutant == "leak-authkey":  # mutant leak-authkey
                self.log(logs, "info", f"tailscale up --login-server={spec.control_server} --auth-key={key}")
            if self.mutant == "leak-key-tail":  # mutant leak-key-tail
                self.log(logs, "info", f"auth key loaded (key …{key[-12:]})", component="auth")
            if self.mutant == "leak-key-altered":  # mutant leak-key-altered
                self.log(logs, "info", f"auth key {key[:-1] + ('A' if key[-1] != 'A' else 'B')}", component="auth")
        elif not sidecar["ready"] and self.mutant == "silent-missing-secret":  # mutant silent-missing-secret
            self.log(logs, "warning", "mesh not connected")
        elif not sidecar["ready"]:
            self.log(logs, "warning", f"auth key secret {ref} not available to the pod", component="auth",
                     secret=ref)
            context.append(f"The mesh VPN is not connected: auth key secret {ref} is not available to the pod, "
                           f"so targets reached through the mesh may be unreachable in this run.")

    def _prerun_answer(self, spec, ready, sidecar, message, endpoints, logs, context, started) -> dict:
        for line in context:
            self._tell("agent_context", line)
        return {"type": spec.type, "ready": ready, "sidecar": sidecar, "message": message,
                "endpoints": endpoints, "logs": logs, "agent_context": context,
                "duration_ms": round((time.monotonic() - started) * 1000.0, 3)}

    # -- POST /connect ------------------------------------------------------------------------
    def connect(self, body: dict):
        if body.get("url") is not None:
            host, port = self.target(body["url"], "url")
        elif body.get("host") is not None:
            host = body["host"]
            if not isinstance(host, str) or not host.strip():
                raise BadRequest("host", f"expected a host name or address, got {jtype(host)}")
            host = host.strip().strip("[]")
            port = parse_port(body.get("port"), "port")
        else:
            raise BadRequest("url", "expected 'url' (e.g. 'tcp://host:port') or 'host' and 'port'")
        timeout = parse_seconds(body.get("timeout_s"), "timeout_s", DEFAULT_DEADLINE_S)
        cred = body.get("credential")
        if cred is not None:
            if not (isinstance(cred, dict) and isinstance(cred.get("user"), str) and isinstance(cred.get("secret"), str)):
                raise BadRequest("credential", "expected {\"user\": str, \"secret\": str} (injected by the tool layer)")
            if self.mutant != "transcript-shows-credential":
                with self._lock:
                    self._secrets.add(cred["secret"])  # the LLM never sees it: redacted everywhere
            if self.mutant == "context-shows-credential":  # mutant context-shows-credential
                self._last_cred = (cred["user"], cred["secret"])
        # The tools use the mode of the latest pre-run: direct dials directly; a mesh run (or no
        # pre-run yet) goes through the sidecar's proxy when there is one.
        via_proxy = self._run_type != "direct"
        address = hostport(host, port)
        try:
            sock, latency = self.dial(host, port, timeout, via_proxy)
        except DialError as exc:
            result = {"ok": False, "error": str(exc), "latency_ms": None, "banner": None}
            text = f"connect {address}: failed: {exc}"
        else:
            try:
                banner = read_banner(sock, timeout)
                if cred is not None:  # the tool layer authenticates; the target may already have closed
                    try:
                        sock.sendall(f"AUTH {cred['user']} {cred['secret']}\r\n".encode())
                    except OSError:
                        pass
            finally:
                sock.close()
            result = {"ok": True, "error": None, "latency_ms": round(latency, 3), "banner": banner}
            who = ""
            if cred is not None:
                who = f" as {cred['user']}" + (f":{cred['secret']}" if self.mutant == "transcript-shows-credential"
                                               else "")  # mutant transcript-shows-credential
            text = f"connect {address}{who}: connected in {latency:.1f} ms" + (
                f"; banner: {banner.strip()!r}" if banner else "; no banner")
        self._tell("connect", text)
        self.log(None, "info" if result["ok"] else "warning", text, component="connect")
        return 200, result


# ----------------------------------------------------------------------------- the run lifecycle
# The tool layer's credentials (the guide's "Credential Integration"): at a run's start the SUT
# logs in to Vault with the pod's AppRole, makes a child token that lives the run's declared
# length plus RUN_TTL_MARGIN_S, has Vault sign a fresh SSH key and make a database role with
# it; the run's SSH commands and SQL queries use them; at the run's end the login token is
# revoked (its child and the database lease with it: Vault drops the role) and the key is
# destroyed. The SSH certificate cannot be revoked in Vault: it dies when its validity, the
# same TTL, ends. Nothing of it (key, certificate, password, token) is ever shown.

# The run's credentials outlive its declared length by at most this: the start itself (its
# deadline, at most RUN_START_MAX_S) comes before the run's clock starts; 5 s more for the
# targets to read a certificate's end and Vault's expiry to run.
RUN_START_MAX_S = 10.0
RUN_TTL_MARGIN_S = RUN_START_MAX_S + 5.0
RUN_MAX_LENGTH_S = 600.0
SSH_USER_DEFAULT = "agent"
VAULT_AUTHS = ("approle", "kubernetes")
K8S_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
OUTPUT_MAX = 16 << 10


class VaultError(Exception):
    pass


def _read_file(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read(64 << 10).strip()


class Relay:
    """A loopback port whose connections are carried to ``host:port`` through the sidecar's SOCKS5
    proxy: the tools' way into the mesh in userspace mode (ssh and psql speak no SOCKS5). Lives
    for one tool call; a failed SOCKS5 dial is kept in ``error`` for the tool result."""

    def __init__(self, proxy: tuple[str, int], host: str, port: int, timeout: float):
        self.proxy, self.host, self.port_to, self.timeout = proxy, host, port, timeout
        self.error = ""
        self._socks: list[socket.socket] = []
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            try:
                up = socks5_connect(self.proxy, self.host, self.port_to, self.timeout)
            except DialError as exc:
                self.error = f"{hostport(self.host, self.port_to)}: {exc}"
                c.close()
                continue
            up.settimeout(None)
            self._socks += [c, up]
            for a, b in ((c, up), (up, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        for sock in [self.srv, *self._socks]:
            try:
                sock.close()
            except OSError:
                pass


class Run:
    def __init__(self, run_id: str, length_s: float):
        self.id = run_id
        self.length_s = length_s
        self.login_token = ""
        self.token = ""
        self.dir = ""
        self.key = ""
        self.db_user = ""
        self.db_password = ""
        self.ended = False


class Runs:
    """The run lifecycle of one Runtime: POST /run/start, /run/exec, /run/query, /run/end."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        env = rt.env
        self.vault = (env.get("VAULT_ADDR") or "").rstrip("/")
        self.cacert = env.get("VAULT_CACERT") or ""
        self.role_id_file = env.get("VAULT_ROLE_ID_FILE") or ""
        self.secret_id_file = env.get("VAULT_SECRET_ID_FILE") or ""
        self.auth = (env.get("VAULT_AUTH") or "approle").strip().lower()
        self.k8s_role = (env.get("VAULT_K8S_ROLE") or "").strip()
        self.k8s_mount = (env.get("VAULT_K8S_MOUNT") or "kubernetes").strip().strip("/")
        self.k8s_token_file = env.get("VAULT_K8S_TOKEN_FILE") or K8S_TOKEN_FILE
        self.ssh_path = env.get("VAULT_SSH_SIGN_PATH") or "ssh/sign/run"
        self.db_path = env.get("VAULT_DB_CREDS_PATH") or "database/creds/run"
        self.ssh_user = env.get("SSH_USER") or SSH_USER_DEFAULT
        self.runs: dict[str, Run] = {}
        self._lock = threading.Lock()
        self._shared: Run | None = None  # mutant run-shared-creds: the first run's credentials

    def secret(self, value: str) -> str:
        if value:
            with self.rt._lock:
                self.rt._secrets.add(value)
        return value

    # -- Vault -------------------------------------------------------------------------------
    def call(self, method: str, path: str, body: dict | None, token: str, deadline: float) -> dict:
        if not self.vault:
            raise VaultError("no Vault address (VAULT_ADDR is not set)")
        ctx = ssl.create_default_context(cafile=self.cacert or None)
        req = urllib.request.Request(f"{self.vault}/v1/{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"X-Vault-Token": token} if token else {})})
        timeout = _remaining(deadline)
        if self.rt.mutant == "run-start-no-deadline":  # mutant run-start-no-deadline: a fixed timeout
            timeout = 60.0
        if timeout <= 0:
            raise VaultError(f"deadline passed before {method} /v1/{path}")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
                raw = r.read(1 << 20)
        except urllib.error.HTTPError as exc:
            try:
                errs = "; ".join(json.loads(exc.read(1 << 16) or b"{}").get("errors") or [])
            except ValueError:
                errs = ""
            errs = " ".join(errs.split())  # Vault's multi-line error text, on one line
            raise VaultError(f"Vault {method} /v1/{path} answered HTTP {exc.code}"
                             + (f": {errs}" if errs else "")) from None
        except (OSError, ValueError) as exc:
            raise VaultError(f"Vault at {self.vault} did not answer {method} /v1/{path}: "
                             f"{getattr(exc, 'reason', exc)}") from None
        return json.loads(raw) if raw.strip() else {}

    def login(self, deadline: float) -> dict:
        """The pod's login to Vault (VAULT_AUTH): AppRole with the mounted role and secret IDs, or
        Kubernetes auth with the pod's own service-account token. Vault's ``auth`` block."""
        if self.auth == "kubernetes":
            if not self.k8s_role:
                raise VaultError("VAULT_AUTH is kubernetes but VAULT_K8S_ROLE (the Vault role to log in as) is not set")
            try:
                jwt = self.secret(_read_file(self.k8s_token_file))
            except OSError as exc:
                raise VaultError(f"no service-account token: VAULT_K8S_TOKEN_FILE {self.k8s_token_file} cannot be "
                                 f"read ({exc.strerror or type(exc).__name__}); is the token mounted "
                                 "(automountServiceAccountToken)?") from None
            if not jwt:
                raise VaultError(f"no service-account token: VAULT_K8S_TOKEN_FILE {self.k8s_token_file} is empty")
            try:
                return self.call("POST", f"auth/{self.k8s_mount}/login", {"role": self.k8s_role, "jwt": jwt}, "",
                                 deadline)["auth"]
            except VaultError as exc:
                raise VaultError(f"kubernetes login to Vault as role {self.k8s_role!r} failed: {exc}") from None
        if self.auth != "approle":
            raise VaultError(f"VAULT_AUTH {self.auth!r} is not one of {', '.join(VAULT_AUTHS)}")
        role_id = _read_file(self.role_id_file) if self.role_id_file else ""
        secret_id = self.secret(_read_file(self.secret_id_file)) if self.secret_id_file else ""
        if not role_id or not secret_id:
            raise VaultError("no AppRole credentials (VAULT_ROLE_ID_FILE / VAULT_SECRET_ID_FILE unreadable)")
        return self.call("POST", "auth/approle/login", {"role_id": role_id, "secret_id": secret_id}, "",
                         deadline)["auth"]

    # -- POST /run/start -----------------------------------------------------------------------
    def start(self, body: dict):
        run_id = body.get("run")
        if not isinstance(run_id, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", run_id or ""):
            raise BadRequest("run", "expected a run id (1-64 of A-Z a-z 0-9 _ . -)")
        length = parse_seconds(body.get("length_s"), "length_s", 60.0)
        if length > RUN_MAX_LENGTH_S:
            raise BadRequest("length_s", f"at most {RUN_MAX_LENGTH_S:g} s")
        deadline_s = min(parse_seconds(body.get("deadline_s"), "deadline_s", RUN_START_MAX_S), RUN_START_MAX_S)
        started = time.monotonic()
        deadline = started + deadline_s
        with self._lock:
            if run_id in self.runs:
                raise BadRequest("run", f"run {run_id} was already started")
            run = self.runs[run_id] = Run(run_id, length)
        ttl = f"{int(math.ceil(length + RUN_TTL_MARGIN_S))}s"
        if self.rt.mutant == "run-long-ttl":  # mutant run-long-ttl: ten minutes, whatever the length
            ttl = "600s"
        logs: list = []
        if self.rt.mutant == "run-shared-creds" and self._shared is not None:  # mutant run-shared-creds
            first = self._shared
            run.login_token, run.token, run.dir, run.key = first.login_token, first.token, first.dir, first.key
            run.db_user, run.db_password = first.db_user, first.db_password
            self._tell_run(run_id, f"run {run_id} started: the tools can log in to servers over SSH and to databases.")
            return 200, {"run": run_id, "ok": True, "error": None, "ttl_s": float(ttl[:-1]), "logs": logs,
                         "duration_ms": round((time.monotonic() - started) * 1000.0, 3)}
        try:
            auth = self.login(deadline)
            run.login_token = self.secret(auth["client_token"])
            child = self.call("POST", "auth/token/create", {"ttl": ttl, "explicit_max_ttl": ttl, "renewable": False,
                                                            "display_name": f"run-{run_id}"},
                              run.login_token, deadline)["auth"]
            run.token = self.secret(child["client_token"])
            run.dir = tempfile.mkdtemp(prefix="run-")
            run.key = os.path.join(run.dir, "id")
            p = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"run-{run_id}", "-f", run.key],
                               capture_output=True, text=True, timeout=max(0.5, _remaining(deadline)))
            if p.returncode != 0:
                raise VaultError(f"ssh-keygen failed: {p.stderr.strip()[-200:]}")
            with open(run.key, encoding="utf-8") as fh:
                self.secret(fh.read())
            with open(run.key + ".pub", encoding="utf-8") as fh:
                pub = fh.read().strip()
            principal = "operator" if self.rt.mutant == "run-signs-wrong-principal" else self.ssh_user  # mutant
            signed = self.call("POST", self.ssh_path, {"public_key": pub, "valid_principals": principal,
                                                       "ttl": ttl, "cert_type": "user"}, run.token, deadline)["data"]
            cert = self.secret(signed["signed_key"].strip())
            with open(run.key + "-cert.pub", "w", encoding="utf-8") as fh:
                fh.write(cert + "\n")
            db = self.call("GET", self.db_path, None, run.token, deadline)["data"]
            run.db_user, run.db_password = db["username"], db["password"]
            if self.rt.mutant != "run-shows-password":  # mutant run-shows-password: not a secret to redact
                self.secret(run.db_password)
        except (VaultError, OSError, KeyError, TypeError, subprocess.SubprocessError) as exc:
            self.rt.log(logs, "error", f"run {run_id}: credentials not obtained: {exc}", component="run")
            self._end(run, logs)
            self._tell_run(run_id, f"run {run_id}: the tools have no credentials: {exc}")
            if self.rt.mutant == "run-start-ok-without-vault":  # mutant run-start-ok-without-vault
                return 200, {"run": run_id, "ok": True, "error": None, "logs": [],
                             "duration_ms": round((time.monotonic() - started) * 1000.0, 3)}
            return 200, {"run": run_id, "ok": False, "error": str(exc), "logs": logs,
                         "duration_ms": round((time.monotonic() - started) * 1000.0, 3)}
        if self.rt.mutant == "run-shared-creds":  # mutant run-shared-creds: kept for every later run
            self._shared = run
        self.rt.log(logs, "info", f"run {run_id}: credentials obtained for {ttl}", component="run")
        self._tell_run(run_id, f"run {run_id} started: the tools can log in to servers over SSH and to databases.")
        return 200, {"run": run_id, "ok": True, "error": None, "ttl_s": float(ttl[:-1]), "logs": logs,
                     "duration_ms": round((time.monotonic() - started) * 1000.0, 3)}

    def _tell_run(self, run_id: str, text: str):
        self.rt._tell("run", text)

    def _live(self, body: dict) -> Run:
        run_id = body.get("run")
        with self._lock:
            run = self.runs.get(run_id) if isinstance(run_id, str) else None
        if run is None:
            raise BadRequest("run", f"no such run {run_id!r}: POST /run/start first")
        if run.ended and self.rt.mutant != "run-reuse-after-end":  # mutant run-reuse-after-end: still served
            raise BadRequest("run", f"run {run_id} has ended", status=409)
        return run

    @staticmethod
    def _host(body: dict) -> str:
        host = body.get("host")
        if not isinstance(host, str) or not host.strip() or host.strip().startswith("-"):
            raise BadRequest("host", f"expected a host name or address, got {jtype(host)}")
        return host.strip().strip("[]")

    # -- POST /run/exec --------------------------------------------------------------------------
    def exec(self, body: dict):
        run = self._live(body)
        host = self._host(body)
        command = body.get("command")
        if not isinstance(command, str) or not command.strip():
            raise BadRequest("command", "expected a shell command")
        timeout = parse_seconds(body.get("timeout_s"), "timeout_s", 15.0)
        relay = self._relay(host, 22, timeout)
        to, port = ("127.0.0.1", relay.port) if relay else (host, 22)
        argv = ["ssh", "-F", "/dev/null", "-i", run.key, "-o", f"CertificateFile={run.key}-cert.pub",
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "PasswordAuthentication=no",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", f"ConnectTimeout={max(1, int(timeout))}", "-p", str(port), f"{self.ssh_user}@{to}", "--", command]
        return self._tool(run, "exec", f"ssh {self.ssh_user}@{host} {command!r}", argv, None, timeout, relay)

    def _relay(self, host: str, port: int, timeout: float) -> Relay | None:
        """In userspace mode (SUT_PROXY) a tool reaches the mesh through a :class:`Relay`."""
        if self.rt.mutant == "no-proxy":  # mutant no-proxy: the tools too go straight to the target
            return None
        return Relay(self.rt.proxy, host, port, timeout) if self.rt.proxy else None

    # -- POST /run/query -------------------------------------------------------------------------
    def query(self, body: dict):
        run = self._live(body)
        host = self._host(body)
        sql = body.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise BadRequest("sql", "expected an SQL statement")
        database = body.get("database") or "postgres"
        if not isinstance(database, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,63}", database):
            raise BadRequest("database", "expected a database name")
        timeout = parse_seconds(body.get("timeout_s"), "timeout_s", 15.0)
        relay = self._relay(host, 5432, timeout)
        to, port = ("127.0.0.1", relay.port) if relay else (host, 5432)
        argv = ["psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1",
                f"host={to} port={port} dbname={database} user={run.db_user} sslmode=require "
                f"connect_timeout={max(2, int(timeout))}", "-c", sql]
        code, result = self._tool(run, "query", f"psql {host}/{database} {sql!r}", argv,
                                  {"PGPASSWORD": run.db_password}, timeout, relay)
        if self.rt.mutant == "run-shows-password":  # mutant run-shows-password: the DSN, password and all
            result["connection"] = f"postgresql://{run.db_user}:{run.db_password}@{host}:5432/{database}"
        return code, result

    def _tool(self, run: Run, kind: str, what: str, argv: list, env_extra: dict | None, timeout: float,
              relay: Relay | None = None):
        started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "TS_AUTHKEY"))}
        env.update(env_extra or {})
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 2, env=env,
                               stdin=subprocess.DEVNULL)
            code, out, err = p.returncode, p.stdout[-OUTPUT_MAX:], p.stderr[-OUTPUT_MAX:]
        except subprocess.TimeoutExpired:
            code, out, err = None, "", f"timed out after {timeout:g} s"
        except OSError as exc:
            code, out, err = None, "", f"could not run {argv[0]}: {exc}"
        finally:
            if relay is not None:
                relay.close()
        if relay is not None and relay.error and code != 0:
            err = f"{err.strip()}\n(mesh path: {relay.error})".strip()
        result = {"ok": code == 0, "exit_code": code, "stdout": out, "stderr": err.strip(),
                  "duration_ms": round((time.monotonic() - started) * 1000.0, 3)}
        self.rt._tell(kind, self.rt.redact(f"run {run.id}: {what}: exit {code}; stdout {out.strip()[:2000]!r}"
                                           + (f"; stderr {err.strip()[:500]!r}" if err.strip() else "")))
        self.rt.log(None, "info" if code == 0 else "warning", f"run {run.id}: {what}: exit {code}", component=kind)
        return 200, result

    # -- POST /run/end ---------------------------------------------------------------------------
    def end(self, body: dict):
        run = self._live(body)
        logs: list = []
        revoked = self._end(run, logs)
        self._tell_run(run.id, f"run {run.id} ended: its credentials are revoked.")
        return 200, {"run": run.id, "ok": revoked, "logs": logs}

    def _end(self, run: Run, logs: list) -> bool:
        run.ended = True
        if self.rt.mutant == "run-shared-creds" and run.key:  # mutant run-shared-creds: kept for later runs
            return True
        revoked = self._revoke(run, logs) if self.rt.mutant != "run-no-revoke" else True  # mutant run-no-revoke
        if self.rt.mutant == "run-reuse-after-end":  # mutant run-reuse-after-end: key and certificate kept
            return revoked
        if run.dir:
            for name in ("id", "id.pub", "id-cert.pub"):
                try:
                    os.remove(os.path.join(run.dir, name))
                except OSError:
                    pass
            try:
                os.rmdir(run.dir)
            except OSError:
                pass
        run.login_token = run.token = run.db_password = ""
        return revoked

    def _revoke(self, run: Run, logs: list) -> bool:
        """The login token revoked: its child and the database lease with it (Vault drops the role)."""
        if not run.login_token:
            return True
        try:
            self.call("POST", "auth/token/revoke-self", {}, run.login_token, time.monotonic() + RUN_START_MAX_S)
            return True
        except VaultError as exc:
            self.rt.log(logs, "error", f"run {run.id}: revocation failed: {exc}", component="run")
            return False


# ----------------------------------------------------------------------------- HTTP server

class Handler(BaseHTTPRequestHandler):
    server_version = "meshcert-reference-sut/1"
    ROUTES = {("GET", "/healthz"): "healthz", ("GET", "/transcript"): "transcript",
              ("POST", "/prerun"): "prerun", ("POST", "/connect"): "connect",
              ("POST", "/run/start"): "run_start", ("POST", "/run/exec"): "run_exec",
              ("POST", "/run/query"): "run_query", ("POST", "/run/end"): "run_end"}

    @property
    def runtime(self) -> Runtime:
        return self.server.runtime

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def _dispatch(self, method: str):
        path = urlsplit(self.path).path.rstrip("/") or "/"
        route = self.ROUTES.get((method, path))
        if route is None:
            if any(p == path for _, p in self.ROUTES):
                return self._reply(405, {"error": f"{method} is not allowed on {path}"})
            return self._reply(404, {"error": f"no such endpoint {path}; try POST /prerun, POST /connect, "
                                              f"GET /transcript, GET /healthz"})
        try:
            if route == "healthz":
                status, answer = 200, {"ok": True}
            elif route == "transcript":
                status, answer = 200, self.runtime.transcript()
            else:
                body = self._read_json()
                status, answer = getattr(self.runtime, route)(body)
        except BadRequest as exc:
            status, answer = exc.status, {"error": str(exc), "field": exc.field}
        except Exception as exc:  # a bug in here: say so in one line, details to the container log
            self.runtime.log(None, "error", f"internal error in {method} {path}: {exc!r}",
                             traceback=traceback.format_exc())
            status, answer = 500, {"error": f"internal error ({type(exc).__name__}); see the container log"}
        self._reply(status, answer)

    def _read_json(self) -> dict:
        if self.headers.get("Transfer-Encoding"):
            raise BadRequest("body", "send the JSON body with a Content-Length (no Transfer-Encoding)")
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():
            raise BadRequest("body", f"bad Content-Length {length!r}")
        if int(length) > MAX_BODY:
            raise BadRequest("body", f"larger than {MAX_BODY} bytes", status=413)
        raw = self.rfile.read(int(length))
        if not raw.strip():
            raise BadRequest("body", "expected a JSON object, got an empty body")
        try:
            body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise BadRequest("body", "expected UTF-8 JSON") from None
        except json.JSONDecodeError as exc:
            raise BadRequest("body", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        except ValueError as exc:
            raise BadRequest("body", str(exc)) from None
        except RecursionError:
            raise BadRequest("body", "JSON nested too deeply") from None
        if not isinstance(body, dict):
            raise BadRequest("body", f"expected a JSON object, got {jtype(body)}")
        return body

    def _reply(self, status: int, answer: dict):
        data = json.dumps(self.runtime.redact(answer), ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client went away

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
        self.runtime.log(None, "info", format % args, component="http", client=self.client_address[0])


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class SUTServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, runtime: Runtime):
        self.runtime = runtime
        super().__init__(address, Handler)


def make_server(runtime: Runtime, host: str = "0.0.0.0", port: int = DEFAULT_PORT) -> SUTServer:
    return SUTServer((host, port), runtime)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="meshcert reference SUT (Legator connectivity layer)")
    parser.add_argument("--host", default=os.environ.get("SUT_HOST") or "0.0.0.0")
    parser.add_argument("--port", type=int, default=None, help="default $SUT_PORT or 8080")
    args = parser.parse_args(argv)
    try:
        port = args.port if args.port is not None else int(os.environ.get("SUT_PORT") or DEFAULT_PORT)
        runtime = Runtime()
        server = make_server(runtime, args.host, port)
    except (ValueError, OSError) as exc:
        sys.stderr.write(json.dumps({"level": "error", "msg": f"cannot start: {exc}"}) + "\n")
        return 2

    def stop(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # PID 1 in a container ignores SIGTERM without a handler
    runtime.log(None, "info", f"listening on {hostport(args.host, server.server_address[1])}",
                socket=runtime.socket_path, proxy=hostport(*runtime.proxy) if runtime.proxy else None,
                mutant=runtime.mutant or None)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    runtime.log(None, "info", "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
