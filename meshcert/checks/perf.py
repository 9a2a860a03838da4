"""PERF-1, PERF-2: latency measured and reported beside the guide's figures (never asserted)."""

from __future__ import annotations

import statistics

from .sut import Expect

SAMPLES = 30


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def measure(world, src: str, host: str, port: int, n: int = SAMPLES) -> list[float]:
    """TCP connect latency (ms) from inside ``src``, one connection at a time."""
    out = []
    for _ in range(n):
        r = world.dial(src, [(host, port)], timeout=3.0)[0]
        if r["ok"]:
            out.append(r["latency_ms"])
    return out


def latency_rows(world, src: str = "agent") -> tuple[list[dict], list[str]]:
    """Rows {path, target, p50_ms, p95_ms, n} for the report, and the problems met measuring them."""
    server = world.nodes["server"]
    legacy = world.topology.hosts[0]
    paths = [("direct", "server:22 (cluster network)", server.wan_ip, 22),
             ("mesh", "server:22 (tailnet peer)", world.address("server"), 22),
             ("mesh via subnet router", f"{legacy.name}:22 (VLAN host)", legacy.address, 22)]
    rows, problems = [], []
    for path, target, host, port in paths:
        ms = measure(world, src, host, port)
        if len(ms) < SAMPLES:
            problems.append(f"{path} {target}: only {len(ms)}/{SAMPLES} connections succeeded")
        if ms:
            rows.append({"path": path, "target": target, "p50_ms": round(statistics.median(ms), 3),
                         "p95_ms": round(_pct(ms, 0.95), 3), "n": len(ms)})
    return rows, problems


def perf_report(world, report_extra: dict, clause: str = "PERF-1") -> list[dict]:
    e = Expect(world, clause)
    rows, problems = latency_rows(world)
    for p in problems:
        e.that(False, "every latency sample connects (the figure is reported, not asserted)", p)
    report_extra["latency"] = rows
    e.done()
    return rows
