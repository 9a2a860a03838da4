"""Fast tests (no engine) of the chaos library: pre-run expectations, fault validation, symbols,
rollback order and the journal."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from meshcert.chaos import experiment as chaos
from meshcert.chaos import faults, scenarios
from meshcert.checks import sut
from meshcert.errors import InputError
from meshcert.replay.faults_schema import FAULT_KINDS, validate_fault
from meshcert.world.headscale_versions import dialect
from meshcert.world.topology import guide_topology
from meshcert.world.world import World
from tests.common.fakeworld import FakeWorld

GOOD = {"ready": False, "message": "not ready: sidecar BackendState is NeedsLogin",
        "sidecar": {"ready": False, "detail": "BackendState is NeedsLogin"},
        "endpoints": {"ssh": {"reachable": False}, "db": {"reachable": True}},
        "logs": [{"level": "warning", "msg": "tailscale sidecar not ready"}], "agent_context": ["ssh unreachable"]}
SPEC = {"pod": "agent", "endpoints": {"ssh": {"url": "tcp://${ip:server}:22"},
                                      "db": {"url": "tcp://${wan:server}:5432", "critical": False}},
        "expect": {"ready": False, "sidecar_ready": False, "reachable": {"ssh": False, "db": True},
                   "warning": "sidecar", "message": "NeedsLogin", "context": ["ssh"], "within_s": 30}}


def test_a_matching_answer_has_no_problems_and_symbols_are_resolved():
    w = FakeWorld(answer=GOOD)
    ans, took, problems = chaos.prerun_problems(w, SPEC)
    assert problems == [] and ans is GOOD
    conn, eps, deadline = w._sut.calls[0]
    assert eps == {"ssh": {"url": "tcp://100.64.0.1:22", "critical": True},
                   "db": {"url": "tcp://172.18.0.5:5432", "critical": False}}
    assert conn["type"] == "headscale" and conn["headscale"]["controlServer"] == "https://control:8443"


@pytest.mark.parametrize(("change", "word"), [
    ({"ready": True}, "ready: expected False"),
    ({"sidecar": {"ready": True}}, "sidecar ready: expected False"),
    ({"endpoints": {"ssh": {"reachable": True}, "db": {"reachable": True}}}, "endpoint ssh"),
    ({"logs": [{"level": "info", "msg": "sidecar"}]}, "a warning mentioning 'sidecar'"),
    ({"message": "not ready", "sidecar": {"ready": False, "detail": "down"}}, "to say 'NeedsLogin'"),
    ({"agent_context": []}, "the agent told about 'ssh'"),
])
def test_each_expectation_catches_its_violation(change, word):
    _, _, problems = chaos.prerun_problems(FakeWorld(answer={**GOOD, **change}), SPEC)
    assert len(problems) == 1 and word in problems[0], problems


def test_an_http_error_is_one_problem():
    _, _, problems = chaos.prerun_problems(FakeWorld(answer={"error": "boom"}, code=500), SPEC)
    assert problems == ['pre-run answered HTTP 500: {"error": "boom"}']


def test_the_time_bound_is_checked(monkeypatch):
    t = iter([0.0, 9.0])
    monkeypatch.setattr(chaos.time, "monotonic", lambda: next(t))
    _, took, problems = chaos.prerun_problems(FakeWorld(answer=GOOD), {**SPEC, "expect": {"within_s": 3.5}})
    assert took == 9.0 and problems == ["the pre-run to end within 3.5 s: it took 9.00 s"]


def test_wan_symbols_of_unknown_containers_are_one_clear_error():
    with pytest.raises(InputError, match=r"\$\{wan:ghost\}"):
        faults.resolve(FakeWorld(answer=GOOD), "tcp://${wan:ghost}:1")
    assert faults.resolve(FakeWorld(answer=GOOD), "${wan:toxiproxy} ${wan:headscale} ${ip:legacy}") == \
        "172.18.0.20 172.18.0.2 10.20.9.10"


def test_faults_are_undone_in_reverse_and_a_failing_undo_does_not_stop_the_others(monkeypatch):
    log = []

    def handler(tag, fail=False):
        def h(world, fault):
            log.append(f"inject {tag}")

            def undo():
                log.append(f"undo {tag}")
                if fail:
                    raise RuntimeError(f"{tag} would not heal")
            return undo
        return h
    kinds = {"a": handler("a"), "b": handler("b", fail=True), "c": handler("c")}
    monkeypatch.setattr(chaos, "FAULTS", {k: faults.FaultKind(h, {}, {}, k) for k, h in kinds.items()})
    j = chaos.Journal("t")
    f = chaos.Faults(object(), j)
    for k in "abc":
        f.inject(k)
    with pytest.raises(RuntimeError, match="rollback incomplete: b"):
        f.undo_all()
    assert log == ["inject a", "inject b", "inject c", "undo c", "undo b", "undo a"]
    assert [e["event"] for e in j.events] == ["inject"] * 3 + ["rollback", "rollback failed", "rollback"]
    assert f.recorded == [{"kind": "a"}, {"kind": "b"}, {"kind": "c"}]


def test_validate_fault_accepts_the_scenarios_faults():
    for f in ({"kind": "toxic", "proxy": "control", "type": "latency", "stream": "upstream",
               "attributes": {"latency": 500}},
              {"kind": "proxy_down", "proxy": "control"}, {"kind": "kill", "container": "router"},
              {"kind": "nft", "netns": "agent-pause", "rules": "chain x {}"},
              {"kind": "standby_router", "name": "router-b", "approve": False},
              {"kind": "extra_pod", "name": "p", "key": "expired-node"}):
        validate_fault(f, "t", "faults[0]")


@pytest.mark.parametrize("fault", [{"kind": "kill", "container": "ghost"}, {"kind": "freeze", "container": "ghost"},
                                   {"kind": "nft", "netns": "ghost", "rules": "x"}])
def test_a_fault_on_a_container_the_world_lacks_is_one_clear_error(fault):
    w = FakeWorld(answer=GOOD)
    w.boxes = {"agent-tailscale": object(), "router": object()}
    with pytest.raises(InputError) as e:
        faults.FAULTS[fault["kind"]].handler(w, fault)
    assert "'ghost'" in str(e.value) and "agent-tailscale, router" in str(e.value)


def test_prerun_bounds_catch_a_doubled_deadline_and_rest_on_the_measured_overhead():
    """The time bounds of HEALTH-2 and the scenarios. A pre-run whose dials wait twice
    their deadline exceeds every bound it is judged by; the fixed term keeps its stated safety
    factor over the overhead measured (bench/prerun_overhead.py)."""
    d = sut.BOUND_DEADLINE_S
    assert 2 * d > sut.prerun_bound(d)                                           # HEALTH-2, dead/logged-out sidecar
    assert 2 * d + sut.LOCALAPI_BOUND_S > scenarios.FROZEN_PRERUN_BOUND          # frozen sidecar
    assert 2 * scenarios.IN_FLIGHT_DEADLINE_S > sut.prerun_bound(scenarios.IN_FLIGHT_DEADLINE_S)
    assert sut.OVERHEAD_S >= 3 * sut.OVERHEAD_MEASURED_S > 0
    assert sut.prerun_bound(d) > d + sut.OVERHEAD_MEASURED_S                   # the reference's own time fits


def test_every_fault_kind_has_exactly_one_handler():
    """The kinds a replay file may name (data, no world) and the handlers that apply them agree."""
    assert set(faults.HANDLERS) == set(FAULT_KINDS) == set(faults.FAULTS)
    for k, fk in faults.FAULTS.items():
        assert (fk.required, fk.optional, fk.doc) == (FAULT_KINDS[k].required, FAULT_KINDS[k].optional,
                                                      FAULT_KINDS[k].doc)


def test_router_rejoined_undo_restarts_headscale_only_where_the_deleted_router_stays_primary():
    """headscale 0.26-0.27 keeps a deleted router primary until it restarts (the finding
    headscale-0.27-rejoined-router-never-primary): there the undo restarts headscale before
    approving the route again, else the world would stay without it; elsewhere it only approves."""
    def run(version: str) -> list[str]:
        log: list[str] = []
        w = SimpleNamespace(topology=guide_topology(), headscale=SimpleNamespace(dialect=dialect(version)),
                            remove_node=lambda n: log.append(f"remove {n}"), add_node=lambda s: log.append(f"add {s.name}"),
                            restart_control_plane=lambda: log.append("restart headscale"),
                            set_route_approval=lambda r, c: log.append(f"approve {r} {list(c)}"))
        undo = faults.FAULT_HANDLERS["router_rejoined"](w, {"kind": "router_rejoined", "router": "router"})
        assert log == ["remove router", "add router"]
        undo()
        return log[2:]

    vlan = list(guide_topology().node("router").approve_routes)
    assert run("v0.27.1") == ["restart headscale", f"approve router {vlan}"]
    assert run("v0.29.2") == [f"approve router {vlan}"]
    assert run("v0.25.1") == [f"approve router {vlan}"]


@pytest.mark.parametrize("fault, says", [
    ({"kind": "control_blip"}, "needs seconds"),
    ({"kind": "control_blip", "seconds": "8"}, "expected a number"),
    ({"kind": "control_blip", "seconds": True}, "expected a number"),
    ({"kind": "control_blip", "seconds": 0}, "seconds: 0"),
    ({"kind": "control_blip", "seconds": 61}, "seconds: 61"),
    ({"kind": "control_blip", "seconds": 8.5, "hold_s": 5}, "hold_s: 5"),
    ({"kind": "control_blip", "seconds": 8.5, "hold_s": 121}, "hold_s: 121"),
])
def test_a_control_blip_is_an_outage_of_at_most_60_s_held_until_after_it(fault, says):
    validate_fault({"kind": "control_blip", "seconds": 8.5}, "t", "faults[0]")
    validate_fault({"kind": "control_blip", "seconds": 3, "hold_s": 3}, "t", "faults[0]")
    with pytest.raises(InputError, match=says):
        validate_fault(fault, "t", "faults[0]")


def test_a_control_blip_cuts_the_control_proxy_then_holds_past_headscales_grace(monkeypatch):
    """Disabled for ``seconds``, enabled again, then the fault returns ``hold_s`` after the cut
    (default: headscale's 10 s grace + 2); the undo restarts headscale only when the routes or
    the peers do not come back."""
    clock = [100.0]
    log: list[str] = []
    monkeypatch.setattr(faults.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(faults.time, "sleep", lambda s: (log.append(f"sleep {s:g}"), clock.__setitem__(0, clock[0] + s)))
    proxy = SimpleNamespace(disable=lambda: log.append("disable"), enable=lambda: log.append("enable"))
    seen = {"ok": True}

    def routes_seen(timeout=30):
        log.append("routes?")
        if not seen["ok"] and "restart headscale" not in log:
            raise faults.WorldError("timed out")
    w = SimpleNamespace(toxiproxy=SimpleNamespace(client=lambda: SimpleNamespace(get_proxy=lambda n: proxy)),
                        wait_routes_seen=routes_seen, wait_mesh=lambda timeout: log.append("mesh?"),
                        restart_control_plane=lambda: log.append("restart headscale"))
    w.recover_control_plane = lambda timeout=30: World.recover_control_plane(w, timeout)  # the world's own
    undo = faults.FAULT_HANDLERS["control_blip"](w, {"kind": "control_blip", "seconds": 8.5})
    assert log == ["disable", "sleep 8.5", "enable", "sleep 3.5"] and clock[0] == 112.0
    undo()
    assert log[4:] == ["routes?", "mesh?"], "a world that came back is left alone"
    log.clear()
    seen["ok"] = False
    faults.FAULT_HANDLERS["control_blip"](w, {"kind": "control_blip", "seconds": 2, "hold_s": 2})()
    assert log == ["disable", "sleep 2", "enable", "routes?", "restart headscale", "routes?"]
