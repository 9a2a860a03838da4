"""Labels on everything a run creates, and the sweeper that removes what a killed run left."""

from __future__ import annotations

import concurrent.futures
import os
import socket
import time

import docker

from meshcert.toolchain import progress
from meshcert.world import scratch
from meshcert.world.base import WorldError, brief_error, wait_for
from meshcert.world.scratch import start_ticks

LABEL = "io.meshcert"            # "1" on every object
RUN = "io.meshcert.run"          # run id
OWNER = "io.meshcert.owner"      # "<host>:<pid>:<process start ticks>"


def owner_token(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{start_ticks(pid)}"


def labels(run_id: str) -> dict[str, str]:
    return {LABEL: "1", RUN: run_id, OWNER: owner_token()}


def owner_alive(token: str) -> bool:
    try:
        host, pid, ticks = token.split(":")
    except ValueError:
        return False
    if host != socket.gethostname():
        return True  # not ours to judge
    return start_ticks(int(pid)) == ticks and ticks != ""


def remove_run(c: docker.DockerClient, run_id: str | None = None, *, only_dead: bool = False) -> dict[str, int]:
    """Remove containers, then networks, then volumes labelled by meshcert.

    run_id: only that run's objects; only_dead: only objects whose owning process is gone.
    """
    flt = {"label": [f"{RUN}={run_id}"] if run_id else [f"{LABEL}=1"]}
    counts = {"containers": 0, "networks": 0, "volumes": 0}

    def doomed(obj_labels: dict) -> bool:
        return not only_dead or not owner_alive(obj_labels.get(OWNER, ""))

    def rm(ct) -> int:
        try:
            ct.remove(force=True, v=True)
            return 1
        except docker.errors.NotFound:
            return 0
        except docker.errors.APIError as e:  # "removal already in progress" and the like
            return 0 if e.status_code == 409 else 1

    # ignore_removed: another session may remove its own container between the listing and its
    # inspection (seen: a 404 that failed a world's start-up sweep on the shared engine)
    doomed_cts = [ct for ct in c.containers.list(all=True, filters=flt, ignore_removed=True) if doomed(ct.labels)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
        counts["containers"] = sum(ex.map(rm, doomed_cts))
    # A container whose removal was already in progress (409: two removers, e.g. a sweep beside a
    # run's own stop) still holds its network endpoints and volumes: wait until it is gone, or
    # the network's removal fails with "has active endpoints" (seen in CI: that 403 then failed
    # every later world's start-up sweep).
    ids = {ct.id for ct in doomed_cts}
    try:
        wait_for("the removed containers gone from the engine",
                 lambda: not ids & {ct.id for ct in c.containers.list(all=True, filters=flt, sparse=True)},
                 REMOVAL_WAIT_S)
    except WorldError as e:
        progress.say(f"{e.one_line()}; their networks and volumes may stay (`meshcert sweep` removes them)")
    # Busy right after its containers went: waited for. Busy with no container removed here: a
    # stale endpoint of the engine's own (seen after a Ctrl-C mid-start: "active endpoints", no
    # container attached), which waiting does not clear: one try, said, left.
    patience = REMOVAL_WAIT_S if doomed_cts else 0.0
    for net in c.networks.list(filters=flt):
        if doomed(net.attrs.get("Labels") or {}):
            counts["networks"] += _retry_busy(f"network {net.name}", lambda net=net: _remove_network(net), patience)
    for vol in c.volumes.list(filters=flt):
        if doomed(vol.attrs.get("Labels") or {}):
            counts["volumes"] += _retry_busy(f"volume {vol.name}", lambda vol=vol: vol.remove(force=True), patience)
    return counts


# How long a removal waits for the engine to let go of what it removes (a container being
# removed, an endpoint or a volume still in use): removals take well under a second here; 30 s
# covers a loaded 2-core engine, and a miss only leaves the object for the next sweep.
REMOVAL_WAIT_S = 30.0


def _remove_network(net) -> None:
    net.reload()
    for cid in (net.attrs.get("Containers") or {}):
        try:
            net.disconnect(cid, force=True)
        except docker.errors.APIError:
            pass
    net.remove()


def _retry_busy(what: str, remove, patience: float = REMOVAL_WAIT_S) -> int:
    """``remove()`` until it succeeds (1) or the object is gone (0), retried for ``patience`` s
    while the engine answers that it is still in use (403/409: active endpoints, a volume in
    use); anything else, or still busy after that, is said once and left for the next sweep (0):
    a new run's start-up sweep never fails on what another run left."""
    deadline = time.monotonic() + patience
    while True:
        try:
            remove()
            return 1
        except docker.errors.NotFound:
            return 0
        except docker.errors.APIError as e:
            if e.status_code not in (403, 409) or time.monotonic() >= deadline:
                progress.say(f"could not remove {what}: {brief_error(e)} (left for the next sweep; an "
                             "endpoint the engine keeps with no container attached goes when the engine restarts)")
                return 0
        time.sleep(0.5)  # the poll interval of a condition wait: the engine letting go of the object


def sweep(c: docker.DockerClient) -> dict[str, int]:
    """Remove what runs whose process is gone (killed, crashed) left behind."""
    counts = remove_run(c, only_dead=True)
    counts["scratch folders"] = scratch.sweep()
    if any(counts.values()):
        progress.say(f"swept leftovers of killed runs: {counts}")
    return counts


def leftovers(c: docker.DockerClient, run_id: str | None = None) -> dict[str, list[str]]:
    flt = {"label": [f"{RUN}={run_id}"] if run_id else [f"{LABEL}=1"]}
    return {
        "containers": [x.name for x in c.containers.list(all=True, filters=flt, ignore_removed=True)],
        "networks": [x.name for x in c.networks.list(filters=flt)],
        "volumes": [x.name for x in c.volumes.list(filters=flt)],
    }
