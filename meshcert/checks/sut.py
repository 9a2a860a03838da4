"""Clauses asserted against the SUT running in its pod: connectivity types, the pre-run health
check, direct mode, credentials, troubleshooting. Each check raises ClauseFailure (via
``Expect``) naming the clause, the expected and the observed."""

from __future__ import annotations

import concurrent.futures
import json
import secrets as pysecrets
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from meshcert.checks.base import ClauseFailure
from meshcert.secrets import MIN_RUN, Secret, describe, leaks, redact
from meshcert.sut.client import SutClient
from meshcert.world.topology import AGENT_TAG, AgentSpec

SECRET_REF = "headscale-auth-key"
# Deadline of the checks that judge *what* a pre-run reports, not how long it took.
DEADLINE_S = 1.0

# ---- time bounds on a pre-run (HEALTH-2, the chaos scenarios): prerun_bound() ----
# bound = (deadline + sidecar wait) * (1 + DEADLINE_SLACK) + OVERHEAD_S
# Proportional part: HEALTH-2 promises "about one deadline"; 20 % of the time the dials wait is
# that "about" (socket timeouts and thread wake-ups overshoot with the time waited on a loaded
# machine). The world itself did not need it: the measured overhead did not grow from a 1 s to a
# 2 s deadline (medians 0.049 / 0.051 s in the TUN pod).
DEADLINE_SLACK = 0.2
# Fixed part: what a pre-run costs beyond its deadline when every dial is blackholed (the HTTP
# round trip from this machine, thread start-up, the LocalAPI read of an answering sidecar,
# building the answer). bench/prerun_overhead.py, 2026-12-01 (results/prerun-overhead-2026-12-01-
# 3273687c4f1f.md): 4 x 30 pre-runs, both pods, 6 blackholed endpoints, on 2 cores with a 1-min
# load average of 9-18 (four other meshcert sessions running): min 0.013, median 0.038-0.051,
# max 0.198 s. OVERHEAD_S is that maximum times a safety factor of 3, rounded up to 0.1 s.
OVERHEAD_MEASURED_S = 0.198
OVERHEAD_S = 0.6
# The deadline of the pre-runs whose duration is asserted: long enough that a pre-run whose
# dials wait twice their deadline exceeds the bound (2*D > D*(1+SLACK) + OVERHEAD_S needs
# D > OVERHEAD_S / (1 - SLACK)), with room to spare on both sides.
BOUND_DEADLINE_S = 2.0
# A sidecar that accepts on its socket but never answers (frozen) may hold the pre-run for the
# SUT's own LocalAPI timeout before the dials start; meshcert allows 1 s for it (the reference's).
LOCALAPI_BOUND_S = 1.0


# clause id -> the check asserting it against the SUT in its pod (the mutant zoo, tests/test_mutants.py,
# runs these): filled by @clause_check on each check, so the clause's id is written there only
SUT_CHECKS: dict[str, Callable[..., None]] = {}


def clause_check(cid: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register the decorated function as the check of clause ``cid`` in SUT_CHECKS."""
    def register(fn: Callable[..., None]) -> Callable[..., None]:
        if cid in SUT_CHECKS:
            raise ValueError(f"clause {cid} has two SUT checks: {SUT_CHECKS[cid].__name__} and {fn.__name__}")
        SUT_CHECKS[cid] = fn
        return fn
    return register


def prerun_bound(deadline: float, sidecar_wait: float = 0.0) -> float:
    """How long a pre-run with ``deadline`` may take, seen from this machine (reasons above)."""
    return (deadline + sidecar_wait) * (1 + DEADLINE_SLACK) + OVERHEAD_S


# Ports ACL-denied on the tailnet: the destination's packet filter drops the SYN, so a dial
# hangs until its deadline (a blackhole, not a refusal).
BLACKHOLES = [("server", 80), ("database", 6379), ("server", 81), ("server", 8080), ("database", 9000),
              ("database", 9001)]


class Expect:
    """Collects violations of one clause; raises them together with the world's logs."""

    def __init__(self, world, clause: str):
        self.world, self.clause, self.problems = world, clause, []

    def that(self, ok: bool, expected: str, observed) -> bool:
        if not ok:
            self.problems.append(f"expected {expected}; observed {redact(str(observed))[:600]}")
        return ok

    def done(self) -> None:
        if self.problems:
            raise ClauseFailure(self.clause, self.problems, self.world.failure_logs(self.clause))


def at_once(e: Expect, fn: Callable[[Expect, Any], None], items) -> None:
    """``fn(sub, item)`` for every item at once (threads), each with an Expect of its own for
    ``e``'s clause; their violations join ``e``'s in the order of ``items`` (not of finishing)."""
    items = list(items)
    subs = [Expect(e.world, e.clause) for _ in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(items))) as ex:
        list(ex.map(fn, subs, items))
    for sub in subs:
        e.problems.extend(sub.problems)


@contextmanager
def clause(world, cid: str):
    e = Expect(world, cid)
    yield e
    e.done()


def mesh_spec(world, kind: str = "headscale") -> dict:
    """The connectivity block the SUT is given: the guide's example, or the user's (certify --spec)
    with its controlServer pointed at this world's headscale."""
    user = getattr(world, "connectivity_spec", None)
    hs = dict(user["headscale"]) if user and user.get("type") != "direct" else \
        {"authKeySecretRef": SECRET_REF, "tags": ["tag:agent-runtime"], "acceptRoutes": True}
    hs["controlServer"] = world.login_server() if kind == "headscale" else ""
    return {"type": kind, "headscale": hs}


def secret_ref(world) -> str:
    user = getattr(world, "connectivity_spec", None)
    return user["headscale"]["authKeySecretRef"] if user and user.get("type") != "direct" else SECRET_REF


def ep(world, node: str, port: int, critical: bool = True) -> dict:
    return {"url": f"tcp://{world.address(node)}:{port}", "critical": critical}


def _levels(ans: dict) -> list[str]:
    return [line.get("level") for line in ans.get("logs", [])]


def _mentions(lines, needle: str) -> bool:
    return any(needle in (x if isinstance(x, str) else str(x)) for x in lines)


# ------------------------------------------------------------------ connectivity types
TYPES = ("direct", "headscale", "tailscale")


def _behaviour(ans: dict) -> dict:
    """What "behave identically" compares: the whole pre-run answer but its wording and timings
    (type, readiness, the sidecar block, each endpoint's reachability and whether it has an error,
    the log levels that signal trouble, what the agent is told)."""
    side = ans.get("sidecar") or {}
    return {"type": ans.get("type"), "ready": ans.get("ready"),
            "sidecar": {k: side.get(k) for k in ("checked", "ready", "backend_state")},
            "endpoints": {n: {"reachable": r.get("reachable"), "error": r.get("error") not in (None, "")}
                          for n, r in sorted((ans.get("endpoints") or {}).items())},
            "warnings": sum(1 for lv in _levels(ans) if lv in ("warning", "error")),
            "agent_context": ans.get("agent_context")}


@clause_check("TYPE-1")
def type1_direct_is_default(world, pod: str = "agent") -> None:
    sut = world.sut(pod)
    target = {"server": {"url": f"tcp://{world.nodes['server'].wan_ip}:22", "critical": True}}
    with clause(world, "TYPE-1") as e:
        seen = {}
        for label, kw in (("type: direct", {"connectivity": {"type": "direct"}}),  # the one the others must equal
                          ("no connectivity field", {"omit_connectivity": True, "connectivity": None}),
                          ("connectivity: null", {"connectivity": None}),
                          ("connectivity without type ({})", {"connectivity": {}})):
            code, ans = sut.prerun(endpoints=target, **kw)
            if e.that(code == 200, f"{label}: HTTP 200", f"HTTP {code} {ans}"):
                e.that(ans.get("type") == "direct", f"{label}: type direct", ans.get("type"))
                seen[label] = _behaviour(ans)
        base = seen.get("type: direct")
        if base is not None:
            e.that(base["ready"] is True and base["endpoints"].get("server", {}).get("reachable") is True
                   and base["warnings"] == 0, "type: direct: ready, the server reached over the cluster network, "
                   "no warning", base)
            for label, got in seen.items():
                e.that(got == base, f"{label}: an answer identical to type: direct's (type, ready, sidecar, "
                       f"endpoints, warnings, agent_context) {base}", got)


@clause_check("TYPE-2")
def type2_headscale_accepted(world, pod: str = "agent") -> None:
    with clause(world, "TYPE-2") as e:
        code, ans = world.sut(pod).prerun(mesh_spec(world), {"server": ep(world, "server", 22)})
        if e.that(code == 200, "HTTP 200 for a complete headscale spec", f"HTTP {code} {ans}"):
            e.that(ans.get("type") == "headscale", "type headscale", ans.get("type"))


@clause_check("TYPE-3")
def type3_tailscale_empty_control(world, pod: str = "agent") -> None:
    with clause(world, "TYPE-3") as e:
        code, ans = world.sut(pod).prerun(mesh_spec(world, "tailscale"), {"server": ep(world, "server", 22)})
        if e.that(code == 200, "HTTP 200 for type tailscale with an empty controlServer", f"HTTP {code} {ans}"):
            e.that(ans.get("type") == "tailscale", "type tailscale", ans.get("type"))


@clause_check("TYPE-4")
def type4_unknown_rejected(world, pod: str = "agent") -> None:
    with clause(world, "TYPE-4") as e:
        for bad in ("wireguard-raw", 42):
            code, ans = world.sut(pod).prerun({"type": bad}, {})
            err = str(ans.get("error", "")) if code != 200 else ""
            missing = [t for t in TYPES if t not in err]
            e.that(code == 400 and "type" in err and not missing,
                   f"type {bad!r}: HTTP 400 with an error naming the type field and the accepted values "
                   f"{', '.join(TYPES)}", f"HTTP {code} {ans}" + (f" (does not name {missing})" if missing else ""))


@clause_check("TYPE-5")
def type5_headscale_incomplete_rejected(world, pod: str = "agent") -> None:
    with clause(world, "TYPE-5") as e:
        for missing in ("controlServer", "authKeySecretRef"):
            for how in ("missing", "null", "empty"):
                spec = mesh_spec(world)
                if how == "missing":
                    del spec["headscale"][missing]
                else:
                    spec["headscale"][missing] = None if how == "null" else ""
                code, ans = world.sut(pod).prerun(spec, {})
                e.that(code == 400 and missing in str(ans.get("error", "")),
                       f"HTTP 400 naming {missing} when it is {how}", f"HTTP {code} {ans}")


def type6_tools_dial_through_the_mesh(world, pod: str = "agent") -> None:
    """/connect (the agent's tools) and the pre-run reach a tailnet target through the sidecar;
    in a userspace pod that is only possible through the sidecar's SOCKS5 proxy."""
    sut = world.sut(pod)
    with clause(world, "TYPE-6") as e:
        code, ans = sut.prerun(mesh_spec(world), {"server": ep(world, "server", 22)}, deadline_s=3)
        e.that(code == 200 and ans["endpoints"].get("server", {}).get("reachable") is True,
               f"pre-run in pod {pod}: server:22 reachable through the mesh", ans.get("endpoints"))
        for node, port in (("server", 22), ("database", 5432)):
            r = sut.connect(world.address(node), port, timeout_s=3)
            e.that(r.get("ok") and f"host={node} port={port}" in (r.get("banner") or ""),
                   f"/connect in pod {pod} to {node}:{port} answered by that host's banner", r)


# Reachability as the SUT reports it, in every pod; endpoint forms.
# The first WireGuard handshake on a path can be lost and resent 5 s later (once 16-17 s was
# seen, README): a positive control is retried this long before anything is judged.
POSITIVE_WAIT_S = 25.0


def _banner_of(r: dict, node: str, port: int) -> bool:
    return bool(r.get("ok")) and f"host={node} port={port}" in (r.get("banner") or "")


def _controls(e: Expect, sut, pod: str, controls: list[tuple[str, str, int]]) -> bool:
    """Positive controls through the SUT's own data path in ``pod``: /connect to (label host, address,
    port) until the target's banner answers or POSITIVE_WAIT_S passes. False if one never did."""
    ok = True
    for node, host, port in controls:
        end = time.monotonic() + POSITIVE_WAIT_S
        while True:
            r = sut.connect(host, port, timeout_s=3)
            if _banner_of(r, node, port) or time.monotonic() >= end:
                break
            time.sleep(0.5)  # poll interval of a condition wait
        ok &= e.that(_banner_of(r, node, port), f"positive control in pod {pod}: /connect to {node} "
                     f"({host}:{port}) answered by its banner within {POSITIVE_WAIT_S:g} s", r)
    return ok


def _connect_each(sut, targets: list[tuple[str, int, float]]) -> list[dict]:
    """/connect to every (host, port, timeout_s) at once, each on a client of its own, results in
    order. For dials that are expected to fail: each costs its whole timeout when the mesh drops
    it, so one after another they cost the sum (the agent's tools dial concurrently too)."""
    def one(t: tuple[str, int, float]) -> dict:
        return SutClient(sut.base, name=sut.name, timeout=sut.timeout).connect(t[0], t[1], timeout_s=t[2])
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(targets))) as ex:
        return list(ex.map(one, targets))


def _url(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def type6_unreachable_reported_unreachable(world, pod: str = "agent") -> None:
    """What the mesh does not deliver is reported unreachable -- by the pre-run and by /connect, in
    this pod's own data path (TUN, or the SOCKS5 proxy, whose CONNECT reply says so): a refused
    port (allowed by the ACL, nothing listening), an ACL-denied port, an address no node holds.
    Judged only after positive controls through the same pod to the same peers succeeded."""
    sut = world.sut(pod)
    legacy = world.topology.hosts[0].name
    refused_host, refused_port = world.refused_target()
    controls = [("server", world.address("server"), 22), (legacy, world.address(legacy), 22)]
    negatives = {"refused": (refused_host, refused_port, "allowed by the ACL, nothing listens: refused "
                                                         "(the subnet router's own VLAN address)"),
                 "denied": (world.address("server"), 80, "ACL-denied port of an online peer"),
                 "ghost": (GHOST, 22, "an address no tailnet node holds")}
    with clause(world, "TYPE-6") as e:
        if not _controls(e, sut, pod, controls):
            return  # negatives without a working control prove nothing
        eps = {f"control-{n}": {"url": _url(h, p), "critical": True} for n, h, p in controls}
        eps.update({n: {"url": _url(h, p), "critical": True} for n, (h, p, _) in negatives.items()})
        code, ans = sut.prerun(mesh_spec(world), eps, deadline_s=3)
        got = ans.get("endpoints") or {}
        for n, h, p in controls:
            e.that((got.get(f"control-{n}") or {}).get("reachable") is True,
                   f"pre-run in pod {pod}: the control {n} ({h}:{p}) reachable", got.get(f"control-{n}"))
        dialled = _connect_each(sut, [(h, p, DEADLINE_S) for h, p, _ in negatives.values()])
        for (n, (h, p, why)), r in zip(negatives.items(), dialled):
            e.that((got.get(n) or {}).get("reachable") is False,
                   f"pre-run in pod {pod}: {n} {h}:{p} ({why}) reported unreachable", got.get(n))
            e.that(r.get("ok") is False and bool(str(r.get("error") or "").strip()),
                   f"/connect in pod {pod} to {n} {h}:{p} ({why}): ok false with an error", r)


def type6_endpoint_forms(world, pod: str = "agent") -> None:
    """A tailnet node named by its IPv6 address or its MagicDNS name is dialled and reported as
    by its IPv4 address: the pre-run (URLs tcp://[v6]:port, tcp://name:port) and /connect
    (host = the literal or the name), the banner proving which host answered; the same forms
    on an ACL-denied port are reported unreachable by both."""
    sut = world.sut(pod)
    targets = [("server", 22), ("database", 5432)]
    with clause(world, "TYPE-6") as e:
        if not _controls(e, sut, pod, [(n, world.address(n), p) for n, p in targets]):
            return
        forms = [(f"{n}-{kind}", n, host, p) for n, p in targets
                 for kind, host in (("ipv6", world.address6(n)), ("magicdns", world.dns_name(n)))]
        eps = {label: {"url": _url(host, p), "critical": True} for label, _n, host, p in forms}
        # the same forms on an ACL-denied port: a form must not make everything look reachable
        denied = {"server-ipv6-80": world.address6("server"), "server-magicdns-80": world.dns_name("server")}
        eps.update({label: {"url": _url(host, 80), "critical": False} for label, host in denied.items()})
        code, ans = sut.prerun(mesh_spec(world), eps, deadline_s=3)
        got = ans.get("endpoints") or {}
        for label, *_ in forms:
            _reported(e, f"pre-run in pod {pod}: {eps[label]['url']}", got.get(label), True)
        for label in denied:
            _reported(e, f"pre-run in pod {pod}: {eps[label]['url']} (ACL-denied)", got.get(label), False)
        for _label, node, host, p in forms:
            r = sut.connect(host, p, timeout_s=3)
            e.that(_banner_of(r, node, p), f"/connect in pod {pod} to {host}:{p} answered by {node}'s banner", r)
        for host, r in zip(denied.values(), _connect_each(sut, [(h, 80, DEADLINE_S) for h in denied.values()])):
            e.that(r.get("ok") is False and bool(str(r.get("error") or "").strip()),
                   f"/connect in pod {pod} to {host}:80 (ACL-denied): ok false with an error", r)


@clause_check("TYPE-6")
def type6_all(world, pod: str = "agent") -> None:
    """Everything TYPE-6 asserts, for the mutant zoo and the reference run."""
    type6_tools_dial_through_the_mesh(world, pod)
    type6_unreachable_reported_unreachable(world, pod)
    type6_endpoint_forms(world, pod)


# ------------------------------------------------------------------ pre-run health check
FAKE_LOCALAPI_PORT = 41112  # where a LocalAPI listens on macOS/Windows; on Linux nothing of tailscale's does


@clause_check("HEALTH-1")
def health1_running_means_ready(world, pod: str = "agent") -> None:
    """Running -> ready; then every other state the real sidecar can be driven to, each with
    something accepting on 127.0.0.1:41112 in the pod, and each must be not ready: Stopped
    (`tailscale down`), the daemon killed (its socket file left), the start-up state of a
    tailscaled restarted while the control plane is down (NoState), NeedsLogin (a pod whose
    pre-auth key expired)."""
    sut = world.sut(pod)
    eps = {"server": ep(world, "server", 22)}
    with clause(world, "HEALTH-1") as e:
        def not_ready(client, how: str, state: str) -> None:
            code, ans = client.prerun(mesh_spec(world), eps, deadline_s=DEADLINE_S)
            side = ans.get("sidecar") or {}
            e.that(code == 200 and ans.get("ready") is False and side.get("ready") is False,
                   f"{how} (BackendState {state}; 127.0.0.1:{FAKE_LOCALAPI_PORT} accepting in the pod) -> "
                   f"sidecar not ready and pre-run not ready", f"HTTP {code} ready={ans.get('ready')} sidecar={side}")

        code, ans = sut.prerun(mesh_spec(world), eps)
        side = ans.get("sidecar") or {}
        e.that(code == 200 and ans.get("ready") is True and side.get("ready") is True,
               "sidecar Running (LocalAPI BackendState) -> sidecar ready and pre-run ready",
               f"ready={ans.get('ready')} sidecar={side}")
        node = world.nodes[pod]
        with world.listening(pod, FAKE_LOCALAPI_PORT, bind="127.0.0.1"):
            world.sidecar_down(pod)  # daemon alive, socket answering, BackendState Stopped
            try:
                not_ready(sut, "after `tailscale down` (the socket still answers)", node.backend_state())
            finally:
                world.sidecar_up(pod)
            try:
                with world.control_plane_down():
                    world.kill_sidecar(pod)
                    not_ready(sut, "tailscaled killed (its socket file left, nobody answering)", "none: no daemon")
                    # measured: NoState, held for 30 s and more while the control plane stays down
                    state = world.restart_sidecar_container(pod)
                    e.that(state != "Running", "a tailscaled restarted with the control plane down is not Running",
                           state)
                    not_ready(sut, "tailscaled restarted while the control plane is down", state)
            finally:
                world.start_sidecar(pod)
        spec = AgentSpec(name=f"{pod}-needslogin", tags=(AGENT_TAG,))
        key = world.headscale.preauth_key((AGENT_TAG,), reusable=False, expiration="1h")
        world.headscale.expire_preauth_key(key)
        extra = world.add_pod(spec, key, expect_join=False, mutant=world.pods[pod].sut_config[0])
        try:
            state = extra.backend_state()
            e.that(state == "NeedsLogin", "a sidecar given an expired pre-auth key is NeedsLogin", state)
            with world.listening(spec.name, FAKE_LOCALAPI_PORT, bind="127.0.0.1"):
                not_ready(world.sut(spec.name), "a sidecar whose pre-auth key expired", state)
        finally:
            world.remove_pod(spec.name)


@clause_check("HEALTH-2")
def health2_concurrent_deadlines(world, pod: str = "agent") -> None:
    sut = world.sut(pod)
    eps = {f"{n}-{p}": ep(world, n, p, critical=False) for n, p in BLACKHOLES}
    eps["server-22"] = ep(world, "server", 22)
    bound = prerun_bound(BOUND_DEADLINE_S)  # does not grow with the number of endpoints
    with clause(world, "HEALTH-2") as e:
        t0 = time.monotonic()
        code, ans = sut.prerun(mesh_spec(world), eps, deadline_s=BOUND_DEADLINE_S)
        took = time.monotonic() - t0
        e.that(took <= bound, f"{len(eps)} endpoints ({len(BLACKHOLES)} blackholed) checked within "
               f"{bound:.2f} s (deadline {BOUND_DEADLINE_S:g} s x {1 + DEADLINE_SLACK:g} + overhead {OVERHEAD_S:g} s)",
               f"{took:.2f} s")
        got = ans.get("endpoints") or {}
        e.that(set(got) == set(eps), "a result for every endpoint", sorted(got))
        _reported(e, "server-22", got.get("server-22"), True)
        for name in eps:
            if name != "server-22":
                _reported(e, f"{name} (blackholed)", got.get(name), False)


def _reported(e: Expect, label: str, res, reachable: bool) -> None:
    """One endpoint's result: reachable with latency_ms a number >= 0, or unreachable with a
    non-empty error."""
    res = res if isinstance(res, dict) else {}
    if not e.that(res.get("reachable") is reachable, f"{label} reachable={reachable}", res):
        return
    if reachable:
        lat = res.get("latency_ms")
        e.that(isinstance(lat, (int, float)) and not isinstance(lat, bool) and lat >= 0,
               f"{label}: latency_ms a number >= 0", res)
    else:
        err = res.get("error")
        e.that(isinstance(err, str) and bool(err.strip()), f"{label}: a non-empty error", res)


# a free port on the server node: a listener there logs who connected. Below the kernel's
# ephemeral range (32768-60999): 47022 collided once with a local port of one of the node's own
# outbound connections ("Address already in use", clean-clone CI of 12f7e5c)
WITNESS_PORT = 28022


@clause_check("HEALTH-3")
def health3_not_ready_is_a_warning(world, pod: str = "agent") -> None:
    """The sidecar stopped: the pre-run warns, answers, and really dials. The proof of a dial is
    an endpoint that needs no mesh (the server's cluster address, in the TUN pod: no proxy in
    the way) reported reachable AND seen by a listener on the server from the pod's address."""
    sut = world.sut(pod)
    wan = world.nodes["server"].wan_ip
    eps = {"server": ep(world, "server", 22, critical=False),
           "server-wan": {"url": f"tcp://{wan}:{WITNESS_PORT}", "critical": False}}
    with clause(world, "HEALTH-3") as e, world.listening("server", WITNESS_PORT) as peers:
        world.stop_sidecar(pod)
        try:
            code, ans = sut.prerun(mesh_spec(world), eps, deadline_s=DEADLINE_S)
            e.that(code == 200, "HTTP 200: the run goes on", f"HTTP {code}")
            logs = ans.get("logs") or []
            e.that(any(x.get("level") == "warning" and "sidecar" in x.get("msg", "").lower() for x in logs),
                   "a warning log line about the sidecar", logs)
            e.that("error" not in _levels(ans), "no log line at level error", _levels(ans))
            got = ans.get("endpoints") or {}
            e.that(set(got) == set(eps), f"a result for every endpoint {sorted(eps)}", sorted(got))
            e.that(got.get("server-wan", {}).get("reachable") is True,
                   f"server-wan ({wan}:{WITNESS_PORT}, reachable without the mesh) dialled and reported reachable",
                   got.get("server-wan"))
            e.that(world.pods[pod].ip in peers(),
                   f"the server saw a connection on {WITNESS_PORT} from the pod ({world.pods[pod].ip})",
                   f"peers seen: {peers()}")
            e.that(ans.get("ready") is False, "ready false", ans.get("ready"))
        finally:
            world.start_sidecar(pod)


@clause_check("HEALTH-4")
def health4_critical_told_to_agent(world, pod: str = "agent") -> None:
    eps = {"web": ep(world, "server", 80, critical=True), "ssh": ep(world, "server", 22, critical=True)}
    with clause(world, "HEALTH-4") as e:
        code, ans = world.sut(pod).prerun(mesh_spec(world), eps, deadline_s=DEADLINE_S)
        ctx = ans.get("agent_context") or []
        e.that(_mentions(ctx, "web"), "the unreachable critical endpoint 'web' named in agent_context", ctx)
        e.that(not _mentions(ctx, "ssh"), "the reachable endpoint 'ssh' not reported to the agent", ctx)


@clause_check("HEALTH-5")
def health5_noncritical_only_logged(world, pod: str = "agent") -> None:
    eps = {"cache": ep(world, "database", 6379, critical=False), "ssh": ep(world, "server", 22)}
    with clause(world, "HEALTH-5") as e:
        code, ans = world.sut(pod).prerun(mesh_spec(world), eps, deadline_s=DEADLINE_S)
        ctx = ans.get("agent_context") or []
        e.that(not _mentions(ctx, "cache"), "non-critical 'cache' absent from agent_context", ctx)
        e.that(_mentions([x.get("msg", "") for x in ans.get("logs") or []], "cache"),
               "non-critical 'cache' in the logs", ans.get("logs"))
        e.that(ans.get("ready") is True, "ready true (only a non-critical endpoint is down)", ans.get("ready"))


# ------------------------------------------------------------------ direct mode
@clause_check("DIRECT-1")
def direct1_no_sidecar(world, pod: str = "agent") -> None:
    """Direct mode in a pod with no running sidecar: ready, the sidecar not probed, and the target
    reached over the cluster network (the server's WAN address, not its tailnet address) by the
    pre-run and by the tools. In the userspace pod (SUT_PROXY set) the stopped sidecar takes its
    SOCKS5 proxy with it, so a dial through the mesh proxy fails there."""
    sut = world.sut(pod)
    wan = world.nodes["server"].wan_ip
    target = {"server": {"url": f"tcp://{wan}:22", "critical": True}}
    with clause(world, "DIRECT-1") as e:
        world.stop_sidecar(pod)
        try:
            code, ans = sut.prerun({"type": "direct"}, target, deadline_s=DEADLINE_S)
            e.that(code == 200 and ans.get("ready") is True, f"pod {pod}: ready with no sidecar in direct mode",
                   f"HTTP {code} ready={ans.get('ready')} message={ans.get('message')!r}")
            e.that((ans.get("sidecar") or {}).get("checked") is False,
                   f"pod {pod}: sidecar.checked false (direct mode must not probe a sidecar)", ans.get("sidecar"))
            e.that(ans.get("endpoints", {}).get("server", {}).get("reachable") is True,
                   f"pod {pod}: the server reached over the cluster network", ans.get("endpoints"))
            e.that("warning" not in _levels(ans), "no warning (nothing is wrong)", ans.get("logs"))
            r = sut.connect(wan, 22, timeout_s=DEADLINE_S)
            e.that(r.get("ok") is True and "host=server port=22" in (r.get("banner") or ""),
                   f"pod {pod}: /connect after a direct pre-run reaches {wan}:22 (server's banner)", r)
        finally:
            world.start_sidecar(pod)


# ------------------------------------------------------------------ credentials
def _nothing_of(e: Expect, secret: str, what: str, places: dict[str, str], shapes: bool = True) -> None:
    """One assertion per place: nothing of ``secret`` there -- not the whole, no run of MIN_RUN or
    more characters of its secret part (the text after its last `-`), and (``shapes``) nothing
    shaped like an auth key. The observation names positions only."""
    rule = (f"not the whole, no run of {MIN_RUN}+ characters of its secret part"
            + (", nothing key-shaped" if shapes else ""))
    for where, text in places.items():
        found = leaks(text, secret, shapes=shapes)
        e.that(not found, f"nothing of {what} in the {where} ({rule})",
               f"{describe(found, text)} (positions only; the text is not shown)")


@clause_check("CRED-1")
def cred1_auth_key_never_shown(world, pod: str = "agent") -> None:
    """CRED-1, the SUT's half: the pod's pre-auth key -- whole, any run of 8+ characters of its
    secret part, or anything key-shaped -- in no pre-run answer (logs, message, agent_context
    included), /connect result, transcript or SUT container log. (meshcert's own half -- its
    results.json, report, saved logs, junit -- is scanned at the end of every session:
    meshcert.plugin.pytest_sessionfinish_no_secret_in_outputs.)"""
    sut = world.sut(pod)
    key = world.pod_key(pod)
    with clause(world, "CRED-1") as e:
        _, a1 = sut.prerun(mesh_spec(world), {"server": ep(world, "server", 22)})
        world.stop_sidecar(pod)
        try:
            _, a2 = sut.prerun(mesh_spec(world), {"server": ep(world, "server", 22)}, deadline_s=DEADLINE_S)
        finally:
            world.start_sidecar(pod)
        r = sut.connect(world.address("server"), 22)
        places = {"pre-run answer (sidecar running)": json.dumps(a1, ensure_ascii=False),
                  "pre-run answer (sidecar stopped)": json.dumps(a2, ensure_ascii=False),
                  "/connect result": json.dumps(r, ensure_ascii=False),
                  "transcript": json.dumps(sut.transcript(), ensure_ascii=False),
                  "SUT container log": world.raw_logs(f"{pod}-sut")}
        _nothing_of(e, key, "the pre-auth key", places)


@clause_check("CRED-2")
def cred2_run_credentials_never_shown(world, pod: str = "agent") -> None:
    """CRED-2: a per-run credential the tool layer injects into a connection -- whole, or any run
    of 8+ characters of its secret part -- never reaches the connect result, the transcript, the
    agent_context of the next pre-run, or the SUT's log."""
    sut = world.sut(pod)
    # hex: no `-` inside the token, so its secret part (after the last `-`) is all 32 characters
    secret = Secret("run-" + pysecrets.token_hex(16), "run credential")
    with clause(world, "CRED-2") as e:
        r = sut.connect(world.address("database"), 5432, credential={"user": "legator-run", "secret": secret.reveal()})
        e.that(r.get("ok") is True, "the credentialed connection to database:5432 succeeds", r)
        code, ans = sut.prerun(mesh_spec(world), {"server": ep(world, "server", 22)}, deadline_s=DEADLINE_S)
        e.that(code == 200, "HTTP 200 for the run's next pre-run", f"HTTP {code}")
        places = {"connect result": json.dumps(r, ensure_ascii=False),
                  "agent_context of the next pre-run": json.dumps(ans.get("agent_context"), ensure_ascii=False),
                  "transcript": json.dumps(sut.transcript(), ensure_ascii=False),
                  "SUT container log": world.raw_logs(f"{pod}-sut")}
        _nothing_of(e, secret.reveal(), "the run credential", places, shapes=False)


# ------------------------------------------------------------------ troubleshooting
@clause_check("TROUBLE-1")
def trouble1_missing_secret(world, pod: str = "agent") -> None:
    """No auth key reaches the pod (and so no sidecar runs): the pre-run names the Secret in a
    warning and to the agent, reports the sidecar not ready, and does not report the mesh ready."""
    with clause(world, "TROUBLE-1") as e:
        mutant = world.pods[pod].sut_config[0]  # the same SUT build, minus its Secret
        world.stop_sidecar(pod)
        sut = world.start_sut(pod, with_secret=False, mutant=mutant)
        try:
            code, ans = sut.prerun(mesh_spec(world), {"server": ep(world, "server", 22)}, deadline_s=DEADLINE_S)
            warn = [x.get("msg", "") for x in ans.get("logs") or [] if x.get("level") == "warning"]
            ref = secret_ref(world)
            e.that(code == 200, "HTTP 200 (a missing Secret is reported, not an error)", f"HTTP {code}")
            e.that(_mentions(warn, ref), f"a warning naming the Secret {ref}", warn)
            e.that(_mentions(ans.get("agent_context") or [], ref),
                   f"the agent told that {ref} is missing", ans.get("agent_context"))
            e.that((ans.get("sidecar") or {}).get("ready") is False, "the sidecar reported not ready (sidecar.ready false)",
                   ans.get("sidecar"))
            e.that(ans.get("ready") is False, "the mesh not reported ready (ready false)",
                   f"ready={ans.get('ready')} message={ans.get('message')!r}")
        finally:
            world.start_sut(pod, mutant=mutant)
            world.start_sidecar(pod)


@clause_check("TROUBLE-2")
def trouble2_expired_key(world, pod: str = "agent") -> None:
    """An extra pod whose Secret holds an expired pre-auth key (its SUT the same build as ``pod``'s):
    the sidecar cannot log in, and the pre-run says not ready with the daemon's state."""
    spec = AgentSpec(name="agent-expired", tags=(AGENT_TAG,))
    key = world.headscale.preauth_key((AGENT_TAG,), reusable=False, expiration="1h")
    world.headscale.expire_preauth_key(key)
    with clause(world, "TROUBLE-2") as e:
        node = world.add_pod(spec, key, expect_join=False, mutant=world.pods[pod].sut_config[0])
        try:
            state = node.backend_state()
            e.that(state == "NeedsLogin", "the sidecar with an expired key stays NeedsLogin", state)
            code, ans = world.sut(spec.name).prerun(mesh_spec(world), {"server": ep(world, "server", 22)},
                                                   deadline_s=DEADLINE_S)
            text = f"{ans.get('message', '')} {(ans.get('sidecar') or {}).get('detail', '')}"
            e.that(ans.get("ready") is False, "pre-run not ready", ans.get("ready"))
            e.that((ans.get("sidecar") or {}).get("ready") is False, "the sidecar reported not ready",
                   ans.get("sidecar"))
            e.that("NeedsLogin" in text, "the daemon's state (NeedsLogin) in the pre-run's message", text)
        finally:
            world.remove_pod(spec.name)


def _error_of(world, pod: str, name: str, url_ep: dict) -> tuple[dict, str]:
    code, ans = world.sut(pod).prerun(mesh_spec(world), {name: url_ep}, deadline_s=DEADLINE_S)
    res = (ans.get("endpoints") or {}).get(name, {})
    return res, str(res.get("error") or "")


GHOST = "100.64.0.250"  # inside this headscale's prefix, held by no node (allocation is sequential from .1)


@clause_check("TROUBLE-3")
def trouble3_unapproved_route_points_at_routing(world, pod: str = "agent") -> None:
    legacy = world.topology.hosts[0]
    approved = world.topology.node("router").approve_routes
    with clause(world, "TROUBLE-3") as e:
        world.set_route_approval("router", [])
        try:
            res, err = _error_of(world, pod, "legacy", {"url": f"tcp://{legacy.address}:22", "critical": True})
        finally:
            world.set_route_approval("router", approved)
        e.that(res.get("reachable") is False, "the VLAN host unreachable with the route unapproved", res)
        e.that("route" in err.lower() and legacy.address in err,
               f"an error that points at routing (no tailnet route to {legacy.address}), not a bare timeout", err)


@clause_check("TROUBLE-4")
def trouble4_acl_deny_told_apart(world, pod: str = "agent") -> None:
    with clause(world, "TROUBLE-4") as e:
        _, denied = _error_of(world, pod, "web", ep(world, "server", 80))
        _, ghost = _error_of(world, pod, "ghost", {"url": f"tcp://{GHOST}:22", "critical": True})
        e.that("online" in denied.lower() and "not on the tailnet" not in denied.lower(),
               "an ACL-denied port of an online peer says the peer is on the tailnet and online", denied)
        e.that(denied != ghost and denied.split(";")[-1] != ghost.split(";")[-1],
               "the ACL-deny error told apart from the not-on-the-tailnet error", f"{denied!r} vs {ghost!r}")


@clause_check("TROUBLE-5")
def trouble5_not_on_tailnet(world, pod: str = "agent") -> None:
    with clause(world, "TROUBLE-5") as e:
        res, err = _error_of(world, pod, "ghost", {"url": f"tcp://{GHOST}:22", "critical": True})
        e.that(res.get("reachable") is False and "not on the tailnet" in err.lower(),
               f"{GHOST} (no node has it) reported as not on the tailnet", err)
