"""The credential layer's clauses (issue 13), judged from the real targets and Vault's audit log:
a run's SSH command and SQL query succeed over the mesh with the credentials Vault issued for it
(CRED-4), each run gets its own (CRED-5), and after the run they are dead (CRED-3). These run on a
world with the credential layer (world/credentials.py: credential_topology + add_vault), with the
SUT started by credentials.start_sut_with_vault.

Where each judgement comes from:
- Vault's audit log: the serial numbers of the certificates Vault signed and the names of the
  database roles it made (both left readable by the world's audit configuration; every secret
  in that log is HMAC'd by Vault);
- the targets' own logs and state: sshd's "Accepted publickey ... (serial N)" lines (LogLevel
  VERBOSE), PostgreSQL's "connection authorized: user=..." lines (log_connections), and the
  roles PostgreSQL holds (pg_roles)."""

from __future__ import annotations

import re
import secrets as pysecrets
import time

from meshcert.checks.sut import clause
from meshcert.world.base import wait_for
from meshcert.world.interface import SecretStore, WorldAPI
from meshcert.world.targets import pg_roles

# The run length meshcert declares at a run's start: longer than the few tool calls it makes
# (each well under 5 s over a live session) so the run never outlives its own credentials.
RUN_LENGTH_S = 30.0
# How long a run's credentials may outlive its declared length (CRED-3): the SUT's run start may
# take its deadline (10 s) before the run's clock starts, and Vault's expiry and sshd's clock
# check need a few seconds on a loaded 2-core machine (5 s).
TTL_MARGIN_S = 15.0
# The first WireGuard handshake after a change can be lost for 5 s, once 16-17 s (common.md):
# a run's first tool call is retried this long.
FIRST_PATH_S = 25.0
SERIAL_LINE = re.compile(r"Accepted publickey for (\S+) from \S+ port \d+ ssh2: \S+-CERT .* \(serial (\d+)\)")


def _audit(store: SecretStore, path: str, key: str) -> list[str]:
    """The readable ``key`` of every response of Vault's audit log to a request of ``path``."""
    out = []
    for entry in store.audit_entries():
        if entry.get("type") == "response" and (entry.get("request") or {}).get("path") == path:
            v = ((entry.get("response") or {}).get("data") or {}).get(key)
            if isinstance(v, str) and not v.startswith("hmac-"):
                out.append(v)
    return out


def serials(store: SecretStore) -> list[int]:
    """The serial numbers of the SSH certificates Vault signed, in order (hex as Vault says it)."""
    return [int(s.replace(":", "").replace("-", ""), 16) for s in _audit(store, "ssh/sign/run", "serial_number")]


def db_users(store: SecretStore) -> list[str]:
    return _audit(store, "database/creds/run", "username")


def token_ttls(store: SecretStore) -> list[int]:
    """The TTLs (s) of the tokens made with auth/token/create (a run's token), from the audit log."""
    return [int(((e.get("response") or {}).get("auth") or {}).get("lease_duration") or 0)
            for e in store.audit_entries()
            if e.get("type") == "response" and (e.get("request") or {}).get("path") == "auth/token/create"]


def sshd_serials(world: WorldAPI, host: str) -> list[int]:
    return [int(m.group(2)) for m in SERIAL_LINE.finditer(world.raw_logs(host))]


def pg_users(world: WorldAPI, host: str = "database") -> list[str]:
    return re.findall(r"connection authorized: user=(\S+)", world.raw_logs(host))


def _first_ok(call, timeout: float = FIRST_PATH_S):
    """Retry a tool call (its first use may meet the first-handshake loss) until it succeeds."""
    last: list = []

    def ok():
        last[:] = [call()]
        return last[0][0] == 200 and last[0][1].get("ok")
    try:
        wait_for("a run's first tool call", ok, timeout, interval=1)
    except Exception:
        pass
    return last[0]


def run_once(world: WorldAPI, store: SecretStore, pod: str = "agent", end: bool = True) -> dict:
    """One run through the SUT: start, an SSH command on ``server``, an SQL query on ``database``,
    end (unless ``end`` is False). Returns what was seen, including the new serial(s) and role(s)
    Vault's audit log names for it."""
    sut = world.sut(pod)
    run = "mc-" + pysecrets.token_hex(4)
    before_serials, before_users, before_ttls = serials(store), db_users(store), len(token_ttls(store))
    code, start = sut.run_start(run, RUN_LENGTH_S)
    seen = {"run": run, "start": (code, start)}
    if code == 200 and start.get("ok"):
        seen["exec"] = _first_ok(lambda: sut.run_exec(run, world.address("server"), "echo meshcert-run $(hostname)"))
        seen["query"] = _first_ok(lambda: sut.run_query(run, world.address("database"),
                                                        "SELECT current_user || ' ' || current_setting('cluster_name')"))
    seen["serials"] = [s for s in serials(store) if s not in before_serials]
    seen["users"] = [u for u in db_users(store) if u not in before_users]
    seen["token_ttls"] = token_ttls(store)[before_ttls:]
    seen["started_at"] = time.monotonic()
    if end and code == 200:
        seen["end"] = sut.run_end(run)
        seen["ended_at"] = time.monotonic()
    return seen


def cred4_run_uses_issued_credentials(world: WorldAPI, store: SecretStore, pod: str = "agent") -> None:
    """CRED-4: a run's SSH command and SQL query succeed over the mesh with the credentials Vault
    issued for that run: the results come back, and the targets logged the login with exactly
    the certificate serial and database role Vault's audit log names for the run."""
    with clause(world, "CRED-4") as e:
        seen = run_once(world, store, pod)
        code, start = seen["start"]
        if not e.that(code == 200 and start.get("ok") is True, "the run start obtains credentials (ok true)",
                      start):
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


def cred5_each_run_its_own(world: WorldAPI, store: SecretStore, pod: str = "agent") -> None:
    """CRED-5: two runs get different credentials: different certificate serials and database
    roles in Vault's audit log, and the targets logged each run's own."""
    with clause(world, "CRED-5") as e:
        a, b = run_once(world, store, pod), run_once(world, store, pod)
        e.that(a["serials"] and b["serials"] and set(a["serials"]).isdisjoint(b["serials"]),
               "each run a certificate of its own (serials in Vault's audit log)", (a["serials"], b["serials"]))
        e.that(a["users"] and b["users"] and set(a["users"]).isdisjoint(b["users"]),
               "each run a database role of its own", (a["users"], b["users"]))
        accepted = sshd_serials(world, "server")
        e.that(all(s in accepted for s in a["serials"] + b["serials"]),
               "server's sshd accepted each run's own certificate", accepted[-4:])


def cred3_dead_after_the_run(world: WorldAPI, store: SecretStore, pod: str = "agent") -> None:
    """CRED-3: after a run ends its database role is gone from PostgreSQL and its certificate
    is used no more: no login with its serial reaches sshd after the end, even when the run is
    asked for another command (refused: the run has ended); and the certificate's validity (the
    TTL the run asked for) is at most its declared length plus TTL_MARGIN_S."""
    with clause(world, "CRED-3") as e:
        seen = run_once(world, store, pod)
        code, start = seen["start"]
        if not e.that(code == 200 and start.get("ok") is True and seen["users"] and seen["serials"],
                      "a run with credentials (the positive control)", start):
            return
        e.that(seen["exec"][1].get("ok") is True, "the run's SSH command worked during the run (control)",
               seen["exec"][1])
        user, serial = seen["users"][0], seen["serials"][0]
        db = world.boxes["database"]
        try:
            wait_for(f"PostgreSQL role {user} dropped after the run's end", lambda: user not in pg_roles(db), 15)
            gone = True
        except Exception:
            gone = False
        e.that(gone, f"the run's role {user} gone from PostgreSQL after its end", pg_roles(db))
        before = sshd_serials(world, "server").count(serial)
        code, again = world.sut(pod).run_exec(seen["run"], world.address("server"), "true")
        e.that(code != 200 or not again.get("ok"), "a command of the ended run refused", (code, again))
        e.that(sshd_serials(world, "server").count(serial) == before,
               "no login with the run's certificate reaches sshd after its end",
               f"{sshd_serials(world, 'server').count(serial) - before} more acceptance(s) of serial {serial}")
        bound = RUN_LENGTH_S + TTL_MARGIN_S
        e.that(bool(seen["token_ttls"]) and all(0 < t <= bound for t in seen["token_ttls"]),
               f"the run's Vault token (its leases die with it) lives at most the run's length + {TTL_MARGIN_S:g} s "
               f"({bound:g} s), per Vault's audit log", f"token TTLs {seen['token_ttls']} s")
