"""Credentials never reach what the LLM or a log reader sees."""

import pytest

from meshcert.checks import sut as c

pytestmark = [pytest.mark.engine, pytest.mark.sut]


@pytest.mark.clause("CRED-1")
def test_auth_key_never_in_logs_answers_or_transcript(steady_world):
    c.cred1_auth_key_never_shown(steady_world)
