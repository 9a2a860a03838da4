"""meshcert's plugin under pytest-xdist (``meshcert test -n N``): the controller writes the one
report, the workers run tests, each with a world of its own.

- A worker is told the controller's report folder (``pytest_configure_node``), so every world's
  logs land in one folder; at its end it hands the controller what it kept in its stash (the
  report's extra sections, "not tested", the clause marks it collected, the secrets its worlds
  made, for CRED-1's scan), through xdist's ``workeroutput``; the controller merges them
  (``pytest_testnodedown``) before it writes the report.
- Clause results travel on the test reports themselves (``report.meshcert_clauses``), which the
  controller receives as it would in a serial run, so the verdicts are made from the same reports.
- Each worker's session world gets its own VLAN: the session VLAN (MESHCERT_VLAN, else the
  guide's 10.20.5.0/24) moved up by the worker's number in the third octet (gw0 +0, gw1 +1, ...).
- The scheduler (``--dist load``/``loadgroup``) keeps the tests of conformance/ in one work unit
  (split in three by UNIT_OF_FILE: the property test, the pod-starting files, the rest) and those of scenarios/ in another (they share their worker's session world, in collection
  order, as in a serial run, and conformance/'s ERRATA-1 test reads the clause results of the
  tests before it); every test needing a kind cluster is one unit ("kind", handed out first);
  every other test is a unit of its own, biggest units first.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import PurePosixPath

import pytest
from xdist.scheduler import LoadScopeScheduling

from meshcert.world.topology import GUIDE_VLAN

# the folders whose tests share one session world in collection order (one work unit each)
SHARED_WORLD_DIRS = ("conformance", "scenarios")
# conformance/ in three units, each on a worker (and a world) of its own, side by side, balanced
# by the files' times in warm certify runs of 6c382ca and 8eaaeb6 (junit, 4 workers; a unit's
# first file carries its world's start, ~20 s): the property test (it rewrites the policy and
# routes example after example; 75 s at 8eaaeb6) with test_route (4 s) and test_direct (9 s);
# the files whose tests start pods or stop sidecars (health 42 + helm 28-31 + troubleshooting
# 15 s); the rest (acl 23, tailnet 19-33, types 17, performance 14, credentials 6 s). No test
# reads another unit's results (ERRATA-1's report check renders its own). A serial run is
# unchanged: one world, collection order.
UNIT_OF_FILE = {
    "conformance/test_property.py": "conformance:property",
    "conformance/test_route.py": "conformance:property",
    "conformance/test_direct.py": "conformance:property",
    "conformance/test_helm.py": "conformance:pods",
    "conformance/test_health.py": "conformance:pods",
    "conformance/test_troubleshooting.py": "conformance:pods",
    # the credential layer's runs (issue 13): a world of their own (Vault, sshd, PostgreSQL: the
    # cred_world fixture), so a unit of their own beside the three above
    "conformance/test_credential_runs.py": "conformance:cred",
    # Kubernetes auth on kind (issue 13) runs on that credential world too (its Vault, its
    # targets), with a kind cluster of its own: in the same unit, so the world is built once
    "engine/test_kind_vault_auth.py": "conformance:cred",
    # The tests that need a kind cluster (run with --cluster kind) in two units, each on one
    # worker with one cluster (a node peaks at ~1.6 GiB with page cache: bench/results/kind-*,
    # and runs a whole control plane): the kills (test_kind_kills, ~800 s under load 20-31) and
    # the rest (~700 s). Each alone was longer than the other units: both are handed out first
    # (FIRST_UNITS), so they never start last; two clusters at once instead of one for ~1500 s.
    "conformance/test_helm_kind.py": "kind",
    "engine/test_kind_cluster.py": "kind",
    "engine/test_kind_kills.py": "kind:kills",
    "engine/test_kubeconfig.py": "kind",
    "engine/test_kind_cleanup.py": "kind",
    # files whose tests share a module-scoped world or run: one unit each, so it is built once
    # (split over workers, test_matrix's 2x2 certify --matrix ran twice in the CI of 0e4ee8d:
    # 560 + 533 s), the matrix handed out first (~550 s under load, few tests: xdist would send it last)
    "engine/test_matrix.py": "matrix",
    "engine/test_mixed_tailnet.py": "mixed-tailnet",
}
# units handed out before every other (in this order), whatever their size
FIRST_UNITS = ("meshcert:kind:kills", "meshcert:kind", "meshcert:matrix")
# workerinput / workeroutput key
KEY = "meshcert"


def worker_id(config: pytest.Config) -> str | None:
    """"gw0", "gw1", ... in an xdist worker; None in a serial run and in the controller."""
    return getattr(config, "workerinput", {}).get("workerid")


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def is_controller(config: pytest.Config) -> bool:
    return config.pluginmanager.getplugin("dsession") is not None


def session_vlan(worker: str | None, env: dict[str, str] | None = None) -> str:
    """The VLAN of this process's session world: MESHCERT_VLAN (else the guide's), and in xdist
    worker gwK that /24 moved up by K in the third octet, so the workers' worlds never share a
    subnet on one engine. ``-n N`` with MESHCERT_VLAN=10.20.50.0/24 uses 10.20.50-(50+N-1).
    ``worker`` comes from the session's config (not the environment, which a serial pytest started
    by a worker's test inherits)."""
    env = os.environ if env is None else env
    net = ipaddress.ip_network(env.get("MESHCERT_VLAN") or GUIDE_VLAN)
    wid = worker or ""
    k = int(wid[2:]) if wid.startswith("gw") and wid[2:].isdigit() else 0
    if not k:
        return str(net)
    moved = ipaddress.ip_network((int(net.network_address) + (k << 8), net.prefixlen))
    if not moved.is_private:
        raise ValueError(f"worker {wid}'s VLAN {moved} (MESHCERT_VLAN {net} + {k} in the third octet) "
                         "is not a private network: use a lower MESHCERT_VLAN or fewer workers")
    return str(moved)


def worker_vlans(env: dict[str, str] | None = None) -> tuple[int, int] | None:
    """(first third octet, count) of the session VLANs of this xdist run's workers; None when
    not in a worker. The engine tests' child runs choose VLANs outside this block."""
    env = os.environ if env is None else env
    count = env.get("PYTEST_XDIST_WORKER_COUNT")
    if not env.get("PYTEST_XDIST_WORKER") or not (count or "").isdigit():
        return None
    net = ipaddress.ip_network(env.get("MESHCERT_VLAN") or GUIDE_VLAN)
    return int(net.network_address.packed[2]), int(count)


def order_for_workers(items: list[pytest.Item]) -> None:
    """In each xdist worker (the same order in all, as xdist requires): the shared-world tests
    first, in collection order, then the ``slow``-marked ones, longest first by the mark's
    ``minutes`` (an estimate beside the mark), then the rest in collection order. xdist hands
    out work units in this order, so the longest tests start at once instead of last."""
    def key(item: pytest.Item) -> tuple[int, float]:
        if any(d in PurePosixPath(item.nodeid.split("::", 1)[0]).parts[:-1] for d in SHARED_WORLD_DIRS):
            return (0, 0.0)
        slow = item.get_closest_marker("slow")
        if slow is None:
            return (2, 0.0)
        return (1, -float(slow.kwargs.get("minutes", 1)))
    items.sort(key=key)


def merge_extra(into: dict, extra: dict) -> None:
    """A worker's report sections into the controller's: a section both have as a dict (e.g.
    "scenarios": name -> journal) is merged key by key, any other is set."""
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key].update(value)
        else:
            into[key] = value


def merge_clause_tests(into: dict[str, list[str]], got: dict[str, list[str]]) -> None:
    for cid, tests in (got or {}).items():
        have = into.setdefault(cid, [])
        have.extend(t for t in tests if t not in have)


class SharedWorldScheduling(LoadScopeScheduling):
    """xdist's load-scope scheduler, with meshcert's units: each of conformance/ and scenarios/
    is one unit (its tests run on one worker, in collection order, sharing that worker's world);
    an ``xdist_group`` mark under ``--dist loadgroup`` makes a unit of its own; every other test is a
    unit by itself. Units go out biggest first (xdist's ``loadscopereorder``, on by default), so
    the long shared-world unit starts at once and the one-test units fill the other workers."""

    def _assign_work_unit(self, node) -> None:
        for unit in reversed(FIRST_UNITS):  # xdist takes the workqueue's first unit
            if unit in self.workqueue:
                self.workqueue.move_to_end(unit, last=False)
        super()._assign_work_unit(node)

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)


def unit_of(nodeid: str) -> str:
    """The work unit of a test (its node id), as :class:`SharedWorldScheduling` hands them out."""
    if nodeid.rfind("@") > nodeid.rfind("]"):  # --dist loadgroup: xdist_group("name") -> "...@name"
        return nodeid.split("@")[-1]
    path = PurePosixPath(nodeid.split("::", 1)[0])
    unit = UNIT_OF_FILE.get("/".join(path.parts[-2:]))
    if unit:
        return f"meshcert:{unit}"
    folders = path.parts[:-1]
    for d in SHARED_WORLD_DIRS:
        if d in folders:
            return f"meshcert:{d}"
    return nodeid


def one_unit(paths: list[str]) -> bool:
    """True when ``paths`` (pytest's path arguments, ``file[::test]``) are files whose tests all
    make one work unit (e.g. ``conformance/test_property.py``): workers would only idle beside it,
    each paying a Python start-up and a collection. A folder, or a file outside the shared-world
    folders (one unit per test), is never known to be one unit before collection: False."""
    units = set()
    for p in paths:
        file = p.split("::", 1)[0]
        if not file.endswith(".py"):
            return False
        unit = unit_of(file + "::t")
        if not unit.startswith("meshcert:"):
            return False
        units.add(unit)
    return len(units) == 1
