"""Fault kinds and their handlers: how each fault of :data:`meshcert.replay.faults_schema.FAULT_KINDS`
is applied to a world, and undone.

Faults are data (``{kind: NAME, ...params}``, world addresses as ``${...}`` symbols) applied by
the handlers of :data:`FAULTS`: the same handlers serve a chaos scenario and
``meshcert replay FILE``. Kinds: toxiproxy toxics and a disabled proxy; nftables in a
container's network namespace (nsenter from the host, the container needs no NET_ADMIN);
container kills and freezes; a standby subnet router; an extra agent pod with a bad key; a
subnet router rejoined; a control-plane blip.
A handler takes ``(world, fault)`` and returns the fault's undo.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meshcert.errors import InputError
from meshcert.property.live import resolve as resolve_replay
from meshcert.replay.faults_schema import CONTROL_GRACE_S, FAULT_KINDS, ParamType
from meshcert.world.base import WorldError, wait_for
from meshcert.world.extra import netns_heal, netns_nft
from meshcert.world.topology import AGENT_TAG, ROUTER_TAG, AgentSpec, NodeSpec

Undo = Callable[[], None]
FaultHandler = Callable[[Any, Mapping[str, Any]], Undo]


# ------------------------------------------------------------------------------------ symbols

WAN_SYMBOL = re.compile(r"\$\{wan:([A-Za-z0-9_.-]+)\}")


def resolve(world, text: str) -> str:
    """World addresses for the symbols of a fault parameter: ``${wan:NAME}`` (a container's
    address on the WAN network: a node, toxiproxy, headscale) and the replay symbols
    (``${ip:NAME}``, ``${net:NAME}``, ``${tailnet}``)."""
    def wan(m: re.Match) -> str:
        name = m.group(1)
        if name in world.nodes:
            return world.nodes[name].wan_ip
        if name == "toxiproxy":
            return world.toxiproxy.ip
        if name == "headscale":
            return world.headscale.ip
        if name == "vault" and "vault" in world.boxes:  # the credential world's (world/vault.py)
            return world.ip_of(world.boxes["vault"], "wan")
        raise InputError("fault symbol", f"${{wan:{name}}}: the world has no node, toxiproxy or headscale "
                         f"named {name!r}")
    return resolve_replay(WAN_SYMBOL.sub(wan, text), world)


# ------------------------------------------------------------------------------------ fault kinds

@dataclass(frozen=True)
class FaultKind:
    handler: FaultHandler
    required: Mapping[str, ParamType]
    optional: Mapping[str, ParamType]
    doc: str


def _toxic(world, f: Mapping[str, Any]) -> Undo:
    p = world.toxiproxy.client().get_proxy(f["proxy"])
    if p is None:
        raise InputError("fault toxic", f"toxiproxy has no proxy {f['proxy']!r}", "use control (the control plane)")
    stream = f.get("stream", "downstream")
    name = f"meshcert_{f['type']}_{stream}"
    p.add_toxic(name=name, type=f["type"], stream=stream, toxicity=1.0, attributes=dict(f.get("attributes") or {}))
    return lambda: p.destroy_toxic(name)


def _proxy_down(world, f: Mapping[str, Any]) -> Undo:
    p = world.toxiproxy.client().get_proxy(f["proxy"])
    if p is None:
        raise InputError("fault proxy_down", f"toxiproxy has no proxy {f['proxy']!r}", "use control")
    p.disable()
    return p.enable


def _container(world, f: Mapping[str, Any], param: str) -> tuple[str, str | None]:
    """The container a fault names (checked), and the pod whose sidecar it is (if it is one)."""
    role = f[param]
    if role not in world.boxes:
        raise InputError(f"fault {f['kind']}", f"{param}: no container {role!r} in this world",
                         f"use one of {', '.join(sorted(world.boxes))}")
    return role, (role[: -len("-tailscale")] if role.endswith("-tailscale") else None)


def _nft(world, f: Mapping[str, Any]) -> Undo:
    role, _ = _container(world, f, "netns")
    netns_nft(world, role, resolve(world, f["rules"]))
    return lambda: netns_heal(world, role)


def _kill(world, f: Mapping[str, Any]) -> Undo:
    role, pod = _container(world, f, "container")
    world.boxes[role].container.kill()

    def restart() -> None:
        if role in world.nodes:
            world.restart_node(role)           # a node: started again, its address re-read
        elif pod in world.pods:
            world.start_sidecar(pod)           # a pod's sidecar: started, waited Running
        else:
            world.boxes[role].container.start()
    return restart


def _freeze(world, f: Mapping[str, Any]) -> Undo:
    """``docker pause`` (cgroup freezer): the processes stop answering but their sockets stay,
    so a client without a timeout of its own hangs -- a kill makes them refuse instead."""
    role, pod = _container(world, f, "container")
    world.boxes[role].container.pause()

    def thaw() -> None:
        world.boxes[role].container.unpause()
        if pod in world.pods:
            node = world.nodes[pod]
            wait_for(f"{pod}'s sidecar Running after the thaw", lambda: node.backend_state() == "Running", 60,
                     describe=node.backend_state)
    return thaw


def _standby_router(world, f: Mapping[str, Any]) -> Undo:
    name = f["name"]
    cidrs = tuple(resolve(world, c) for c in f.get("advertise", ["${net:vlan}"]))
    spec = NodeSpec(name, (ROUTER_TAG,), networks=("wan", *f.get("networks", ["vlan"])), advertise_routes=cidrs,
                    approve_routes=cidrs if f.get("approve", True) else ())
    try:
        world.add_node(spec)
    except BaseException:
        world.remove_node(name)
        raise
    return lambda: world.remove_node(name)


def _extra_pod(world, f: Mapping[str, Any]) -> Undo:
    """An agent pod with its own key: ``key`` valid | expired-preauth-key (never joins) |
    expired-node (joins, then headscale expires the node)."""
    name, key_kind = f["name"], f.get("key", "valid")
    spec = AgentSpec(name=name, tags=(AGENT_TAG,))
    mutant = world.pods["agent"].sut_config[0] if "agent" in world.pods else ""  # the same SUT build
    try:
        if key_kind == "expired-preauth-key":
            key = world.headscale.preauth_key((AGENT_TAG,), reusable=False, expiration="1h")
            world.headscale.expire_preauth_key(key)
            world.add_pod(spec, key, expect_join=False, mutant=mutant)
        else:
            node = world.add_pod(spec, mutant=mutant)
            if key_kind == "expired-node":
                world.headscale.cli("nodes", "expire", "-i", str(world.headscale.node_id(name)))
                wait_for(f"{name}'s sidecar to leave Running after its node expired",
                         lambda: node.backend_state() != "Running", 60, describe=node.backend_state)
    except BaseException:
        world.remove_pod(name)
        raise
    return lambda: world.remove_pod(name)


def _router_rejoined(world, f: Mapping[str, Any]) -> Undo:
    """The subnet router removed and joined again, then its routes approved through headscale
    alone (World.add_node: no policy change follows), as the guide orders it: the router
    first, the approval after. Headscale < 0.26 then sends the router no peers; headscale
    0.26-0.27 keeps the deleted router primary for its routes, so the new one never is (the
    findings in fixtures/replays/findings/). The undo approves the routes through the world;
    where the deleted router stays primary, it first restarts headscale (the only thing that
    empties 0.27's in-memory primary-route table), else the world would stay without the route."""
    spec = world.topology.node(f["router"])
    if not spec.approve_routes:
        raise WorldError(f"router_rejoined: {f['router']} approves no route in this topology")
    world.remove_node(spec.name)
    world.add_node(spec)

    def undo() -> None:
        if world.headscale.dialect.rejoined_router_never_primary:
            world.restart_control_plane()
        world.set_route_approval(spec.name, spec.approve_routes)
    return undo


def _control_blip(world, f: Mapping[str, Any]) -> Undo:
    """The control plane unreachable for ``seconds`` (toxiproxy's ``control`` proxy, the nodes'
    only way to headscale, disabled: its connections cut, new ones refused), then reachable;
    returns ``hold_s`` after the cut, when headscale has decided about every cut session. The
    length of the outage and the hold are the fault itself (timed, not waited on a condition).
    The undo waits for the topology's routes and every peer online; if they do not come back
    (headscale 0.27 can leave reconnected nodes offline with their routes cleared, the finding
    in fixtures/replays/findings/), it restarts headscale."""
    control = world.toxiproxy.client().get_proxy("control")
    cut = time.monotonic()
    control.disable()
    try:
        time.sleep(f["seconds"])
    finally:
        control.enable()
    left = cut + f.get("hold_s", CONTROL_GRACE_S) - time.monotonic()
    if left > 0:
        time.sleep(left)

    return world.recover_control_plane


HANDLERS: dict[str, FaultHandler] = {
    "toxic": _toxic, "proxy_down": _proxy_down, "nft": _nft, "kill": _kill, "freeze": _freeze,
    "standby_router": _standby_router, "extra_pod": _extra_pod, "router_rejoined": _router_rejoined,
    "control_blip": _control_blip,
}
FAULTS: dict[str, FaultKind] = {k: FaultKind(HANDLERS[k], p.required, p.optional, p.doc)
                                for k, p in FAULT_KINDS.items()}
FAULT_HANDLERS: dict[str, FaultHandler] = {k: v.handler for k, v in FAULTS.items()}
