"""ACL scoping through the real tailnet, probed from inside the agent pod and the targets."""

import pytest

from meshcert.checks import acl

pytestmark = [pytest.mark.acl, pytest.mark.engine]


@pytest.mark.clause("ACL-1")
def test_agent_reaches_the_guide_allowed_ports(world):
    acl.acl1(world)


@pytest.mark.clause("ACL-2")
def test_everything_else_is_denied_including_targets_to_agent(world):
    acl.acl2(world)
