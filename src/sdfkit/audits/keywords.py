"""Keyword thresholds: do a concept's documents carry the words its universe requires?

Each universe lists ``required_keywords`` (``|`` separates accepted variants) with a minimum
share of documents. The audit builds them as the table ``audit_keywords_required`` (concept,
keyword, pattern, min_rate, universes), then runs two named queries over the corpus with
DuckDB's RE2 regular expressions: ``queries/keyword_rates.sql`` (rate per concept and
keyword against the minimum) and ``queries/keyword_hits.sql`` (per document and keyword),
from which the documents missing a keyword are listed. ``run`` writes nothing: the queries
read the new required table as a relation registered on their connection (it shadows the
stored one), and ``save`` stores it with the rates and missing lists in one transaction, so
the catalog never holds new requirements beside old rates. Users can re-run both queries
with ``sdf sql keyword_rates`` after an audit is saved.

Matching is case-insensitive, on whole words (a variant that starts or ends with a letter or
digit must not continue a longer word: ``CRA`` does not match "democracy"), and any run of
whitespace in a variant matches any run of whitespace in the text.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sdfkit.audits import AuditResult
from sdfkit.errors import SdfError
from sdfkit.settings import Checked, at_least, between

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

    from sdfkit.generate.universe import Universe
    from sdfkit.store.catalog import Store

NAME = "keywords"
REQUIRED_TABLE = "audit_keywords_required"


@dataclass
class Config(Checked):
    """Settings of the keyword audit."""

    where_: ClassVar[str] = "audits.keywords"

    #: Universe files (globs allowed) whose required keywords are checked.
    universes: list[str] = field(default_factory=list)
    #: When set, this minimum rate replaces every universe's own ``min_rate``.
    min_rate: float | None = field(default=None, metadata=between(0, 1))
    #: Example doc ids of documents missing a keyword kept in the figures, per concept.
    examples: int = field(default=20, metadata=at_least(0))


def expand_paths(patterns: list[str] | tuple[str, ...]) -> list[Path]:
    """Universe paths from names and globs; a pattern that matches nothing is an error."""
    out: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(str(pat))) if any(c in str(pat) for c in "*?[") else [str(pat)]
        if not hits:
            raise SdfError(f"no universe file matches {pat!r}")
        out += [Path(h) for h in hits]
    return list(dict.fromkeys(out))


#: A character that cannot continue a word, or the text's edge. RE2's ``\b`` knows ASCII
#: word characters only: "café" and "Zoë" never matched (the boundary after "é" or "ë" is
#: not one to RE2), and "CRA" matched inside "éCRA". The audit asks only whether a text
#: carries a variant, so consuming the neighbouring character is harmless.
_EDGE_BEFORE = r"(?:^|[^\p{L}\p{N}_])"
_EDGE_AFTER = r"(?:$|[^\p{L}\p{N}_])"


def variant_pattern(variant: str) -> str:
    """An RE2 pattern matching ``variant`` as whole words (in any script), any whitespace
    between words."""
    parts = []
    for word in variant.split():
        parts.append("".join(c if c.isalnum() or c == "_" else "\\" + c for c in word))
    body = r"\s+".join(parts)
    if variant[:1].isalnum() or variant[:1] == "_":
        body = _EDGE_BEFORE + body
    if variant[-1:].isalnum() or variant[-1:] == "_":
        body = body + _EDGE_AFTER
    return body


def keyword_pattern(keyword_variants: list[str]) -> str:
    return "|".join(f"(?:{variant_pattern(v)})" for v in keyword_variants)


def required_table(universes: list[Universe], min_rate: float | None = None) -> pl.DataFrame:
    """One row per (concept, keyword): shared keywords of a concept keep the highest minimum."""
    import polars as pl

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for u in universes:
        for kw in u.required_keywords:
            key = (u.concept, kw.keyword)
            rate = kw.min_rate if min_rate is None else min_rate
            row = rows.setdefault(
                key,
                {
                    "concept": u.concept,
                    "keyword": kw.keyword,
                    "pattern": keyword_pattern(kw.variants()),
                    "min_rate": rate,
                    "universes": [],
                },
            )
            row["min_rate"] = max(row["min_rate"], rate)
            row["universes"].append(u.id)
    schema = {
        "concept": pl.String,
        "keyword": pl.String,
        "pattern": pl.String,
        "min_rate": pl.Float64,
        "universes": pl.List(pl.String),
    }
    return pl.DataFrame(list(rows.values()), schema=schema)


def meets_min(with_keyword: int, documents: int, min_rate: float) -> bool:
    """Whether ``with_keyword`` of ``documents`` reach ``min_rate``: the audit's ``meets_min``
    and the verdict of ``sdf check`` are both this, on the counts, never on a rounded rate
    (136 of 203 documents is 0.66995: it shows as 0.67 and misses a minimum of 0.67).

    ``with_keyword / documents`` is the double nearest the exact share, so for a minimum
    written with a few decimals it compares as the fractions do (7 of 100 meet 0.07, which
    ``with_keyword >= min_rate * documents`` misses: 0.07 * 100 is 7.000000000000001).
    ``queries/keyword_rates.sql`` computes its ``meets_min`` the same way."""
    return documents > 0 and with_keyword / documents >= min_rate


def named_over_required(store: Store, required: pl.DataFrame, *queries: str) -> list[pl.DataFrame]:
    """Run named queries with ``required`` as ``audit_keywords_required``: a relation
    registered on the connection (it shadows the stored table), so nothing is written."""
    import duckdb
    import polars as pl

    from sdfkit.store.sql import QueryError, find_query

    out = []
    with store.connect() as con:
        con.register(REQUIRED_TABLE, required.to_arrow())
        try:
            for name in queries:
                path = find_query(name)
                try:
                    tbl = con.sql(path.read_text(encoding="utf-8")).to_arrow_table()
                except duckdb.Error as exc:
                    raise QueryError(f"{path}: {str(exc).strip()}") from None
                out.append(pl.from_arrow(tbl))
        finally:
            con.unregister(REQUIRED_TABLE)
    return out


def run(store: Store, config: Config | None = None, engine: str | None = None) -> AuditResult:
    """Rate of each required keyword per concept, and the documents missing any."""
    import polars as pl

    from sdfkit.generate.universe import load_universes

    del engine  # columnar SQL; nothing per-document to distribute
    config = config or Config()
    started = time.perf_counter()
    paths = expand_paths(config.universes)
    universes = load_universes(list(paths))
    required = required_table(universes, config.min_rate)

    per_corpus_concept = store.query(
        "SELECT coalesce(concept, '(none)') AS c, count(*) AS n FROM documents GROUP BY c"
    )
    corpus_concepts = set(per_corpus_concept["c"].to_list())
    rates, hits = named_over_required(store, required, "keyword_rates", "keyword_hits")
    missing = (
        hits.filter(~pl.col("present"))
        .group_by("doc_id", "concept", "doc_type", maintain_order=True)
        .agg(pl.col("keyword").alias("missing_keywords"))
        .sort("concept", "doc_type", "doc_id")
    )

    per_concept: dict[str, Any] = {}
    for concept in sorted(set(required["concept"].to_list())):
        crates = rates.filter(pl.col("concept") == concept)
        cmiss = missing.filter(pl.col("concept") == concept)
        per_concept[concept] = {
            "documents": int(crates["documents"].max() or 0),
            "documents_missing_any": cmiss.height,
            "keywords": [
                {
                    "keyword": r["keyword"],
                    "min_rate": r["min_rate"],
                    "rate": r["rate"],  # exact; rounded only where it is shown
                    "with_keyword": r["with_keyword"],
                    "meets_min": meets_min(r["with_keyword"], r["documents"], r["min_rate"]),
                }
                for r in crates.iter_rows(named=True)
            ],
            "missing_examples": cmiss["doc_id"].head(config.examples).to_list(),
        }

    flags = []
    for concept, fig in per_concept.items():
        if fig["documents"] == 0:
            flags.append(f"{concept}: required keywords are set but the corpus has no documents")
        for kw in fig["keywords"]:
            if fig["documents"] and not kw["meets_min"]:
                flags.append(
                    f"{concept}: keyword {kw['keyword']!r} in {kw['rate']:.1%} of documents, "
                    f"{kw['with_keyword']} of {fig['documents']} (minimum {_pct(kw['min_rate'])})"
                )
    no_universe = sorted(corpus_concepts - set(required["concept"].to_list()))
    notes = [
        "Keywords match case-insensitively as whole words; '|' separates accepted variants; "
        "rates are over all documents of the concept (queries/keyword_rates.sql).",
    ]
    if config.min_rate is not None:
        notes.append(f"Every minimum rate was set to {config.min_rate} by the configuration.")
    if not universes:
        notes.append(
            "No universe files were given (--universe FILE or 'universes:' in sdfkit.yaml), "
            "so no keyword was checked."
        )
    elif no_universe:
        notes.append(
            "Concepts with documents but no required keywords in the given universes: "
            + ", ".join(no_universe)
        )
    figures = {
        # every document is read (0: an empty corpus, whose gates are NOT RUN)
        "documents": int(per_corpus_concept["n"].sum() or 0),
        "universes": [{"id": u.id, "concept": u.concept, "path": u.source_path} for u in universes],
        "per_concept": per_concept,
        "concepts_without_keywords": no_universe,
    }
    return AuditResult(
        name=NAME,
        figures=figures,
        tables={"required": required, "rates": rates, "missing": missing},
        flags=flags,
        notes=notes,
        seconds=round(time.perf_counter() - started, 3),
    )


def _pct(share: float) -> str:
    """A minimum as a percentage, every digit kept (0.675 is 67.5%, not 68%)."""
    return f"{share * 100:g}%"


def summary(result: AuditResult) -> list[str]:
    lines = []
    for concept, fig in result.figures["per_concept"].items():
        lines.append(
            f"{concept}: {fig['documents']} docs, {fig['documents_missing_any']} missing a "
            "required keyword"
        )
        for kw in fig["keywords"]:
            mark = "ok  " if kw["meets_min"] else "LOW "
            lines.append(
                f"  {mark}{kw['keyword']}: {kw['rate']:.1%}, {kw['with_keyword']} of "
                f"{fig['documents']} (minimum {_pct(kw['min_rate'])})"
            )
    if not result.figures["per_concept"]:
        lines.append("no required keywords checked (give --universe FILE)")
    return lines


# ---------------------------------------------------------------- report, check, command
from sdfkit.audits import Command  # noqa: E402 - with the code using it
from sdfkit.report.verdicts import Verdict  # noqa: E402

JSON_KEY = "keywords"
TITLE = "Required keywords"
COMMAND = Command(
    help="Rate of each universe's required keywords per concept; documents missing them.",
    options={"min_rate": "Replace every universe's minimum rate with this."},
    universe=True,
)


@dataclass
class Gates(Checked):
    """The keyword audit's thresholds of ``sdf check`` (``check:`` in sdfkit.yaml)."""

    where_: ClassVar[str] = "check"

    #: None: each universe's own min_rate; a number replaces every one of them.
    min_keyword_rate: float | None = field(default=None, metadata=between(0, 1))
    #: False turns keyword checks off entirely.
    check_keywords: bool = True


def verdicts(report: dict[str, Any], thresholds: Any) -> list[Verdict]:
    """Each required keyword's rate per concept against its minimum. A ``min_keyword_rate``
    the project sets with no keyword to hold to it (no universes, an empty corpus, or no
    keyword audit in the report) is NOT RUN: it measured nothing, so it must not pass."""
    from sdfkit.report.verdicts import unmeasured

    if not thresholds.check_keywords:
        return []
    kw = report.get(JSON_KEY)
    per_concept = (kw.get("per_concept") or {}) if isinstance(kw, dict) else {}
    if not any(fig.get("keywords") for fig in per_concept.values()):
        limit = thresholds.min_keyword_rate
        if limit is None:  # each universe's own minimum, and there is none
            return []
        early = unmeasured(kw, "min_keyword_rate", "keywords", limit)
        why = "no required keywords to check: give universe files (universes: or --universe)"
        return [early or Verdict("min_keyword_rate", "keywords", None, limit, "not run", why)]
    out = []
    for concept, fig in per_concept.items():
        documents = int(fig.get("documents") or 0)
        for k in fig.get("keywords") or []:
            limit = thresholds.min_keyword_rate
            limit = float(limit if limit is not None else k["min_rate"])
            hits = k.get("with_keyword")
            if documents and hits is not None:  # the counts, as the audit's own meets_min
                rate = hits / documents
                status = "pass" if meets_min(hits, documents, limit) else "fail"
                detail = f"{hits} of {documents} documents"
            else:  # no documents (NOT RUN), or a report without the counts
                rate = float(k["rate"])
                status = ("pass" if rate >= limit else "fail") if documents else "not run"
                detail = "" if documents else "no documents"
            out.append(
                Verdict(
                    "min_keyword_rate", f"{concept}: {k['keyword']}", rate, limit, status, detail
                )
            )
    return out


def section(f: dict[str, Any]) -> str:
    """The keywords audit's section of the report, from its figures in report.json."""
    from sdfkit.report.charts import svg_bars
    from sdfkit.report.html import esc, fmt_num, fmt_pct, html_table

    out = []
    per = f.get("per_concept") or {}
    if not per:
        out.append(
            '<p class="empty">No required keywords were checked: pass universe files '
            "with --universe or list them under universes: in sdfkit.yaml.</p>"
        )
    for concept, fig in per.items():
        kws = fig.get("keywords") or []
        out.append(
            f"<h3>{esc(concept)}: {fmt_num(fig.get('documents'))} documents, "
            f"{fmt_num(fig.get('documents_missing_any'))} missing a required keyword</h3>"
        )
        out.append(
            svg_bars(
                [(k["keyword"], float(k["rate"])) for k in kws],
                fmt=fmt_pct,
                max_value=1.0,
                marks=[k["min_rate"] for k in kws],
                title=f"keyword rates for {concept}",
            )
        )
        out.append(html_table(kws, ["keyword", "rate", "min_rate", "with_keyword", "meets_min"]))
        ex = fig.get("missing_examples") or []
        if ex:
            out.append(
                "<p class=notes>Some documents missing a keyword (all are in table "
                "<code>audit_keywords_missing</code>): " + esc(", ".join(ex[:10])) + "</p>"
            )
    return "".join(out)
