"""Chaos experiments: steady state -> inject -> assert during the fault -> roll back -> steady state.

A scenario's faults are undone in a ``finally`` (and healed before it starts, so a killed run
leaves nothing injected for the next one); every step is written to a journal that goes into
the report. Faults are data applied by the handlers of :data:`meshcert.chaos.faults.FAULTS`
(the same handlers serve ``meshcert replay FILE``). A scenario that fails writes its replay file
(topology, policy, routes, faults, the probes and pre-run it expected) into the report.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshcert.chaos.faults import FAULTS, Undo, resolve
from meshcert.checks.base import ClauseFailure, Probe, check_reachability
from meshcert.checks.sut import DEADLINE_S, mesh_spec
from meshcert.errors import InputError
from meshcert.property.model import RouteSettings
from meshcert.replay.faults_schema import validate_fault
from meshcert.replay.model import Replay, ReplayProbe, save_replay
from meshcert.secrets import redact
from meshcert.world.extra import netns_heal
from meshcert.world.topology import Topology

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
        validate_fault(fault, f"scenario {self.journal.scenario}", f"faults[{len(self.recorded)}]", FAULTS)
        self.recorded.append(fault)
        undo = FAULTS[kind].handler(self.world, fault)
        self.journal.log("inject", **fault, **({"what": what} if what else {}))
        self._undo.append((f"{kind} {json.dumps(params, sort_keys=True)}", undo))

    def injected(self, what: str, undo: Undo) -> None:
        """A fault the scenario applied itself, with no fault kind (so not in the replay file):
        journaled, and undone with the others (a sealed Vault: unsealed)."""
        self.journal.log("inject", what=what)
        self._undo.append((what, undo))

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
