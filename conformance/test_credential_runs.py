"""The credential layer's run lifecycle (issue 13): a run's credentials come from Vault, work over
the mesh, are the run's own, are never shown, never open a path the ACLs deny, and die with
the run. On the credential world (fixture cred_world: real sshd, PostgreSQL and Vault)."""

import pytest

from meshcert.checks import cred

pytestmark = [pytest.mark.engine, pytest.mark.sut]


@pytest.mark.clause("CRED-4")
def test_a_runs_ssh_command_and_sql_query_work_with_its_issued_credentials(cred_world):
    cred.cred4_run_uses_issued_credentials(cred_world.world, cred_world.vault)


@pytest.mark.clause("CRED-5")
def test_each_run_gets_credentials_of_its_own(cred_world):
    cred.cred5_each_run_its_own(cred_world.world, cred_world.vault)


@pytest.mark.clause("CRED-7")
def test_a_runs_credentials_are_never_shown(cred_world):
    cred.cred7_run_credentials_never_shown(cred_world.world, cred_world.vault)


@pytest.mark.clause("CRED-6")
def test_valid_credentials_open_no_path_the_acls_deny(cred_world):
    cred.cred6_denied_target_unreachable_with_credentials(cred_world.world, cred_world.vault)


@pytest.mark.clause("CRED-3")
def test_a_runs_credentials_die_with_it(cred_world):
    cred.cred3_dead_after_the_run(cred_world.world, cred_world.vault)
