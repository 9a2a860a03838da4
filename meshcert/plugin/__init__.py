"""meshcert's pytest plugin (registered through the pytest11 entry point ``meshcert =
"meshcert.plugin"``): this module only gathers what pytest registers by name --

- hooks.py: options, markers, the clause marks collected and checked against the catalog,
  clause results, the report at session end, CRED-1's scan of meshcert's own outputs;
- fixtures.py: world, steady_world, tailscale_version, k8s_cluster, cred_world, report_dir, report_extra,
  clause_results (and the setup hook that has a kind cluster brought up while the world starts);
- state.py: what a session keeps (pytest stash keys); marks.py: the clause marks, collected;
- parallel.py: the same run under pytest-xdist (`meshcert test -n N`): a VLAN per worker's
  world, the workers' results handed to the controller, which writes the one report.

Any checkout of the package runs the suite the same way.
"""

from meshcert.plugin.fixtures import (
    clause_results,
    cred_world,
    k8s_cluster,
    pytest_runtest_setup,
    report_dir,
    report_extra,
    steady_world,
    tailscale_version,
    world,
)
from meshcert.plugin.hooks import (
                                   pytest_addoption,
                                   pytest_collection_finish,
                                   pytest_collection_modifyitems,
                                   pytest_configure,
                                   pytest_configure_node,
                                   pytest_generate_tests,
                                   pytest_itemcollected,
                                   pytest_runtest_makereport,
                                   pytest_sessionfinish,
                                   pytest_sessionfinish_let_workers_tear_down,
                                   pytest_sessionfinish_no_secret_in_outputs,
                                   pytest_testnodedown,
                                   pytest_xdist_make_scheduler,
)

__all__ = ["clause_results", "cred_world", "k8s_cluster", "report_dir", "report_extra", "steady_world", "tailscale_version", "world",
           "pytest_addoption", "pytest_generate_tests",
           "pytest_collection_finish", "pytest_collection_modifyitems", "pytest_configure", "pytest_itemcollected",
           "pytest_runtest_makereport", "pytest_runtest_setup", "pytest_sessionfinish",
           "pytest_sessionfinish_no_secret_in_outputs",
           "pytest_configure_node", "pytest_testnodedown", "pytest_xdist_make_scheduler",
           "pytest_sessionfinish_let_workers_tear_down"]
