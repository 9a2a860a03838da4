"""Reachability checks with clause-named failure messages."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from meshcert.secrets import redact

BANNER = re.compile(r"meshcert-banner host=(\S+) port=(\d+)")

# How long a positive probe is retried. After a policy or route change the first WireGuard
# handshake between two peers is often lost and re-sent after REKEY_TIMEOUT = 5 s; the worst
# measured here (property test, ~190 examples) connected 16-17 s after the first dial (three
# initiations). 25 s = that worst case + 8 s for a loaded 2-core machine (the same window as the
# property test's RETRY_WINDOW).
POSITIVE_DEADLINE_S = 25.0
# One dial of a negative. It is dialled only after a positive control between the same two nodes
# connected (their WireGuard session is up, so the first-handshake loss cannot make it fail); a
# connection that is allowed completes in milliseconds over a live session. Measured here (the
# property test's connect_ms_max, the slowest first-dial connect of an allowed pair over a live
# session, 50-55 examples, seed 1, 2026-12-01): 56 ms at load 2, 141 ms at a 1-min load of 13,
# 178 ms at load 17-26, on 2 cores. 1 s is 5.6x the worst of those (it was 3 s: 2 s more for
# every check with negatives).
NEGATIVE_TIMEOUT_S = 1.0


class ClauseFailure(AssertionError):
    """A clause of the guide does not hold: names the clause, the expected and the observed."""

    def __init__(self, clause: str, problems: list[str], logs: Path | None):
        self.clause = clause
        self.problems = problems
        self.logs = logs
        where = f"container logs saved in {logs}" if logs else "no container logs saved"
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(redact(f"[{clause}] {len(problems)} violation(s):\n{body}\n  ({where})"))


@dataclass(frozen=True)
class Probe:
    src: str
    dst: str      # a node or host name of the world
    port: int
    expect: bool  # True: must connect and the banner must name dst:port
    why: str = ""
    via: str = ""  # a node the positive path crosses (a subnet router), for the reader
    # A negative's positive control: a probe expected to connect between the SAME two nodes
    # (either direction, another allowed port). None: the check finds one among its probes.
    control: Probe | None = None

    def label(self, addr: str) -> str:
        return f"{self.src} -> {self.dst} ({addr}):{self.port}"


def pair(a: str, b: str) -> frozenset[str]:
    """The two nodes of a path, whatever the direction (one WireGuard session serves both)."""
    return frozenset((a, b))


def _fail(world, clause: str, problems: list[str]):
    logs = world.failure_logs(clause) if hasattr(world, "failure_logs") else None
    raise ClauseFailure(clause, problems, logs)


def controls_for(probes: Iterable[Probe], proven: Iterable[tuple[str, str]] = ()) -> dict[Probe, Probe | None]:
    """Each negative's positive control: its own ``control``, else a positive probe of the same
    list between the same two nodes (same direction first); None when ``proven`` (pairs whose
    path a positive control proved just before a change) covers it. A negative with neither is a
    programming error: it could never be judged."""
    probes = list(probes)
    proven_pairs = {pair(a, b) for a, b in proven}
    out: dict[Probe, Probe | None] = {}
    for n in probes:
        if n.expect:
            continue
        c = n.control
        if c is None:
            same = [q for q in probes if q.expect and pair(q.src, q.dst) == pair(n.src, n.dst)]
            same.sort(key=lambda q: (q.src != n.src, q.port))
            c = same[0] if same else None
        if c is not None and (not c.expect or pair(c.src, c.dst) != pair(n.src, n.dst)):
            raise ValueError(f"negative probe {n}: its control {c} must be a positive probe between the same "
                             f"two nodes")
        if c is None and pair(n.src, n.dst) not in proven_pairs:
            raise ValueError(f"negative probe {n} has no positive control between {n.src} and {n.dst}: give it "
                             f"one (another allowed port, or the same path proven before the change)")
        out[n] = c
    return out


def check_reachability(world, clause: str, probes: list[Probe], *, negative_timeout: float = NEGATIVE_TIMEOUT_S,
                       positive_deadline: float = POSITIVE_DEADLINE_S,
                       proven: Iterable[tuple[str, str]] = ()) -> dict[Probe, dict]:
    """:func:`reach` for a caller without an event loop (the checks are plain functions): runs it
    on a loop of its own. Called from a coroutine (a running loop in this thread), it runs that
    loop in a thread, so a sync check stays usable from an async test."""
    def run() -> dict[Probe, dict]:
        return asyncio.run(reach(world, clause, probes, negative_timeout=negative_timeout,
                                 positive_deadline=positive_deadline, proven=proven))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        return ex.submit(run).result()


async def reach(world, clause: str, probes: list[Probe], *, negative_timeout: float = NEGATIVE_TIMEOUT_S,
                positive_deadline: float = POSITIVE_DEADLINE_S,
                proven: Iterable[tuple[str, str]] = ()) -> dict[Probe, dict]:
    """Dial every probe from inside its source node: each probe a task of its own on one event loop.

    Positives are retried until ``positive_deadline`` and must present the banner of the
    intended host and port. A negative is judged live: it is dialled (once, ``negative_timeout``
    s) only after its positive control -- a probe between the same two nodes -- connected, so a
    path that simply never completed a WireGuard handshake cannot pass as "denied". Each negative
    waits on its own control, not on a round of others: the negatives of a check overlap, one
    timeout in all, and none waits for a slow positive elsewhere in the matrix. A negative whose
    control never connects before the deadline is dialled once at the end: if it connects it
    fails as reachable, otherwise it fails the clause as "cannot judge" (never as a pass).
    ``proven``: (src, dst) pairs whose path a positive probe proved just before a change (a policy
    or route change the negative is about); their negatives are dialled at once.

    The world dials with ``adial`` (a coroutine: the node agents' HTTP API through httpx's async
    client, no thread per dial) when it has one, else its blocking ``dial`` in a thread.
    """
    probes = list(dict.fromkeys(probes))
    controls = controls_for(probes, proven)
    for c in controls.values():
        if c is not None and c not in probes:
            probes.append(c)
    addr = {p.dst: world.address(p.dst) for p in probes}
    results: dict[Probe, dict] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + positive_deadline
    connected = {p: asyncio.Event() for p in probes if p.expect}
    unjudged: list[Probe] = []

    async def dial(p: Probe) -> dict:
        results[p] = r = await dial_one(world, p.src, addr[p.dst], p.port, negative_timeout)
        return r

    async def positive(p: Probe) -> None:
        while True:
            started = loop.time()
            if _good(p, await dial(p)):
                connected[p].set()
                return
            if loop.time() >= deadline:
                return
            # a condition wait's poll interval (a fast refusal must not spin)
            await asyncio.sleep(max(0.0, 0.5 - (loop.time() - started)))

    async def negative(n: Probe) -> None:
        c = controls[n]
        if c is not None:
            try:
                await asyncio.wait_for(connected[c].wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                # Its control never connected: one dial all the same. A connection is a violation
                # whatever the control did (it needs no proof); no connection judges nothing.
                if not (await dial(n))["ok"]:
                    unjudged.append(n)
                return
        await dial(n)

    try:
        async with asyncio.TaskGroup() as tg:
            for p in probes:
                tg.create_task(positive(p) if p.expect else negative(n=p))
    except ExceptionGroup as eg:  # a dial that failed (not a refusal: the node agent itself): the first, alone
        raise eg.exceptions[0] from None
    for n in unjudged:
        del results[n]  # reported below as "cannot judge"
    problems = []
    for p in probes:
        r = results.get(p)
        if p.expect and not _good(p, r):
            obs = f"connected, but banner {r['banner']!r}" if r and r["ok"] else \
                f"not reachable ({r['error'] if r else 'never dialled'})"
            problems.append(f"{p.label(addr[p.dst])}: expected reachable with banner host={p.dst} port={p.port}"
                            f"{' (' + p.why + ')' if p.why else ''}; observed {obs} within {positive_deadline:.0f} s")
        elif not p.expect and r is None:
            c = controls[p]
            problems.append(f"{p.label(addr[p.dst])}: cannot judge (expected unreachable"
                            f"{': ' + p.why if p.why else ''}): no positive control between {p.src} and {p.dst} -- "
                            f"its control {c.src} -> {c.dst}:{c.port} never connected within "
                            f"{positive_deadline:.0f} s, so a denial here proves nothing")
        elif not p.expect and r["ok"]:
            problems.append(f"{p.label(addr[p.dst])}: expected unreachable"
                            f"{' (' + p.why + ')' if p.why else ''}; observed reachable, banner {r['banner']!r}")
    if problems:
        _fail(world, clause, problems)
    return results


async def dial_one(world, src: str, host: str, port: int, timeout: float) -> dict:
    """One dial from ``src`` to ``host:port``: the world's ``adial`` coroutine, else its blocking
    ``dial`` in a thread."""
    adial = getattr(world, "adial", None)
    if adial is not None:
        got = await adial(src, [(host, port)], timeout)
    else:
        got = await asyncio.to_thread(world.dial, src, [(host, port)], timeout)
    return got[0]


def _good(p: Probe, r: dict | None) -> bool:
    if not r or not r["ok"]:
        return False
    m = BANNER.search(r.get("banner") or "")
    return bool(m) and m.group(1) == p.dst and int(m.group(2)) == p.port
