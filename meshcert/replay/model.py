"""Replay files, as data: one example of the property test (or a chaos scenario), to rerun alone.

A replay file is YAML::

    meshcert_replay: 1             # format version
    name: property-3f2a9c1b        # free text, names the file in messages
    description: ...               # optional
    finding: ...                   # optional: set when the file documents a known deviation
    versions: {headscale: "<v0.26.0"}  # optional: the versions the file is about (a finding of
                                   # one version range), as the catalog's holds_for (">=", "<",
                                   # "==", joined by commas: ">=v0.26.0,<v0.28.0", groups by
                                   # "|": "==v1.80.3|==v1.102.3"); a world of
                                   # other versions does not run it
    topology: guide                # a topology builder of meshcert (TOPOLOGIES)
    seed: 123456                   # optional: the Hypothesis seed of the run that found it
    policy: {...}                  # the ACL policy, world addresses as ${...} symbols
    routes:
      approved: {router: ["${net:vlan}"]}        # exactly these routes approved per router
      accept_routes: {agent: true, agent-us: false}
    scenario: partition            # optional: the chaos scenario that wrote the file
    faults: []                     # chaos: [{kind: NAME, ...params}] (meshcert.replay.faults_schema),
                                   # applied after the settings hold and before probing,
                                   # undone afterwards
    probes:                        # what to dial and what must happen (may be empty when
                                   # prerun is given)
      - {src: agent, dst: server, port: 22, expect: allowed, reason: "acls[0] allows ..."}
    prerun:                        # optional: pre-runs of a pod's SUT, with the faults held
      - pod: agent
        connectivity: headscale    # or direct
        endpoints: {ssh: {url: "tcp://${ip:server}:22", critical: true}}
        expect: {ready: false, reachable: {ssh: false}, warning: sidecar, within_s: 3.5}
    recorded: {...}                # optional, informative only: what was observed when saved

Symbols (``${ip:NAME}``, ``${net:NAME}``, ``${net:NAME/LEN}``, ``${tailnet}``) are resolved
against the world the file is replayed in (see :mod:`meshcert.property.model`), so a file written
in one world reruns in any other built from the same topology. This module reads, checks and
writes files and imports nothing above the oracle, the policy and the topology (no Hypothesis,
no world, no chaos runtime); :func:`meshcert.replay.run.run_replay` runs one in a world. Every
problem with a file is an :class:`~meshcert.errors.InputError` naming the file and the field.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshcert.errors import InputError
from meshcert.policy import parse_policy
from meshcert.property.model import SYMBOL, Example, Outcome, Pair, RouteSettings, Shape
from meshcert.property.oracle import Verdict
from meshcert.replay.faults_schema import FAULT_KINDS, validate_fault
from meshcert.versions import CONSTRAINT_RE
from meshcert.world.topology import Topology, guide_topology

FORMAT = 1
# ``versions:``: the catalog's holds_for syntax (meshcert/versions.py)
VERSIONS_RE = CONSTRAINT_RE
TOPOLOGIES: dict[str, Callable[[], Topology]] = {"guide": guide_topology}
FIELDS = ("meshcert_replay", "name", "description", "finding", "versions", "topology", "seed", "scenario", "policy",
          "routes", "faults", "probes", "prerun", "recorded")
REQUIRED = ("meshcert_replay", "name", "topology", "policy", "routes", "probes")
EXPECT = {"allowed": True, "denied": False}

@dataclass(frozen=True)
class ReplayProbe:
    src: str
    dst: str
    port: int
    expect: bool
    reason: str = ""

    @property
    def pair(self) -> Pair:
        return Pair(self.src, self.dst, self.port)


@dataclass(frozen=True)
class Replay:
    name: str
    topology: str
    policy: dict
    routes: RouteSettings
    probes: tuple[ReplayProbe, ...]
    faults: tuple[dict, ...] = ()
    description: str = ""
    finding: str = ""
    seed: int | None = None
    recorded: dict = field(default_factory=dict)
    source: str = field(default="<replay>", compare=False)
    prerun: tuple[dict, ...] = ()
    scenario: str = ""
    versions: tuple[tuple[str, str], ...] = ()  # (("headscale", "<v0.26.0"),): the versions it is about

    @property
    def example(self) -> Example:
        return Example(self.policy, self.routes)

    def seen_connecting(self) -> set[Pair]:
        """Pairs the recorded run saw connect although expected denied (retried when replayed)."""
        out = set()
        for d in self.recorded.get("differences") or []:
            try:
                if d.get("expect") == "denied" and str(d.get("observed", "")).startswith("connected"):
                    out.add(Pair(d["src"], d["dst"], int(d["port"])))
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # recorded is informative only: a malformed entry is ignored
        return out & {p.pair for p in self.probes}

    @property
    def expectations(self) -> dict[Pair, Verdict]:
        return {p.pair: Verdict(p.expect, p.reason or "as the replay file expects") for p in self.probes}

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"meshcert_replay": FORMAT, "name": self.name}
        if self.description:
            data["description"] = self.description
        if self.finding:
            data["finding"] = self.finding
        if self.versions:
            data["versions"] = dict(self.versions)
        data["topology"] = self.topology
        if self.seed is not None:
            data["seed"] = self.seed
        if self.scenario:
            data["scenario"] = self.scenario
        data["policy"] = self.policy
        data["routes"] = self.routes.to_data()
        data["faults"] = [dict(f) for f in self.faults]
        data["probes"] = [{"src": p.src, "dst": p.dst, "port": p.port,
                           "expect": "allowed" if p.expect else "denied",
                           **({"reason": p.reason} if p.reason else {})} for p in self.probes]
        if self.prerun:
            data["prerun"] = [dict(x) for x in self.prerun]
        if self.recorded:
            data["recorded"] = self.recorded
        return data

    @classmethod
    def from_outcome(cls, outcome: Outcome, *, topology: str = "guide", name: str | None = None,
                     seed: int | None = None, description: str = "", finding: str = "") -> Replay:
        """The replay of a property example: its settings, every probe with the oracle's verdict,
        and (recorded) the differences seen and the addresses they were seen at."""
        probes = tuple(ReplayProbe(p.src, p.dst, p.port, v.allowed, v.reason)
                       for p, v in outcome.verdicts.items())
        body = json.dumps([outcome.example.policy, outcome.example.routes.to_data(),
                           [(p.src, p.dst, p.port, p.expect) for p in probes]], sort_keys=True)
        name = name or "property-" + hashlib.sha256(body.encode()).hexdigest()[:10]
        recorded = {
            "differences": [{"src": d.pair.src, "dst": d.pair.dst, "port": d.pair.port,
                             "expect": "allowed" if d.expected else "denied", "observed": d.observed}
                            for d in outcome.differences],
            "policy_as_set": outcome.policy,
            "addresses": outcome.addresses,
        }
        return cls(name, topology, outcome.example.policy, outcome.example.routes, probes, (),
                   description, finding, seed, recorded)


# ------------------------------------------------------------------------------------ loading

class _Where:
    def __init__(self, source: str):
        self.source = source

    def error(self, path: str, message: str, fix: str = "") -> InputError:
        return InputError(self.source, f"{path}: {message}" if path else message, fix)

    def mapping(self, path: str, value: Any) -> dict:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, found {_kind(value)}")
        for k in value:
            if not isinstance(k, str):
                raise self.error(path, f"keys must be strings, found {k!r}")
        return value

    def string(self, path: str, value: Any, *, empty: bool = False) -> str:
        if not isinstance(value, str) or (not empty and not value.strip()):
            raise self.error(path, f"expected a non-empty string, found {_kind(value)}")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_SYMBOL_FIX = "use ${ip:NAME}, ${net:NAME}, ${net:NAME/LEN} or ${tailnet}"


def _placeholder(text: str, where: _Where, path: str) -> str:
    """Replace symbols by documentation addresses, so a file can be validated without a world."""
    def one(m) -> str:
        kind, name, length = m.group(1), m.group(2), m.group(3)
        if kind == "tailnet" and not name:
            return "100.64.0.0/10"
        if kind == "ip" and name and not length:
            return "192.0.2.1"
        if kind == "net" and name:
            if length and not 0 <= int(length) <= 32:
                raise where.error(path, f"{m.group(0)}: prefix length {length} is not 0-32")
            return f"192.0.2.0/{length}" if length and int(length) >= 24 else "192.0.2.0/24"
        raise where.error(path, f"unknown symbol {m.group(0)}", _SYMBOL_FIX)
    out = SYMBOL.sub(one, text)
    if "${" in out:
        raise where.error(path, f"malformed symbol in {text!r}", _SYMBOL_FIX)
    return out


def _placeholder_policy(policy: Any, where: _Where) -> Any:
    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return _placeholder(v, where, "policy")
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {_placeholder(k, where, "policy") if isinstance(k, str) else k: walk(x) for k, x in v.items()}
        return v
    return walk(policy)


def replay_from_data(data: Any, source: str = "<replay>") -> Replay:
    """Validate a loaded replay document; every problem names the field."""
    w = _Where(source)
    top = w.mapping("", data)
    for k in top:
        if k not in FIELDS:
            raise w.error(k, "unknown field", f"use only {', '.join(FIELDS)}")
    for k in REQUIRED:
        if k not in top:
            raise w.error(k, "missing", "a replay file needs " + ", ".join(REQUIRED))
    if top["meshcert_replay"] != FORMAT or isinstance(top["meshcert_replay"], bool):
        raise w.error("meshcert_replay", f"format {top['meshcert_replay']!r} is not supported",
                      f"this meshcert reads format {FORMAT}")
    name = w.string("name", top["name"])
    description = w.string("description", top.get("description", ""), empty=True)
    finding = w.string("finding", top.get("finding", ""), empty=True)
    versions = top.get("versions") or {}
    if not isinstance(versions, dict) or any(k not in ("tailscale", "headscale") or not isinstance(v, str)
                                             or not VERSIONS_RE.match(v) for k, v in versions.items()):
        raise w.error("versions", "must map tailscale/headscale to \">=vX.Y.Z\", \"<vX.Y.Z\" or \"==vX.Y.Z\" "
                      "(several joined by commas: all hold; groups joined by |: one holds)",
                      'e.g. versions: {headscale: "<v0.26.0"}, {headscale: ">=v0.26.0,<v0.28.0"} or '
                      '{tailscale: "==v1.80.3|==v1.102.3"}')
    topo_name = w.string("topology", top["topology"])
    if topo_name not in TOPOLOGIES:
        raise w.error("topology", f"unknown topology {topo_name!r}", f"use one of {', '.join(TOPOLOGIES)}")
    shape = Shape.of(TOPOLOGIES[topo_name]())
    seed = top.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise w.error("seed", f"expected an integer, found {_kind(seed)}")

    policy = w.mapping("policy", top["policy"])
    try:
        parse_policy(json.dumps(_placeholder_policy(policy, w)), f"{source}: policy")
    except InputError as e:
        raise InputError(e.what, e.message, e.fix) from None

    routes = w.mapping("routes", top["routes"])
    for k in routes:
        if k not in ("approved", "accept_routes"):
            raise w.error(f"routes.{k}", "unknown field", "use approved and accept_routes")
    approved: dict[str, tuple[str, ...]] = {}
    for router, cidrs in w.mapping("routes.approved", routes.get("approved", {})).items():
        if router not in shape.routers:
            raise w.error(f"routes.approved.{router}", "not a subnet router of the topology",
                          f"routers: {', '.join(shape.routers) or 'none'}")
        if not isinstance(cidrs, list) or not all(isinstance(c, str) and c for c in cidrs):
            raise w.error(f"routes.approved.{router}", f"expected a list of CIDRs, found {_kind(cidrs)}")
        for i, c in enumerate(cidrs):
            path = f"routes.approved.{router}[{i}]"
            try:
                ipaddress.ip_network(_placeholder(c, w, path))
            except ValueError as e:
                raise w.error(path, f"{c!r} is not a CIDR ({e})") from None
        approved[router] = tuple(cidrs)
    accept: dict[str, bool] = {}
    for pod, on in w.mapping("routes.accept_routes", routes.get("accept_routes", {})).items():
        if pod not in shape.nodes:
            raise w.error(f"routes.accept_routes.{pod}", "not a tailnet node of the topology",
                          f"nodes: {', '.join(shape.nodes)}")
        if not isinstance(on, bool):
            raise w.error(f"routes.accept_routes.{pod}", f"expected true or false, found {_kind(on)}")
        accept[pod] = on

    faults = top.get("faults", [])
    if not isinstance(faults, list):
        raise w.error("faults", f"expected a list, found {_kind(faults)}")
    for i, f in enumerate(faults):
        w.mapping(f"faults[{i}]", f)
        if "kind" not in f:
            raise w.error(f"faults[{i}]", "missing kind", "each fault is {kind: NAME, ...its parameters}")
        w.string(f"faults[{i}].kind", f["kind"])
        if f["kind"] in FAULT_KINDS:  # other kinds need a handler given to run_replay (refused there if none)
            validate_fault(f, source, f"faults[{i}]")
    extra_pods = [f["name"] for f in faults if f["kind"] == "extra_pod"]
    scenario = w.string("scenario", top.get("scenario", ""), empty=True)
    prerun = top.get("prerun", [])
    if not isinstance(prerun, list):
        raise w.error("prerun", f"expected a list, found {_kind(prerun)}")
    for i, x in enumerate(prerun):
        _check_prerun(w, f"prerun[{i}]", x, (*shape.pods, *extra_pods))

    raw_probes = top["probes"]
    if not isinstance(raw_probes, list) or not (raw_probes or prerun):
        raise w.error("probes", f"expected a non-empty list, found {_kind(raw_probes)}",
                      "list probes, or give a prerun section")
    probes = []
    seen = set()
    for i, p in enumerate(raw_probes):
        where = f"probes[{i}]"
        w.mapping(where, p)
        for k in p:
            if k not in ("src", "dst", "port", "expect", "reason"):
                raise w.error(f"{where}.{k}", "unknown field", "use src, dst, port, expect, reason")
        for k in ("src", "dst", "port", "expect"):
            if k not in p:
                raise w.error(where, f"missing {k}")
        src, dst = w.string(f"{where}.src", p["src"]), w.string(f"{where}.dst", p["dst"])
        if src not in shape.nodes:
            raise w.error(f"{where}.src", f"{src!r} is not a tailnet node of topology {topo_name}",
                          f"nodes: {', '.join(shape.nodes)}")
        if dst not in shape.nodes and dst not in shape.hosts:
            raise w.error(f"{where}.dst", f"{dst!r} is neither a node nor a host of topology {topo_name}",
                          f"use one of {', '.join((*shape.nodes, *shape.hosts))}")
        port = p["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise w.error(f"{where}.port", f"expected a port 1-65535, found {_kind(port)}")
        if p["expect"] not in EXPECT:
            raise w.error(f"{where}.expect", f"expected allowed or denied, found {_kind(p['expect'])}")
        reason = w.string(f"{where}.reason", p.get("reason", ""), empty=True)
        if (src, dst, port) in seen:
            raise w.error(where, f"{src} -> {dst}:{port} is listed twice")
        seen.add((src, dst, port))
        probes.append(ReplayProbe(src, dst, port, EXPECT[p["expect"]], reason))

    recorded = top.get("recorded") or {}
    w.mapping("recorded", recorded)
    return Replay(name, topo_name, policy, RouteSettings(approved, accept), tuple(probes),
                  tuple(dict(f) for f in faults), description, finding, seed, recorded, source,
                  tuple(dict(x) for x in prerun), scenario, tuple(sorted(versions.items())))


PRERUN_FIELDS = ("pod", "connectivity", "deadline_s", "endpoints", "expect")
PRERUN_EXPECT = {"ready": bool, "sidecar_ready": bool, "reachable": dict, "warning": str, "message": str, "context": list,
                 "within_s": (int, float)}


def _check_prerun(w: _Where, path: str, x: Any, pods: tuple[str, ...]) -> None:
    w.mapping(path, x)
    for k in x:
        if k not in PRERUN_FIELDS:
            raise w.error(f"{path}.{k}", "unknown field", f"use {', '.join(PRERUN_FIELDS)}")
    if x.get("pod", "agent") not in pods:
        raise w.error(f"{path}.pod", f"{x.get('pod')!r} is not an agent pod here", f"pods: {', '.join(pods)}")
    if x.get("connectivity", "headscale") not in ("headscale", "direct"):
        raise w.error(f"{path}.connectivity", f"{x['connectivity']!r}", "use headscale or direct")
    d = x.get("deadline_s", 1.0)
    if not isinstance(d, (int, float)) or isinstance(d, bool) or not 0 < d <= 60:
        raise w.error(f"{path}.deadline_s", f"expected seconds in (0, 60], found {_kind(d)}")
    eps = w.mapping(f"{path}.endpoints", x.get("endpoints"))
    if not eps:
        raise w.error(f"{path}.endpoints", "empty", "name at least one endpoint {url, critical}")
    for n, e in eps.items():
        w.mapping(f"{path}.endpoints.{n}", e)
        url = w.string(f"{path}.endpoints.{n}.url", e.get("url"))
        if not url.startswith("tcp://"):
            raise w.error(f"{path}.endpoints.{n}.url", f"{url!r}", "use tcp://HOST:PORT (symbols allowed)")
        if not isinstance(e.get("critical", True), bool):
            raise w.error(f"{path}.endpoints.{n}.critical", f"expected true or false, found {_kind(e['critical'])}")
    want = w.mapping(f"{path}.expect", x.get("expect", {}))
    for k, v in want.items():
        if k not in PRERUN_EXPECT:
            raise w.error(f"{path}.expect.{k}", "unknown field", f"use {', '.join(PRERUN_EXPECT)}")
        if not isinstance(v, PRERUN_EXPECT[k]) or (isinstance(v, bool) and k == "within_s"):
            raise w.error(f"{path}.expect.{k}", f"unexpected {_kind(v)}")
    for n, r in (want.get("reachable") or {}).items():
        if n not in eps or not isinstance(r, bool):
            raise w.error(f"{path}.expect.reachable.{n}", "must name an endpoint and say true or false")


def load_replay(path: str | os.PathLike) -> Replay:
    source = f"replay file {os.fspath(path)}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(source, f"cannot read it: {e.strerror}", "check the path") from None
    except UnicodeDecodeError as e:
        raise InputError(source, f"not UTF-8 text ({e.reason})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise InputError(source, f"{where}not valid YAML ({problem})") from None
    return replay_from_data(data, source)


class _Dumper(yaml.SafeDumper):
    pass


def _represent_dict(dumper: yaml.SafeDumper, data: dict):
    flat = all(not isinstance(v, (dict, list)) for v in data.values()) and len(data) <= 6 \
        and any(k in data for k in ("src", "kind"))
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flat or None)


_Dumper.add_representer(dict, _represent_dict)


def dumps_replay(replay: Replay) -> str:
    header = ("# meshcert replay file (format 1): rerun alone with\n"
              "#   MESHCERT_REPLAY=<this file> pytest conformance/test_property.py::test_replay_file\n")
    if replay.scenario or replay.faults:
        header = ("# meshcert replay file (format 1): rerun alone with\n"
                  "#   ./meshcert.sh replay <this file>\n")
    return header + yaml.dump(replay.to_data(), Dumper=_Dumper, sort_keys=False, width=4096,
                              default_flow_style=False, allow_unicode=True)


def save_replay(replay: Replay, path: str | os.PathLike) -> Path:
    """Write ``replay`` to ``path`` (a folder: ``<folder>/<name>.yaml``); it is re-read to check it."""
    p = Path(path)
    if p.is_dir() or not p.suffix:
        p = p / f"{replay.name}.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    text = dumps_replay(replay)
    replay_from_data(yaml.safe_load(text), f"replay file {p}")  # never write a file we could not read back
    p.write_text(text, encoding="utf-8")
    return p
