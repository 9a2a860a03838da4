"""The property test's WireGuard control for denials the example allows nothing between
(engine-free: a fake world answers wireguard_peer / tsmp_ping)."""

from meshcert.property.live import Observation, probe, wireguard_controls
from meshcert.property.model import Pair
from meshcert.property.oracle import Verdict
from meshcert.property.runner import compare
from tests.common.fakeworld import CutPathsWorld, ScriptedPongsWorld

ADDR = {"server": "100.64.0.2", "database": "100.64.0.3", "legacy": "10.20.5.10"}


def test_a_denial_is_judged_after_its_session_answers_or_when_there_is_no_path():
    w = ScriptedPongsWorld(peers={("agent", "100.64.0.2"): "100.64.0.2",          # a peer: needs a pong
                         ("agent", "10.20.5.10"): "100.64.0.9"},         # via the subnet router
                  pongs_after={("agent", "100.64.0.2"): 3,               # a lost first handshake
                               ("agent", "100.64.0.9"): 1})
    pairs = [Pair("agent", "server", 80), Pair("agent", "server", 81), Pair("agent", "legacy", 22),
             Pair("agent", "database", 6379)]                             # no peer: no tailnet path
    out = wireguard_controls(w, pairs, ADDR, window=5)
    assert out == dict.fromkeys(pairs, None)
    assert w.pings.count(("agent", "100.64.0.2")) == 3, "retried until the session answered, once per peer"
    assert ("agent", "100.64.0.3") not in w.pings, "no ping where the netmap holds no peer"


def test_a_denial_whose_session_never_answers_is_not_judged():
    w = ScriptedPongsWorld(peers={("agent", "100.64.0.2"): "100.64.0.2"}, pongs_after={})
    out = wireguard_controls(w, [Pair("agent", "server", 80)], ADDR, window=0.5)
    assert out[Pair("agent", "server", 80)].startswith("TSMP ping agent -> 100.64.0.2 never answered")


def test_two_denials_between_two_nodes_ping_their_session_once():
    # both directions denied, nothing allowed between them: one TSMP ping proves the one session
    # (two at once would start two WireGuard handshakes that cross and lose 5 s)
    w = ScriptedPongsWorld(peers={("agent", "100.64.0.2"): "100.64.0.2", ("server", "100.64.0.1"): "100.64.0.1"},
                           pongs_after={("agent", "100.64.0.2"): 1, ("server", "100.64.0.1"): 1},
                           nodes={"agent": "100.64.0.1", "server": "100.64.0.2"})
    pairs = [Pair("agent", "server", 80), Pair("server", "agent", 22)]
    out = wireguard_controls(w, pairs, {**ADDR, "agent": "100.64.0.1"}, window=5)
    assert out == dict.fromkeys(pairs, None)
    assert w.pings == [("agent", "100.64.0.2")], w.pings


def test_two_nodes_allowed_both_ways_are_dialled_one_way_first():
    # the reverse direction and the denial go in the next round, over the session the first opened
    w = CutPathsWorld()
    ab, ba, denied = Pair("a", "b", 22), Pair("b", "a", 22), Pair("a", "b", 80)
    out = probe(w, [ba, ab, denied], {ab: True, ba: True, denied: False}, timeout=0.1, retry_window=2)
    assert w.rounds[0] == ("a", [("b", 22)]) and len(w.rounds) == 3, w.rounds
    assert sorted(w.rounds[1:]) == [("a", [("b", 80)]), ("b", [("a", 22)])], w.rounds
    assert out[ab].reached(ab) and out[ba].reached(ba) and not out[denied].ok and out[denied].judged


def test_nothing_to_control_costs_nothing():
    assert wireguard_controls(ScriptedPongsWorld({}, {}), [], ADDR, window=5) == {}



def test_a_denial_that_cannot_be_judged_is_counted_not_passed_silently():
    pair = Pair("agent", "server", 80)
    denied = {pair: Verdict(False, "no rule grants it")}
    unjudged = Observation(False, None, "timed out", None, judged=False)
    assert compare(denied, {pair: unjudged}) == [] and "unjudged" in unjudged.describe()
    assert len(compare(denied, {pair: Observation(True, "meshcert-banner host=server port=80", None, 1.0,
                                                  judged=False)})) == 1, "a connection is always a difference"
