"""ACL-1/2 and HEALTH-1/3 asserted on the chart's pod on a real kubelet (``--cluster kind``),
from inside that pod.

The pod is a :class:`~meshcert.checks.helm_pod.KindRelease` (the chart installed with helm on a
kind cluster whose node is on the world's WAN; its sidecar joined the world's headscale through
toxiproxy with the world's tag:agent-runtime key). For the ACL clauses meshcert's node agent runs
inside the pod (meshcert/k8s/kindpod.py says how), the pod is registered as a tailnet node of the
world for the check, and the world's own checks (checks/acl.py) run unchanged on a view of the
world whose agent pods are that one pod. The HEALTH clauses drive the real sidecar (``tailscale
down`` in its container) and ask the SUT in the pod.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from meshcert.checks import acl
from meshcert.checks.helm_pod import KIND_AGENT, KIND_BANNER_PORTS, KindRelease, _mesh_spec
from meshcert.checks.sut import DEADLINE_S, FAKE_LOCALAPI_PORT, WITNESS_PORT, clause
from meshcert.errors import MeshcertError
from meshcert.k8s import kindpod
from meshcert.k8s.chart import SIDECAR
from meshcert.world.base import NODE_API, wait_for
from meshcert.world.topology import AGENT_TAG, AgentSpec


class KindWorld:
    """The world as the ACL checks see it from the kind pod: the same world (policy, dials, logs:
    every attribute is the world's), but its topology's agent pods are the kind pod alone."""

    def __init__(self, world, agent: AgentSpec):
        self._world = world
        self.topology = dataclasses.replace(world.topology, pods=(agent,))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._world, name)


def _userspace(rel: KindRelease) -> bool:
    return bool(rel.values["connectivity"].get("userspace", True))


def kind_acl(world, rel: KindRelease) -> None:
    """ACL-1 and ACL-2 dialled from inside the kind pod (its node agent, through the sidecar's
    SOCKS5 proxy in userspace mode): the guide's grants reach, everything else is denied after a
    positive control on the same path, and no target opens a connection to the pod (its banner
    port 5000: the controller cannot bind one below 1024)."""
    c = rel.values["connectivity"]
    rel.wait_running()
    rel.pod.wait_ready(rel.controller, 60)  # the SUT answers (the kubelet's verdict on its probe)
    rel.pod.start_agent(rel.controller, KIND_AGENT, KIND_BANNER_PORTS)
    rel.pod.forward(NODE_API)
    node = kindpod.peer(rel.pod, KIND_AGENT, (AGENT_TAG,), rel.node_ip, SIDECAR,
                        accept_routes=bool(c.get("acceptRoutes")),
                        socks5=f"127.0.0.1:{c.get('socks5Port', 1055)}" if _userspace(rel) else None)
    wait_for(f"meshcert's node agent in the kind pod ({rel.node_ip}:{NODE_API})", node.api.healthy, 30)
    agent = AgentSpec(KIND_AGENT, (AGENT_TAG,), accept_routes=node.accept_routes, banner_ports=KIND_BANNER_PORTS,
                      userspace=_userspace(rel))
    with kindpod.registered(world, node, rel.pod, {SIDECAR: f"{KIND_AGENT}-tailscale",
                                                   rel.controller: f"{KIND_AGENT}-controller"}):
        world.wait_routes_seen()
        view = KindWorld(world, agent)
        acl.acl1(view)
        acl.acl2(view)


def _up_args(rel: KindRelease) -> list[str]:
    """The sidecar's own `tailscale up` flags (its container's args in the pod spec)."""
    return [a for a in rel.pod.spec_container(SIDECAR).get("args") or [] if a.startswith("--")]


class _SidecarDown:
    """`tailscale down` in the kind pod's sidecar (daemon alive, socket answering, Stopped), and up again."""

    def __init__(self, rel: KindRelease):
        self.rel = rel

    def __enter__(self) -> str:
        code, out = self.rel.tailscale("down")
        if code != 0:
            raise MeshcertError("kind sidecar", f"`tailscale down` failed ({code}): {out.strip()[-300:]}")
        return wait_for("kind pod sidecar BackendState Stopped", lambda: self.rel.backend_state() == "Stopped"
                        and "Stopped", 30, describe=self.rel.backend_state)

    def __exit__(self, *exc) -> None:
        code, out = self.rel.tailscale("up", *_up_args(self.rel))
        if code != 0:
            raise MeshcertError("kind sidecar", f"`tailscale up` failed ({code}): {out.strip()[-300:]}")
        self.rel.wait_running(60)


def kind_health1(world, rel: KindRelease) -> None:
    """HEALTH-1 on the kind pod, with something accepting on 127.0.0.1:41112 in the pod throughout:
    Running -> the SUT's pre-run says sidecar ready and ready; the sidecar driven to Stopped
    (`tailscale down` in its container, the socket answering) -> not ready; tailscaled killed
    while the control plane is down -> the kubelet restarts the container (its restart count
    grows), the new tailscaled cannot log in (not Running) -> not ready."""
    rel.wait_running()
    rel.pod.wait_ready(rel.controller, 60)  # the SUT answers (the kubelet's verdict on its probe)
    sut = rel.sut()
    eps = {"server": {"url": f"tcp://{world.address('server')}:22", "critical": True}}
    spec = _mesh_spec(world, rel.secret)
    rel.pod.listen(rel.controller, FAKE_LOCALAPI_PORT)
    with clause(world, "HEALTH-1") as e:
        def not_ready(how: str, state: str) -> None:
            code, ans = sut.prerun(spec, eps, deadline_s=DEADLINE_S)
            side = ans.get("sidecar") or {}
            e.that(code == 200 and ans.get("ready") is False and side.get("ready") is False,
                   f"{how} (BackendState {state}; 127.0.0.1:{FAKE_LOCALAPI_PORT} accepting in the pod) -> sidecar not "
                   f"ready and pre-run not ready", f"HTTP {code} ready={ans.get('ready')} sidecar={side}")

        code, ans = sut.prerun(spec, eps)
        side = ans.get("sidecar") or {}
        e.that(code == 200 and ans.get("ready") is True and side.get("ready") is True,
               "sidecar Running (LocalAPI BackendState) -> sidecar ready and pre-run ready",
               f"HTTP {code} ready={ans.get('ready')} sidecar={side}")
        with _SidecarDown(rel) as state:
            not_ready("after `tailscale down` in the kind pod's sidecar (the socket answering)", state)
        before = rel.pod.status_of(SIDECAR).get("restartCount", 0)
        try:
            with world.control_plane_down():
                code, out = rel.pod.exec(SIDECAR, ["sh", "-c", "kill -9 $(pidof tailscaled)"])
                if not e.that(code == 0, "tailscaled killed in the sidecar", f"exit {code}: {out.strip()[-200:]}"):
                    return
                wait_for("the kubelet restarting the kind pod's sidecar", lambda: rel.pod.running(SIDECAR) and
                         rel.pod.status_of(SIDECAR).get("restartCount", 0) > before, 60, describe=rel.pod.brief)
                def answering() -> str | None:
                    st = rel.backend_state()
                    return None if st.startswith("unavailable") else st
                state = wait_for("the restarted tailscaled's LocalAPI answering", answering, 30,
                                 describe=rel.backend_state)
                e.that(state != "Running", "a tailscaled restarted with the control plane down is not Running", state)
                not_ready("tailscaled killed and restarted by the kubelet while the control plane is down", state)
        finally:
            rel.wait_running(120)  # the sidecar's script logs in again once the control plane is back


def kind_health3(world, rel: KindRelease) -> None:
    """HEALTH-3 on the kind pod: the sidecar not ready (`tailscale down`): the pre-run answers
    200, warns (no error), and really dials -- the server's WAN address (no mesh needed) is
    reported reachable AND a listener there saw the connection, from the kind node's WAN address
    (the pod's traffic leaves the node masqueraded)."""
    rel.wait_running()
    rel.pod.wait_ready(rel.controller, 60)  # the SUT answers (the kubelet's verdict on its probe)
    wan = world.nodes["server"].wan_ip
    eps = {"server": {"url": f"tcp://{world.address('server')}:22", "critical": False},
           "server-wan": {"url": f"tcp://{wan}:{WITNESS_PORT}", "critical": False}}
    with clause(world, "HEALTH-3") as e, world.listening("server", WITNESS_PORT) as peers, _SidecarDown(rel):
        code, ans = rel.sut().prerun(_mesh_spec(world, rel.secret), eps, deadline_s=DEADLINE_S)
        e.that(code == 200, "HTTP 200: the run goes on", f"HTTP {code}")
        logs = ans.get("logs") or []
        e.that(any(x.get("level") == "warning" and "sidecar" in x.get("msg", "").lower() for x in logs),
               "a warning log line about the sidecar", logs)
        e.that(not any(x.get("level") == "error" for x in logs), "no log line at level error",
               [x.get("level") for x in logs])
        got = ans.get("endpoints") or {}
        e.that(set(got) == set(eps), f"a result for every endpoint {sorted(eps)}", sorted(got))
        e.that(got.get("server-wan", {}).get("reachable") is True,
               f"server-wan ({wan}:{WITNESS_PORT}, reachable without the mesh) dialled and reported reachable",
               json.dumps(got.get("server-wan")))
        e.that(rel.node_ip in peers(), f"the server saw a connection on {WITNESS_PORT} from the kind node "
               f"({rel.node_ip}, the pod's masqueraded address)", f"peers seen: {peers()}")
        e.that(ans.get("ready") is False, "ready false", ans.get("ready"))
