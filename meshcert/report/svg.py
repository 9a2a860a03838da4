"""Inline SVG figures of the HTML report: latency per path and a timeline per chaos scenario.

Plain SVG written here (no plotting library, no script, nothing loaded from elsewhere), so the
report stays one self-contained file readable from disk or as a CI attachment. Every piece of
text is redacted and escaped; numbers that are not finite are left out, never drawn.

    latency_svg([{"path": "mesh", "target": "server:22", "p50_ms": 0.9, "p95_ms": 1.4, "n": 30}])
    timeline_svg({"duration_s": 31.0, "events": [{"t_s": 0.1, "event": "inject", ...}, ...]})
"""

from __future__ import annotations

import html
import math

from meshcert.secrets import redact

FONT = 'font-family="system-ui,-apple-system,Segoe UI,sans-serif"'
INK, MUTED, GRID = "#1d2433", "#57606a", "#d0d7de"
P50, P95 = "#3b6fb6", "#1d2433"
GUIDE_BAND = "#fff3c4"
# Colours per path (display order of the report), others grey.
PATH_COLOURS = {"direct": "#6e7781", "mesh": "#3b6fb6", "mesh via subnet router": "#8250df", "derp": "#bf3989"}
# Timeline phases: what the world was doing between two kinds of journal events.
PHASES = (("steady", "#dafbe1", "steady state"), ("faults", "#ffebe9", "faults held"),
          ("rollback", "#ddf4ff", "rolling back"), ("settle", "#fff8c5", "back to steady state"),
          ("after", "#dafbe1", "steady again"))
EVENT_COLOURS = {"inject": "#cf222e", "rollback": "#0969da", "steady": "#1a7f37", "failed": "#82071e"}


def _x(text) -> str:
    return html.escape(redact("" if text is None else str(text)), quote=True)


def _num(v) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _fmt_ms(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _nice_ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        out, d = [], 10.0 ** math.floor(math.log10(lo))
        while d <= hi * 1.0001:
            for m in (1, 2, 5):
                if lo * 0.9999 <= d * m <= hi * 1.0001:
                    out.append(d * m)
            d *= 10
        return out
    step = 10 ** math.floor(math.log10(hi / 4)) if hi > 0 else 1
    for m in (1, 2, 5, 10):
        if hi / (step * m) <= 6:
            step *= m
            break
    n = int(hi // step) + 1
    return [round(i * step, 10) for i in range(n + 1) if i * step <= hi * 1.0001]


def latency_svg(rows: list[dict], path_order=None, guide_ms: tuple[float, float] | None = (3.0, 5.0),
                width: int = 900) -> str:
    """Horizontal chart: one row per (path, target), a bar to its p50 and a whisker to its p95.
    A logarithmic axis when the figures span more than 30x (a slowed DERP path beside a LAN's
    direct path); a band shows direct p50 + the guide's ~3-5 ms when a direct figure exists."""
    pts = []
    for r in rows:
        p50, p95 = _num(r.get("p50_ms")), _num(r.get("p95_ms"))
        if p50 is None or p50 < 0:
            continue
        pts.append((str(r.get("path")), str(r.get("target")), p50, p95 if p95 is not None and p95 >= p50 else None,
                    r.get("n")))
    if not pts:
        return ""
    if path_order is not None:
        pts.sort(key=lambda p: (path_order(p[0]), p[1]))
    direct = [p[2] for p in pts if p[0] == "direct"]
    band = (min(direct) + guide_ms[0], min(direct) + guide_ms[1]) if direct and guide_ms else None
    hi = max([p[3] or p[2] for p in pts] + ([band[1]] if band else []))
    lo_pos = min([p[2] for p in pts if p[2] > 0] or [hi])
    log = hi / max(lo_pos, 1e-9) > 30
    lo = 10 ** math.floor(math.log10(max(lo_pos, 1e-3))) if log else 0.0
    hi = hi * (1.15 if not log else 1.0)
    if log:
        hi = 10 ** math.ceil(math.log10(hi))
    left, right, top, row_h = 250, 90, 34, 36
    plot_w = width - left - right
    height = top + row_h * len(pts) + 46

    def sx(v: float) -> float:
        if log:
            v = max(v, lo)
            return left + plot_w * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return left + plot_w * v / hi if hi > 0 else left

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" {FONT} font-size="12">',
           "<title>TCP connect latency per path: p50 bar, p95 whisker</title>",
           f'<text x="{left}" y="16" fill="{MUTED}">TCP connect latency, ms ({"log scale" if log else "linear"}): '
           f'bar p50, whisker to p95</text>']
    if band:
        x0, x1 = sx(band[0]), sx(band[1])
        out.append(f'<rect x="{x0:.1f}" y="{top - 6}" width="{max(x1 - x0, 1):.1f}" height="{row_h * len(pts) + 6}" '
                   f'fill="{GUIDE_BAND}"><title>direct p50 + the guide\'s ~3-5 ms</title></rect>')
        out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{top + row_h * len(pts) + 12}" fill="#7d4e00" '
                   f'text-anchor="middle" font-size="10">guide: direct + 3-5 ms</text>')
    axis_y = top + row_h * len(pts)
    for t in _nice_ticks(lo if log else 0.0, hi, log):
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{axis_y}" stroke="{GRID}"/>')
        out.append(f'<text x="{x:.1f}" y="{axis_y + 26}" fill="{MUTED}" text-anchor="middle" font-size="11">'
                   f'{_x(f"{t:g}")}</text>')
    out.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="{MUTED}"/>')
    for i, (path, target, p50, p95, n) in enumerate(pts):
        y = top + i * row_h
        colour = PATH_COLOURS.get(path, "#6e7781")
        out.append(f'<text x="{left - 10}" y="{y + 14}" text-anchor="end" fill="{INK}" font-weight="600">'
                   f'{_x(_cut(path, 34))}<title>{_x(path)}</title></text>'
                   f'<text x="{left - 10}" y="{y + 27}" text-anchor="end" fill="{MUTED}" font-size="10.5">'
                   f'{_x(_cut(target, 40))}<title>{_x(target)}</title></text>')
        x50 = sx(p50)
        tip = f"{path} {target}: p50 {_fmt_ms(p50)} ms" + (f", p95 {_fmt_ms(p95)} ms" if p95 is not None else "") + (
            f", n={n}" if n is not None else "")
        out.append(f'<rect x="{left}" y="{y + 6}" width="{max(x50 - left, 1.5):.1f}" height="{row_h - 14}" '
                   f'fill="{colour}" rx="2"><title>{_x(tip)}</title></rect>')
        end = x50
        if p95 is not None:
            x95 = sx(p95)
            mid = y + 6 + (row_h - 14) / 2
            out.append(f'<line x1="{x50:.1f}" y1="{mid:.1f}" x2="{x95:.1f}" y2="{mid:.1f}" stroke="{P95}" '
                       f'stroke-width="1.5"/><line x1="{x95:.1f}" y1="{y + 8}" x2="{x95:.1f}" y2="{y + row_h - 10}" '
                       f'stroke="{P95}" stroke-width="1.5"/>')
            end = x95
        text = f"{_fmt_ms(p50)}" + (f" / {_fmt_ms(p95)}" if p95 is not None else "")
        out.append(f'<text x="{end + 5:.1f}" y="{y + 21}" fill="{INK}" font-size="11">{_x(text)} ms</text>')
    out.append("</svg>")
    return "\n".join(out)


def _kind(event: str) -> str:
    e = event.lower()
    if e.startswith("inject"):
        return "inject"
    if e.startswith("rollback") or e.startswith("undo"):
        return "rollback"
    if e.startswith("steady state holds") or e == "nothing left behind":
        return "steady"
    if e.startswith("failed") or "broken" in e:
        return "failed"
    return "observe"


def phases(events: list[tuple[float, str]], end: float) -> list[tuple[str, float, float]]:
    """(phase, start, end) from a journal: steady until the first injection, faults held until the
    first rollback, rolling back until the last rollback, settling until the steady state holds
    again, steady again after it. Phases with no evidence in the journal are left out."""
    inj = [t for t, e in events if _kind(e) == "inject"]
    rb = [t for t, e in events if _kind(e) == "rollback"]
    steady_after = [t for t, e in events if e.lower().startswith("steady state holds (after")]
    out: list[tuple[str, float, float]] = []
    start = 0.0
    first_fault = inj[0] if inj else None
    if first_fault is not None:
        out.append(("steady", 0.0, first_fault))
        start = first_fault
        held_end = rb[0] if rb else (steady_after[0] if steady_after else end)
        out.append(("faults", start, held_end))
        start = held_end
        if rb:
            out.append(("rollback", rb[0], rb[-1]))
            start = rb[-1]
    if steady_after:
        if steady_after[0] > start:
            out.append(("settle", start, steady_after[0]))
        out.append(("after", steady_after[0], end))
    return [(k, a, b) for k, a, b in out if b >= a]


def timeline_svg(journal: dict, width: int = 1000) -> str:
    """A scenario's journal on a time axis: coloured phases (steady, faults held, rolling back,
    settling, steady again) and one numbered marker per event, the numbers those of the journal
    list printed under the figure."""
    evs, numbers = [], []  # numbers: each event's place in the whole journal (as the report's list)
    for i, e in enumerate(journal.get("events") if isinstance(journal.get("events"), list) else [], 1):
        e = e if isinstance(e, dict) else {"event": e}
        t = _num(e.get("t_s"))
        if t is not None and t >= 0:
            evs.append((t, str(e.get("event", "–"))))
            numbers.append(i)
    if not evs:
        return ""
    end = max([_num(journal.get("duration_s")) or 0.0, *(t for t, _ in evs)])
    end = end if end > 0 else 1.0
    left, right, top, band_h = 20, 20, 26, 26
    plot_w = width - left - right
    height = top + band_h + 40

    def sx(t: float) -> float:
        return left + plot_w * t / end

    name = str(journal.get("scenario") or "scenario")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" {FONT} font-size="11">',
           f"<title>{_x(name)}: timeline of the experiment</title>"]
    shown = set()
    for kind, a, b in phases(evs, end):
        colour, label = next((c, lab) for k, c, lab in PHASES if k == kind)
        out.append(f'<rect x="{sx(a):.1f}" y="{top}" width="{max(sx(b) - sx(a), 1):.1f}" height="{band_h}" '
                   f'fill="{colour}"><title>{_x(label)}: {a:.2f}–{b:.2f} s</title></rect>')
        shown.add(kind)
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{band_h}" fill="none" stroke="{GRID}"/>')
    # One marker per event; one number label per cluster of events closer than 14 px ("3–5"), above
    # the band, or below it when it would touch the previous label above.
    clusters: list[list[tuple[int, float]]] = []
    for i, (t, event) in zip(numbers, evs):
        x = sx(t)
        colour = EVENT_COLOURS.get(_kind(event), MUTED)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + band_h}" stroke="{colour}" '
                   f'stroke-width="1.5"/><circle cx="{x:.1f}" cy="{top + band_h / 2:.1f}" r="3.5" fill="{colour}">'
                   f'<title>{i}. {t:.2f} s {_x(event)}</title></circle>')
        if clusters and x - clusters[-1][0][1] < 14:
            clusters[-1].append((i, x))
        else:
            clusters.append([(i, x)])
    last_end = {0: -1e9, 1: -1e9}
    for cl in clusters:
        text = str(cl[0][0]) if len(cl) == 1 else f"{cl[0][0]}–{cl[-1][0]}"
        x = (cl[0][1] + cl[-1][1]) / 2
        half = 3.2 * len(text) + 2  # about half the label's width at 10 px
        row = 0 if x - half > last_end[0] else 1 if x - half > last_end[1] else 0
        last_end[row] = x + half
        ty = top - 6 if row == 0 else top + band_h + 12
        first_kind = _kind(evs[numbers.index(cl[0][0])][1])
        colour = EVENT_COLOURS.get(first_kind, MUTED) if len(cl) == 1 else INK
        out.append(f'<text x="{x:.1f}" y="{ty}" text-anchor="middle" fill="{colour}" font-size="10">{text}</text>')
    axis_y = top + band_h + 26
    step = next(s for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1e9) if end / s <= 10)
    t = 0.0
    while t <= end + 1e-9:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{axis_y - 6}" x2="{x:.1f}" y2="{axis_y - 2}" stroke="{MUTED}"/>'
                   f'<text x="{x:.1f}" y="{axis_y + 9}" text-anchor="middle" fill="{MUTED}">{t:g} s</text>')
        t += step
    out.append("</svg>")
    return "\n".join(out)


def timeline_legend_html() -> str:
    """One legend for every timeline of the report (HTML, so it wraps on a narrow page)."""
    items = [f'<span class="lg"><span class="sw" style="background:{c}"></span>{_x(label)}</span>'
             for _, c, label in PHASES if _ != "after"]
    items += [f'<span class="lg"><span class="dot" style="background:{EVENT_COLOURS.get(k, MUTED)}"></span>'
              f"{_x(label)}</span>" for k, label in (("inject", "fault injected"), ("rollback", "fault rolled back"),
                                                    ("steady", "steady state checked"), ("observe", "observation"),
                                                    ("failed", "failure"))]
    return '<p class="legend">' + " ".join(items) + "</p>"
