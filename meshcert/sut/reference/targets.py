"""Which clause(s) or chaos scenario each mutant of the reference SUT (runtime.py's MUTANTS) must
be caught by: the mutant zoo (tests/test_mutants.py) runs it against them and the mutation
score (tests/common/faults.py, tests/conftest.py) counts a kill only when that target's assertion failed.
Beside the runtime so a new mutant and its target are written in one place."""

from __future__ import annotations

# mutant -> (the clause(s) it breaks -- each must fail --, the pod it runs in)
TARGETS = {
    "health-socket-exists": ("HEALTH-1", "agent"),
    "health-tcp-41112": ("HEALTH-1", "agent"),
    "health-ignores-state": (("HEALTH-1", "TROUBLE-2"), "agent"),
    "sequential-dials": ("HEALTH-2", "agent"),
    "no-proxy": ("TYPE-6", "agent-us"),
    "sidecar-error-aborts": ("HEALTH-3", "agent"),
    "ignore-critical": ("HEALTH-4", "agent"),
    "noncritical-in-context": ("HEALTH-5", "agent"),
    "leak-authkey": ("CRED-1", "agent"),
    "omitted-is-error": ("TYPE-1", "agent"),
    "accept-unknown-type": ("TYPE-4", "agent"),
    "headscale-no-validation": ("TYPE-5", "agent"),
    "tailscale-requires-control": ("TYPE-3", "agent"),
    "direct-checks-sidecar": ("DIRECT-1", "agent"),
    "wrong-port": ("TYPE-6", "agent"),
    "headscale-strict-schema": ("TYPE-2", "agent"),
    "silent-missing-secret": ("TROUBLE-1", "agent"),
    "generic-errors": (("TROUBLE-3", "TROUBLE-4", "TROUBLE-5"), "agent"),
    "transcript-shows-credential": ("CRED-2", "agent"),
    "leak-key-tail": ("CRED-1", "agent"),
    "leak-key-altered": ("CRED-1", "agent"),
    "context-shows-credential": ("CRED-2", "agent"),
    "missing-secret-ready": ("TROUBLE-1", "agent"),
    "typeless-is-error": ("TYPE-1", "agent"),
    "omitted-probes-sidecar": ("TYPE-1", "agent"),
    "unknown-type-vague-error": ("TYPE-4", "agent"),
    "headscale-empty-accepted": ("TYPE-5", "agent"),
    "headscale-null-accepted": ("TYPE-5", "agent"),
    "ready-unless-stopped": ("HEALTH-1", "agent"),
    "health-41112-fallback": ("HEALTH-1", "agent"),
    "not-ready-skips-dials": ("HEALTH-3", "agent"),
    "not-ready-fakes-dials": ("HEALTH-3", "agent"),
    "noncritical-blocks-ready": ("HEALTH-5", "agent"),
    "direct-via-proxy": ("DIRECT-1", "agent-us"),
    "direct-probes-sidecar": ("DIRECT-1", "agent"),
    "double-deadline": ("HEALTH-2", "agent"),
    "no-latency": ("HEALTH-2", "agent"),
    "no-error": ("HEALTH-2", "agent"),
    "socks-no-reply": ("TYPE-6", "agent-us"),
    "ipv4-only-urls": ("TYPE-6", "agent"),
    "ip-literals-only": ("TYPE-6", "agent-us"),
}


# The run lifecycle's mutants (issue 13): judged on the credential world (checks/cred.py's
# CRED_CHECKS, tests/engine/test_vault_world.py), in the pod "agent".
CRED_TARGETS = {
    "run-no-revoke": ("CRED-3", "agent"),
    "run-reuse-after-end": ("CRED-3", "agent"),
    "run-long-ttl": ("CRED-3", "agent"),
    "run-shared-creds": ("CRED-5", "agent"),
    "run-shows-password": ("CRED-7", "agent"),
    "run-signs-wrong-principal": ("CRED-4", "agent"),
}
# ...and the credential world's chaos scenarios (meshcert/chaos/cred_scenarios.py)
CRED_SCENARIO_TARGETS = {
    "run-start-no-deadline": "vault hung",
    "run-start-ok-without-vault": "vault sealed",
}


def clauses(mutant: str) -> tuple[str, ...]:
    """The clause(s) a mutant of TARGETS or CRED_TARGETS must fail, as a tuple."""
    c = (TARGETS.get(mutant) or CRED_TARGETS[mutant])[0]
    return (c,) if isinstance(c, str) else c


# mutant -> the chaos scenario that exists to catch it (meshcert/chaos/scenarios.py)
SCENARIO_TARGETS = {
    "health-dials-control": "control-plane outage",
    "localapi-no-timeout": "sidecar frozen",
}
