"""Chaos experiments: steady state -> inject -> assert during the fault -> roll back -> steady state.

A scenario's faults are undone in a ``finally`` (and healed before it starts, so a killed run
leaves nothing injected for the next one); every step is written to a journal that goes into
the report. Faults are data (``{kind: NAME, ...params}``, world addresses as ``${...}``
symbols) applied by the handlers of :data:`FAULTS`: the same handlers serve a scenario and
``meshcert replay FILE``. A scenario that fails writes its replay file (topology, policy,
routes, faults, the probes and pre-run it expected) into the report.

Fault kinds (see :data:`FAULTS`): toxiproxy toxics and a disabled proxy; nftables in a
container's network namespace (nsenter from the host, the container needs no NET_ADMIN);
container kills and freezes; a standby subnet router; an extra agent pod with a bad key.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from meshcert.checks.base import ClauseFailure, Probe, check_reachability
from meshcert.errors import InputError
from meshcert.secrets import redact
from meshcert.world.extra import netns_heal, netns_nft

Undo = Callable[[], None]
FaultHandler = Callable[[Any, Mapping[str, Any]], Undo]


# ------------------------------------------------------------------------------------ symbols

WAN_SYMBOL = re.compile(r"\$\{wan:([A-Za-z0-9_.-]+)\}")


def resolve(world, text: str) -> str:
    """World addresses for the symbols of a fault parameter: ``${wan:NAME}`` (a container's
    address on the WAN network: a node, toxiproxy, headscale) and the replay symbols
    (``${ip:NAME}``, ``${net:NAME}``, ``${tailnet}``)."""
    from meshcert.property.runner import resolve as resolve_replay

    def wan(m: re.Match) -> str:
        name = m.group(1)
        if name in world.nodes:
            return world.nodes[name].wan_ip
        if name == "toxiproxy":
            return world.toxiproxy.ip
        if name == "headscale":
            return world.headscale.ip
        raise InputError("fault symbol", f"${{wan:{name}}}: the world has no node, toxiproxy or headscale "
                         f"named {name!r}")
    return resolve_replay(WAN_SYMBOL.sub(wan, text), world)


# ------------------------------------------------------------------------------------ fault kinds

@dataclass(frozen=True)
class FaultKind:
    handler: FaultHandler
    required: Mapping[str, type | tuple[type, ...]]
    optional: Mapping[str, type | tuple[type, ...]]
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
            from meshcert.world import wait_for
            node = world.nodes[pod]
            wait_for(f"{pod}'s sidecar Running after the thaw", lambda: node.backend_state() == "Running", 60,
                     describe=node.backend_state)
    return thaw


def _standby_router(world, f: Mapping[str, Any]) -> Undo:
    from meshcert.world.topology import ROUTER_TAG, NodeSpec
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
    from meshcert.world import wait_for
    from meshcert.world.topology import AGENT_TAG, AgentSpec
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


_STR, _NUM = str, (int, float)
FAULTS: dict[str, FaultKind] = {
    "toxic": FaultKind(_toxic, {"proxy": _STR, "type": _STR}, {"stream": _STR, "attributes": dict},
                       "a toxiproxy toxic (latency, timeout, reset_peer, ...) on a proxy, one stream"),
    "proxy_down": FaultKind(_proxy_down, {"proxy": _STR}, {}, "a toxiproxy proxy disabled (refuses connections)"),
    "nft": FaultKind(_nft, {"netns": _STR, "rules": _STR}, {},
                     "nftables chains loaded into a container's network namespace"),
    "kill": FaultKind(_kill, {"container": _STR}, {}, "kill -9 of a container; the undo starts it again"),
    "freeze": FaultKind(_freeze, {"container": _STR}, {}, "a container frozen (docker pause); the undo thaws it"),
    "standby_router": FaultKind(_standby_router, {"name": _STR}, {"approve": bool, "advertise": list, "networks": list},
                                "a second subnet router advertising the VLAN (approved unless approve: false)"),
    "extra_pod": FaultKind(_extra_pod, {"name": _STR}, {"key": _STR},
                           "an extra agent pod; key: valid | expired-preauth-key | expired-node"),
}
EXTRA_POD_KEYS = ("valid", "expired-preauth-key", "expired-node")


def validate_fault(f: Any, source: str, path: str) -> None:
    """One clear error naming the file, the fault and the parameter."""
    if not isinstance(f, dict):
        raise InputError(source, f"{path}: expected a mapping {{kind: NAME, ...}}")
    kind = f.get("kind")
    if kind not in FAULTS:
        raise InputError(source, f"{path}.kind: unknown fault kind {kind!r}", f"use one of {', '.join(FAULTS)}")
    fk = FAULTS[kind]
    for k in fk.required:
        if k not in f:
            raise InputError(source, f"{path}: fault {kind} needs {k}", f"{kind}: {fk.doc}")
    for k, v in f.items():
        if k == "kind":
            continue
        want = fk.required.get(k) or fk.optional.get(k)
        if want is None:
            raise InputError(source, f"{path}.{k}: not a parameter of fault {kind}",
                             f"its parameters: {', '.join([*fk.required, *fk.optional])}")
        if not isinstance(v, want) or (isinstance(v, bool) and want is not bool):
            raise InputError(source, f"{path}.{k}: expected {getattr(want, '__name__', 'a number')}, found {v!r}")
    if kind == "extra_pod" and f.get("key", "valid") not in EXTRA_POD_KEYS:
        raise InputError(source, f"{path}.key: {f['key']!r}", f"use one of {', '.join(EXTRA_POD_KEYS)}")
    if kind == "toxic" and f.get("stream", "downstream") not in ("downstream", "upstream"):
        raise InputError(source, f"{path}.stream: {f['stream']!r}", "use downstream or upstream")


FAULT_HANDLERS: dict[str, FaultHandler] = {k: v.handler for k, v in FAULTS.items()}


# ------------------------------------------------------------------------------------ pre-run expectations

HANG_GRACE_S = 5.0  # a pre-run with a time bound is abandoned this long after its bound

def prerun_problems(world, spec: Mapping[str, Any]) -> tuple[dict, float, list[str]]:
    """Run a pre-run as ``spec`` says and compare with its ``expect``; returns (answer, seconds, problems).

    spec: ``pod``, ``connectivity`` (headscale | direct), ``deadline_s``, ``endpoints`` ({name:
    {url, critical}}, urls may hold symbols), ``expect``: ``ready`` (bool), ``reachable``
    ({name: bool}), ``warning`` (a word a warning-level log line must hold), ``message`` (a
    word the message or sidecar detail must hold), ``context`` (names the agent must be told
    about), ``within_s`` (a bound on the whole pre-run).
    """
    from meshcert.checks.sut import DEADLINE_S, mesh_spec
    pod = spec.get("pod", "agent")
    conn = mesh_spec(world) if spec.get("connectivity", "headscale") == "headscale" else {"type": "direct"}
    eps = {n: {"url": resolve(world, e["url"]), "critical": bool(e.get("critical", True))}
           for n, e in spec["endpoints"].items()}
    want, problems = spec.get("expect", {}), []
    client = world.sut(pod)
    if want.get("within_s") is not None:
        client.timeout = want["within_s"] + HANG_GRACE_S  # a hung pre-run is a finding, not a stuck run
    t0 = time.monotonic()
    try:
        code, ans = client.prerun(conn, eps, deadline_s=spec.get("deadline_s", DEADLINE_S))
    except InputError as e:
        if "Timeout" not in e.message:
            raise
        took = time.monotonic() - t0
        return {}, took, [f"the pre-run to end within {want['within_s']} s: no answer after {took:.1f} s (it hangs)"]
    took = time.monotonic() - t0
    if code != 200:
        return ans, took, [f"pre-run answered HTTP {code}: {redact(json.dumps(ans))[:300]}"]
    if "ready" in want and ans.get("ready") is not want["ready"]:
        problems.append(f"ready: expected {want['ready']}, observed {ans.get('ready')} ({ans.get('message')!r})")
    if "sidecar_ready" in want and (ans.get("sidecar") or {}).get("ready") is not want["sidecar_ready"]:
        problems.append(f"sidecar ready: expected {want['sidecar_ready']}, observed {ans.get('sidecar')}")
    got = ans.get("endpoints") or {}
    for n, r in (want.get("reachable") or {}).items():
        if (got.get(n) or {}).get("reachable") is not r:
            problems.append(f"endpoint {n}: expected reachable={r}, observed {got.get(n)}")
    if want.get("warning") and not any(x.get("level") == "warning" and want["warning"] in x.get("msg", "")
                                       for x in ans.get("logs") or []):
        problems.append(f"a warning mentioning {want['warning']!r}: observed logs {ans.get('logs')}")
    text = f"{ans.get('message', '')} {(ans.get('sidecar') or {}).get('detail', '')}"
    if want.get("message") and want["message"] not in text:
        problems.append(f"the message to say {want['message']!r}: observed {text!r}")
    for n in want.get("context") or []:
        if not any(n in line for line in ans.get("agent_context") or []):
            problems.append(f"the agent told about {n!r}: observed agent_context {ans.get('agent_context')}")
    if want.get("within_s") is not None and took > want["within_s"]:
        problems.append(f"the pre-run to end within {want['within_s']} s: it took {took:.2f} s")
    return ans, took, [redact(p) for p in problems]


# ------------------------------------------------------------------------------------ journal, faults

class SteadyStateBroken(ClauseFailure):
    """The steady-state hypothesis did not hold BEFORE a scenario injected anything: the world
    or the SUT breaks the clause named (``clause``), not the scenario. Whoever scores a fault
    attributes it to that clause; the scenario itself was never run."""

    def __init__(self, scenario: str, failure: ClauseFailure):
        self.scenario = scenario
        super().__init__(failure.clause, [f"steady state of scenario {scenario!r} broken before any fault: {p}"
                                          for p in failure.problems], failure.logs)


@dataclass
class Journal:
    scenario: str
    t0: float = field(default_factory=time.monotonic)
    events: list[dict] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    outcome: str = "running"
    replay_file: str = ""

    def log(self, event: str, **detail: Any) -> None:
        self.events.append({"t_s": round(time.monotonic() - self.t0, 3), "event": event, **detail})

    def to_data(self) -> dict:
        return {"scenario": self.scenario, "outcome": self.outcome,
                "duration_s": round(time.monotonic() - self.t0, 2), "figures": self.figures,
                **({"replay_file": self.replay_file} if self.replay_file else {}), "events": self.events}


class Faults:
    """Injected faults of one scenario (recorded as data for its replay file), undone in reverse
    order, always; and what the scenario expected while they held."""

    def __init__(self, world, journal: Journal):
        self.world, self.journal = world, journal
        self.recorded: list[dict] = []
        self.probes: list[Probe] = []
        self.preruns: list[dict] = []
        self._undo: list[tuple[str, Undo]] = []

    def inject(self, kind: str, what: str = "", **params: Any) -> None:
        fault = {"kind": kind, **params}
        validate_fault(fault, f"scenario {self.journal.scenario}", f"faults[{len(self.recorded)}]")
        self.recorded.append(fault)
        undo = FAULTS[kind].handler(self.world, fault)
        self.journal.log("inject", **fault, **({"what": what} if what else {}))
        self._undo.append((f"{kind} {json.dumps(params, sort_keys=True)}", undo))

    def expect_reachable(self, clause: str, probes: list[Probe], **kw: Any) -> None:
        """Probes that must hold during the faults (recorded for the replay file)."""
        self.probes.extend(probes)
        check_reachability(self.world, clause, probes, **kw)
        self.journal.log("probes held", probes=[f"{p.src} -> {p.dst}:{p.port} "
                                                f"{'connects' if p.expect else 'blocked'}" for p in probes])

    def expect_prerun(self, spec: dict, label: str = "pre-run") -> tuple[dict, float]:
        """A pre-run that must answer as ``spec['expect']`` says (recorded for the replay file)."""
        self.preruns.append(spec)
        ans, took, problems = prerun_problems(self.world, spec)
        self.journal.log(label, seconds=round(took, 2), ready=ans.get("ready"), message=redact(str(ans.get("message"))),
                         endpoints={n: (r or {}).get("reachable") for n, r in (ans.get("endpoints") or {}).items()})
        assert not problems, f"scenario {self.journal.scenario}: {label}: " + "; ".join(problems)
        return ans, took

    def undo_all(self) -> None:
        errors = []
        while self._undo:
            what, fn = self._undo.pop()
            t0 = time.monotonic()
            try:
                fn()
                self.journal.log("rollback", what=what, seconds=round(time.monotonic() - t0, 2))
            except Exception as e:  # keep undoing the rest
                errors.append(f"{what}: {e}")
                self.journal.log("rollback failed", what=what, error=str(e))
        if errors:
            raise RuntimeError("rollback incomplete: " + "; ".join(errors))


def heal_everything(world) -> None:
    """Before a scenario: no toxic, every proxy enabled, no fault table in any namespace."""
    world.toxiproxy.reset()  # toxiproxy: removes all toxics and enables every proxy
    roles = [n.name for n in world.topology.nodes] + [f"{p}-pause" for p in world.pods]
    for role in roles:
        if role in world.boxes:
            netns_heal(world, role)  # False when there was nothing to heal


def inventory(world) -> dict[str, list[str]]:
    """What a scenario must leave as it found it: containers, tailnet nodes, toxiproxy proxies."""
    return {"containers": sorted(world.boxes),
            "headscale nodes": sorted(n.get("given_name") or n.get("name") for n in world.headscale.nodes()),
            "toxiproxy proxies": sorted(world.toxiproxy.client().proxies())}


def save_scenario_replay(world, name: str, faults: Faults, error: BaseException) -> Path | None:
    """The replay file of a failed scenario: the guide topology, the world's policy and routes
    (symbolic), the faults injected, the probes and pre-runs it expected."""
    from meshcert.property.runner import RouteSettings
    from meshcert.replay.run import Replay, ReplayProbe, save_replay
    from meshcert.world.topology import Topology
    if not isinstance(world.topology, Topology) or not (faults.recorded or faults.probes or faults.preruns):
        return None
    vlan = next((n.subnet for n in world.topology.networks if n.name == "vlan"), None)

    def symbolic(v: Any) -> Any:
        if isinstance(v, str):
            return v.replace(vlan, "${net:vlan}") if vlan else v
        if isinstance(v, list):
            return [symbolic(x) for x in v]
        if isinstance(v, dict):
            return {symbolic(k): symbolic(x) for k, x in v.items()}
        return v
    probes = {(p.src, p.dst, p.port): ReplayProbe(p.src, p.dst, p.port, p.expect, p.why) for p in faults.probes}
    routes = RouteSettings({s.name: tuple(symbolic(list(s.approve_routes))) for s in world.topology.nodes
                            if s.advertise_routes},
                           {p.name: p.accept_routes for p in world.topology.pods})
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    first_line = redact(str(error)).splitlines()[0][:300] if str(error) else ""
    replay = Replay(f"scenario-{slug}", "guide", symbolic(world.policy), routes, tuple(probes.values()),
                    tuple(faults.recorded),
                    description=f"chaos scenario {name!r} failed" + (f": {first_line}" if first_line else ""),
                    prerun=tuple(faults.preruns), scenario=name)
    root = (world.log_root.parent if world.log_root else Path("reports")) / "replays"
    return save_replay(replay, root)


@contextlib.contextmanager
def scenario(world, name: str, report_extra: dict, steady: Callable[[Any], None]) -> Iterator[tuple[Faults, Journal]]:
    """Run a scenario body with its steady-state hypothesis checked before and after.

    The body gets ``(faults, journal)``; faults are undone when it ends, however it ends; the
    world is then waited back into its steady state (``world.reset()`` + the hypothesis) and
    must hold the same containers, tailnet nodes and proxies as before. A failure of the body
    writes the scenario's replay file into the report.
    """
    journal = Journal(name)
    report_extra.setdefault("scenarios", {})[name] = journal.to_data()
    heal_everything(world)
    before = inventory(world)
    try:
        steady(world)
        journal.log("steady state holds (before)")
    except ClauseFailure as e:
        journal.outcome = "steady state broken before"
        journal.log("steady state broken before the experiment", clause=e.clause, error=str(e))
        report_extra["scenarios"][name] = journal.to_data()
        raise SteadyStateBroken(name, e) from e
    faults = Faults(world, journal)
    try:
        try:
            yield faults, journal
        except BaseException as e:
            journal.outcome = "failed"
            journal.log("failed", error=redact(str(e))[:600])
            if isinstance(e, Exception):
                try:
                    path = save_scenario_replay(world, name, faults, e)
                except Exception as save_error:  # the failure itself matters more
                    journal.log("replay file not written", error=str(save_error))
                else:
                    if path:
                        journal.replay_file = str(path)
                        e.add_note(f"replay file: {path} (rerun alone: meshcert replay {path})")
            raise
        finally:
            faults.undo_all()
            world.reset()
        steady(world)
        journal.log("steady state holds (after)")
        after = inventory(world)
        leaked = {k: sorted(set(after[k]) ^ set(before[k])) for k in before if set(after[k]) != set(before[k])}
        assert not leaked, f"scenario {name}: the world differs from before the experiment: {leaked}"
        journal.log("nothing left behind", **{k: len(v) for k, v in after.items()})
        if journal.outcome == "running":
            journal.outcome = "passed"
    finally:
        report_extra["scenarios"][name] = journal.to_data()
