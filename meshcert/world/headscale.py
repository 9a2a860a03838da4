"""The Headscale control server: one container kind of the world. Its config (TLS with the run's
CA, embedded DERP, sqlite, policy in database mode, MagicDNS under MAGIC_DNS_BASE), how it is
started on the WAN network (alias ``headscale``; nodes reach it as ``control``, through
toxiproxy), and ``Headscale``, the handle the checks use: the ``headscale`` CLI (JSON out),
users and pre-auth keys, the live policy, nodes and route approvals, and its TLS /health.
Like headscale's own hsic, the rest of the world talks to the control server only through
this handle (see ControlServer in interface.py)."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterable
from typing import Any

from meshcert.secrets import Secret, redact
from meshcert.world.base import Box, Launcher, WorldError, brief_error
from meshcert.world.ca import Certs

HEADSCALE_PORT = 8443
CONTROL_ALIAS = "control"      # the name nodes use for the control server: toxiproxy in front of headscale
HEADSCALE_ALIAS = "headscale"
# MagicDNS: every node is <hostname>.MAGIC_DNS_BASE (not a parent of the control server's name,
# which headscale forbids; .internal is reserved for private use and never leaves this machine).
MAGIC_DNS_BASE = "tailnet.meshcert.internal"


def login_server() -> str:
    """The URL every node logs in to: the control alias (toxiproxy) on headscale's port."""
    return f"https://{CONTROL_ALIAS}:{HEADSCALE_PORT}"


class Headscale:
    def __init__(self, box: Box, ip: str):
        self.box = box
        self.ip = ip
        self.key_ids: dict[str, int] = {}
        # headscale < 0.28 (the version matrix) requires --user on every pre-auth key, tagged ones
        # too: the world's user, set by the World; None (0.28+: tags are the node's identity): no --user
        self.default_user: int | None = None

    def cli(self, *args: str) -> Any:
        code, out = self.box.exec(["headscale", *args, "-o", "json"])
        if code != 0:
            raise WorldError(f"`headscale {' '.join(redact(a) for a in args)}` failed ({code}): {out.strip()[-800:]}")
        try:
            return json.loads(out) if out.strip() else None
        except json.JSONDecodeError:
            raise WorldError(f"`headscale {args[0]}` printed no JSON: {out.strip()[-300:]}") from None

    def healthy(self, ca_pem: bytes) -> bool:
        return self.health_state(ca_pem) == "HTTP 200"

    def health_state(self, ca_pem: bytes) -> str:
        """What GET /health over TLS answers now: ``HTTP 200``, ``connection refused``, a TLS error..."""
        ctx = ssl.create_default_context(cadata=ca_pem.decode())
        conn = http.client.HTTPSConnection(self.ip, HEADSCALE_PORT, context=ctx, timeout=2)
        ctx.check_hostname = False  # we dial by IP; the chain is still verified against our CA
        try:
            conn.request("GET", "/health")
            return f"HTTP {conn.getresponse().status}"
        except OSError as e:
            return brief_error(e)
        finally:
            conn.close()

    def create_user(self, name: str) -> int:
        return int(self.cli("users", "create", name)["id"])

    def preauth_key(self, tags: Iterable[str], *, reusable: bool = True, ephemeral: bool = False,
                    expiration: str = "1h", user_id: int | None = None) -> Secret:
        args = ["preauthkeys", "create", "--expiration", expiration]
        if reusable:
            args.append("--reusable")
        if ephemeral:
            args.append("--ephemeral")
        if user_id is None:
            user_id = self.default_user
        if user_id is not None:
            args += ["--user", str(user_id)]
        tags = list(tags)
        if tags:
            args += ["--tags", ",".join(tags)]
        out = self.cli(*args)
        secret = Secret(out["key"], "pre-auth key")
        self.key_ids[secret.reveal()] = int(out.get("id") or 0)
        return secret

    def expire_preauth_key(self, key: Secret) -> None:
        self.cli("preauthkeys", "expire", "--id", str(self.key_ids[key.reveal()]))

    def set_policy_text(self, text: str) -> None:
        # one exec, the policy its argument (a policy holds no secret), instead of a copy (put_archive
        # measured 0.4 s median on the loaded engine) and an exec
        code, out = self.box.exec(["sh", "-c", 'umask 077 && printf "%s" "$1" > /tmp/meshcert-policy.hujson && '
                                   'exec headscale policy set -f /tmp/meshcert-policy.hujson', "sh", text])
        if code != 0:
            raise WorldError(f"headscale rejected the policy: {out.strip()[-800:]}",
                             "fix the policy (run `headscale policy check` semantics: tags need tagOwners, users end in @)")

    def nodes(self) -> list[dict]:
        return self.cli("nodes", "list") or []

    def node_id(self, hostname: str) -> int:
        for n in self.nodes():
            if n.get("given_name") == hostname or n.get("name") == hostname:
                return int(n["id"])
        raise WorldError(f"headscale has no node named {hostname}")

    def routes(self) -> list[dict]:
        return self.cli("nodes", "list-routes") or []

    def approve_routes(self, node_id: int, cidrs: Iterable[str]) -> None:
        self.cli("nodes", "approve-routes", "--identifier", str(node_id), "--routes", ",".join(cidrs))



def start_headscale(run: Launcher, image: str, certs: Certs) -> Box:
    """The headscale container on the WAN network, with its config and the run's TLS pair."""
    return run("headscale", image, ["headscale", "serve", "-c", "/etc/headscale/config.yaml"],
               network="wan", aliases=[HEADSCALE_ALIAS],
               files={"/etc/headscale/config.yaml": (headscale_config(login_server()).encode(), 0o644),
                      "/etc/headscale/tls.crt": (certs.cert_pem, 0o644),
                      "/etc/headscale/tls.key": (certs.key_pem, 0o600)})


def headscale_config(server_url: str) -> str:
    return f"""---
server_url: {server_url}
listen_addr: 0.0.0.0:{HEADSCALE_PORT}
metrics_listen_addr: 0.0.0.0:9090
grpc_listen_addr: 127.0.0.1:50443
grpc_allow_insecure: false
tls_cert_path: /etc/headscale/tls.crt
tls_key_path: /etc/headscale/tls.key
noise:
  private_key_path: /var/lib/headscale/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
  allocation: sequential
derp:
  server:
    enabled: true
    region_id: 999
    region_code: meshcert
    region_name: meshcert embedded DERP
    verify_clients: true
    stun_listen_addr: 0.0.0.0:3478
    private_key_path: /var/lib/headscale/derp_server_private.key
    automatically_add_embedded_derp_region: true
  urls: []
  paths: []
  auto_update_enabled: false
disable_check_updates: true
node:
  expiry: 0
  routes:
    ha:
      probe_interval: 5s
      probe_timeout: 3s
database:
  type: sqlite
  sqlite:
    path: /var/lib/headscale/db.sqlite
    write_ahead_log: true
log:
  level: info
  format: text
policy:
  mode: database
dns:
  magic_dns: true
  base_domain: {MAGIC_DNS_BASE}
  override_local_dns: false
  nameservers:
    global: []
unix_socket: /var/run/headscale/headscale.sock
unix_socket_permission: "0770"
logtail:
  enabled: false
tuning:
  # headscale batches node-store writes (default 500 ms) and map updates to the nodes (default
  # 800 ms) on tickers, so every policy, route or registration change waited up to 1.3 s for
  # them (measured: policy set to every packet filter 1.2 s -> 0.7 s, a route approval off and on
  # 3.2 s -> 1.2 s, the world's joins 12 s -> 7 s). 50 ms is what headscale's own server tests
  # use (hscontrol/servertest); what is sent is the same, only sooner.
  batch_change_delay: 50ms
  node_store_batch_timeout: 50ms
taildrop:
  enabled: false
"""
