"""Kubernetes auth on kind (issue 13: "an auth method the agent pod uses: Kubernetes auth where a
cluster exists"): the reference chart installed on a kind cluster beside the credential world,
with its own ServiceAccount and the chart's ``vault`` values (VAULT_AUTH=kubernetes); the SUT in
that pod logs in to the world's Vault with the token the kubelet projected into it, and a run
gets its credentials, uses them and loses them at its end.

Judged from Vault's audit log (every request and response, secrets HMAC'd; a login's
``auth.metadata`` -- the service account's name and namespace, the role -- is readable; a token's
accessor is HMAC'd the same way wherever it appears, so a login's token and the child it makes
can be followed through the log), PostgreSQL's roles, and the targets' own logs.
"""

from __future__ import annotations

import secrets as pysecrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from meshcert.checks import cred
from meshcert.checks.helm_pod import KindRelease, kind_release
from meshcert.k8s import vaultauth
from meshcert.k8s.chart import Chart
from meshcert.world.base import WorldError, wait_for
from meshcert.world.targets import pg_roles
from meshcert.world.vault import AGENT_POLICY, K8S_MOUNT, K8S_ROLE, Vault

VAULT_CA_CONFIGMAP = "meshcert-vault-ca"
LOGIN_PATH = f"auth/{K8S_MOUNT}/login"
# Past a run's end, how long Vault may take to drop its database role (revoke-self revokes the
# lease at once; the DROP ROLE runs on PostgreSQL): polled each second.
DROP_S = 20.0


@dataclass
class Verdict:
    """What failed, one line each (expected, then what was observed)."""
    failed: list[str] = field(default_factory=list)

    def that(self, ok: bool, expected: str, observed: Any = None) -> bool:
        if not ok:
            self.failed.append(f"{expected}; observed: {observed!r}"[:1500])
        return bool(ok)

    def text(self) -> str:
        return "\n".join(f"- {f}" for f in self.failed)


@dataclass
class VaultRelease:
    rel: KindRelease
    service_account: str   # the ServiceAccount the chart made for the pod
    bound: tuple[str, str]  # (service account, namespace) Vault's role admits


def vault_values(vault: Vault, role: str = K8S_ROLE) -> dict:
    """The chart values of the run lifecycle with Kubernetes auth."""
    return {"serviceAccount": {"create": True},
            "vault": {"address": vault.url, "auth": "kubernetes", "kubernetesRole": role,
                      "caBundle": {"configMap": VAULT_CA_CONFIGMAP, "key": "ca.pem"}}}


@contextmanager
def vault_release(world, vault: Vault, cluster, chart: Chart, *, role: str = K8S_ROLE,
                  bind_namespace: str | None = None, bind_service_account: str | None = None,
                  mutant: str = "") -> Iterator[VaultRelease]:
    """The chart on ``cluster`` with Kubernetes auth to ``vault`` (Vault's CA in a ConfigMap, the
    pod's own ServiceAccount), and Vault's role ``agent`` bound to that service account and the
    release's namespace -- or to ``bind_namespace`` / ``bind_service_account`` (a broken world
    setting); ``mutant``: the reference SUT's SUT_MUTANT (a broken SUT). The pod's SUT is asked
    nothing until the caller does (it logs in at a run's start)."""
    ca = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": VAULT_CA_CONFIGMAP},
          "data": {"ca.pem": vault.certs.ca_pem.decode()}}
    values = vault_values(vault, role)
    if mutant:
        values["controller"] = {"env": {"SUT_MUTANT": mutant}}
    with kind_release(world, cluster, chart, values_extra=values, objects=[ca],
                      acceptRoutes=True) as rel:
        sa = next((d["metadata"]["name"] for d in rel.manifests.docs if d.get("kind") == "ServiceAccount"), "")
        if not sa:
            raise WorldError(f"the chart {chart.label} rendered no ServiceAccount with serviceAccount.create true")
        bound = (bind_service_account or sa, bind_namespace or rel.namespace)
        vault.bind_kubernetes_role(*bound)
        rel.pod.wait_ready(rel.controller, 90)
        yield VaultRelease(rel, sa, bound)


def configure_vault(vault: Vault, cluster) -> str:
    """Vault's Kubernetes auth against the kind cluster (meshcert/k8s/vaultauth.py); the role is
    bound per release (:func:`vault_release`). Returns the API server URL Vault uses."""
    return vaultauth.configure(vault, cluster)


# ------------------------------------------------------------------ Vault's audit log
def _auth(e: dict) -> dict:
    return ((e.get("response") or {}).get("auth") or e.get("auth") or {}) if e.get("type") == "response" else {}


def logins(entries: list[dict]) -> list[dict]:
    """Each response on auth/kubernetes/login: {"error", "metadata", "policies", "accessor"}."""
    out = []
    for e in entries:
        if e.get("type") == "response" and (e.get("request") or {}).get("path") == LOGIN_PATH:
            a = _auth(e)
            out.append({"error": e.get("error") or "", "metadata": a.get("metadata") or {},
                        "policies": a.get("policies") or a.get("token_policies") or [], "accessor": a.get("accessor")})
    return out


def _by(entries: list[dict], path: str, accessor: str | None) -> list[dict]:
    """Responses on ``path`` to requests made with the token whose (HMAC'd) accessor is ``accessor``."""
    return [e for e in entries if e.get("type") == "response" and (e.get("request") or {}).get("path") == path
            and accessor and (e.get("auth") or {}).get("accessor") == accessor]


# ------------------------------------------------------------------ the run
def k8s_run(world, vault: Vault, vr: VaultRelease, tools: bool = False) -> tuple[Verdict, dict]:
    """One run through the kind pod's SUT, judged (module docstring): the run start obtains
    credentials; Vault's audit log shows one successful login on auth/kubernetes as the pod's
    service account and namespace, with the agent's policy; that login's token made the run's
    token, which got one SSH certificate and one database role; the run's end revoked the login
    token, and the database role is gone from PostgreSQL. ``tools``: the run's SSH command on
    ``server`` and SQL query on ``database`` also succeed with those credentials (CRED-4's shape:
    sshd accepted that certificate, PostgreSQL authorized that role)."""
    v = Verdict()
    sut = vr.rel.sut()
    ns, sa = vr.rel.namespace, vr.service_account
    n = len(vault.audit_entries())
    run = "mc-k8s-" + pysecrets.token_hex(4)
    code, start = sut.run_start(run, cred.RUN_LENGTH_S)
    seen: dict[str, Any] = {"run": run, "start": (code, start)}
    started = v.that(code == 200 and start.get("ok") is True, "the run start obtains credentials (ok true)", start)
    entries = vault.audit_entries()[n:]
    ins = logins(entries)
    seen["logins"] = ins
    mine = [x for x in ins if not x["error"] and x["metadata"].get("service_account_name") == sa
            and x["metadata"].get("service_account_namespace") == ns]
    v.that(len(mine) == 1 and mine[0]["metadata"].get("role") == K8S_ROLE and AGENT_POLICY in mine[0]["policies"],
           f"Vault's audit log: one login on {LOGIN_PATH} as service account {ns}/{sa} (role {K8S_ROLE}, policy "
           f"{AGENT_POLICY})", [{k: x[k] for k in ("error", "metadata", "policies")} for x in ins])
    if not (started and mine):
        if code == 200 and start.get("ok"):
            sut.run_end(run)
        return v, seen
    login = mine[0]["accessor"]
    children = [_auth(e).get("accessor") for e in _by(entries, "auth/token/create", login) if not e.get("error")]
    v.that(len(children) == 1, "the login's token made one run token (auth/token/create)", len(children))
    child = children[0] if children else None
    signs = [e for e in _by(entries, cred.SIGN_PATH, child) if not e.get("error")]
    dbs = [e for e in _by(entries, cred.DB_PATH, child) if not e.get("error")]
    v.that(len(signs) == 1 and len(dbs) == 1, "the run's token got one SSH certificate (ssh/sign/run) and one "
           "database role (database/creds/run)", (len(signs), len(dbs)))
    user = ((dbs[0].get("response") or {}).get("data") or {}).get("username") if dbs else None
    seen["user"] = user
    db = world.boxes["database"]
    v.that(bool(user) and user in pg_roles(db), "the run's database role exists in PostgreSQL during the run",
           (user, pg_roles(db)))
    if tools:
        sn = ((signs[0].get("response") or {}).get("data") or {}).get("serial_number") if signs else None
        serial = int(sn.replace(":", "").replace("-", ""), 16) if isinstance(sn, str) and not sn.startswith("hmac-") \
            else None
        x = cred._first_ok(lambda: sut.run_exec(run, world.address("server"), "echo meshcert-run $(hostname)"))
        q = cred._first_ok(lambda: sut.run_query(run, world.address("database"), "SELECT current_user"))
        seen["exec"], seen["query"] = x, q
        v.that(x[1].get("ok") is True and "meshcert-run server" in x[1].get("stdout", ""),
               "the run's SSH command ran on server (over the mesh) and its output came back", x)
        v.that(serial is not None and serial in cred.sshd_serials(world, "server"),
               "server's sshd accepted the run's certificate (its serial)", serial)
        v.that(q[1].get("ok") is True and q[1].get("stdout", "").strip() == user,
               "the run's SQL query ran on database as the run's role", q)
    n_end = len(vault.audit_entries())
    code, end = sut.run_end(run)
    v.that(code == 200 and end.get("ok") is True, "the run's end answers ok (revoked)", end)
    revokes = [e for e in _by(vault.audit_entries()[n_end:], "auth/token/revoke-self", login) if not e.get("error")]
    v.that(len(revokes) == 1, "Vault's audit log: the run's end revoked the login's token (auth/token/revoke-self)",
           len(revokes))
    if user:
        try:
            wait_for(f"PostgreSQL role {user} dropped after the run's end", lambda: user not in pg_roles(db), DROP_S,
                     interval=1)
            gone = True
        except WorldError:
            gone = False
        v.that(gone, f"the run's database role {user} gone from PostgreSQL within {DROP_S:g} s of its end",
               pg_roles(db))
    seen["ended_at"] = time.monotonic()
    return v, seen
