"""Curves joined with the corpus: recall and belief depth per fact against training step,
beside each fact's share of the tokens in the export that trained the run.

A fact that was barely learned is often a fact that was barely trained on. The export's shards
name the ``doc_id`` of every example; joined with ``documents`` they give the tokens per
universe and fact (``export_fact_tokens``, computed once per training run: an export never
changes). ``queries/fact_curves.sql`` joins them with the recall verdicts (and the belief-depth
verdicts of ``--belief``) per evaluation, checkpoint and fact; ``sdf eval`` draws them in
``reports/eval.html`` and ``sdf report`` adds them to its evaluation section and to
``report.json`` (``fact_curves``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.store.catalog import Store

FACT_TOKENS_TABLE = """CREATE TABLE IF NOT EXISTS export_fact_tokens (
    run VARCHAR, export_dir VARCHAR, source VARCHAR, universe VARCHAR, fact VARCHAR,
    documents BIGINT, examples BIGINT, tokens BIGINT, loss_tokens DOUBLE, token_share DOUBLE,
    loss_token_share DOUBLE)"""


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def fact_tokens(store: Store, export_dir: str | Path) -> list[dict[str, Any]]:
    """Tokens per source, universe and fact of an export (every epoch counted: the tokens
    the run trained on), with their share of all the export's tokens."""
    from sdfkit.export.verify import read_manifest

    path = Path(export_dir)
    manifest = read_manifest(path)
    files = [str((path / str(s["file"])).resolve()) for s in manifest["shards"]]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(missing[0])
    src = f"read_parquet([{', '.join(_sql_str(f) for f in files)}])"
    df = store.query(
        f"""WITH x AS (SELECT doc_id, source, len(tokens) AS n, list_sum(weights) AS w FROM {src}),
        d AS (SELECT doc_id, any_value(universe) AS universe, any_value(fact) AS fact
              FROM documents GROUP BY doc_id)
        SELECT x.source, d.universe, d.fact, count(DISTINCT x.doc_id) AS documents,
               count(*) AS examples, sum(x.n)::BIGINT AS tokens, sum(x.w)::DOUBLE AS loss_tokens
        FROM x LEFT JOIN d USING (doc_id) GROUP BY ALL ORDER BY ALL"""
    )
    rows = df.to_dicts()
    total = sum(r["tokens"] or 0 for r in rows) or 1
    total_loss = sum(r["loss_tokens"] or 0.0 for r in rows) or 1.0
    for r in rows:
        r["token_share"] = round((r["tokens"] or 0) / total, 6)
        r["loss_token_share"] = round((r["loss_tokens"] or 0.0) / total_loss, 6)
    return rows


def ensure_tables(con: Any) -> None:
    """Create ``export_fact_tokens`` on an open catalog connection (if missing)."""
    con.execute(FACT_TOKENS_TABLE)


def ensure_fact_tokens(store: Store, log: Callable[[str], None] | None = None) -> int:
    """``export_fact_tokens`` for every training run that lacks it; returns runs added. A run
    whose export is no longer where it was trained from is skipped (said in ``log``)."""
    import pyarrow as pa

    from sdfkit.train.run import train_catalog

    say = log or (lambda _m: None)
    with train_catalog(store) as con:
        ensure_tables(con)
        have = {r[0] for r in con.execute("SELECT DISTINCT run FROM export_fact_tokens").fetchall()}
        runs = con.execute("SELECT run, export_dir FROM train_runs ORDER BY run").fetchall()
    added = 0
    for run, export_dir in runs:
        if run in have or not export_dir:
            continue
        try:
            rows = fact_tokens(store, export_dir)
        except (OSError, ValueError) as exc:  # moved or deleted export: no shares for this run
            say(f"run {run}: token shares per fact not computed ({export_dir}: {exc})")
            continue
        for r in rows:
            r.update(run=run, export_dir=str(export_dir))
        if not rows:
            continue
        tbl = pa.table({k: [r[k] for r in rows] for k in rows[0]})
        with train_catalog(store) as con:
            ensure_tables(con)
            con.register("_incoming_fact_tokens", tbl)
            con.execute("BEGIN")
            con.execute("DELETE FROM export_fact_tokens WHERE run = ?", [run])
            con.execute(
                "INSERT INTO export_fact_tokens BY NAME SELECT * FROM _incoming_fact_tokens"
            )
            con.execute("COMMIT")
            con.unregister("_incoming_fact_tokens")
        added += 1
    return added


def fact_curves(
    store: Store, log: Callable[[str], None] | None = None
) -> list[dict[str, Any]] | None:
    """Rows of ``queries/fact_curves.sql`` (``None`` before the first ``sdf eval``)."""
    from sdfkit.store.sql import named
    from sdfkit.train.run import train_catalog

    with train_catalog(store) as con:
        if not con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'eval_samples'"
        ).fetchall()[0][0]:
            return None
    prepare(store, log)
    df = named("fact_curves", store)
    return df.to_dicts() if df.height else None


def prepare(store: Store, log: Callable[[str], None] | None = None) -> None:
    """The tables ``queries/fact_curves.sql`` reads: the evaluation and belief tables (empty
    when never used) and ``export_fact_tokens``; run at the end of every evaluation."""
    from sdfkit.evaluate import belief, recall
    from sdfkit.train.run import train_catalog

    with train_catalog(store) as con:
        recall.ensure_tables(con)
        belief.ensure_tables(con)
    ensure_fact_tokens(store, log)


def svg_fact_curves(rows: list[dict[str, Any]], title: str, width: int = 720) -> str:
    """Recall per fact against step, one line per fact, its token share in the legend."""
    from sdfkit.report.charts import svg_lines

    series: dict[str, list[tuple[float, float | None]]] = {}
    for r in sorted(rows, key=lambda r: (r["fact_index"] or 0, r["step"])):
        share = r.get("token_share")
        label = f"fact {r['fact_index']}" + (
            f" ({share:.1%} of tokens)" if share is not None else ""
        )
        series.setdefault(label, []).append((int(r["step"]), r.get("recall_rate")))
    return svg_lines(series, "training step (0 = base model)", title, width=width)


def fact_sections(rows: list[dict[str, Any]]) -> list[str]:
    """HTML: per evaluation and concept, the recall-per-fact chart and its table."""
    import html as _html

    from sdfkit.report.html import html_table

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r["eval_run"]), str(r["concept"])), []).append(r)
    out = []
    cols = [
        "fact_index", "step", "model_label", "recall_rate", "recall_graded", "mcq_implanted",
        "open_implanted", "adversarial_implanted", "pushback_implanted", "token_share",
        "loss_token_share", "documents", "fact",
    ]  # fmt: skip
    for (run, concept), rs in sorted(groups.items()):
        out.append(f"<h3>Per fact: {_html.escape(run)}: {_html.escape(concept)}</h3>")
        out.append(svg_fact_curves(rs, f"{concept}: recall per fact"))
        out.append(html_table(rs, [c for c in cols if c in rs[0]], limit=500))
    return out


FACT_NOTE = (
    "Recall (and, with sdf eval --belief, the plain multiple-choice and open-ended, adversarial "
    "and pushback implanted rates) per fact against training step, beside the fact's share of "
    "the tokens of the export that trained the run (token_share; loss_token_share counts only "
    "tokens with loss weight). A low share next to a flat curve says the fact was "
    "underweighted. Source: queries/fact_curves.sql (sdf sql fact_curves)."
)
