"""Fast tests (no engine) of replay files: format, load/save, validation errors, and run_replay
against a small in-memory stand-in for the world that behaves as the oracle says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from meshcert.errors import InputError
from meshcert.policy import parse_policy
from meshcert.property.live import Observation, resolve_data
from meshcert.property.model import Difference, Example, Outcome, Pair, RouteSettings, Shape, probe_matrix
from meshcert.property.oracle import Oracle, Verdict
from meshcert.property.runner import PropertyMismatch, Runner
from meshcert.property.strategies import edge_examples, examples
from meshcert.replay.model import Replay, ReplayProbe, dumps_replay, load_replay, replay_from_data, save_replay
from meshcert.replay.run import ReplayMismatch, run_replay
from meshcert.world.topology import AGENT_TAG, SERVER_TAG, guide_topology
from tests.common.fakeworld import FakeWorld

SHAPE = Shape.of(guide_topology())
OWNERS = {t: ["meshcert@"] for t in ("tag:agent-runtime", "tag:managed-servers", "tag:managed-databases",
                                     "tag:subnet-router")}
POLICY = {"tagOwners": OWNERS,
          "acls": [{"action": "accept", "src": [AGENT_TAG], "dst": [f"{SERVER_TAG}:22", "${net:vlan}:22"]},
                   {"action": "accept", "src": ["${ip:server}"], "dst": ["${ip:database}:5432"]}]}


PRERUN = {"pod": "agent", "endpoints": {"ssh": {"url": "tcp://${ip:server}:22", "critical": True}}, "expect": {"ready": False}}


def _doc(**changes) -> dict:
    doc = {
        "meshcert_replay": 1,
        "name": "example",
        "topology": "guide",
        "policy": POLICY,
        "routes": {"approved": {"router": ["${net:vlan}"]}, "accept_routes": {"agent": True, "agent-us": False}},
        "faults": [],
        "probes": [{"src": "agent", "dst": "server", "port": 22, "expect": "allowed", "reason": "acls[0]"},
                   {"src": "agent", "dst": "server", "port": 80, "expect": "denied"},
                   {"src": "agent", "dst": "legacy", "port": 22, "expect": "allowed"},
                   {"src": "agent-us", "dst": "legacy", "port": 22, "expect": "denied"},
                   {"src": "server", "dst": "database", "port": 5432, "expect": "allowed"}],
    }
    for k, v in changes.items():
        if v is None:
            doc.pop(k)
        else:
            doc[k] = v
    return doc


# ------------------------------------------------------------------------------ format

def test_a_document_loads_into_a_replay():
    r = replay_from_data(_doc(), "t")
    assert r.topology == "guide" and r.policy == POLICY and r.faults == ()
    assert r.routes == RouteSettings({"router": ("${net:vlan}",)}, {"agent": True, "agent-us": False})
    assert r.probes[0] == ReplayProbe("agent", "server", 22, True, "acls[0]")
    assert r.expectations[Pair("agent", "server", 80)] == Verdict(False, "as the replay file expects")


def test_save_and_load_round_trip(tmp_path):
    r = replay_from_data(_doc(seed=7, description="d", finding="f",
                              faults=[{"kind": "toxic", "proxy": "control", "type": "latency", "attributes": {"latency": 500}}]), "t")
    path = save_replay(r, tmp_path / "x.yaml")
    assert path == tmp_path / "x.yaml"
    back = load_replay(path)
    assert back == r
    assert back.source == f"replay file {path}"
    text = path.read_text()
    assert text.startswith("# meshcert replay file")
    assert "- {src: agent, dst: server, port: 22, expect: allowed, reason: 'acls[0]'}" in text  # one line a probe


def test_save_into_a_folder_names_the_file_after_the_replay(tmp_path):
    r = replay_from_data(_doc(name="property-abc"), "t")
    assert save_replay(r, tmp_path) == tmp_path / "property-abc.yaml"
    assert save_replay(r, tmp_path / "new-folder") == tmp_path / "new-folder" / "property-abc.yaml"


def test_a_replay_from_an_outcome_keeps_symbols_and_records_what_was_seen(tmp_path):
    ex = Example(POLICY, RouteSettings({"router": ("${net:vlan}",)}, {"agent": True, "agent-us": True}))
    verdicts = {Pair("agent", "server", 22): Verdict(True, "acls[0] allows"),
                Pair("agent", "server", 80): Verdict(False, "no rule matches")}
    obs = {Pair("agent", "server", 22): Observation(False, None, "TimeoutError", None, 3),
           Pair("agent", "server", 80): Observation(True, "meshcert-banner host=server port=80", None, 1.0)}
    p22 = Pair("agent", "server", 22)
    diffs = [Difference(p22, True, "acls[0] allows", obs[p22].describe())]
    outcome = Outcome(ex, {"acls": []}, {"router": ("10.20.9.0/24",)}, {"agent": True}, verdicts, obs, diffs,
                      {"server": "100.64.0.1"})
    r = Replay.from_outcome(outcome, seed=42)
    assert r.name.startswith("property-") and r.seed == 42
    assert r.policy == POLICY  # symbols, not this world's addresses
    assert [(p.pair, p.expect) for p in r.probes] == [(Pair("agent", "server", 22), True),
                                                    (Pair("agent", "server", 80), False)]
    assert r.recorded["differences"] == [{"src": "agent", "dst": "server", "port": 22, "expect": "allowed",
                                          "observed": "not reachable (TimeoutError) after 3 attempts"}]
    back = load_replay(save_replay(r, tmp_path))
    assert back.recorded == r.recorded and back.probes == r.probes
    # same example, same name: a rerun overwrites rather than piling up files
    assert Replay.from_outcome(outcome).name == r.name


def _round_trips_and_resolves(ex: Example) -> None:
    r = Replay("x", "guide", ex.policy, ex.routes,
               tuple(ReplayProbe(p.src, p.dst, p.port, False) for p in probe_matrix(SHAPE)))
    assert replay_from_data(yaml.safe_load(dumps_replay(r)), "t") == r
    parse_policy(json.dumps(resolve_data(ex.policy, FakeWorld())))  # valid once resolved in a world


def test_edge_examples_make_valid_replay_files():
    for ex in edge_examples(SHAPE):
        _round_trips_and_resolves(ex)


@settings(max_examples=40, database=None, deadline=None)
@given(ex=examples(SHAPE))
def test_drawn_examples_make_valid_replay_files(ex):
    _round_trips_and_resolves(ex)


def test_probe_matrix_of_the_guide_world():
    m = probe_matrix(SHAPE)
    assert len(m) == 41  # 5 sources x (9 tailnet targets + legacy:22), minus each node's own ports
    assert Pair("agent", "legacy", 22) in m and Pair("router", "legacy", 22) in m
    assert not any(p.src == p.dst for p in m)


# ------------------------------------------------------------------------------ validation

@pytest.mark.parametrize(("doc", "words"), [
    (_doc(meshcert_replay=2), ["meshcert_replay", "format 2 is not supported"]),
    (_doc(name=None), ["name: missing"]),
    (_doc(name=""), ["name", "non-empty string"]),
    (_doc(extra=1), ["extra: unknown field"]),
    (_doc(topology="mesh"), ["topology", "unknown topology 'mesh'", "guide"]),
    (_doc(seed="x"), ["seed", "integer"]),
    (_doc(policy=[]), ["policy", "expected a mapping"]),
    (_doc(policy={"acls": [{"action": "accept", "src": ["tag:nope"], "dst": ["*:22"]}]}), ["tag:nope"]),
    (_doc(policy={**POLICY, "acls": [{"action": "accept", "src": ["*"], "dst": ["${host:x}:22"]}]}),
     ["unknown symbol ${host:x}"]),
    (_doc(policy={**POLICY, "acls": [{"action": "accept", "src": ["*"], "dst": ["${ip:server:22"]}]}),
     ["malformed symbol"]),
    (_doc(routes={"approved": {"server": ["10.0.0.0/8"]}}), ["routes.approved.server", "not a subnet router"]),
    (_doc(routes={"approved": {"router": ["10.0.0.0/33"]}}), ["routes.approved.router[0]", "not a CIDR"]),
    (_doc(routes={"approved": {"router": "10.0.0.0/8"}}), ["routes.approved.router", "list of CIDRs"]),
    (_doc(routes={"accept_routes": {"agent": "yes"}}), ["routes.accept_routes.agent", "true or false"]),
    (_doc(routes={"accept_routes": {"ghost": True}}), ["routes.accept_routes.ghost", "not a tailnet node"]),
    (_doc(routes={"approve": {}}), ["routes.approve", "unknown field"]),
    (_doc(faults={"kind": "x"}), ["faults", "expected a list"]),
    (_doc(faults=[{"proxy": "control"}]), ["faults[0]", "missing kind"]),
    (_doc(probes=[]), ["probes", "non-empty list"]),
    (_doc(probes=[{"src": "legacy", "dst": "server", "port": 22, "expect": "allowed"}]),
     ["probes[0].src", "'legacy' is not a tailnet node"]),
    (_doc(probes=[{"src": "agent", "dst": "nowhere", "port": 22, "expect": "allowed"}]),
     ["probes[0].dst", "neither a node nor a host"]),
    (_doc(probes=[{"src": "agent", "dst": "server", "port": 0, "expect": "allowed"}]),
     ["probes[0].port", "1-65535"]),
    (_doc(probes=[{"src": "agent", "dst": "server", "port": True, "expect": "allowed"}]), ["probes[0].port"]),
    (_doc(probes=[{"src": "agent", "dst": "server", "port": 22, "expect": "yes"}]),
     ["probes[0].expect", "allowed or denied"]),
    (_doc(probes=[{"src": "agent", "dst": "server", "port": 22}]), ["probes[0]", "missing expect"]),
    (_doc(probes=[{"src": "agent", "dst": "server", "port": 22, "expect": "allowed", "why": "x"}]),
     ["probes[0].why", "unknown field"]),
    (_doc(probes=[{"src": "agent", "dst": "server", "port": 22, "expect": "allowed"}] * 2),
     ["probes[1]", "listed twice"]),
    (_doc(recorded=[1]), ["recorded", "expected a mapping"]),
    (_doc(faults=[{"kind": "toxic", "proxy": "control"}]), ["faults[0]", "toxic needs type"]),
    (_doc(faults=[{"kind": "toxic", "proxy": "control", "type": "latency", "latency": 5}]),
     ["faults[0].latency", "not a parameter of fault toxic", "attributes"]),
    (_doc(faults=[{"kind": "toxic", "proxy": "control", "type": "latency", "stream": "sideways"}]),
     ["faults[0].stream", "downstream or upstream"]),
    (_doc(faults=[{"kind": "nft", "netns": "agent-pause", "rules": 7}]), ["faults[0].rules", "expected str"]),
    (_doc(faults=[{"kind": "standby_router", "name": "router-b", "approve": "yes"}]),
     ["faults[0].approve", "expected bool"]),
    (_doc(faults=[{"kind": "extra_pod", "name": "p", "key": "stolen"}]), ["faults[0].key", "expired-node"]),
    (_doc(prerun={"pod": "agent"}), ["prerun", "expected a list"]),
    (_doc(prerun=[{**PRERUN, "pod": "ghost"}]), ["prerun[0].pod", "not an agent pod", "agent-us"]),
    (_doc(prerun=[{**PRERUN, "when": 1}]), ["prerun[0].when", "unknown field"]),
    (_doc(prerun=[{**PRERUN, "connectivity": "vpn"}]), ["prerun[0].connectivity", "headscale or direct"]),
    (_doc(prerun=[{**PRERUN, "deadline_s": 0}]), ["prerun[0].deadline_s", "(0, 60]"]),
    (_doc(prerun=[{**PRERUN, "endpoints": {}}]), ["prerun[0].endpoints", "empty"]),
    (_doc(prerun=[{**PRERUN, "endpoints": {"x": {"url": "http://a:1"}}}]), ["prerun[0].endpoints.x.url", "tcp://"]),
    (_doc(prerun=[{**PRERUN, "expect": {"ready": "no"}}]), ["prerun[0].expect.ready"]),
    (_doc(prerun=[{**PRERUN, "expect": {"reachable": {"db": True}}}]),
     ["prerun[0].expect.reachable.db", "must name an endpoint"]),
    (_doc(prerun=[{**PRERUN, "expect": {"soon": True}}]), ["prerun[0].expect.soon", "unknown field"]),
    ("just text", ["expected a mapping"]),
])
def test_validation_errors_name_the_field(doc, words):
    with pytest.raises(InputError) as e:
        replay_from_data(doc, "replay file r.yaml")
    msg = str(e.value)
    assert "r.yaml" in msg
    for w in words:
        assert w in msg, msg


def test_load_reports_yaml_syntax_errors_with_their_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("meshcert_replay: 1\nname: [unclosed\ntopology: guide\n")
    with pytest.raises(InputError) as e:
        load_replay(p)
    assert "bad.yaml" in str(e.value) and "not valid YAML" in str(e.value) and "line " in str(e.value)


def test_load_reports_a_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        load_replay(tmp_path / "nope.yaml")
    assert "cannot read it" in str(e.value)


def test_save_refuses_what_it_could_not_read_back(tmp_path):
    bad = replay_from_data(_doc(), "t")
    bad = Replay(bad.name, bad.topology, bad.policy, bad.routes, bad.probes + (bad.probes[0],))
    with pytest.raises(InputError, match="listed twice"):
        save_replay(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ run_replay

def test_run_replay_applies_the_settings_and_passes_in_a_conforming_world(tmp_path):
    w = FakeWorld()
    path = save_replay(replay_from_data(_doc(), "t"), tmp_path)
    result = run_replay(path, w)
    assert result.ok
    assert w.log == ["accept agent-us False", "policy", "reset"]  # approval already as wanted
    assert w.policy["acls"][0]["dst"] == ["tag:managed-servers:22", "10.20.9.0/24:22"]  # symbols resolved
    assert w.policy["acls"][1]["src"] == ["100.64.0.1"]


def test_run_replay_fails_naming_the_differing_pairs(tmp_path):
    w = FakeWorld(wrong={("agent", "server", 80)})
    path = save_replay(replay_from_data(_doc(), "t"), tmp_path)
    with pytest.raises(ReplayMismatch) as e:
        run_replay(path, w)
    assert "agent -> server:80: oracle says denied" in str(e.value) and "observed connected" in str(e.value)
    assert "1 of 5 pairs differ from the replay file's expectations" in str(e.value)
    assert str(path) in str(e.value)
    assert e.value.result.differing_pairs() == {("agent", "server", 80)}
    assert w.log[-1] == "reset"


def test_run_replay_can_judge_with_an_oracle_instead_of_the_file(tmp_path):
    doc = _doc(probes=[{"src": "agent", "dst": "server", "port": 22, "expect": "denied"}])  # a wrong expectation
    path = save_replay(replay_from_data(doc, "t"), tmp_path)
    assert not run_replay(path, FakeWorld(), check=False).ok
    assert run_replay(path, FakeWorld(), oracle=Oracle).ok


def test_faults_are_applied_after_the_settings_and_undone_in_reverse(tmp_path):
    w = FakeWorld()
    doc = _doc(faults=[{"kind": "cut", "what": "a"}, {"kind": "cut", "what": "b"}])
    path = save_replay(replay_from_data(doc, "t"), tmp_path)

    def cut(world, fault):
        world.log.append(f"cut {fault['what']}")
        return lambda: world.log.append(f"heal {fault['what']}")

    run_replay(path, w, fault_handlers={"cut": cut})
    assert w.log == ["accept agent-us False", "policy", "cut a", "cut b", "heal b", "heal a", "reset"]


def test_a_fault_without_a_handler_is_refused_before_touching_the_world(tmp_path):
    w = FakeWorld()
    path = save_replay(replay_from_data(_doc(faults=[{"kind": "partition"}]), "t"), tmp_path)
    with pytest.raises(InputError, match="partition have no handler"):
        run_replay(path, w)
    assert w.log == []


def test_a_replay_for_another_topology_is_refused(tmp_path):
    from dataclasses import replace
    w = FakeWorld()
    w.topology = replace(w.topology, pods=w.topology.pods[:1])
    with pytest.raises(InputError, match="not built from topology 'guide'"):
        run_replay(replay_from_data(_doc(), "t"), w)
    assert w.log == []


def test_symbols_resolve_against_the_world():
    w = FakeWorld()
    got = resolve_data(["${ip:agent}", "${ip:legacy}:22", "${net:vlan}", "${net:vlan/16}:*", "${tailnet}"], w)
    assert got == ["100.64.0.4", "10.20.9.10:22", "10.20.9.0/24", "10.20.0.0/16:*", "100.64.0.0/10"]
    with pytest.raises(InputError, match="no node or host 'ghost'"):
        resolve_data("${ip:ghost}", w)
    with pytest.raises(InputError, match="no network 'lan'"):
        resolve_data("${net:lan}", w)


def test_findings_dir_replays_are_valid():
    """Every committed replay file of a known finding loads and says what the finding is."""
    for p in sorted((Path(__file__).parents[2] / "fixtures" / "replays" / "findings").glob("*.yaml")):
        assert load_replay(p).finding, f"{p}: a file in fixtures/replays/findings/ needs a finding: line"


def test_route_settings_are_changed_only_where_they_differ(tmp_path):
    w = FakeWorld()
    doc = _doc(routes={"approved": {"router": []}, "accept_routes": {"agent": True}})
    run_replay(replay_from_data(doc, "t"), w, check=False, retry_window=0)
    assert w.log == ["approve []", "policy", "reset"]


def test_the_runner_saves_the_shrunk_failure_and_its_replay_fails_alone(tmp_path):
    """Offline twin of tests/test_property_oracle_flip.py: a world that lets agent reach
    server:80 against the policy is caught, and the saved file reproduces it."""
    w = FakeWorld(wrong={("agent", "server", 80)})
    runner = Runner(w, tmp_path, seed=1, retry_window=0)

    @settings(max_examples=30, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ex=examples(SHAPE))
    def prop(ex):
        runner.check(ex)

    with pytest.raises(PropertyMismatch) as e:
        prop()
    assert e.value.replay_path is not None and runner.replay_path == e.value.replay_path
    assert [p.name for p in tmp_path.iterdir()] == [Path(e.value.replay_path).name]  # only the final one
    assert {tuple(d.pair) for d in e.value.outcome.differences} == {("agent", "server", 80)}
    r = load_replay(e.value.replay_path)
    assert r.recorded["differences"][0]["src"] == "agent" and r.seed == 1
    with pytest.raises(ReplayMismatch):
        run_replay(e.value.replay_path, FakeWorld(wrong={("agent", "server", 80)}), retry_window=0)
    run_replay(e.value.replay_path, FakeWorld(), retry_window=0)  # a conforming world passes it


def test_pairs_recorded_as_connecting_are_retried_when_replayed():
    doc = _doc(recorded={"differences": [
        {"src": "agent", "dst": "server", "port": 80, "expect": "denied", "observed": "connected, banner 'x'"},
        {"src": "agent", "dst": "server", "port": 22, "expect": "allowed", "observed": "not reachable (t)"},
        {"src": "agent", "dst": "database", "port": 1, "expect": "denied", "observed": "connected"},  # not a probe
        "garbage"]})
    assert replay_from_data(doc, "t").seen_connecting() == {Pair("agent", "server", 80)}


def test_a_scenario_file_needs_no_probes_when_it_has_a_prerun_and_round_trips(tmp_path):
    doc = _doc(probes=[], scenario="sidecar crash", prerun=[PRERUN],
               faults=[{"kind": "kill", "container": "agent-tailscale"},
                       {"kind": "extra_pod", "name": "agent-x", "key": "expired-node"}])
    doc["prerun"].append({**PRERUN, "pod": "agent-x"})  # an extra pod of the file's faults is a pod too
    r = replay_from_data(doc, "t")
    assert r.scenario == "sidecar crash" and r.probes == () and len(r.prerun) == 2
    path = save_replay(r, tmp_path)
    assert "meshcert.sh replay" in path.read_text()
    back = load_replay(path)
    assert back.prerun == r.prerun and back.faults == r.faults and back.scenario == r.scenario


def test_the_bundled_scenario_replay_files_load():
    files = sorted((Path(__file__).parents[2] / "fixtures" / "replays" / "scenarios").glob("*.yaml"))
    assert files, "fixtures/replays/scenarios/ holds example scenario files"
    for f in files:
        r = load_replay(f)
        assert r.faults and (r.probes or r.prerun), f


# The floor the replay model stands on: reading a replay file needs no Hypothesis, no world
# runtime, no chaos handlers, no checks. (meshcert.world.world is still loaded today, through
# meshcert/world/__init__.py importing World when meshcert.world.topology is imported: that is
# the world package's own import, not one of these modules'.)
MODEL_MODULES = {
    "meshcert.replay.model": {"meshcert.errors", "meshcert.policy", "meshcert.property.model",
                              "meshcert.property.oracle", "meshcert.replay.faults_schema", "meshcert.world.topology",
                              "meshcert.versions"},
    "meshcert.replay.faults_schema": {"meshcert.errors"},
    "meshcert.property.model": {"meshcert.property.oracle", "meshcert.world.topology"},
}
NOT_BELOW_THE_MODEL = ("hypothesis", "meshcert.chaos", "meshcert.checks", "meshcert.plugin", "meshcert.k8s",
                       "meshcert.replay.run", "meshcert.replay.session", "meshcert.property.runner",
                       "meshcert.property.live", "meshcert.property.strategies")


@pytest.mark.parametrize("module", sorted(MODEL_MODULES))
def test_the_model_modules_import_only_the_floor_below(module):
    import ast
    import importlib
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | \
               {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    ours = {m for m in imported if m.startswith("meshcert")}
    assert ours <= MODEL_MODULES[module], f"{module} imports {sorted(ours - MODEL_MODULES[module])}"
    assert not any(m == "hypothesis" or m.startswith("hypothesis.") for m in imported)


def test_loading_a_replay_file_imports_no_hypothesis_and_no_chaos_runtime():
    import subprocess
    import sys
    path = sorted((Path(__file__).parents[2] / "fixtures" / "replays" / "scenarios").glob("*.yaml"))[0]
    code = (f"import sys; from meshcert.replay.model import load_replay; load_replay({str(path)!r}); "
            "print(chr(10).join(sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            timeout=60).stdout.split()
    bad = [m for m in loaded if m.startswith(NOT_BELOW_THE_MODEL) and
           (m in NOT_BELOW_THE_MODEL or m.startswith(tuple(p + "." for p in NOT_BELOW_THE_MODEL)))]
    assert not bad, f"loading a replay file imported {bad}"


def test_versions_take_a_bound_an_exact_version_or_a_range():
    """``versions:`` (the catalog's holds_for syntax): ">=", "<" or "==" a version, several joined
    by commas (all must hold); anything else is refused naming the field and the syntax."""
    for v in ("<v0.26.0", ">=v0.26.0", "==v0.27.1", ">=v0.26.0,<v0.28.0", "==v1.80.3|==v1.102.3", "<v0.26.0|>=v0.28.0"):
        assert replay_from_data(_doc(versions={"headscale": v}), "t").versions == (("headscale", v),)
    for bad in ("v0.27.1", ">v0.26.0", "0.26", "==v0.27", ">=v0.26.0,", ">=v0.26.0, <v0.28.0", ">=v0.26.0;<v0.28.0",
                "==v1.80.3|", "|==v1.80.3", "==v1.80.3||==v1.102.3"):
        with pytest.raises(InputError, match=r'versions: must map .*"==vX.Y.Z".*\|') as e:
            replay_from_data(_doc(versions={"headscale": bad}), "t")
        assert ">=v0.26.0,<v0.28.0" in e.value.fix, "the fix shows a range"


def test_each_recorded_finding_runs_only_with_the_versions_it_was_measured_on(monkeypatch, tmp_path):
    """A finding's ``versions:`` select the sessions that run it as a strict xfail (the others
    skip it, naming its versions): the 0.25 finding on headscale < 0.26, the 0.27 ones on v0.27.1
    with tailscale v1.102.3 alone (measured there; v0.29.2 passes them). Under certify --matrix
    (several tailscale versions in one session) only headscale is judged at collection; the test
    judges tailscale against its world (report.matrix.finding_skip)."""
    from conformance import test_property
    from meshcert.report.matrix import finding_skip

    def outcome(hs: str, ts: str = "", matrix: str = "") -> dict[str, str]:
        monkeypatch.setenv("MESHCERT_HEADSCALE", hs)
        monkeypatch.setenv("MESHCERT_TAILSCALE", ts)
        monkeypatch.setenv("MESHCERT_MATRIX_TAILSCALE", matrix)
        out = {}
        for p in test_property._findings():
            names = [m.name for m in p.marks]
            assert "xfail" in names and all(m.kwargs.get("strict") for m in p.marks if m.name == "xfail")
            skip = next((m for m in p.marks if m.name == "skip"), None)
            out[p.id] = f"skip: {skip.kwargs['reason']}" if skip else "strict xfail"
        return out

    old, rejoin = "headscale-0.25-route-enable-leaves-router-without-peers", "headscale-0.27-rejoined-router-never-primary"
    blip = "headscale-0.27-control-blip-leaves-nodes-offline"
    assert outcome("v0.25.1")[old] == "strict xfail" and outcome("v0.25.1")[rejoin].startswith("skip: ")
    got = outcome("v0.27.1", "v1.102.3")
    assert got[rejoin] == got[blip] == "strict xfail" and got[old].startswith("skip: a finding of headscale <v0.26.0")
    got = outcome("v0.29.2")
    assert got[rejoin].startswith("skip: a finding of headscale ==v0.27.1 tailscale ==v1.80.3|==v1.102.3; "
                                  "this session runs ")
    assert got[rejoin].endswith(", headscale v0.29.2") and got[old].startswith("skip: ")
    assert outcome("v0.27.0")[rejoin].startswith("skip: "), "only the version measured"
    got = outcome("v0.27.1", "v1.80.3")
    assert got[blip] == ("skip: a finding of headscale ==v0.27.1 tailscale ==v1.102.3; "
                         "this session runs tailscale v1.80.3, headscale v0.27.1")
    assert got[rejoin] == "strict xfail", "the rejoin finding was measured with v1.80.3 too"
    assert outcome("v0.27.1", "v1.102.5")[rejoin].startswith("skip: ")
    # the matrix: collected to run with every tailscale version; the test skips the others itself
    assert outcome("v0.27.1", matrix="v1.80.3,v1.102.3")[blip] == "strict xfail"
    assert outcome("v0.29.2", matrix="v1.80.3,v1.102.3")[blip].startswith("skip: ")
    # a finding of a tailscale version that is not the pinned one still runs in its matrix column
    src = test_property.FINDINGS / f"{blip}.yaml"
    monkeypatch.setattr(test_property, "FINDINGS", tmp_path)
    (tmp_path / "old-tailscale.yaml").write_text(src.read_text().replace('tailscale: "==v1.102.3"',
                                                                          'tailscale: "==v1.80.3"'))
    assert outcome("v0.27.1", matrix="v1.80.3,v1.102.3") == {"old-tailscale": "strict xfail"}
    assert outcome("v0.27.1")["old-tailscale"].startswith("skip: ")
    cons = (("headscale", "==v0.27.1"), ("tailscale", "==v1.102.3"))
    assert finding_skip(cons, {"tailscale": "v1.102.3", "headscale": "v0.27.1"}) == ""
    assert finding_skip(cons, {"tailscale": "v1.80.3", "headscale": "v0.27.1"}).startswith("a finding of ")
    assert finding_skip(cons, {"tailscale": "v1.80.3", "headscale": "v0.27.1"}, ("headscale",)) == ""
