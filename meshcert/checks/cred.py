"""The credential layer's clauses (issue 13), judged from the real targets and Vault's audit log:
a run's SSH command and SQL query succeed over the mesh with the credentials Vault issued for it
(CRED-4), each run gets its own (CRED-5), after the run they are dead (CRED-3), an ACL-denied
target stays unreachable with valid credentials (CRED-6), and none of them is ever shown
(CRED-7). These run on a world with the credential layer (world/credentials.py:
credential_topology + add_vault), with the SUT started by credentials.start_sut_with_vault.

Where each judgement comes from:
- Vault's audit log: the serial numbers of the certificates Vault signed, the TTL and principals
  each signing was asked for, the names of the database roles it made, the TTL of each token
  made with auth/token/create (all left readable by the world's audit configuration; every
  secret in that log is HMAC'd by Vault, and sys/audit-hash recognises one in a text);
- the targets' own logs and state: sshd's "Accepted publickey ... (serial N)" and "Connection
  from" lines (LogLevel VERBOSE), PostgreSQL's "connection authorized: user=..." lines
  (log_connections), and the roles PostgreSQL holds (pg_roles)."""

from __future__ import annotations

import json
import re
import secrets as pysecrets
import time
from collections.abc import Callable

from meshcert.checks.sut import DEADLINE_S, clause, ep, mesh_spec
from meshcert.secrets import leaks
from meshcert.world.base import WorldError, wait_for
from meshcert.world.interface import SecretStore, WorldAPI
from meshcert.world.targets import pg_roles

# The run length meshcert declares at a run's start: longer than the few tool calls it makes
# (each well under 5 s over a live session) so the run never outlives its own credentials.
RUN_LENGTH_S = 30.0
# The run CRED-3 never ends: short, so its credentials' TTL passes within the test.
DEAD_RUN_LENGTH_S = 5.0
# How long a run's credentials may outlive its declared length (CRED-3): the SUT's run start may
# take its deadline (10 s) before the run's clock starts, and Vault's expiry and sshd's clock
# check need a few seconds on a loaded 2-core machine (5 s).
TTL_MARGIN_S = 15.0
# Past the TTL a run asked for, how long Vault may take to drop its database role: Vault's
# expiration manager revokes a lease from its own timer when the token expires, then runs the
# DROP ROLE on PostgreSQL, and we poll each second (2 s measured idle; 10 s on a loaded machine).
EXPIRY_SLACK_S = 10.0
# The first WireGuard handshake after a change can be lost for 5 s, once 16-17 s (common.md):
# a run's first tool call is retried this long.
FIRST_PATH_S = 25.0
# A tool call to an ACL-denied target: the destination's packet filter drops the SYN, so ssh
# waits out its ConnectTimeout (this) and fails.
DENIED_TIMEOUT_S = 6.0
SERIAL_LINE = re.compile(r"Accepted publickey for (\S+) from \S+ port \d+ ssh2: \S+-CERT .* \(serial (\d+)\)")
SIGN_PATH, DB_PATH = "ssh/sign/run", "database/creds/run"
# The audit log's fields that hold a secret Vault issued (HMAC'd there): a database password,
# a signed certificate, a token.
SECRET_FIELDS = (("data", "password"), ("data", "signed_key"), ("auth", "client_token"))
# The words of a text that might be one of them (sys/audit-hash compares whole values): runs of
# the characters Vault's passwords and tokens are made of.
WORDS = (re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+/=-]{7,}"), re.compile(r"[A-Za-z0-9-]{8,}"))

CRED_CHECKS: dict[str, Callable[..., None]] = {}


def cred_check(cid: str):
    """Register the decorated function as the check of ``cid`` on a credential world."""
    def register(fn):
        CRED_CHECKS[cid] = fn
        return fn
    return register


# ------------------------------------------------------------------ what Vault's audit log says
def _responses(store: SecretStore, path: str) -> list[dict]:
    return [e for e in store.audit_entries()
            if e.get("type") == "response" and (e.get("request") or {}).get("path") == path]


def _readable(v) -> bool:
    return isinstance(v, str) and not v.startswith("hmac-")


def serials(store: SecretStore) -> list[int]:
    """The serial numbers of the SSH certificates Vault signed, in order (hex as Vault says it)."""
    out = []
    for e in _responses(store, SIGN_PATH):
        v = ((e.get("response") or {}).get("data") or {}).get("serial_number")
        if _readable(v):
            out.append(int(v.replace(":", "").replace("-", ""), 16))
    return out


def db_users(store: SecretStore) -> list[str]:
    return [v for e in _responses(store, DB_PATH)
            if _readable(v := ((e.get("response") or {}).get("data") or {}).get("username"))]


def token_ttls(store: SecretStore) -> list[int]:
    """The TTLs (s) of the tokens made with auth/token/create (a run's token): the audit
    entry's ``response.auth.token_ttl`` (vault/audit/types.go)."""
    return [int(((e.get("response") or {}).get("auth") or {}).get("token_ttl") or 0)
            for e in _responses(store, "auth/token/create")]


def _seconds(v) -> int:
    """A Vault duration as asked ("45s", "1h", "2m", 45) in seconds; 0 when unreadable."""
    if isinstance(v, int | float):
        return int(v)
    m = re.fullmatch(r"(\d+)([smh]?)", str(v or "").strip())
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)] if m else 0


def sign_requests(store: SecretStore) -> list[dict]:
    """What each signing was asked for: {"ttl": seconds, "principals": "..."} (readable in the
    audit log: the ssh mount's audit_non_hmac_request_keys)."""
    return [{"ttl": _seconds(d.get("ttl")), "principals": d.get("valid_principals")}
            for e in _responses(store, SIGN_PATH) if (d := (e.get("request") or {}).get("data") or {}) is not None]


def issued_hmacs(store: SecretStore, since: int = 0) -> set[str]:
    """The HMACs of every secret Vault issued (passwords, certificates, tokens), from audit
    entry ``since`` on."""
    out = set()
    for e in store.audit_entries()[since:]:
        resp = e.get("response") or {} if e.get("type") == "response" else {}
        for part, key in SECRET_FIELDS:
            v = (resp.get(part) or {}).get(key)
            if isinstance(v, str) and v.startswith("hmac-"):
                out.add(v)
    return out


# ------------------------------------------------------------------ what the targets say
def sshd_serials(world: WorldAPI, host: str) -> list[int]:
    return [int(m.group(2)) for m in SERIAL_LINE.finditer(world.raw_logs(host))]


def sshd_connections(world: WorldAPI, host: str) -> int:
    """How many TCP connections sshd on ``host`` has seen (LogLevel VERBOSE: "Connection from")."""
    return world.raw_logs(host).count("Connection from ")


def pg_users(world: WorldAPI, host: str = "database") -> list[str]:
    return re.findall(r"connection authorized: user=(\S+)", world.raw_logs(host))


# ------------------------------------------------------------------ a run
def _first_ok(call, timeout: float = FIRST_PATH_S):
    """Retry a tool call (its first use may meet the first-handshake loss) until it succeeds."""
    last: list = []

    def ok():
        last[:] = [call()]
        return last[0][0] == 200 and last[0][1].get("ok")
    try:
        wait_for("a run's first tool call", ok, timeout, interval=1)
    except WorldError:
        pass
    return last[0]


def _exec(world: WorldAPI, pod: str, run: str, host: str, command: str, timeout: float = 15):
    """A run's SSH command; (HTTP code, answer); an ended run's refusal (HTTP 409) included."""
    try:
        return world.sut(pod).run_exec(run, world.address(host) if host in world.boxes else host, command,
                                       timeout_s=timeout)
    except Exception as e:  # noqa: BLE001 -- an answer the client refuses is an observation here
        return 0, {"ok": False, "error": str(e)}


def run_once(world: WorldAPI, store: SecretStore, pod: str = "agent", end: bool = True,
             length: float = RUN_LENGTH_S) -> dict:
    """One run through the SUT: start, an SSH command on ``server``, an SQL query on ``database``,
    end (unless ``end`` is False). Returns what was seen, including the new serial(s), role(s),
    token TTL(s) and signing request(s) Vault's audit log names for it."""
    sut = world.sut(pod)
    run = "mc-" + pysecrets.token_hex(4)
    n_audit = len(store.audit_entries())
    before_serials, before_users = serials(store), db_users(store)
    n_ttls, n_signs = len(token_ttls(store)), len(sign_requests(store))
    t0 = time.monotonic()
    code, start = sut.run_start(run, length)
    seen = {"run": run, "start": (code, start), "t0": t0, "audit_from": n_audit}
    if code == 200 and start.get("ok"):
        seen["exec"] = _first_ok(lambda: sut.run_exec(run, world.address("server"), "echo meshcert-run $(hostname)"))
        seen["query"] = _first_ok(lambda: sut.run_query(run, world.address("database"),
                                                        "SELECT current_user || ' ' || current_setting('cluster_name')"))
    seen["serials"] = [s for s in serials(store) if s not in before_serials]
    seen["users"] = [u for u in db_users(store) if u not in before_users]
    seen["token_ttls"] = token_ttls(store)[n_ttls:]
    seen["signs"] = sign_requests(store)[n_signs:]
    if end and code == 200:
        seen["end"] = sut.run_end(run)
        seen["ended_at"] = time.monotonic()
    return seen


def _started(e, seen) -> bool:
    code, start = seen["start"]
    return e.that(code == 200 and start.get("ok") is True, "the run start obtains credentials (ok true)", start)


# ------------------------------------------------------------------ the clauses
@cred_check("CRED-4")
def cred4_run_uses_issued_credentials(world: WorldAPI, store: SecretStore, pod: str = "agent") -> None:
    """CRED-4: a run's SSH command and SQL query succeed over the mesh with the credentials Vault
    issued for that run: the results come back, and the targets logged the login with exactly
    the certificate serial and database role Vault's audit log names for the run."""
    with clause(world, "CRED-4") as e:
        seen = run_once(world, store, pod)
        if not _started(e, seen):
            return
        code, r = seen["exec"]
        e.that(r.get("ok") is True and "meshcert-run server" in r.get("stdout", ""),
               "the run's SSH command ran on server and its output came back", r)
        code, q = seen["query"]
        e.that(q.get("ok") is True and q.get("stdout", "").strip().endswith(" database"),
               "the run's SQL query ran on database and its rows came back", q)
        e.that(len(seen["serials"]) == 1, "Vault's audit log names one certificate signed for the run",
               seen["serials"])
        e.that(len(seen["users"]) == 1, "Vault's audit log names one database role made for the run", seen["users"])
        e.that(bool(seen["serials"]) and seen["serials"][0] in sshd_serials(world, "server"),
               "server's sshd accepted that certificate (its serial in sshd's log)", sshd_serials(world, "server"))
        e.that(bool(seen["users"]) and seen["users"][0] in pg_users(world),
               "PostgreSQL authorized that role (log_connections)", pg_users(world)[-5:])
        e.that(bool(seen["users"]) and q.get("stdout", "").startswith(seen["users"][0] + " "),
               "the query ran as that role", q.get("stdout"))


@cred_check("CRED-5")
def cred5_each_run_its_own(world: WorldAPI, store: SecretStore, pod: str = "agent") -> None:
    """CRED-5: two runs get different credentials: each its own certificate serial and database
    role in Vault's audit log, and the targets logged each run's own."""
    with clause(world, "CRED-5") as e:
        a, b = run_once(world, store, pod), run_once(world, store, pod)
        if not (_started(e, a) and _started(e, b)):
            return
        e.that(bool(a["serials"]) and bool(b["serials"]) and set(a["serials"]).isdisjoint(b["serials"]),
               "each run a certificate of its own (a new serial in Vault's audit log for each)",
               (a["serials"], b["serials"]))
        e.that(bool(a["users"]) and bool(b["users"]) and set(a["users"]).isdisjoint(b["users"]),
               "each run a database role of its own (a new role in Vault's audit log for each)",
               (a["users"], b["users"]))
        accepted = sshd_serials(world, "server")
        e.that(all(s in accepted for s in a["serials"] + b["serials"]),
               "server's sshd accepted each run's own certificate", accepted[-4:])
        authorized = pg_users(world)
        e.that(all(u in authorized for u in a["users"] + b["users"]),
               "PostgreSQL authorized each run's own role", authorized[-4:])


@cred_check("CRED-3")
def cred3_dead_after_the_run(world: WorldAPI, store: SecretStore, pod: str = "agent") -> None:
    """CRED-3 (module docstring of the clause in clauses.yaml): an ended run's role is gone and its
    certificate brings no login; a run never ended loses both within the TTL it asked for; every
    TTL asked is at most the declared length + TTL_MARGIN_S."""
    with clause(world, "CRED-3") as e:
        bound = RUN_LENGTH_S + TTL_MARGIN_S
        seen = run_once(world, store, pod)
        if not (_started(e, seen) and e.that(bool(seen["users"]) and bool(seen["serials"]),
                                             "Vault's audit log names the run's role and certificate",
                                             (seen["users"], seen["serials"]))):
            return
        e.that(seen["exec"][1].get("ok") is True, "the run's SSH command worked during the run (positive control)",
               seen["exec"][1])
        user, serial = seen["users"][0], seen["serials"][0]
        db = world.boxes["database"]
        _gone_by(e, db, user, time.monotonic() + EXPIRY_SLACK_S, "after the run's end")
        before = sshd_serials(world, "server").count(serial)
        code, again = _exec(world, pod, seen["run"], "server", "true")
        e.that(sshd_serials(world, "server").count(serial) == before,
               "no login with the ended run's certificate reaches server's sshd (a command asked of the ended run)",
               f"{sshd_serials(world, 'server').count(serial) - before} more acceptance(s) of serial {serial}; "
               f"the SUT answered HTTP {code} {again}")
        _ttls_within(e, seen, RUN_LENGTH_S)

        # a run that dies without ending: never ended; its credentials must die with their TTL
        dead = run_once(world, store, pod, end=False, length=DEAD_RUN_LENGTH_S)
        if not (_started(e, dead) and dead["users"] and dead["serials"] and dead["token_ttls"] and dead["signs"]):
            e.that(False, "a second run (never ended) with credentials named in Vault's audit log", dead)
            return
        _ttls_within(e, dead, DEAD_RUN_LENGTH_S)
        token_ttl, cert_ttl = dead["token_ttls"][0], dead["signs"][0]["ttl"]
        e.that(dead["exec"][1].get("ok") is True, "the never-ended run's SSH command worked (positive control)",
               dead["exec"][1])
        _gone_by(e, db, dead["users"][0], dead["t0"] + min(token_ttl, bound) + EXPIRY_SLACK_S,
                 f"within the TTL its token asked for ({token_ttl} s) + {EXPIRY_SLACK_S:g} s, the run never ended")
        # past the certificate's validity sshd refuses it: a command asked of the never-ended run
        # fails by then (polled every 2 s), and once it fails no login with its serial follows
        serial = dead["serials"][0]
        last: list = []

        def refused() -> bool:
            last[:] = [_exec(world, pod, dead["run"], "server", "true")]
            return not last[0][1].get("ok")
        by = dead["t0"] + min(cert_ttl, bound) + EXPIRY_SLACK_S
        try:
            wait_for("the never-ended run's SSH command failing", refused, max(0.5, by - time.monotonic()), interval=2)
            failed = True
        except WorldError:
            failed = False
        e.that(failed, f"the never-ended run's SSH command fails within its certificate's TTL ({cert_ttl} s) + "
               f"{EXPIRY_SLACK_S:g} s", last[0] if last else None)
        before = sshd_serials(world, "server").count(serial)
        code, late = _exec(world, pod, dead["run"], "server", "true")
        e.that(sshd_serials(world, "server").count(serial) == before,
               "no login with the never-ended run's certificate once that TTL is over",
               f"sshd accepted serial {serial} again; the SUT answered HTTP {code} {late}")
        try:
            world.sut(pod).run_end(dead["run"])  # tidy: whatever the SUT still holds of it
        except Exception:  # noqa: BLE001 -- the run's end is not what is judged here
            pass


def _gone_by(e, db, user: str, deadline: float, when: str) -> None:
    try:
        wait_for(f"PostgreSQL role {user} dropped {when}", lambda: user not in pg_roles(db),
                 max(0.5, deadline - time.monotonic()), interval=1)
        gone = True
    except WorldError:
        gone = False
    e.that(gone, f"the run's role {user} gone from PostgreSQL {when}", pg_roles(db))


def _ttls_within(e, seen: dict, length: float) -> None:
    bound = length + TTL_MARGIN_S
    ttls = seen["token_ttls"]
    e.that(bool(ttls) and all(0 < t <= bound for t in ttls),
           f"the run's Vault token (its database lease dies with it) asked for at most its declared length "
           f"{length:g} s + {TTL_MARGIN_S:g} s ({bound:g} s), per Vault's audit log", f"token TTLs {ttls} s")
    certs = [s["ttl"] for s in seen["signs"]]
    e.that(bool(certs) and all(0 < t <= bound for t in certs),
           f"the run's certificate asked for at most {bound:g} s of validity, per Vault's audit log",
           f"certificate TTLs {certs} s")


@cred_check("CRED-6")
def cred6_denied_target_unreachable_with_credentials(world: WorldAPI, store: SecretStore, pod: str = "agent") -> None:
    """CRED-6: with credentials that work (server's sshd and database's PostgreSQL took them in
    this run), SSH to database -- whose sshd trusts the same CA, but the policy grants the agent
    only its ports 5432 and 3306 -- fails and database's sshd sees no connection; and server's
    sshd, asked at its addresses off the mesh, sees none either (targets take SSH and SQL only
    from tailscale0)."""
    with clause(world, "CRED-6") as e:
        seen = run_once(world, store, pod, end=False)
        try:
            if not _started(e, seen):
                return
            ok_ssh = e.that(seen["exec"][1].get("ok") is True, "the run's SSH command on server works (positive control)",
                            seen["exec"][1])
            ok_sql = e.that(seen["query"][1].get("ok") is True,
                            "the run's SQL query on database works (positive control: the path to that node)",
                            seen["query"][1])
            if not (ok_ssh and ok_sql):
                return
            before = sshd_connections(world, "database")
            code, r = _exec(world, pod, seen["run"], "database", "echo reached", timeout=DENIED_TIMEOUT_S)
            e.that(not r.get("ok") and "reached" not in r.get("stdout", ""),
                   "the run's SSH command on database (ACL-denied port 22) fails", r)
            e.that(sshd_connections(world, "database") == before,
                   "database's sshd saw no connection (the mesh dropped it)",
                   f"{sshd_connections(world, 'database') - before} connection(s)")
            before = sshd_connections(world, "server")
            for ip in [world.ip_of(world.boxes["server"], n) for n in world.topology.node("server").networks]:
                code, r = _exec(world, pod, seen["run"], ip, "echo reached", timeout=DENIED_TIMEOUT_S)
                e.that(not r.get("ok"), f"the run's SSH command on server's off-mesh address {ip} fails", r)
            e.that(sshd_connections(world, "server") == before,
                   "server's sshd saw no connection off the mesh", f"{sshd_connections(world, 'server') - before}")
        finally:
            if seen["start"][0] == 200:
                world.sut(pod).run_end(seen["run"])


@cred_check("CRED-7")
def cred7_run_credentials_never_shown(world: WorldAPI, store: SecretStore, pod: str = "agent") -> None:
    """CRED-7: nothing of a run's credentials in what the SUT shows or logs (clauses.yaml)."""
    with clause(world, "CRED-7") as e:
        sut = world.sut(pod)
        run = "mc-" + pysecrets.token_hex(4)
        n_audit = len(store.audit_entries())
        code, start = sut.run_start(run, RUN_LENGTH_S)
        if not e.that(code == 200 and start.get("ok") is True, "the run start obtains credentials (ok true)", start):
            return
        x = _first_ok(lambda: sut.run_exec(run, world.address("server"), "echo meshcert-run $(hostname)"))
        q = _first_ok(lambda: sut.run_query(run, world.address("database"), "SELECT current_user"))
        _, pre = sut.prerun(mesh_spec(world), {"server": ep(world, "server", 22)}, deadline_s=DEADLINE_S)
        end = sut.run_end(run)
        places = {"run start answer": json.dumps(start), "SSH tool result": json.dumps(x),
                  "SQL tool result": json.dumps(q), "run end answer": json.dumps(end),
                  "agent_context of a pre-run during the run": json.dumps(pre.get("agent_context")),
                  "transcript": json.dumps(sut.transcript()), "SUT container log": world.raw_logs(f"{pod}-sut")}
        issued = issued_hmacs(store, n_audit)
        e.that(len(issued) >= 4, "Vault's audit log holds the run's issued secrets (HMAC'd): 2 tokens, a "
               "certificate, a password", f"{len(issued)}")
        words = {where: {w for rx in WORDS for w in rx.findall(text)} for where, text in places.items()}
        hashes = store.audit_hashes(sorted(set().union(*words.values())))  # one ask per distinct word
        for where, text in places.items():
            found = leaks(text, store.pod_secrets(), shapes=True)
            e.that(not found, f"nothing of the pod's AppRole secret ID, no Vault token, private key or SSH "
                   f"certificate in the {where}", [f"{f.kind} at {f.start}-{f.end}" for f in found])
            hits = sum(1 for w in words[where] if hashes[w] in issued)
            e.that(not hits, f"none of the run's issued secrets (password, certificate, token: matched by Vault's "
                   f"audit HMAC) as a word of the {where}", f"{hits} word(s) match")
