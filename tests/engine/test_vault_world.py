"""The credential layer's world, real (issue 13): Vault started, initialised, unsealed and
configured by meshcert; a certificate Vault signed logs in to ``server`` over the mesh (and to
the legacy VLAN host through the subnet router), a PostgreSQL role Vault made logs in to
``database``; after the run's token is revoked the role is gone and cannot log in, and once the
certificate's validity (the TTL the run asked for) is over sshd refuses it."""

from __future__ import annotations

import copy
import time

import pytest

from meshcert.chaos.cred_scenarios import CRED_SCENARIOS
from meshcert.checks import ClauseFailure
from meshcert.checks.cred import CRED_CHECKS
from meshcert.secrets import leaks, registered
from meshcert.sut.reference.targets import CRED_SCENARIO_TARGETS, CRED_TARGETS, clauses
from meshcert.world.base import wait_for
from meshcert.world.credentials import ToolBox, add_vault, credential_topology, sshd_accepted, start_sut_with_vault
from meshcert.world.labels import leftovers, remove_run
from meshcert.world.targets import MESH_ONLY_TABLE, SSH_PORT, mesh_only, pg_roles
from meshcert.world.topology import DB_TAG
from meshcert.world.world import World
from tests.common.engine import free_vlan
from tests.common.faults import aims_at, kill_by_clauses, kill_by_scenario, mutant_params

pytestmark = [pytest.mark.engine]

# The run's declared length in this test and the margin its credentials may outlive it by:
# the margin covers clock skew between Vault and sshd (one machine: none) and the time from
# signing to the first use; a CRED-3 check states its own.
RUN_TTL_S = 30
# The first WireGuard handshake after a node joins can be lost for 5 s, once 16-17 s (common.md).
FIRST_PATH_S = 25


def _first(fn, what: str, timeout: float):
    """Retry ``fn`` (returning a Result) until it exits 0; the last Result either way."""
    last = []

    def ok():
        last[:] = [fn()]
        return last[0].code == 0
    try:
        wait_for(what, ok, timeout, interval=1)
    except Exception:
        pass
    return last[0]


def test_vault_credentials_log_in_over_the_mesh_and_die_with_the_run(cred_world):
    w, vault = cred_world.world, cred_world.vault
    tb = ToolBox(w)
    assert vault.seal_status()["sealed"] is False
    root = vault.root.reveal()
    # the root token and unseal key are registered secrets: masked in every log we save
    assert root in registered() and vault.unseal_key.reveal() in registered()

    login = vault.login(vault.approle_creds())
    run = vault.run_token(login, f"{RUN_TTL_S}s")
    key, pub = tb.new_key()
    signed = vault.sign_ssh(run, pub, f"{RUN_TTL_S}s")
    t_signed = time.monotonic()
    tb.put_cert(key, signed["signed_key"])
    serial = int(signed["serial_number"].replace(":", ""), 16)

    # SSH over the mesh to server, with the certificate only
    r = _first(lambda: tb.ssh(key, w.address("server"), "echo meshcert-ran-on $(hostname)"),
               "ssh agent@server with Vault's certificate", FIRST_PATH_S)
    assert r.code == 0 and "meshcert-ran-on server" in r.out, (r, tb.state())
    server_log = w.raw_logs("server")
    assert sshd_accepted(server_log, serial), "server's sshd logged no acceptance of the certificate's serial"

    # and to the legacy VLAN host through the subnet router
    r = _first(lambda: tb.ssh(key, w.address("legacy"), "echo meshcert-ran-on $(hostname)"),
               "ssh agent@legacy through the subnet router", FIRST_PATH_S)
    assert r.code == 0 and "meshcert-ran-on legacy" in r.out, r
    assert sshd_accepted(w.raw_logs("legacy"), serial)

    # a PostgreSQL role made by Vault for this run, over the mesh to database
    user, password, _lease = vault.db_creds(run)
    assert user in pg_roles(w.boxes["database"])
    r = _first(lambda: tb.psql(w.address("database"), user, password,
                               "SELECT current_user || ' ' || current_setting('cluster_name')"),
               "psql to database as Vault's role", FIRST_PATH_S)
    assert r.code == 0 and r.out.strip() == f"{user} database", r
    assert f"user={user}" in w.raw_logs("database")  # log_connections: the target's own record

    # the run ends: its token revoked, and with it the database lease: the role is gone
    vault.revoke_self(login)
    wait_for("the run's PostgreSQL role dropped by Vault", lambda: user not in pg_roles(w.boxes["database"]), 15,
             describe=lambda: f"roles: {pg_roles(w.boxes['database'])}")
    r = tb.psql(w.address("database"), user, password, "SELECT 1")
    assert r.code != 0 and ("password authentication failed" in r.out or "does not exist" in r.out), r
    # the same path still serves: the refusal is the credential's, not the network's (positive control)
    assert tb.ssh(key, w.address("server"), "true").code == 0 or time.monotonic() - t_signed > RUN_TTL_S

    # a certificate cannot be revoked in Vault: it dies with its validity, the TTL the run asked for
    wait_for("server's sshd refusing the run's certificate once its validity is over",
             lambda: tb.ssh(key, w.address("server"), "true").code != 0, RUN_TTL_S + 10, interval=1)
    assert time.monotonic() - t_signed >= RUN_TTL_S - 2, "refused before its validity ended: not the TTL"
    assert "expired" in w.raw_logs("server").split("Accepted publickey")[-1].lower() or \
        "certificate invalid" in w.raw_logs("server").lower()

    # no secret of Vault's in what meshcert saves
    saved = w.save_logs(w.log_root or "reports/logs/vault-world")
    for f in saved.glob("*"):
        text = f.read_text(errors="replace")
        assert not leaks(text, [root, vault.unseal_key.reveal(), password.reveal()], shapes=False), f


def test_the_reference_sut_holds_every_credential_clause(cred_world):
    """The reference SUT as the tool layer: its runs use Vault's credentials over the mesh, each
    its own, never shown, never a path the ACLs deny, dead after the run (checks/cred.py)."""
    w, vault = cred_world.world, cred_world.vault
    start_sut_with_vault(w, vault)
    for cid in ("CRED-4", "CRED-5", "CRED-7", "CRED-6", "CRED-3"):
        CRED_CHECKS[cid](w, vault)


@pytest.mark.parametrize("mutant", mutant_params(CRED_TARGETS))
def test_run_mutant_is_killed_by_its_clause(cred_world, caught, mutant):
    w, vault = cred_world.world, cred_world.vault
    start_sut_with_vault(w, vault, mutant=mutant)
    try:
        kill_by_clauses(mutant, {c: (lambda c=c: CRED_CHECKS[c](w, vault)) for c in clauses(mutant)}, caught)
    finally:
        start_sut_with_vault(w, vault)


@pytest.mark.chaos
@pytest.mark.parametrize("mutant", mutant_params(CRED_SCENARIO_TARGETS))
def test_run_mutant_is_killed_by_its_scenario(cred_world, report_extra, caught, mutant):
    w, vault = cred_world.world, cred_world.vault
    name = CRED_SCENARIO_TARGETS[mutant]
    start_sut_with_vault(w, vault, mutant=mutant)
    try:
        kill_by_scenario(mutant, name, lambda: CRED_SCENARIOS[name](w, report_extra, vault), caught)
    finally:
        start_sut_with_vault(w, vault)


@aims_at("world", "database-ssh-granted", "CRED-6", "the policy also grants the agent SSH on the databases")
def test_granting_ssh_on_the_database_fails_cred6(cred_world, caught):
    w, vault = cred_world.world, cred_world.vault
    policy = copy.deepcopy(w.topology.policy)
    for rule in policy["acls"]:
        rule["dst"] = [f"{DB_TAG}:5432,3306,22" if d == f"{DB_TAG}:5432,3306" else d for d in rule["dst"]]
    assert policy != w.topology.policy
    w.set_policy(policy)
    try:
        with pytest.raises(ClauseFailure) as e:
            CRED_CHECKS["CRED-6"](w, vault)
        assert e.value.clause == "CRED-6" and "on database (ACL-denied port 22) fails" in str(e.value), e.value
        caught(e.value.clause)
    finally:
        w.set_policy(w.topology.policy)


@aims_at("world", "server-not-mesh-only", "CRED-6", "server's sshd takes connections off the mesh too")
def test_a_target_reachable_off_the_mesh_fails_cred6(cred_world, caught):
    w, vault = cred_world.world, cred_world.vault
    code, out = w.boxes["server"].exec(["nft", "delete", "table", "inet", MESH_ONLY_TABLE])
    assert code == 0, out
    try:
        with pytest.raises(ClauseFailure) as e:
            CRED_CHECKS["CRED-6"](w, vault)
        assert e.value.clause == "CRED-6" and "off-mesh address" in str(e.value), e.value
        caught(e.value.clause)
    finally:
        mesh_only(w.boxes["server"], (SSH_PORT,))


@pytest.mark.parametrize("env,words", [
    ({"VAULT_ADDR": "https://127.0.0.1:9"}, ("did not answer",)),                 # nothing listens there
    ({"VAULT_SSH_SIGN_PATH": "ssh/sign/no-such-role"}, ("ssh/sign/no-such-role", "no-such-role")),  # no such role
], ids=["vault-address-not-answering", "role-that-does-not-exist"])
def test_bad_vault_input_gets_one_clear_error(cred_world, env, words):
    """A Vault address that does not answer, a role that does not exist: the run start answers
    ok false with one error naming it, and holds nothing."""
    w, vault = cred_world.world, cred_world.vault
    sut = start_sut_with_vault(w, vault, env=env)
    try:
        code, ans = sut.run_start("mc-bad", 10, deadline_s=4)
        assert code == 200 and ans["ok"] is False, ans
        err = ans["error"]
        assert "\n" not in err and all(x in err for x in words), err
    finally:
        start_sut_with_vault(w, vault)


def test_a_killed_credential_world_leaves_nothing_the_sweep_misses():
    """A run killed mid-run (its credentials live: a PostgreSQL role, Vault's leases) is swept
    by its run label: Vault's container and its storage volume (where its leases live), the
    targets (where the roles live), the ToolBox and SUT containers: nothing is left."""
    # a /24 of its own, reserved (a fixed offset from MESHCERT_VLAN met another worker's
    # credential world in CI: "Pool overlaps")
    w = World(topology=credential_topology(free_vlan()))
    try:
        w.start()
        vault = add_vault(w)
        sut = start_sut_with_vault(w, vault)
        code, ans = sut.run_start("mc-killed", 30)
        assert code == 200 and ans["ok"] is True, ans
        assert pg_roles(w.boxes["database"]), "a live run's role (the positive control)"
        mine = leftovers(w.client, w.run_id)
        assert "vault" in " ".join(mine["containers"]) and mine["volumes"], mine
        # what the sweep does for a run whose process is gone, scoped to this run
        remove_run(w.client, w.run_id)
        assert leftovers(w.client, w.run_id) == {"containers": [], "networks": [], "volumes": []}
    finally:
        w.stop()
