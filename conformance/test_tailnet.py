"""The tailnet the guide sets up: the agent's tags, routes to every VLAN host, the guide's errata."""

import pytest

from meshcert.checks import world_clauses as c

pytestmark = [pytest.mark.engine]


@pytest.mark.clause("TYPE-7")
def test_agent_joins_carrying_its_tags(world):
    c.type7_agent_carries_its_tags(world)


@pytest.mark.route
@pytest.mark.clause("ROUTE-2")
def test_a_vlan_host_added_after_approval_is_reachable(world):
    c.route2_new_vlan_host_reachable(world)


@pytest.mark.clause("ERRATA-1")
def test_guide_routes_enable_is_gone_and_approve_routes_works(steady_world, clause_results):
    c.errata1_routes_enable_is_gone(steady_world)
    c.errata1_report_names_it(steady_world, {"clauses": clause_results})


@pytest.mark.clause("ERRATA-2")
def test_guide_preauthkey_user_name_is_rejected_and_id_works(steady_world):
    c.errata2_preauthkey_user_is_an_id(steady_world)


@pytest.mark.acl
@pytest.mark.clause("ERRATA-3")
def test_guide_untagged_key_gets_no_acl_and_a_tagged_key_does(steady_world):
    c.errata3_guide_untagged_key_grants_nothing(steady_world)
