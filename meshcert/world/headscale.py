"""The Headscale control server: one container kind of the world. Its config (TLS with the run's
CA, embedded DERP, sqlite, policy in database mode, MagicDNS under MAGIC_DNS_BASE), how it is
started on the WAN network (alias ``headscale``; nodes reach it as ``control``, through
toxiproxy), and ``Headscale``, the handle the checks use: the ``headscale`` CLI (JSON out),
users and pre-auth keys, the live policy, nodes and route approvals, and its TLS /health.
Like headscale's own hsic, the rest of the world talks to the control server only through
this handle (see ControlServer in interface.py). The handle speaks its server's version
(headscale_versions.py holds every difference between versions: CLI flags, REST paths, tags
fields, routes table or node fields, policy format); what it returns reads the same on every
version (nodes with ``tags``; ``routes()`` as node fields)."""

from __future__ import annotations

import http.client
import json
import re
import ssl
from collections.abc import Iterable
from typing import Any

from meshcert.secrets import Secret, redact
from meshcert.world.base import Box, Launcher, WorldError, brief_error
from meshcert.world.ca import Certs
from meshcert.world.headscale_versions import Dialect, dialect, routes_as_nodes

HEADSCALE_PORT = 8443
CONTROL_ALIAS = "control"      # the name nodes use for the control server: toxiproxy in front of headscale
HEADSCALE_ALIAS = "headscale"
# MagicDNS: every node is <hostname>.MAGIC_DNS_BASE (not a parent of the control server's name,
# which headscale forbids; .internal is reserved for private use and never leaves this machine).
MAGIC_DNS_BASE = "tailnet.meshcert.internal"


def login_server() -> str:
    """The URL every node logs in to: the control alias (toxiproxy) on headscale's port."""
    return f"https://{CONTROL_ALIAS}:{HEADSCALE_PORT}"


def _snake(value: Any) -> Any:
    """The REST API's JSON (protojson: lowerCamelCase names) with the proto's snake_case names,
    as the CLI's ``-o json`` prints them (``approvedRoutes`` -> ``approved_routes``)."""
    if isinstance(value, dict):
        return {re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower(): _snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake(v) for v in value]
    return value


class Headscale:
    def __init__(self, box: Box, ip: str, version: str):
        self.box = box
        self.ip = ip
        self.version = version
        self.dialect: Dialect = dialect(version)
        self.key_ids: dict[str, int] = {}
        self._key_users: dict[str, str] = {}  # key -> the --user it was made with (< 0.28 expires by key + user)
        self.users: dict[int, str] = {}
        self._api_key: Secret | None = None
        self._ca_pem: bytes | None = None
        # headscale < 0.28 requires --user on every pre-auth key, tagged ones too: the first user
        # created (the world's); None (0.28+: tags are the node's identity): no --user
        self.default_user: int | None = None

    def enable_api(self, ca_pem: bytes) -> None:
        """Route reads, route approvals and policy sets go over headscale's REST API (/api/v1,
        TLS checked against the run's CA, an API key made once here) instead of a `docker exec`
        of its CLI each. Measured on this machine: an exec of the CLI costs 0.1-0.4 s (more on a
        loaded engine); the property test makes 2-3 of them per example. The CLI stays the tool
        of the clauses that are about the CLI (the errata) and of everything else."""
        key = self.cli("apikeys", "create", "--expiration", "24h")
        if not isinstance(key, str) or not key:
            raise WorldError("`headscale apikeys create` printed no key")
        self._api_key = Secret(key, "headscale API key")  # registered: redacted wherever it could appear
        self._ca_pem = ca_pem

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """One call of headscale's REST API; its JSON answer with snake_case names."""
        if self._api_key is None or self._ca_pem is None:
            raise WorldError("headscale's REST API is not enabled (enable_api)")
        ctx = ssl.create_default_context(cadata=self._ca_pem.decode())
        ctx.check_hostname = False  # we dial by IP; the chain is still verified against our CA
        conn = http.client.HTTPSConnection(self.ip, HEADSCALE_PORT, context=ctx, timeout=15)
        try:
            conn.request(method, f"/api/v1/{path}", body=json.dumps(body) if body is not None else None,
                         headers={"Authorization": f"Bearer {self._api_key.reveal()}",
                                  "Content-Type": "application/json"})
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
        except OSError as e:
            raise WorldError(f"headscale API {method} /api/v1/{path}: {brief_error(e)}") from None
        finally:
            conn.close()
        try:
            doc = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            doc = {"message": text.strip()[-300:]}
        if resp.status != 200:
            raise WorldError(f"headscale API {method} /api/v1/{path}: HTTP {resp.status} "
                             f"{redact(str(doc.get('message', doc)))[-800:]}")
        return _snake(doc)

    def cli(self, *args: str) -> Any:
        """``headscale args -o json``: its JSON (None when it printed nothing). Run as an answered
        exec (Box.exec): docker exec's lost outputs are read again, never taken for "nothing"."""
        code, out = self.box.exec(["headscale", *args, "-o", "json"], answer=True)
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
        made = self.cli("users", "create", name)
        if not isinstance(made, dict) or "id" not in made:
            raise WorldError(f"`headscale users create {name}` answered no user: {str(made)[-200:]}")
        uid = int(made["id"])
        self.users[uid] = name
        if self.dialect.user_required and self.default_user is None:
            self.default_user = uid
        return uid

    def user_arg(self, user_id: int) -> str:
        """What ``preauthkeys --user`` takes for ``user_id`` on this version: the ID (0.26+) or
        the user's name (0.25)."""
        if self.dialect.user_by == "id":
            return str(user_id)
        if user_id not in self.users:
            self.users.update({int(u["id"]): u["name"] for u in self.cli("users", "list") or []})
        return self.users[user_id]

    def preauth_key(self, tags: Iterable[str], *, reusable: bool = True, ephemeral: bool = False,
                    expiration: str = "1h", user_id: int | None = None) -> Secret:
        args = ["preauthkeys", "create", "--expiration", expiration]
        if reusable:
            args.append("--reusable")
        if ephemeral:
            args.append("--ephemeral")
        if user_id is None:
            user_id = self.default_user
        user = self.user_arg(user_id) if user_id is not None else None
        if user is not None:
            args += ["--user", user]
        tags = list(tags)
        if tags:
            args += ["--tags", ",".join(tags)]
        out = self.cli(*args)
        if not isinstance(out, dict) or not out.get("key"):
            raise WorldError("`headscale preauthkeys create` answered no key"
                             + (f" (fields: {sorted(out)})" if isinstance(out, dict) else f": {type(out).__name__}"))
        secret = Secret(out["key"], "pre-auth key")
        self.remember_key(secret, int(out.get("id") or 0), user)
        return secret

    def remember_key(self, key: Secret, key_id: int, user: str | None) -> None:
        """Keep what expiring ``key`` later takes (its ID; before 0.28 its user too)."""
        self.key_ids[key.reveal()] = key_id
        if user is not None:
            self._key_users[key.reveal()] = user

    def expire_preauth_key(self, key: Secret) -> None:
        if self.dialect.expire_by == "id":
            self.cli("preauthkeys", "expire", "--id", str(self.key_ids[key.reveal()]))
            return
        # < 0.28: `preauthkeys expire KEY --user U` (the key is an argument: redacted in any error)
        user = self._key_users.get(key.reveal()) or self.user_arg(self.default_user)
        self.cli("preauthkeys", "expire", key.reveal(), "--user", user)

    def set_policy_text(self, text: str) -> None:
        """Make ``text`` (a v2 policy, JSON or HuJSON) the live policy; a version that reads
        policy v1 gets it in v1 (JSON only: a HuJSON text is sent as written)."""
        if self.dialect.policy_v1:
            try:
                text = json.dumps(self.dialect.policy(json.loads(text)), indent=2)
            except json.JSONDecodeError:
                pass
        if self._api_key is not None:
            try:
                self.api("PUT", "policy", {"policy": text})
            except WorldError as e:
                raise WorldError(f"headscale rejected the policy: {e.message}",
                                 "fix the policy (run `headscale policy check` semantics: tags need tagOwners, "
                                 "users end in @)") from None
            return
        # one exec, the policy its argument (a policy holds no secret), instead of a copy (put_archive
        # measured 0.4 s median on the loaded engine) and an exec
        code, out = self.box.exec(["sh", "-c", 'umask 077 && printf "%s" "$1" > /tmp/meshcert-policy.hujson && '
                                   'exec headscale policy set -f /tmp/meshcert-policy.hujson', "sh", text])
        if code != 0:
            raise WorldError(f"headscale rejected the policy: {out.strip()[-800:]}",
                             "fix the policy (run `headscale policy check` semantics: tags need tagOwners, users end in @)")

    def nodes(self) -> list[dict]:
        """Every node, with ``tags`` the tags it carries on every version (dialect.node_tags)."""
        return [self._node(n) for n in self.cli("nodes", "list") or []]

    def _node(self, n: dict) -> dict:
        return {**n, "tags": self.dialect.node_tags(n)} if self.dialect.split_tags else n

    def node_id(self, hostname: str) -> int:
        for n in (self.routes() if self._api_key is not None else self.nodes()):  # the API lists every node
            if n.get("given_name") == hostname or n.get("name") == hostname:
                return int(n["id"])
        raise WorldError(f"headscale has no node named {hostname}")

    def routes(self) -> list[dict]:
        """Every node with its routes as node fields (``available_routes``, ``approved_routes``,
        ``subnet_routes``): the REST API's node list when enabled (a superset of `nodes
        list-routes`, which leaves out nodes without routes), else the CLI's `nodes list-routes`;
        before 0.26 the route table (REST /routes, else `routes list`) folded into the nodes."""
        if self.dialect.routes_table:
            table = self.api("GET", "routes").get("routes") if self._api_key is not None else self.cli("routes", "list")
            return [self._node(n) for n in routes_as_nodes(table or [], self.cli("nodes", "list") or [])]
        if self._api_key is not None:
            return [self._node(n) for n in self.api("GET", "node").get("nodes") or []]
        return [self._node(n) for n in self.cli("nodes", "list-routes") or []]

    def approve_routes(self, node_id: int, cidrs: Iterable[str]) -> dict:
        """Approve exactly ``cidrs`` for the node; returns the node as headscale now holds it
        (its ``approved_routes`` among the rest). Before 0.26: each of the node's advertised
        routes enabled when in ``cidrs``, disabled when not (REST /routes/{id}/enable|disable,
        else `routes enable|disable -r ROUTE_ID`)."""
        cidrs = list(cidrs)
        if self.dialect.routes_table:
            table = self.api("GET", "routes").get("routes") if self._api_key is not None else self.cli("routes", "list")
            mine = [r for r in table or [] if str((r.get("node") or {}).get("id")) == str(node_id)]
            missing = set(cidrs) - {r.get("prefix") for r in mine}
            if missing:
                raise WorldError(f"headscale {self.version}: node {node_id} advertises no route {sorted(missing)}")
            for r in mine:
                want = r.get("prefix") in cidrs
                if bool(r.get("enabled")) != want:
                    action = "enable" if want else "disable"
                    if self._api_key is not None:
                        self.api("POST", f"routes/{int(r['id'])}/{action}")
                    else:
                        self.cli("routes", action, "-r", str(r["id"]))
            return next((n for n in self.routes() if str(n.get("id")) == str(node_id)), {})
        if self._api_key is not None:
            return self._node(self.api("POST", f"node/{int(node_id)}/approve_routes", {"routes": cidrs}).get("node") or {})
        return self._node(self.cli("nodes", "approve-routes", "--identifier", str(node_id), "--routes", ",".join(cidrs))
                          or {})


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
