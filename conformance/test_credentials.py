"""Credentials never reach what the LLM or a log reader sees."""

import pytest

from meshcert.checks import sut as c

pytestmark = [pytest.mark.engine, pytest.mark.sut]


@pytest.mark.clause("CRED-1")
def test_auth_key_never_in_logs_answers_or_transcript(steady_world):
    c.cred1_auth_key_never_shown(steady_world)


@pytest.mark.clause("CRED-2")
def test_run_credentials_never_in_the_transcript(world):
    c.cred2_run_credentials_never_shown(world)
