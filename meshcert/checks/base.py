"""Reachability checks with clause-named failure messages."""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..secrets import redact

BANNER = re.compile(r"meshcert-banner host=(\S+) port=(\d+)")


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
    via: str = ""  # a node the positive path crosses (a subnet router): it proves that node alive too

    def label(self, addr: str) -> str:
        return f"{self.src} -> {self.dst} ({addr}):{self.port}"


def _fail(world, clause: str, problems: list[str]):
    logs = world.failure_logs(clause) if hasattr(world, "failure_logs") else None
    raise ClauseFailure(clause, problems, logs)


def check_reachability(world, clause: str, probes: list[Probe], *, negative_timeout: float = 3.0,
                       positive_deadline: float = 10.0, proven_alive: tuple[str, ...] = ()) -> dict[Probe, dict]:
    """Dial every probe from inside its source node, concurrently per source.

    Positives are retried until ``positive_deadline`` (a fresh WireGuard path may need a
    handshake) and must present the banner of the intended host and port. Negatives get one
    dial of ``negative_timeout`` s; each end of a negative must take part in a positive probe
    of the same check, so a negative cannot pass merely because the mesh is down.
    """
    # proven_alive: nodes whose data path a positive probe of the same test proved just before.
    alive = {x for q in probes if q.expect for x in (q.src, q.dst, q.via) if x} | set(proven_alive)
    for n in probes:
        if not n.expect and not {n.src, n.dst} <= alive:
            raise ValueError(f"{clause}: negative probe {n} lacks a positive control: each of its ends must take "
                             f"part in a positive probe of the same check")
    addr = {p.dst: world.address(p.dst) for p in probes}
    results: dict[Probe, dict] = {}
    pending = list(probes)
    deadline = time.monotonic() + positive_deadline
    while True:
        by_src: dict[str, list[Probe]] = defaultdict(list)
        for p in pending:
            by_src[p.src].append(p)
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(by_src)) as ex:
            futs = {src: ex.submit(world.dial, src, [(addr[p.dst], p.port) for p in ps], negative_timeout)
                    for src, ps in by_src.items()}
            for src, ps in by_src.items():
                for p, r in zip(ps, futs[src].result()):
                    results[p] = r
        # Negatives are dialled once; positives that failed are retried until the deadline.
        pending = [p for p in pending if p.expect and not _good(p, results[p])]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.5)  # poll interval of a condition wait, not a fixed wait
    problems = []
    for p in probes:
        r = results[p]
        if p.expect and not _good(p, r):
            obs = f"connected, but banner {r['banner']!r}" if r["ok"] else f"not reachable ({r['error']})"
            problems.append(f"{p.label(addr[p.dst])}: expected reachable with banner host={p.dst} port={p.port}"
                            f"{' (' + p.why + ')' if p.why else ''}; observed {obs}")
        elif not p.expect and r["ok"]:
            problems.append(f"{p.label(addr[p.dst])}: expected unreachable"
                            f"{' (' + p.why + ')' if p.why else ''}; observed reachable, banner {r['banner']!r}")
    if problems:
        _fail(world, clause, problems)
    return results


def _good(p: Probe, r: dict) -> bool:
    if not r["ok"]:
        return False
    m = BANNER.search(r.get("banner") or "")
    return bool(m) and m.group(1) == p.dst and int(m.group(2)) == p.port
