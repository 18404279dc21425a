"""Inline SVG charts (bars, histograms, heatmaps, ranges, lines) for self-contained pages:
no scripts, no network, no plotting library. Used by the report, ``reports/eval.html`` and
the sweep page.
"""

from __future__ import annotations

import math
from typing import Any

from sdfkit.report.html import esc, fmt_num, fmt_pct

PALETTE = ("#3b6ea5", "#e07b39", "#5a9e4b", "#b8444a", "#7c5ea8", "#8a6d3b", "#c45c9a", "#6b6b6b")


def svg_bars(
    items: list[tuple[str, float]],
    fmt: Any = fmt_num,
    threshold: float | None = None,
    max_value: float | None = None,
    title: str = "",
    marks: list[float | None] | None = None,
    width: int = 720,
) -> str:
    """Horizontal bars with labels; ``threshold`` draws a red line, ``marks`` a tick per bar."""
    if not items:
        return '<p class="empty">nothing to plot</p>'
    label_w, value_w, bar_h, gap = 280, 70, 18, 6
    plot_w = width - label_w - value_w
    top = max([v for _, v in items] + [threshold or 0] + [m or 0 for m in marks or []])
    top = max_value or top or 1.0
    height = len(items) * (bar_h + gap) + 24
    out = [
        f'<svg class="plot bars" role="img" aria-label="{esc(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, value) in enumerate(items):
        y = 4 + i * (bar_h + gap)
        w = max(0.0, plot_w * float(value) / top)
        short = label if len(label) <= 42 else label[:41] + "…"
        out.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" class="lbl">{esc(short)}'
            f"<title>{esc(label)}</title></text>"
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{PALETTE[0]}">'
            f"<title>{esc(label)}: {esc(fmt(value))}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" class="val">{esc(fmt(value))}</text>'
        )
        if marks and i < len(marks) and marks[i] is not None:
            x = label_w + plot_w * float(marks[i]) / top  # type: ignore[arg-type]
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y - 2}" y2="{y + bar_h + 2}" '
                f'stroke="#cf222e" stroke-width="2"><title>minimum {esc(fmt(marks[i]))}</title></line>'
            )
    if threshold is not None:
        x = label_w + plot_w * threshold / top
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height - 18}" stroke="#cf222e" '
            f'stroke-dasharray="4 3" stroke-width="1.5"/>'
            f'<text x="{x:.1f}" y="{height - 4}" text-anchor="middle" class="thr">'
            f"threshold {esc(fmt(threshold))}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def svg_histogram(
    series: dict[str, list[tuple[float, float]]],
    bin_width: float,
    x_label: str,
    title: str = "",
    width: int = 720,
    height: int = 220,
) -> str:
    """Overlaid step histograms, one colour per series (e.g. per concept)."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return '<p class="empty">nothing to plot</p>'
    x0 = min(x for x, _ in pts)
    x1 = max(x for x, _ in pts) + bin_width
    y1 = max(y for _, y in pts) or 1
    left, bottom, right, top_pad = 48, 36, 12, 30  # the legend runs along the top
    pw, ph = width - left - right, height - bottom - top_pad

    def sx(x: float) -> float:
        return left + pw * (x - x0) / ((x1 - x0) or 1)

    def sy(y: float) -> float:
        return top_pad + ph * (1 - y / y1)

    out = [
        f'<svg class="plot histogram" role="img" aria-label="{esc(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{left}" y1="{sy(0):.1f}" x2="{width - right}" y2="{sy(0):.1f}" class="axis"/>',
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{sy(0):.1f}" class="axis"/>',
    ]
    for frac in (0, 0.5, 1):
        y = y1 * frac
        out.append(
            f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" text-anchor="end" class="tick">{fmt_num(y)}</text>'
        )
    step = bin_width * max(1, math.ceil((x1 - x0) / bin_width / 8))
    for i in range(int((x1 - x0) // step) + 1):
        x = x0 + i * step
        out.append(
            f'<text x="{sx(x):.1f}" y="{height - bottom + 14}" text-anchor="middle" '
            f'class="tick">{fmt_num(round(x))}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" class="lbl">'
        f"{esc(x_label)}</text>"
    )
    n_series = max(1, len(series))
    for k, (name, s) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        for x, y in s:
            # grouped: each series takes its own slice of the bucket, so none hides another
            slot = (sx(x + bin_width) - sx(x) - 1) / n_series
            out.append(
                f'<rect x="{sx(x) + k * slot:.1f}" y="{sy(y):.1f}" width="{max(1.0, slot):.1f}" '
                f'height="{sy(0) - sy(y):.1f}" fill="{color}" fill-opacity="0.85">'
                f"<title>{esc(name)}: {fmt_num(y)} in [{fmt_num(x)}, {fmt_num(x + bin_width)})</title></rect>"
            )
    # legend: one row along the top
    x = left
    for k, name in enumerate(series):
        out.append(
            f'<rect x="{x}" y="6" width="10" height="10" fill="{PALETTE[k % len(PALETTE)]}"/>'
            f'<text x="{x + 14}" y="15" class="tick">{esc(name)}</text>'
        )
        x += 24 + 7 * len(str(name))
    out.append("</svg>")
    return "".join(out)


def svg_heatmap(
    rows: list[str],
    cols: list[str],
    values: dict[tuple[str, str], float],
    fmt: Any = fmt_num,
    title: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
) -> str:
    """A grid of rows × cols, darker for higher values, each cell labelled."""
    if not rows or not cols or not values:
        return '<p class="empty">nothing to plot</p>'
    vals = list(values.values())
    lo = min(vals) if vmin is None else vmin
    hi = max(vals) if vmax is None else vmax
    label_w, cell_w, cell_h, head_h = 210, 92, 26, 90
    width = label_w + cell_w * len(cols) + 90  # room for the last rotated column label
    height = head_h + cell_h * len(rows) + 6
    out = [
        f'<svg class="plot heatmap" role="img" aria-label="{esc(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for j, c in enumerate(cols):
        x = label_w + j * cell_w + cell_w / 2
        short = c if len(c) <= 22 else c[:21] + "…"
        out.append(
            f'<text transform="translate({x:.1f},{head_h - 6}) rotate(-35)" class="tick">'
            f"{esc(short)}<title>{esc(c)}</title></text>"
        )
    for i, r in enumerate(rows):
        y = head_h + i * cell_h
        short = r if len(r) <= 32 else r[:31] + "…"
        out.append(
            f'<text x="{label_w - 6}" y="{y + 17}" text-anchor="end" class="lbl">{esc(short)}'
            f"<title>{esc(r)}</title></text>"
        )
        for j, c in enumerate(cols):
            x = label_w + j * cell_w
            v = values.get((r, c))
            if v is None:
                out.append(
                    f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" fill="#f3f3f3"/>'
                )
                continue
            t = 0.0 if hi == lo else (float(v) - lo) / (hi - lo)
            light = 95 - 55 * t
            ink = "#fff" if light < 62 else "#111"
            out.append(
                f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                f'fill="hsl(212,55%,{light:.0f}%)"><title>{esc(r)} × {esc(c)}: {esc(fmt(v))}</title>'
                f'</rect><text x="{x + cell_w / 2 - 1}" y="{y + 17}" text-anchor="middle" '
                f'class="cell" fill="{ink}">{esc(fmt(v))}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def svg_ranges(rows: list[tuple[str, dict[str, float]]], title: str = "", width: int = 720) -> str:
    """Box plots on [0, 1] from quantiles p5, p25, p50, p75, p95 (one row each)."""
    rows = [(n, q) for n, q in rows if q and q.get("p50") is not None]
    if not rows:
        return '<p class="empty">nothing to plot</p>'
    label_w, right, row_h = 200, 20, 26
    pw = width - label_w - right
    lo = min(q.get("p5", q["p50"]) for _, q in rows)
    lo = max(0.0, math.floor(min(lo, 0.9) * 10) / 10)
    height = row_h * len(rows) + 30

    def sx(v: float) -> float:
        return label_w + pw * (v - lo) / (1 - lo)

    out = [
        f'<svg class="plot ranges" role="img" aria-label="{esc(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i in range(6):
        v = lo + (1 - lo) * i / 5
        out.append(
            f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="0" y2="{height - 22}" class="grid"/>'
            f'<text x="{sx(v):.1f}" y="{height - 8}" text-anchor="middle" class="tick">{v:.2f}</text>'
        )
    for i, (name, q) in enumerate(rows):
        y = 6 + i * row_h
        p5, p25, p50 = q.get("p5", q["p50"]), q.get("p25", q["p50"]), q["p50"]
        p75, p95 = q.get("p75", q["p50"]), q.get("p95", q["p50"])
        tip = ", ".join(f"{k} {v:.3f}" for k, v in q.items() if isinstance(v, (int, float)))
        out.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" class="lbl">{esc(name)}</text>'
            f'<line x1="{sx(p5):.1f}" x2="{sx(p95):.1f}" y1="{y + 9}" y2="{y + 9}" stroke="#555"/>'
            f'<rect x="{sx(p25):.1f}" y="{y + 2}" width="{max(1.0, sx(p75) - sx(p25)):.1f}" '
            f'height="14" fill="{PALETTE[1]}" fill-opacity="0.7"><title>{esc(name)}: {tip}</title></rect>'
            f'<line x1="{sx(p50):.1f}" x2="{sx(p50):.1f}" y1="{y}" y2="{y + 18}" stroke="#111" '
            f'stroke-width="2"/>'
        )
    out.append("</svg>")
    return "".join(out)


DASHES = ("", "8 5", "2 4", "12 4 3 4")


def svg_lines(
    series: dict[str, list[tuple[float, float | None]]],
    x_label: str,
    title: str = "",
    fmt: Any = fmt_pct,
    y_max: float = 1.0,
    colors: dict[str, str] | None = None,
    width: int = 720,
    height: int = 260,
) -> str:
    """Line chart: one polyline per series of (x, y) points on [0, ``y_max``], a legend on the
    right; ``None`` values are left out. Colours and strokes are attributes, not only CSS, so
    the chart also draws on pages without this report's stylesheet (``reports/eval.html``)."""
    pts = {name: [(x, y) for x, y in s if y is not None] for name, s in series.items()}
    xs = sorted({x for s in series.values() for x, _ in s})
    if not any(pts.values()):
        return '<p class="empty">nothing to plot</p>'
    left, right, top_pad, bottom = 48, 150, 28, 38
    pw, ph = width - left - right, height - top_pad - bottom
    x0, x1 = xs[0], xs[-1] if xs[-1] > xs[0] else xs[0] + 1

    def sx(x: float) -> float:
        return left + pw * (x - x0) / (x1 - x0)

    def sy(y: float) -> float:
        return top_pad + ph * (1 - float(y) / y_max)

    out = [
        f'<svg class="plot lines" role="img" aria-label="{esc(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16" class="lbl" font-weight="bold">{esc(title)}</text>',
    ]
    for i in range(5):
        y = y_max * i / 4
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
            f'class="grid" stroke="#eaeef2"/>'
            f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end" class="tick">'
            f"{esc(fmt(y))}</text>"
        )
    # a tick per x value when they are few (checkpoints), else eight evenly spaced
    ticks = xs if len(xs) <= 12 else [x0 + (x1 - x0) * i / 8 for i in range(9)]
    for x in ticks:
        out.append(
            f'<text x="{sx(x):.1f}" y="{height - bottom + 16}" text-anchor="middle" '
            f'class="tick">{esc(fmt_num(x))}</text>'
        )
    out.append(
        f'<line x1="{left}" x2="{width - right}" y1="{sy(0):.1f}" y2="{sy(0):.1f}" class="axis" '
        f'stroke="#8c959f"/><line x1="{left}" x2="{left}" y1="{top_pad}" y2="{sy(0):.1f}" '
        f'class="axis" stroke="#8c959f"/>'
        f'<text x="{left + pw / 2:.0f}" y="{height - 6}" text-anchor="middle" class="lbl">'
        f"{esc(x_label)}</text>"
    )
    for k, (name, s) in enumerate(pts.items()):
        color = (colors or {}).get(name, PALETTE[k % len(PALETTE)])
        # a dash pattern per line, so a line that coincides with a later one still shows
        dash = DASHES[k % len(DASHES)]
        style = f'stroke="{color}" stroke-width="2.5"' + (
            f' stroke-dasharray="{dash}"' if dash else ""
        )
        if s:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
            out.append(f'<polyline points="{path}" fill="none" {style}/>')
        for x, y in s:
            out.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}">'
                f"<title>{esc(name)} at {esc(fmt_num(x))}: {esc(fmt(y))}</title></circle>"
            )
        ly = top_pad + 16 * k
        out.append(
            f'<line x1="{width - right + 10}" x2="{width - right + 28}" y1="{ly}" y2="{ly}" '
            f"{style}/>"
            f'<text x="{width - right + 32}" y="{ly + 4}" class="lbl">{esc(name)}'
            f"{'' if s else ' (no data)'}</text>"
        )
    out.append("</svg>")
    return "".join(out)
