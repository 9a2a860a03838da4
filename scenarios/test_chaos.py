"""Chaos scenarios: the guide's promises hold, or fail clearly, while the network misbehaves.

The scenario bodies live in meshcert/chaos/scenarios.py (the same functions meshcert's own tests run
against mutants and broken settings); each writes its journal into the report, and a failing
one writes its replay file. One test per scenario of ``SCENARIOS``: a new scenario is run here
without being listed twice.
"""

import pytest

from meshcert.chaos.scenarios import SCENARIOS

pytestmark = [pytest.mark.chaos, pytest.mark.engine]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(world, report_extra, name):
    SCENARIOS[name](world, report_extra)
