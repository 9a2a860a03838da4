"""The credential layer's chaos scenarios (issue 13): Vault sealed, unreachable, or hung at a
run's start. On the credential world (world/credentials.py) with its Vault. Each: the steady
state (a run whose SSH command and SQL query work with Vault's credentials: CRED-4) before and
after, the fault undone in a finally, and during it:

- the run start answers (HTTP 200, not a crash) within its deadline + START_OVERHEAD_S, says
  it has no credentials (``ok`` false, an error naming the cause) and tells the agent so;
- no static fallback: the run's tools are refused (the run has no credentials), and neither
  target logs a login while the fault holds (sshd: no "Accepted"; PostgreSQL: no "connection
  authorized")."""

from __future__ import annotations

import json
import secrets as pysecrets
import time

from meshcert.chaos.experiment import scenario
from meshcert.checks.cred import cred4_run_uses_issued_credentials
from meshcert.world.interface import SecretStore

# The run start's own deadline in these scenarios (the reference SUT caps it at 10 s).
START_DEADLINE_S = 4.0
# What a run start may take beyond its deadline, seen from here: the HTTP round trip, the
# failed start's own tidy-up (a revocation it may still try, bounded by the same deadline in a
# faithful SUT: none here, the run obtained nothing) and a loaded 2-core machine (2 s).
START_OVERHEAD_S = 2.0


def _steady(store: SecretStore):
    def steady(world) -> None:
        cred4_run_uses_issued_credentials(world, store)
    return steady


def _logins(world) -> tuple[int, int]:
    return world.raw_logs("server").count("Accepted publickey"), world.raw_logs("database").count("connection authorized")


def _start_without_vault(world, faults, j, cause: str, words: tuple[str, ...]) -> None:
    """A run start while ``cause`` holds: within its bound, ok false naming the cause, the agent
    told, no tool works and no target logs a login (no static fallback)."""
    sut = world.sut("agent")
    run = "mc-" + pysecrets.token_hex(4)
    logins = _logins(world)
    bound = START_DEADLINE_S + START_OVERHEAD_S
    sut.timeout = bound + 5  # a hung run start is a finding, not a stuck session
    t0 = time.monotonic()
    try:
        code, ans = sut.run_start(run, 30, deadline_s=START_DEADLINE_S)
    except Exception as e:  # noqa: BLE001 -- no answer at all is the observation
        raise AssertionError(f"{cause}: the run start gave no answer within {bound + 5:.1f} s ({e})") from None
    took = time.monotonic() - t0
    j.figures[f"run_start_s ({cause})"] = round(took, 2)
    j.log("run start", seconds=round(took, 2), code=code, ok=ans.get("ok"), error=str(ans.get("error"))[:200])
    assert code == 200, f"{cause}: the run start answered HTTP {code} (a crash, not a degraded start): {ans}"
    assert took <= bound, f"{cause}: the run start took {took:.2f} s, beyond its deadline {START_DEADLINE_S:g} s " \
                          f"+ {START_OVERHEAD_S:g} s"
    assert ans.get("ok") is False, f"{cause}: the run start said ok={ans.get('ok')} with no Vault to ask"
    err = str(ans.get("error") or "")
    assert any(w in err.lower() for w in words), f"{cause}: the run start's error names none of {words}: {err!r}"
    told = json.dumps(sut.transcript()).lower()
    assert f"run {run}" in told and "no credentials" in told, f"{cause}: the agent was not told the run has no credentials"
    for call in (lambda: sut.run_exec(run, world.address("server"), "echo fallback", timeout_s=5),
                 lambda: sut.run_query(run, world.address("database"), "SELECT 1", timeout_s=5)):
        try:
            c, r = call()
        except Exception as e:  # noqa: BLE001 -- a refusal the client raises is a refusal
            c, r = 0, {"ok": False, "error": str(e)}
        assert not (c == 200 and r.get("ok")), f"{cause}: a tool of the run with no credentials worked: {r}"
    assert _logins(world) == logins, (f"{cause}: a target logged a login while Vault could not issue "
                                      f"credentials (a static fallback?): {logins} -> {_logins(world)}")


def vault_sealed(world, report_extra, store):
    with scenario(world, "vault sealed", report_extra, _steady(store)) as (faults, j):
        store.seal()
        faults.injected("Vault sealed (sys/seal)", store.unseal)
        _start_without_vault(world, faults, j, "Vault sealed", ("sealed",))


def vault_unreachable(world, report_extra, store):
    with scenario(world, "vault unreachable", report_extra, _steady(store)) as (faults, j):
        faults.inject("nft", "drop everything from the agent pod to Vault", netns="agent-pause",
                      rules="  chain out { type filter hook output priority 0; ip daddr ${wan:vault} drop; }")
        _start_without_vault(world, faults, j, "Vault unreachable", ("did not answer", "deadline", "timed out"))


def vault_hung(world, report_extra, store):
    """Vault frozen (docker pause): its socket accepts, nothing answers: the slowest Vault."""
    with scenario(world, "vault hung", report_extra, _steady(store)) as (faults, j):
        faults.inject("freeze", "Vault frozen (docker pause)", container="vault")
        _start_without_vault(world, faults, j, "Vault hung", ("did not answer", "deadline", "timed out"))


CRED_SCENARIOS = {"vault sealed": vault_sealed, "vault unreachable": vault_unreachable, "vault hung": vault_hung}
