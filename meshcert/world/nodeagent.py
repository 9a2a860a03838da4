#!/usr/bin/env python3
"""meshcert's node agent: runs inside every world container (stdlib only, one file).

- Banner listeners: each port answers one line ``meshcert-banner host=<name> port=<port>``
  and closes, so a probe proves *which* host and port it reached.
- A probe API (HTTP, default port 9999) used by meshcert from the host:
  ``POST /dial`` {"probes": [{"host", "port", "timeout"}], "socks5": "127.0.0.1:1055"?}
  dials all probes concurrently and returns {"results": [{"ok", "banner", "error", "latency_ms"}]};
  ``GET /localapi/<path>`` forwards a GET to tailscaled's LocalAPI over its unix socket,
  ``POST``/``PATCH /localapi/<path>`` a POST/PATCH with its body (a TSMP ping:
  ``POST /localapi/v0/ping?ip=..&type=TSMP``; prefs: ``PATCH /localapi/v0/prefs``), with the
  LocalAPI read timeout taken from the ``X-Meshcert-Timeout`` header (s, default 5);
  ``POST /routes`` {"addrs": [...]} answers {"routes": {addr: "<ip -4 -o route get addr>"}} from
  this container's network namespace (one call instead of a ``docker exec`` per check);
  ``GET /health``.

Every call is one HTTP request from meshcert to this agent: a few milliseconds, where a
``docker exec`` costs 100-300 ms on a loaded engine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import re
import socket
import socketserver
import ssl
import struct
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOSTNAME = os.environ.get("MESHCERT_NAME") or socket.gethostname()
TS_SOCKET = os.environ.get("TS_SOCKET", "/var/run/tailscale/tailscaled.sock")


class _Banner(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        port = self.server.server_address[1]
        try:
            self.request.sendall(f"meshcert-banner host={HOSTNAME} port={port}\n".encode())
        except OSError:
            pass


class _TCP(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _socks5_connect(proxy: str, host: str, port: int, timeout: float) -> socket.socket:
    phost, pport = proxy.rsplit(":", 1)
    s = socket.create_connection((phost, int(pport)), timeout=timeout)
    s.sendall(b"\x05\x01\x00")
    if s.recv(2) != b"\x05\x00":
        raise OSError("socks5: no acceptable auth method")
    try:
        addr = b"\x01" + socket.inet_aton(host)
    except OSError:
        addr = b"\x03" + bytes([len(host)]) + host.encode()
    s.sendall(b"\x05\x01\x00" + addr + struct.pack(">H", port))
    rep = s.recv(4)
    if len(rep) < 2 or rep[1] != 0:
        raise OSError(f"socks5: connect failed (reply {rep[1] if len(rep) > 1 else '?'})")
    atyp = rep[3]
    s.recv({1: 4, 4: 16}.get(atyp, 0) or s.recv(1)[0])
    s.recv(2)
    return s


SSL_REQUEST = struct.pack("!II", 8, 80877103)  # PostgreSQL's SSLRequest (protocol 3: "S" means TLS follows)
BANNER_RE = re.compile(rb"meshcert-banner host=[^\s,/]+ port=\d+")


def _tls_banner(s: socket.socket, timeout: float) -> str | None:
    """The banner line in the subject of the TLS certificate a PostgreSQL server presents after
    an SSLRequest (meshcert's credential targets put it there); None if there is none."""
    try:
        s.settimeout(timeout)
        s.sendall(SSL_REQUEST)
        if s.recv(1) != b"S":
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # identity, not trust: the subject names the host we reached
        with ctx.wrap_socket(s, do_handshake_on_connect=True) as t:
            der = t.getpeercert(binary_form=True) or b""
        i = der.find(b"meshcert-banner ")
        if i < 1:
            return None
        # the subject's text is a DER string: the byte before it is its length (short form)
        m = BANNER_RE.fullmatch(der[i:i + der[i - 1]])
        return m.group().decode() + " (tls)" if m else None
    except (OSError, ssl.SSLError):
        return None


def dial(host: str, port: int, timeout: float, socks5: str | None = None) -> dict:
    t0 = time.monotonic()
    try:
        s = _socks5_connect(socks5, host, port, timeout) if socks5 else socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return {"ok": False, "banner": None, "error": f"{type(e).__name__}: {e}", "latency_ms": None}
    latency = (time.monotonic() - t0) * 1000
    banner = None
    try:
        s.settimeout(timeout)
        data = b""
        while not data.endswith(b"\n") and len(data) < 256:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
        banner = data.decode(errors="replace").strip() or None
    except TimeoutError:
        if not data:  # a server that waits for its client (PostgreSQL): its TLS certificate may name it
            banner = _tls_banner(s, timeout)
    except OSError:
        pass
    finally:
        s.close()
    return {"ok": True, "banner": banner, "error": None, "latency_ms": round(latency, 3)}


def localapi_get(path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    return localapi("GET", path, None, timeout)


def localapi(method: str, path: str, body: bytes | None, timeout: float = 5.0) -> tuple[int, bytes]:
    class UnixConn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(TS_SOCKET)

    conn = UnixConn("local-tailscaled.sock", timeout=timeout)
    try:
        headers = {"Host": "local-tailscaled.sock"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


class _API(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, json.dumps({"ok": True, "hostname": HOSTNAME}).encode())
        elif self.path.startswith("/localapi/"):
            try:
                code, body = localapi_get(self.path)
            except OSError as e:
                self._send(503, json.dumps({"error": f"localapi: {type(e).__name__}: {e}"}).encode())
                return
            self._send(code, body)
        else:
            self._send(404, b'{"error":"not found"}')

    def _forward(self, method: str) -> None:
        """A POST/PATCH to tailscaled's LocalAPI; 504 when it did not answer within the timeout
        (a TSMP ping nobody answers holds its request until then)."""
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        try:
            timeout = float(self.headers.get("X-Meshcert-Timeout", "5"))
            code, out = localapi(method, self.path, body if body else None, timeout)
        except TimeoutError as e:
            self._send(504, json.dumps({"error": f"localapi: timed out after {timeout:g} s ({e})"}).encode())
            return
        except (OSError, ValueError) as e:
            self._send(503, json.dumps({"error": f"localapi: {type(e).__name__}: {e}"}).encode())
            return
        self._send(code, out, "application/json" if out[:1] in (b"{", b"[") else "text/plain")

    def do_PATCH(self) -> None:
        if self.path.startswith("/localapi/"):
            self._forward("PATCH")
        else:
            self._send(404, b'{"error":"not found"}')

    def do_POST(self) -> None:
        if self.path.startswith("/localapi/"):
            self._forward("POST")
            return
        if self.path == "/routes":
            self._routes()
            return
        if self.path != "/dial":
            self._send(404, b'{"error":"not found"}')
            return
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            probes = req["probes"]
        except (ValueError, KeyError) as e:
            self._send(400, json.dumps({"error": f"bad request: {e}"}).encode())
            return
        socks5 = req.get("socks5")
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(64, len(probes)))) as ex:
            futs = [ex.submit(dial, p["host"], int(p["port"]), float(p.get("timeout", 3.0)), socks5) for p in probes]
            results = [f.result() for f in futs]
        self._send(200, json.dumps({"results": results}).encode())


    def _routes(self) -> None:
        try:
            addrs = [str(a) for a in json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))["addrs"]]
        except (ValueError, KeyError, TypeError) as e:
            self._send(400, json.dumps({"error": f"bad request: {e}"}).encode())
            return
        self._send(200, json.dumps({"routes": {a: route_get(a) for a in addrs}}).encode())


def route_get(addr: str) -> str:
    """``ip -4 -o route get ADDR`` in this network namespace (its output or its error, one line)."""
    try:
        p = subprocess.run(["ip", "-4", "-o", "route", "get", addr], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"error: {type(e).__name__}: {e}"
    return (p.stdout or p.stderr).strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", type=int, default=9999)
    ap.add_argument("--banner", default="", help="comma-separated TCP ports to serve banners on")
    a = ap.parse_args()
    for p in filter(None, a.banner.split(",")):
        srv = _TCP(("::", int(p)), _Banner)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    api = ThreadingHTTPServer(("0.0.0.0", a.api), _API)
    api.daemon_threads = True
    print(f"nodeagent {HOSTNAME}: api :{a.api}, banners {a.banner or '-'}", flush=True)
    api.serve_forever()


if __name__ == "__main__":
    main()
