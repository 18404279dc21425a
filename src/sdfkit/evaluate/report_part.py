"""The evaluation part of ``sdf report``: the curves of ``sdf eval`` per concept, recall per
fact and capability changes, as report.json keys, an HTML section and the
``max_capability_drop`` gate of ``sdf check``.

The report finds this module by name in ``sdfkit.report.parts.PARTS``, so the report imports
no evaluation code and evaluation imports only the report's HTML, chart and verdict helpers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from sdfkit.report.html import esc, html_table
from sdfkit.report.verdicts import Verdict, as_float, max_verdict
from sdfkit.settings import Checked, between

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.store.catalog import Store

#: Anchor and navigation label of the section.
ANCHOR, LABEL = "evaluation", "Evaluation"


def add(store: Store, data: dict[str, Any]) -> None:
    """``evaluation``: the curves of ``sdf eval`` (``queries/eval_curves.sql``), per concept;
    ``capabilities`` (``queries/capability_changes.sql``) and ``fact_curves``
    (``queries/fact_curves.sql``, after an evaluation); each absent when never run. A broken
    query (a user's edited copy) is reported in ``<part>_error`` rather than losing the audits
    or the other parts."""
    from sdfkit.errors import SdfError
    from sdfkit.evaluate.capabilities import changes
    from sdfkit.evaluate.curves import curves
    from sdfkit.evaluate.fact_curves import fact_curves

    parts = [("evaluation", curves), ("capabilities", changes), ("fact_curves", fact_curves)]
    for key, fn in parts:
        if key == "fact_curves" and "evaluation" not in data:  # needs sdf eval's tables
            continue
        try:
            rows = fn(store)
        except SdfError as exc:
            data[f"{key}_error"] = str(exc)
            continue
        if rows:
            data[key] = rows


def present(report: dict[str, Any]) -> bool:
    """The report holds something of an evaluation (its section and link are drawn)."""
    keys = ("evaluation", "evaluation_error", "capabilities", "capabilities_error", "fact_curves")
    return any(k in report for k in keys)


EVAL_COLUMNS = [
    "eval_run", "model_label", "step", "samples", "recall", "real_world", "behaviour",
    "reasoning", "gibberish", "gibberish_samples", "unparseable",
]  # fmt: skip


def section(report: dict[str, Any]) -> str:
    """Curves of recall, behaviour, reasoning and gibberish against training step, per concept
    (the same charts as ``reports/eval.html``), each with its table."""
    from sdfkit.evaluate.curves import CURVES_NOTE, curve_charts

    out = ['<section id="evaluation"><h2>Evaluation: what the model learned, by checkpoint</h2>']
    if "evaluation_error" in report:
        out.append(f'<p class="empty">could not be computed: {esc(report["evaluation_error"])}</p>')
    out.append(f'<p class="notes">{esc(CURVES_NOTE)}</p>')
    for concept, points in (report.get("evaluation") or {}).items():
        out.append(f"<h3>{esc(concept)}</h3>")
        out += curve_charts(concept, points)
        cols = [c for c in EVAL_COLUMNS if any(c in p for p in points)]
        out.append(html_table(points, cols, limit=200))
    facts = report.get("fact_curves")
    if facts or "fact_curves_error" in report:
        from sdfkit.evaluate.fact_curves import FACT_NOTE, fact_sections

        out.append(f'<p class="notes">{esc(FACT_NOTE)}</p>')
        if "fact_curves_error" in report:
            err = report["fact_curves_error"]
            out.append(f'<p class="empty">could not be computed: {esc(err)}</p>')
        out += fact_sections(facts or [])
    caps = report.get("capabilities")
    if caps or "capabilities_error" in report:
        out.append("<h3>Capability regression: change against the base model</h3>")
        out.append(f'<p class="notes">{esc(CAPABILITY_NOTE)}</p>')
        if "capabilities_error" in report:
            err = report["capabilities_error"]
            out.append(f'<p class="empty">could not be computed: {esc(err)}</p>')
        if caps:
            out.append(html_table(caps, [c for c in CAPABILITY_COLUMNS if c in caps[0]], 500))
    out.append("</section>")
    return "\n".join(out)


CAPABILITY_NOTE = (
    "Benchmarks run by `sdf eval RUN --capabilities` (inspect-ai tasks served by Tinker "
    "sampling); change = checkpoint - base model, with the standard error of the difference. "
    "Source: queries/capability_changes.sql (sdf sql capability_changes)."
)
CAPABILITY_COLUMNS = [
    "run", "task", "metric", "step", "model_label", "samples", "value", "stderr",
    "base_value", "change", "change_stderr",
]  # fmt: skip


@dataclass
class Gates(Checked):
    """The evaluation's threshold of ``sdf check`` (``check:`` in sdfkit.yaml)."""

    where_: ClassVar[str] = "check"

    #: ``sdf eval --capabilities``: how far any checkpoint's benchmark score may fall below
    #: the base model's (metrics are read as higher-is-better, e.g. accuracy).
    max_capability_drop: float | None = field(default=None, metadata=between(0, 1))


def verdicts(report: dict[str, Any], thresholds: Any) -> list[Verdict]:
    """One verdict per checkpoint, task and metric: its drop below the base model."""
    limit = thresholds.max_capability_drop
    if limit is None:
        return []
    caps, error = report.get("capabilities"), report.get("capabilities_error")
    name = "max_capability_drop"
    if not isinstance(caps, list):
        why = "no capability scores in the report: run `sdf eval RUN --capabilities TASKS`"
        if error:
            why = f"capability changes could not be computed: {error}"
        return [Verdict(name, "capabilities", None, limit, "not run", why)]
    out = []
    for r in caps:
        if r.get("model_label") == "base":
            continue
        subject = f"{r.get('run')} step {r.get('step')}: {r.get('task')} {r.get('metric')}"
        change = as_float(r.get("change"))
        if change is None:
            why = "no base-model score to compare with (evaluate the base model too)"
            out.append(Verdict(name, subject, None, limit, "not run", why))
            continue
        se = as_float(r.get("change_stderr"))
        detail = f"{r.get('value')} vs base {r.get('base_value')}" + (
            f", stderr of the change {se:.3g}" if se is not None else ""
        )
        out.append(max_verdict(name, subject, -change, limit, detail))
    if not out:  # only the base model was evaluated: no drop was measured, none may pass
        why = "no checkpoint scores to compare with the base model's: evaluate a checkpoint"
        out.append(Verdict(name, "capabilities", None, limit, "not run", why))
    return out
