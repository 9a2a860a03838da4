"""Probe that two of our Docker networks are really isolated from each other.

With ``dockerd --iptables=false`` the host forwards between all bridges (internal ones too),
so every ACL/route negative would pass or fail for the wrong reason. We measure instead of
trusting the configuration: a listener on network A must be reachable from the host (the
positive control) and unreachable from a container on network B.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time

import docker

from meshcert.errors import EnvironmentProblem
from meshcert.toolchain import progress
from meshcert.toolchain.paths import cache_dir
from meshcert.world import labels as lbl
from meshcert.world.base import NodeAPI, http_state, wait_for

PORT = 7777


def _engine_identity(c: docker.DockerClient) -> str | None:
    if os.environ.get("DOCKER_HOST"):
        return None
    try:
        pid = int(open("/var/run/docker.pid").read().strip())
    except (OSError, ValueError):
        return None
    return f"{c.info().get('ID')}:{pid}:{lbl.start_ticks(pid)}"


def check_isolation(c: docker.DockerClient, host_image: str) -> None:
    ident = _engine_identity(c)
    stamp = cache_dir() / "isolation.json"
    if ident and stamp.exists():
        try:
            if json.loads(stamp.read_text()).get("engine") == ident:
                return
        except ValueError:
            pass
    run = "iso" + secrets.token_hex(3)
    labels = lbl.labels(run)
    try:
        with progress.step("probing network isolation between two Docker networks"):
            na = c.networks.create(f"mc-{run}-a", internal=True, labels=labels)
            nb = c.networks.create(f"mc-{run}-b", internal=True, labels=labels)
            a = c.containers.run(host_image, ["python3", "/opt/meshcert/world/nodeagent.py", "--banner", str(PORT)],
                                 name=f"mc-{run}-a", network=na.name, labels=labels, detach=True)
            b = c.containers.run(host_image, ["python3", "/opt/meshcert/world/nodeagent.py"],
                                 name=f"mc-{run}-b", network=nb.name, labels=labels, detach=True)
            a.reload()
            b.reload()
            a_ip = a.attrs["NetworkSettings"]["Networks"][na.name]["IPAddress"]
            b_ip = b.attrs["NetworkSettings"]["Networks"][nb.name]["IPAddress"]

            def host_reaches() -> bool:
                with socket.create_connection((a_ip, PORT), timeout=1) as s:
                    return s.recv(64).startswith(b"meshcert-banner")
            wait_for("isolation probe listener (positive control from the host)", host_reaches, 30)
            api = NodeAPI("isolation-b", b_ip)
            wait_for("isolation probe container b", api.healthy, 30,
                     describe=lambda: f"GET /health: {http_state(api.base + '/health')}")
            r = api.dial([(a_ip, PORT)], timeout=2.0)[0]
            if r["ok"]:
                raise EnvironmentProblem(
                    "Docker engine isolation",
                    f"a container on network B reached a listener on network A ({a_ip}:{PORT}): networks are not "
                    "isolated, so ACL and route negatives would be meaningless",
                    "run dockerd with its iptables rules on (never --iptables=false) and the iptables package installed")
    finally:
        lbl.remove_run(c, run)
    if ident:
        stamp.write_text(json.dumps({"engine": ident, "checked": time.time()}))
