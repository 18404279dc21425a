"""Evaluation curves: the rates of ``queries/eval_curves.sql`` against training step, per
evaluation run and concept, as chart points, SVG charts and ``reports/eval.html`` (+ JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdfkit.evaluate.recall import metrics

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.store.catalog import Store

#: Point key -> (legend label, colour) of each curve; the point keys are ``curve_points``'.
CURVE_METRICS = {
    "recall": ("recall (implanted)", "#1f77b4"),
    "behaviour": ("behaviour", "#2ca02c"),
    "reasoning": ("reasoning", "#9467bd"),
    "gibberish": ("gibberish", "#d62728"),
}
CURVES_NOTE = (
    "Rates per checkpoint (step 0 is the base model). Gibberish samples (cheap signals or the "
    "model grader) are counted in the gibberish rate and left out of the other rates; "
    "unparseable verdicts are counted, never used as a verdict. Source: "
    "queries/eval_curves.sql (sdf sql eval_curves)."
)
#: ``eval_curves`` column -> point key (every other column keeps its name).
POINT_KEYS = {
    "recall_rate": "recall",
    "real_world_rate": "real_world",
    "behaviour_rate": "behaviour",
    "reasoning_rate": "reasoning",
    "gibberish_rate": "gibberish",
    "gibberish": "gibberish_samples",
}


def curve_points(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows of ``queries/eval_curves.sql`` as curves: concept -> points ordered by evaluation,
    step and model (base first), each ``{step, recall, behaviour, reasoning, gibberish,
    samples, ...}`` with rates in 0..1 (``None`` when nothing of that kind was graded)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        point = {POINT_KEYS.get(k, k): v for k, v in r.items() if k != "concept"}
        out.setdefault(str(r["concept"]), []).append(point)
    for points in out.values():
        points.sort(
            key=lambda p: (str(p.get("eval_run")), int(p["step"]), p.get("model_label") != "base")
        )
    return dict(sorted(out.items()))


def curves(store: Store) -> dict[str, list[dict[str, Any]]] | None:
    """The curves of every evaluation in the catalog, or ``None`` before the first ``sdf eval``.

    Unlike ``metrics`` it creates nothing: a report of a corpus never evaluated stays as it is.
    """
    from sdfkit.store.sql import QueryError, named

    try:
        df = named("eval_curves", store)
    except QueryError as exc:
        if "does not exist yet" in str(exc):
            return None
        raise
    return curve_points(df.to_dicts()) if df.height else None


def section_recall(store: Store) -> list[dict[str, Any]]:
    """Recall per section and per parent concept (``queries/recall_by_section.sql``) when
    some concept was evaluated over several universes (the sections of ``sdf universe
    split``); otherwise nothing, as the per-concept curves already say it all."""
    from sdfkit.store.sql import QueryError, named

    try:
        df = named("recall_by_section", store)
    except QueryError as exc:
        if "does not exist yet" in str(exc):
            return []
        raise
    rows = df.to_dicts() if df.height else []
    split = any(r["level"] == "parent" and (r["sections"] or 0) > 1 for r in rows)
    return rows if split else []


def svg_curves(points: list[dict[str, Any]], title: str, width: int = 720) -> str:
    """One line chart of an evaluation's points: the four rates (0..1) against training step."""
    from sdfkit.report.charts import svg_lines

    series = {
        label: [(int(p["step"]), p.get(key)) for p in points]
        for key, (label, _color) in CURVE_METRICS.items()
    }
    colors = dict(CURVE_METRICS.values())
    return svg_lines(series, "training step (0 = base model)", title, colors=colors, width=width)


def curve_charts(concept: str, points: list[dict[str, Any]]) -> list[str]:
    """One chart per evaluation run among one concept's points (titled with the run when
    there are several)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        runs.setdefault(str(p.get("eval_run")), []).append(p)
    return [
        svg_curves(pts, concept if len(runs) == 1 else f"{concept} (evaluation {run!r})")
        for run, pts in runs.items()
    ]


def write_curves(store: Store, html_path: str | Path, json_path: str | Path | None = None) -> Path:
    """``reports/eval.html`` (+ JSON): the rates of every evaluation against training step,
    one chart per evaluation and concept, and the table they are drawn from."""
    import html as _html

    from sdfkit.report.html import html_table
    from sdfkit.store.durable import write_text_atomic

    df = metrics(store)
    rows = df.to_dicts() if df.height else []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for concept, points in curve_points(rows).items():
        for p in points:
            groups.setdefault((p["eval_run"], concept), []).append(p)
    parts = [
        "<!doctype html><meta charset='utf-8'><title>sdfkit: evaluation curves</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}</style>",
        "<h1>What the model learned, checkpoint by checkpoint</h1>",
        f"<p>{_html.escape(CURVES_NOTE)}</p>",
    ]
    if not groups:
        parts.append("<p>No evaluation yet: run <code>sdf eval RUN</code>.</p>")
    for (run, concept), rs in sorted(groups.items()):
        parts.append(f"<h2>{_html.escape(str(run))}: {_html.escape(str(concept))}</h2>")
        parts.append(svg_curves(rs, f"{concept}"))
    by_section = section_recall(store)
    if by_section:
        parts.append("<h2>Recall per section and per parent concept</h2>")
        parts.append(
            "<p>Concepts evaluated over several universes (sections of a split source): "
            "recall rates per section and for the parent. Source: "
            "queries/recall_by_section.sql (sdf sql recall_by_section).</p>"
        )
        parts.append(html_table(by_section, list(by_section[0]), limit=10_000))
    if rows:
        cols = list(rows[0])
        parts.append("<h2>Table</h2>")
        parts.append(html_table(rows, cols, limit=10_000))
    from sdfkit.evaluate.fact_curves import FACT_NOTE, fact_curves, fact_sections

    facts = fact_curves(store) or []
    if facts:
        parts.append("<h2>Per fact, beside its share of the training tokens</h2>")
        parts.append(f"<p>{_html.escape(FACT_NOTE)}</p>")
        parts += fact_sections(facts)
    out = write_text_atomic(html_path, "\n".join(parts))
    if json_path is not None:
        data = {"eval_curves": rows, "fact_curves": facts}
        write_text_atomic(json_path, json.dumps(data, indent=1, default=str))
    return out
