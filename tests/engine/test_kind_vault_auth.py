"""Kubernetes auth on kind (issue 13: "an auth method the agent pod uses: Kubernetes auth where a
cluster exists, AppRole on plain Docker"): a kind cluster beside the credential world (its node
on the world's WAN, where Vault reaches its API server), Vault's Kubernetes auth configured
against it (meshcert/k8s/vaultauth.py: a token reviewer bound to system:auth-delegator, the
cluster's CA), and the reference chart installed with its own ServiceAccount and
VAULT_AUTH=kubernetes. The SUT in that pod logs in with the token the kubelet projected into it
and a run gets, uses and loses its credentials (meshcert/checks/kind_vault.py says how each is
judged).

Run: ``./meshcert.sh test --cluster kind tests/engine/test_kind_vault_auth.py``.
"""

import pytest

from meshcert.checks import kind_vault
from meshcert.k8s import kind
from meshcert.k8s.chart import REFERENCE_CHART, Chart
from meshcert.plugin import hooks
from meshcert.toolchain import progress

# the first test builds the kind cluster (and the credential world, when it runs first in its unit)
pytestmark = [pytest.mark.kind, pytest.mark.engine, pytest.mark.sut, pytest.mark.slow(minutes=6), pytest.mark.timeout(1500)]

LOGIN = f"Vault's audit log: one login on {kind_vault.LOGIN_PATH} as service account"


@pytest.fixture(scope="module")
def chart(report_dir) -> Chart:
    return Chart(REFERENCE_CHART, log_root=report_dir / "logs")


@pytest.fixture(scope="module")
def k8s_vault(pytestconfig, cred_world):
    """A kind cluster of meshcert's beside the credential world, Vault's Kubernetes auth configured
    against its API server (deleted after the module)."""
    if pytestconfig.getoption("--kubeconfig"):
        pytest.skip("Kubernetes auth is asserted on meshcert's own kind cluster (Vault must reach its API server)")
    with kind.world_cluster(cred_world.world, hooks.kind_config(pytestconfig)) as c:
        kind_vault.configure_vault(cred_world.vault, c)
        yield c


@pytest.fixture(scope="module")
def release(cred_world, k8s_vault, chart):
    """The chart with Kubernetes auth, Vault's role bound to its ServiceAccount and namespace."""
    with kind_vault.vault_release(cred_world.world, cred_world.vault, k8s_vault, chart) as vr:
        yield vr


def test_the_kind_pods_sut_logs_in_with_its_service_account_token_and_runs_with_its_credentials(cred_world, release):
    release.rel.wait_running()  # the run's tools go over the mesh: the sidecar joined first
    verdict, _ = kind_vault.k8s_run(cred_world.world, cred_world.vault, release, tools=True)
    assert not verdict.failed, "Kubernetes auth on kind:\n" + verdict.text()


def test_a_vault_role_bound_to_another_namespace_or_account_refuses_the_pods_login(cred_world, release):
    """Broken world settings: Vault's role admits the pod's service account name in another
    namespace, then another service account in the pod's namespace. Positive control first (the
    same pod and role, bound right); each time the login is refused: the run start says so (ok
    false, Vault's cause named) and the judgement's login assertion is the one that fails."""
    world, vault = cred_world.world, cred_world.vault
    verdict, _ = kind_vault.k8s_run(world, vault, release)
    assert not verdict.failed, "positive control (the role bound to the pod's account and namespace):\n" + verdict.text()
    sa, ns = release.bound
    for bound, cause in (((sa, "elsewhere"), "namespace not authorized"),
                         ((f"not-{sa}", ns), "service account name not authorized")):
        vault.bind_kubernetes_role(*bound)
        try:
            verdict, seen = kind_vault.k8s_run(world, vault, release)
        finally:
            vault.bind_kubernetes_role(sa, ns)
        code, start = seen["start"]
        assert code == 200 and start.get("ok") is False, (bound, start)
        assert "kubernetes login to Vault as role 'agent' failed" in start.get("error", "") and \
            cause in start["error"], (bound, start)
        assert any(f.startswith(LOGIN) for f in verdict.failed), (bound, verdict.text())
        assert seen["logins"] and all(cause in x["error"] for x in seen["logins"]), (bound, seen["logins"])
        progress.say(f"role bound to {bound[1]}/{bound[0]}: run start error {start['error']!r}; failed: "
                     + " | ".join(f[:120] for f in verdict.failed))


@pytest.mark.parametrize("mutant, aimed", [
    # the run's tools ignore the sidecar's proxy: no way into the mesh from a userspace pod
    ("no-proxy", ("the run's SSH command ran on server (over the mesh)", "the run's SQL query ran on database")),
    # the run's end forgets its credentials without revoking them
    ("run-no-revoke", ("Vault's audit log: the run's end revoked the login's token", "gone from PostgreSQL within")),
])
def test_a_broken_sut_fails_the_assertion_aimed_at_its_fault(cred_world, k8s_vault, chart, mutant, aimed):
    """The reference SUT with one deliberate fault in the kind pod: its login still passes, and the
    assertions aimed at the fault are the ones that fail."""
    world, vault = cred_world.world, cred_world.vault
    with kind_vault.vault_release(world, vault, k8s_vault, chart, mutant=mutant) as vr:
        vr.rel.wait_running()
        verdict, _ = kind_vault.k8s_run(world, vault, vr, tools=mutant == "no-proxy")
    assert verdict.failed, f"SUT_MUTANT={mutant}: nothing failed"
    assert not any(f.startswith(LOGIN) for f in verdict.failed), verdict.text()
    for a in aimed:
        assert any(a in f for f in verdict.failed), (a, verdict.text())
    progress.say(f"SUT_MUTANT={mutant} in the kind pod: failed: " + " | ".join(f[:100] for f in verdict.failed))


def test_a_vault_role_that_does_not_exist_is_one_clear_error(cred_world, k8s_vault, chart):
    """Bad input: the chart names a Vault role that does not exist (vault.kubernetesRole)."""
    world, vault = cred_world.world, cred_world.vault
    with kind_vault.vault_release(world, vault, k8s_vault, chart, role="no-such-role") as vr:
        code, start = vr.rel.sut().run_start("mc-k8s-norole", 10)
    assert code == 200 and start.get("ok") is False, start
    err = start.get("error") or ""
    assert err.startswith("kubernetes login to Vault as role 'no-such-role' failed: ") and \
        'invalid role name "no-such-role"' in err and "\n" not in err and "Traceback" not in err, start
