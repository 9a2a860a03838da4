"""The guide's troubleshooting failure modes, surfaced by the SUT."""

import pytest

from meshcert.checks import sut as c

pytestmark = [pytest.mark.engine, pytest.mark.sut]


@pytest.mark.clause("TROUBLE-1")
def test_missing_auth_key_secret_is_named(steady_world):
    c.trouble1_missing_secret(steady_world)
