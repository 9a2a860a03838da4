"""The credential layer's chaos scenarios (meshcert/chaos/cred_scenarios.py) on the credential
world: Vault sealed, unreachable or hung at a run's start."""

import pytest

from meshcert.chaos.cred_scenarios import CRED_SCENARIOS

pytestmark = [pytest.mark.engine, pytest.mark.sut, pytest.mark.chaos]


@pytest.mark.parametrize("name", sorted(CRED_SCENARIOS))
def test_a_run_start_without_vault_degrades_within_its_deadline_with_no_fallback(cred_world, report_extra, name):
    CRED_SCENARIOS[name](cred_world.world, report_extra, cred_world.vault)
