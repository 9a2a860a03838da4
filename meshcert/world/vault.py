"""Vault: one container kind of the world (issue 13), the credential layer's secret store.

Started from the pinned binary (components.py, tools/vault) with its own storage (a labelled
volume of the run), TLS from a CA made for it, then initialised and unsealed by meshcert
(one key share: a test world, not a production ceremony) and configured as an operator would:

- a file audit device (``/vault/logs/audit.log``): Vault's record of every request, secrets
  HMAC'd (the SSH engine's ``serial_number`` and the database engine's ``username`` are left
  readable: they name a run's credentials without being them);
- the SSH secrets engine at ``ssh/`` as a CA (its own ed25519 key) with role ``run`` signing
  short-lived user certificates for the account ``agent``;
- the database secrets engine at ``database/`` managing PostgreSQL roles on ``database``
  through the ``vaultadmin`` role (whose password Vault rotates at once, so only Vault knows
  it), with role ``run`` creating a login role per request and dropping it at revocation;
- AppRole auth at ``approle/`` with role ``agent``: its tokens may make a child token per run,
  sign with ``ssh/sign/run``, read ``database/creds/run`` and revoke themselves (which revokes
  their leases and children: the run's end);
- where a cluster exists (kind), Kubernetes auth at ``kubernetes/`` (:meth:`Vault.configure_kubernetes`):
  Vault checks a pod's service-account token with the cluster's TokenReview API, and role
  ``agent``, bound to the chart's service account and namespace, issues the same policy and TTLs.

The root token and the unseal key are ``Secret``s (registered: redacted from every log, report
and failure message) and never leave this module except to Vault's API.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import requests

from meshcert.secrets import Secret
from meshcert.world import scratch
from meshcert.world.base import Box, Launcher, WorldError, brief_error, container_state, wait_for
from meshcert.world.ca import Certs, make_certs
from meshcert.world.targets import PG_ADMIN, PG_PORT

VAULT_PORT = 8200
VAULT_ALIAS = "vault"
CONFIG = "/vault/config/vault.hcl"
AUDIT_LOG = "/vault/logs/audit.log"
TLS_CERT, TLS_KEY = "/vault/tls/cert.pem", "/vault/tls/key.pem"
SSH_MOUNT, DB_MOUNT, APPROLE_MOUNT, K8S_MOUNT = "ssh", "database", "approle", "kubernetes"
RUN_ROLE = "run"          # the SSH and database roles a run's credentials come from
APPROLE_ROLE = "agent"    # the agent pod's AppRole
K8S_ROLE = "agent"        # the agent pod's Kubernetes auth role
AGENT_POLICY = "agent-run"
# Upper bounds of a run's credentials: a run asks for its own TTL (its declared length plus a
# margin, CRED-3) and Vault caps it here; 15 minutes is longer than any run meshcert makes.
MAX_TTL = "15m"
DEFAULT_TTL = "5m"

HCL = f"""storage "file" {{
  path = "/vault/data"
}}
listener "tcp" {{
  address       = "0.0.0.0:{VAULT_PORT}"
  tls_cert_file = "{TLS_CERT}"
  tls_key_file  = "{TLS_KEY}"
}}
disable_mlock = true
api_addr      = "https://{VAULT_ALIAS}:{VAULT_PORT}"
ui            = false
log_level     = "info"
"""

# Every role of the two engines (only "run" exists): a role the SUT names wrongly gets Vault's own
# "unknown role" answer, not a bare "permission denied".
AGENT_POLICY_HCL = f"""path "{SSH_MOUNT}/sign/*" {{ capabilities = ["update"] }}
path "{DB_MOUNT}/creds/*" {{ capabilities = ["read"] }}
path "auth/token/create" {{ capabilities = ["update"] }}
path "auth/token/revoke-self" {{ capabilities = ["update"] }}
path "auth/token/lookup-self" {{ capabilities = ["read"] }}
"""

# One login role per request, valid until the lease ends; dropped at revocation. The role may
# read nothing but what PUBLIC may (a query of its own identity and the server's name).
CREATION = ['CREATE ROLE "{{name}}" WITH LOGIN PASSWORD \'{{password}}\' VALID UNTIL \'{{expiration}}\';']
REVOCATION = ['DROP ROLE IF EXISTS "{{name}}";']


class VaultError(WorldError):
    """Vault answered with an error (its message, never a secret: redacted by WorldError)."""


@dataclass
class AppRoleCreds:
    """What the agent pod is given to log in with (as a Kubernetes Secret would hold them)."""
    role_id: str
    secret_id: Secret


@dataclass
class Vault:
    box: Box
    ip: str
    certs: Certs
    root: Secret | None = None
    unseal_key: Secret | None = None
    ssh_ca_public_key: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    issued: list[Secret] = field(default_factory=list)  # the AppRole secret IDs handed out
    _ca_path: str = ""

    # ------------------------------------------------------------------ the API
    @property
    def url(self) -> str:
        return f"https://{self.ip}:{VAULT_PORT}"

    def _session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # never a proxy from the environment: traffic stays on this machine
        s.verify = self._ca_file()
        return s

    def _ca_file(self) -> str:
        """Vault's CA certificate in a file (requests verifies against a path)."""
        if not self._ca_path:
            # in the process's scratch folder: removed at exit, or by the next run's sweep
            self._ca_path = str(scratch.write(f"vault-ca-{id(self):x}.pem", self.certs.ca_pem))
        return self._ca_path

    def call(self, method: str, path: str, body: dict | None = None, token: Secret | None = None,
             timeout: float = 15, ok: tuple[int, ...] = (200, 204)) -> Any:
        """One request to Vault's HTTP API; the JSON it answers (None for 204). A status not in
        ``ok`` raises VaultError with Vault's own error text."""
        headers = {"X-Vault-Token": token.reveal()} if token is not None else {}
        try:
            r = self._session().request(method, f"{self.url}/v1/{path}", json=body, headers=headers,
                                        timeout=timeout)
        except requests.RequestException as e:
            raise VaultError(f"Vault at {self.url} did not answer {method} /v1/{path}: {brief_error(e)}") from None
        if r.status_code not in ok:
            try:
                errs = "; ".join(r.json().get("errors") or []) or r.text[:300]
            except ValueError:
                errs = r.text[:300]
            raise VaultError(f"Vault {method} /v1/{path} answered HTTP {r.status_code}: {errs}")
        if r.status_code == 204 or not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            return r.text

    def seal_status(self) -> dict:
        return self.call("GET", "sys/seal-status")

    def health_state(self) -> str:
        try:
            st = self.seal_status()
            return f"initialized={st.get('initialized')} sealed={st.get('sealed')}"
        except WorldError as e:
            return e.args[0] if e.args else str(e)

    # ------------------------------------------------------------------ bring-up
    def init_and_unseal(self) -> None:
        t = time.monotonic()
        wait_for("Vault's API answering", lambda: self.seal_status() is not None, 60,
                 describe=lambda: f"{self.health_state()}; {container_state(self.box)}")
        init = self.call("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
        self.root = Secret(init["root_token"], "Vault root token")
        self.unseal_key = Secret(init["keys_base64"][0], "Vault unseal key")
        del init
        self.unseal()
        self.timings["init+unseal"] = time.monotonic() - t

    def unseal(self) -> None:
        self.call("PUT", "sys/unseal", {"key": self.unseal_key.reveal()})
        wait_for("Vault unsealed and active", self._active, 60,
                 describe=lambda: f"{self.health_state()}; {container_state(self.box)}")

    def _active(self) -> bool:
        try:  # sys/health answers 200 only when initialised, unsealed and active
            return self._session().get(f"{self.url}/v1/sys/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def seal(self) -> None:
        self.call("PUT", "sys/seal", token=self.root)

    def configure(self, database_host: str, admin_password: Secret) -> None:
        """The operator's configuration (module docstring). ``database_host``: the PostgreSQL
        server's name on Vault's network; ``admin_password``: the vaultadmin role's first password."""
        t = time.monotonic()
        root = self.root
        self.call("PUT", "sys/audit/file", {"type": "file", "options": {"file_path": AUDIT_LOG}}, token=root)
        # SSH CA
        self.call("POST", f"sys/mounts/{SSH_MOUNT}", {"type": "ssh", "config": {
            "max_lease_ttl": MAX_TTL, "audit_non_hmac_response_keys": ["serial_number"],
            "audit_non_hmac_request_keys": ["ttl", "valid_principals"]}}, token=root)
        self.call("POST", f"{SSH_MOUNT}/config/ca", {"generate_signing_key": True, "key_type": "ed25519"}, token=root)
        self.ssh_ca_public_key = self.call("GET", f"{SSH_MOUNT}/config/ca", token=root)["data"]["public_key"]
        self.call("POST", f"{SSH_MOUNT}/roles/{RUN_ROLE}", {
            # two accounts, as an operator's role often allows: a certificate names the one a run
            # asked for, and sshd takes it only for that account (the targets have only "agent")
            "key_type": "ca", "allow_user_certificates": True, "allowed_users": "agent,operator",
            "default_user": "agent",
            "ttl": DEFAULT_TTL, "max_ttl": MAX_TTL, "algorithm_signer": "default",
            "key_id_format": "vault-{{role_name}}-{{token_display_name}}-{{public_key_hash}}",
            "allowed_extensions": "permit-pty", "default_extensions": {"permit-pty": ""}}, token=root)
        # database users
        self.call("POST", f"sys/mounts/{DB_MOUNT}", {"type": "database", "config": {
            "max_lease_ttl": MAX_TTL, "audit_non_hmac_response_keys": ["username"]}}, token=root)
        self.call("POST", f"{DB_MOUNT}/config/postgres", {
            "plugin_name": "postgresql-database-plugin", "allowed_roles": RUN_ROLE,
            "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@{database_host}:{PG_PORT}/postgres"
                              "?sslmode=require",
            "username": PG_ADMIN, "password": admin_password.reveal(),
            "username_template": "v-run-{{random 12 | lowercase}}"}, token=root)
        self.call("POST", f"{DB_MOUNT}/rotate-root/postgres", {}, token=root)  # now only Vault knows it
        self.call("POST", f"{DB_MOUNT}/roles/{RUN_ROLE}", {
            "db_name": "postgres", "creation_statements": CREATION, "revocation_statements": REVOCATION,
            "default_ttl": DEFAULT_TTL, "max_ttl": MAX_TTL}, token=root)
        # the agent's auth
        self.call("POST", f"sys/auth/{APPROLE_MOUNT}", {"type": "approle"}, token=root)
        self.call("PUT", f"sys/policies/acl/{AGENT_POLICY}", {"policy": AGENT_POLICY_HCL}, token=root)
        self.call("POST", f"auth/{APPROLE_MOUNT}/role/{APPROLE_ROLE}", {
            "token_policies": [AGENT_POLICY], "token_ttl": DEFAULT_TTL, "token_max_ttl": MAX_TTL,
            "secret_id_ttl": "4h", "token_type": "service"}, token=root)
        self.timings["configure"] = time.monotonic() - t

    def configure_kubernetes(self, host: str, ca_pem: str, reviewer_jwt: Secret) -> None:
        """Kubernetes auth, as an operator configures it for a cluster: ``host`` is the API server's
        URL as Vault's container reaches it, ``ca_pem`` the cluster's CA, ``reviewer_jwt`` the token
        of a service account bound to ``system:auth-delegator`` (Vault calls TokenReview with it).
        No role yet: :meth:`bind_kubernetes_role`."""
        t = time.monotonic()
        root = self.root
        if f"{K8S_MOUNT}/" not in (self.call("GET", "sys/auth", token=root).get("data") or {}):
            self.call("POST", f"sys/auth/{K8S_MOUNT}", {"type": "kubernetes"}, token=root)
        self.call("POST", f"auth/{K8S_MOUNT}/config", {
            "kubernetes_host": host, "kubernetes_ca_cert": ca_pem if ca_pem.endswith("\n") else ca_pem + "\n",
            "token_reviewer_jwt": reviewer_jwt.reveal(), "disable_local_ca_jwt": True}, token=root)
        self.timings["kubernetes auth"] = time.monotonic() - t

    def bind_kubernetes_role(self, service_account: str, namespace: str, role: str = K8S_ROLE) -> None:
        """(Re)write the Kubernetes auth role ``role``: pods running as ``service_account`` in
        ``namespace`` log in with the agent's policy and TTLs (AppRole's role's)."""
        self.call("POST", f"auth/{K8S_MOUNT}/role/{role}", {
            "bound_service_account_names": [service_account], "bound_service_account_namespaces": [namespace],
            "token_policies": [AGENT_POLICY], "token_ttl": DEFAULT_TTL, "token_max_ttl": MAX_TTL,
            "token_type": "service"}, token=self.root)

    def approle_creds(self) -> AppRoleCreds:
        """A role ID and a fresh secret ID for the agent pod (as its Kubernetes Secret would hold)."""
        role_id = self.call("GET", f"auth/{APPROLE_MOUNT}/role/{APPROLE_ROLE}/role-id", token=self.root)["data"]["role_id"]
        sid = self.call("POST", f"auth/{APPROLE_MOUNT}/role/{APPROLE_ROLE}/secret-id", {}, token=self.root)
        creds = AppRoleCreds(role_id, Secret(sid["data"]["secret_id"], "Vault AppRole secret ID"))
        self.issued.append(creds.secret_id)
        return creds

    def pod_secrets(self) -> list[str]:
        """The AppRole secret IDs meshcert handed to pods (what a SUT logs in to Vault with)."""
        return [s.reveal() for s in self.issued]

    def audit_hashes(self, words: list[str]) -> dict[str, str]:
        """{word: its HMAC under the audit device's key} (sys/audit-hash): what the audit log
        writes for a secret, so a secret Vault issued can be recognised in text without
        meshcert ever holding it."""
        out: dict[str, str] = {}
        s = self._session()
        for w in dict.fromkeys(words):
            try:
                r = s.post(f"{self.url}/v1/sys/audit-hash/file", json={"input": w},
                           headers={"X-Vault-Token": self.root.reveal()}, timeout=15)
            except requests.RequestException as e:
                raise VaultError(f"Vault at {self.url} did not answer sys/audit-hash: {brief_error(e)}") from None
            if r.status_code != 200:
                raise VaultError(f"Vault sys/audit-hash answered HTTP {r.status_code}")
            out[w] = r.json()["data"]["hash"] if "data" in r.json() else r.json()["hash"]
        return out

    # ------------------------------------------------------------------ what a run does (the tool layer's calls)
    def login(self, creds: AppRoleCreds) -> Secret:
        """An AppRole login: a token for one run (the role's token TTL; the leases it makes ask for
        their own, the run's declared length plus a margin)."""
        body: dict[str, Any] = {"role_id": creds.role_id, "secret_id": creds.secret_id.reveal()}
        auth = self.call("POST", f"auth/{APPROLE_MOUNT}/login", body)["auth"]
        return Secret(auth["client_token"], "Vault token")

    def run_token(self, login_token: Secret, ttl: str) -> Secret:
        """A child of the login token for one run, living ``ttl`` (the run's declared length plus
        a margin): the leases it makes die with it, when the run ends (revoked) or when it dies
        without ending (expired)."""
        auth = self.call("POST", "auth/token/create", {"ttl": ttl, "explicit_max_ttl": ttl,
                                                      "policies": [AGENT_POLICY], "renewable": False,
                                                      "display_name": "run"}, token=login_token)["auth"]
        return Secret(auth["client_token"], "Vault run token")

    def sign_ssh(self, token: Secret, public_key: str, ttl: str) -> dict:
        """Vault signs ``public_key`` for the account ``agent``: {signed_key, serial_number}."""
        return self.call("POST", f"{SSH_MOUNT}/sign/{RUN_ROLE}",
                         {"public_key": public_key, "valid_principals": "agent", "ttl": ttl,
                          "cert_type": "user"}, token=token)["data"]

    def db_creds(self, token: Secret) -> tuple[str, Secret, str]:
        """A database role made for this request: (username, password, lease id)."""
        r = self.call("GET", f"{DB_MOUNT}/creds/{RUN_ROLE}", token=token)
        return r["data"]["username"], Secret(r["data"]["password"], "database password"), r["lease_id"]

    def revoke_self(self, token: Secret) -> None:
        """The run's end: its token revoked, and with it every lease it made (its database role)."""
        self.call("POST", "auth/token/revoke-self", {}, token=token)

    def audit_entries(self) -> list[dict]:
        """Vault's audit log, one dict per line (secrets in it are HMAC'd by Vault). Read as the
        file's bytes (a tar from the engine: an exec's output stream is no place for a large
        file); a last line Vault is still writing is left for the next read."""
        try:
            stream, _ = self.box.container.get_archive(AUDIT_LOG)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.next()
                raw = tar.extractfile(member).read() if member else b""
        except (docker.errors.APIError, tarfile.TarError, AttributeError) as e:
            raise VaultError(f"could not read Vault's audit log {AUDIT_LOG}: {e}") from None
        text = raw.decode("utf-8", errors="replace")
        lines = text.split("\n")[:-1]  # the part after the last newline is a line still being written
        return [json.loads(line) for line in lines if line.strip().startswith("{")]


def start_vault(run: Launcher, image: str, volume: str) -> Box:
    """Vault's container on the WAN network as ``vault``, storage on ``volume``. Its TLS
    certificate names the alias and its address, which is known only once the container runs:
    Vault waits for the key file, which :func:`serve_tls` copies in."""
    box = run(VAULT_ALIAS, image,
              ["sh", "-c", f"mkdir -p /vault/logs; until [ -s {TLS_KEY} ]; do sleep 0.1; done; "
                           f"exec vault server -config={CONFIG}"],
              network="wan", aliases=[VAULT_ALIAS], files={CONFIG: (HCL.encode(), 0o644)},
              volumes={volume: {"bind": "/vault/data", "mode": "rw"}},
              environment={"SKIP_SETCAP": "1"})
    return box


def serve_tls(box: Box, ip: str, run_id: str) -> Certs:
    """A certificate for ``vault`` and its address from a CA made for it, copied in (Vault starts)."""
    certs = make_certs(run_id, [VAULT_ALIAS, ip, "localhost"])
    box.put({TLS_CERT: (certs.cert_pem, 0o644), TLS_KEY: (certs.key_pem, 0o600)})
    return certs
