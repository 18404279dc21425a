"""HTML pieces every page of sdfkit shares: escaping, number formats, tables, the stylesheet,
and writing a page whole (the report, ``reports/eval.html``, the sweep page, universe files).

Nothing here knows an audit or an evaluation, so any stage may import it without a cycle.
"""

from __future__ import annotations

import html
import math
from typing import Any


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt_num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value.is_integer() and abs(value) >= 1:
            return f"{int(value):,}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{digits - 1}f}"
    return str(value)


def fmt_pct(value: Any) -> str:
    return "–" if value is None else f"{float(value):.1%}"


def html_table(
    rows: list[dict[str, Any]], columns: list[str] | None = None, limit: int = 50
) -> str:
    if not rows:
        return '<p class="empty">no rows</p>'
    columns = columns or list(rows[0])
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for r in rows[:limit]:
        cells = []
        for c in columns:
            v = r.get(c)
            if isinstance(v, (list, tuple)):
                v = ", ".join(str(x) for x in v)
            cls = ' class="n"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{esc(fmt_num(v) if cls else ('' if v is None else v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="more">showing {limit} of {len(rows):,} rows</p>' if len(rows) > limit else ""
    return (
        f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
        f"</table></div>{more}"
    )


CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;margin:0;background:#fafafa}
main{max-width:1080px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:21px;border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:40px}
h3{font-size:16px;margin:22px 0 8px}.meta{color:#59636e;font-size:13px}
nav a{margin-right:14px}table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.pass{background:#1a7f37}.fail{background:#cf222e}.notrun{background:#6e7781}
.status-ok{color:#1a7f37}.status-failed,.status-not-available{color:#cf222e}.status-skipped{color:#6e7781}
ul.flags li{color:#9a3412}.notes{color:#444;font-size:13px}.empty,.more{color:#6e7781;font-size:13px}
svg.plot{display:block;margin:6px 0 14px;max-width:100%;height:auto}
svg .lbl{font-size:12px;fill:#1f2328}svg .val,svg .tick{font-size:11px;fill:#57606a}
svg .thr{font-size:11px;fill:#cf222e}svg .cell{font-size:11px}svg .axis{stroke:#8c959f}
svg .grid{stroke:#eaeef2}pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px}
.summary-line{font-size:17px;margin:10px 0}.tw{overflow-x:auto;max-width:100%}
"""
