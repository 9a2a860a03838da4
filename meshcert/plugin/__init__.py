"""meshcert's pytest plugin (registered through the pytest11 entry point ``meshcert =
"meshcert.plugin"``): this module only gathers what pytest registers by name --

- hooks.py: options, markers, the clause marks collected and checked against the catalog,
  clause results, the report at session end, CRED-1's scan of meshcert's own outputs;
- fixtures.py: world, steady_world, cred_world, report_dir, report_extra, clause_results;
- state.py: what a session keeps (pytest stash keys); marks.py: the clause marks, collected;
- parallel.py: the same run under pytest-xdist (`meshcert test -n N`): a VLAN per worker's
  world, the workers' results handed to the controller, which writes the one report.

Any checkout of the package runs the suite the same way.
"""

from meshcert.plugin.fixtures import clause_results, cred_world, report_dir, report_extra, steady_world, world
from meshcert.plugin.hooks import (
                                   pytest_addoption,
                                   pytest_collection_finish,
                                   pytest_collection_modifyitems,
                                   pytest_configure,
                                   pytest_configure_node,
                                   pytest_itemcollected,
                                   pytest_runtest_makereport,
                                   pytest_sessionfinish,
                                   pytest_sessionfinish_let_workers_tear_down,
                                   pytest_sessionfinish_no_secret_in_outputs,
                                   pytest_testnodedown,
                                   pytest_xdist_make_scheduler,
)

__all__ = ["clause_results", "cred_world", "report_dir", "report_extra", "steady_world", "world", "pytest_addoption",
           "pytest_collection_finish", "pytest_collection_modifyitems", "pytest_configure", "pytest_itemcollected",
           "pytest_runtest_makereport", "pytest_sessionfinish", "pytest_sessionfinish_no_secret_in_outputs",
           "pytest_configure_node", "pytest_testnodedown", "pytest_xdist_make_scheduler",
           "pytest_sessionfinish_let_workers_tear_down"]
