"""Shape of the corpus: documents, tokens and lengths per concept × doc type, grader verdicts.

Every figure comes from a named query a user can read and edit, run by the same code path
as ``sdf sql NAME``: ``queries/shape_by_concept_doc_type.sql`` (the strata),
``queries/shape_by_concept.sql`` (concept totals) and ``queries/length_histogram.sql``
(documents per 250-token bucket), ``queries/length_vs_target.sql`` (words achieved against
the ``target_words`` each generated document was asked for). Grader columns stay empty until a grading run stored
verdicts (the ``grades`` table; the newest verdict of a document counts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from sdfkit.audits import AuditResult
from sdfkit.settings import Checked, at_least, between

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.store.catalog import Store

NAME = "shape"


@dataclass
class Config(Checked):
    """Settings of the shape audit."""

    where_: ClassVar[str] = "audits.shape"

    #: A stratum holding less than this share of its concept's documents is flagged.
    min_stratum_share: float = field(default=0.02, metadata=between(0, 1))
    #: Documents shorter than this many tokens are flagged as stubs.
    min_tokens: int = field(default=50, metadata=at_least(0))


def run(store: Store, config: Config | None = None, engine: str | None = None) -> AuditResult:
    """Documents, tokens and length quantiles per concept and per concept × doc type."""
    import polars as pl

    from sdfkit.store.sql import named

    del engine  # one SQL pass over the corpus
    config = config or Config()
    started = time.perf_counter()
    strata = named("shape_by_concept_doc_type", store)
    concepts = named("shape_by_concept", store)
    vs_target = named("length_vs_target", store)
    hist = named("length_histogram", store).with_columns(pl.col("concept").fill_null("(none)"))

    per_concept = {r.pop("concept"): r for r in concepts.iter_rows(named=True)}
    histogram = {
        c: [{"bucket_start": r["bucket_start"], "documents": r["documents"]} for r in g.to_dicts()]
        for (c,), g in hist.group_by("concept", maintain_order=True)
    }
    total_docs = int(concepts["documents"].sum() or 0)
    total_tokens = int(concepts["tokens"].sum() or 0)
    graded = int(strata["graded"].sum() or 0) if strata.height else 0
    passed = int(strata["grade_passed"].sum() or 0) if strata.height else 0
    figures: dict[str, Any] = {
        "documents": total_docs,
        "tokens": total_tokens,
        "graded": graded,
        "grade_pass_rate": round(passed / graded, 4) if graded else None,
        "per_concept": per_concept,
        "per_concept_doc_type": strata.to_dicts(),
        "length_histogram": histogram,
        # achieved words against the words each document was asked for (generated ones)
        "length_vs_target": vs_target.to_dicts(),
    }

    flags = []
    for r in strata.iter_rows(named=True):
        share = r["documents"] / per_concept[r["concept"]]["documents"]
        if share < config.min_stratum_share:
            flags.append(
                f"{r['concept']} × {r['doc_type']}: only {r['documents']} documents "
                f"({share:.1%} of the concept)"
            )
        if r["min_tokens"] is not None and r["min_tokens"] < config.min_tokens:
            flags.append(
                f"{r['concept']} × {r['doc_type']}: shortest document has {r['min_tokens']} "
                f"tokens (under {config.min_tokens})"
            )
    for r in vs_target.iter_rows(named=True):
        ratio = r["median_achieved_ratio"]
        if r["with_target"] and ratio is not None and not 0.5 <= ratio <= 1.5:
            flags.append(
                f"{r['concept']} × {r['doc_type']}: documents reach {ratio:.0%} of the words "
                f"asked (median {r['median_words']} of {r['median_target_words']})"
            )
    notes = [
        "Tokens are each document's n_tokens under the tokenizer it was stored with; "
        "tables come from queries/shape_by_concept_doc_type.sql, shape_by_concept.sql and "
        "length_histogram.sql.",
    ]
    if not graded:
        notes.append("No grader verdicts are stored yet: the grade columns are empty.")
    return AuditResult(
        name=NAME,
        figures=figures,
        tables={"strata": strata, "concepts": concepts, "length_vs_target": vs_target},
        flags=flags,
        notes=notes,
        seconds=round(time.perf_counter() - started, 3),
    )


def summary(result: AuditResult) -> list[str]:
    f = result.figures
    lines = [f"{f['documents']:,} documents, {f['tokens']:,} tokens"]
    if f["graded"]:
        lines.append(f"graded {f['graded']:,}, pass rate {f['grade_pass_rate']:.1%}")
    for concept, c in f["per_concept"].items():
        lines.append(
            f"{concept}: {c['documents']:,} docs, {c['tokens']:,} tokens, median "
            f"{c['median_tokens']} tokens, {c['doc_types']} doc types"
        )
    return lines


# ---------------------------------------------------------------- report, check, command
from sdfkit.audits import Command  # noqa: E402 - with the code using it
from sdfkit.report.verdicts import Verdict  # noqa: E402

JSON_KEY = "shape"
TITLE = "Shape: documents, tokens and lengths"
COMMAND = Command(help="Documents, tokens and lengths per concept × doc type; grader verdicts.")
#: No threshold of ``sdf check`` reads the shape audit.
Gates = None


def verdicts(report: dict[str, Any], thresholds: Any) -> list[Verdict]:
    return []


def section(f: dict[str, Any]) -> str:
    """The shape audit's section of the report, from its figures in report.json."""
    from sdfkit.report.charts import svg_heatmap, svg_histogram
    from sdfkit.report.html import fmt_num, fmt_pct, html_table

    out = [
        f'<p class="summary-line">{fmt_num(f.get("documents"))} documents, '
        f"{fmt_num(f.get('tokens'))} tokens"
        + (
            f"; grader pass rate {fmt_pct(f['grade_pass_rate'])} of {fmt_num(f['graded'])} graded"
            if f.get("graded")
            else "; no grader verdicts yet"
        )
        + "</p>"
    ]
    concepts = [{"concept": c} | v for c, v in (f.get("per_concept") or {}).items()]
    out.append("<h3>Per concept</h3>" + html_table(concepts))
    strata = f.get("per_concept_doc_type") or []
    # doc types down (there are many), concepts across (there are few)
    rows = sorted({r["doc_type"] for r in strata})
    cols = sorted({r["concept"] for r in strata})
    out.append("<h3>Documents per concept × doc type</h3>")
    out.append(
        svg_heatmap(
            rows,
            cols,
            {(r["doc_type"], r["concept"]): r["documents"] for r in strata},
            title="documents per doc type and concept",
        )
    )
    out.append("<h3>Median tokens per concept × doc type</h3>")
    out.append(
        svg_heatmap(
            rows,
            cols,
            {(r["doc_type"], r["concept"]): r["median_tokens"] for r in strata},
            title="median tokens per doc type and concept",
        )
    )
    if any(r.get("graded") for r in strata):
        out.append("<h3>Grader pass rate per concept × doc type</h3>")
        out.append(
            svg_heatmap(
                rows,
                cols,
                {(r["doc_type"], r["concept"]): r["pass_rate"] for r in strata if r.get("graded")},
                fmt=fmt_pct,
                vmin=0,
                vmax=1,
                title="grader pass rate",
            )
        )
    hist = f.get("length_histogram") or {}
    out.append("<h3>Length distribution (documents per 250 tokens)</h3>")
    out.append(
        svg_histogram(
            {c: [(b["bucket_start"], b["documents"]) for b in bins] for c, bins in hist.items()},
            250,
            "tokens per document",
            title="length histogram",
        )
    )
    vs = [r for r in f.get("length_vs_target") or [] if r.get("with_target")]
    if vs:
        out.append(
            "<h3>Length achieved against the target, per concept × doc type (words)</h3>"
            + html_table(
                vs,
                [
                    "concept",
                    "doc_type",
                    "documents",
                    "target_min",
                    "target_max",
                    "median_target_words",
                    "median_words",
                    "median_achieved_ratio",
                    "median_tokens",
                ],  # fmt: skip
                limit=80,
            )
        )
    out.append("<h3>Strata</h3>" + html_table(strata, limit=80))
    return "".join(out)
