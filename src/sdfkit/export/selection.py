"""Balanced sub-selection: hit a document AND a token target per concept, keep doc-type mix.

The intended workflow is generate-many-then-select: generate several times more documents
than you will train on, audit them (near-duplicates, failed grades and SQL exclusions land in
the ``excluded`` column of ``documents``), then select an exactly balanced subset.

For each concept the document target is split over its doc types by largest remainder in
proportion to the eligible pool, so the doc-type distribution survives (each share within
1/target of the pool's). Each concept × doc-type stratum starts from a seeded random sample
of its quota; when a token target is set, swaps inside each stratum (a selected document for
an unselected one of the same stratum) bring first each stratum to its token share and then
the concept to its total, so document counts stay exact while tokens land within the
tolerance. Swaps are small at first (at most one standard deviation of the stratum's length)
so the selection keeps the pool's length distribution rather than picking outliers.

A target that cannot be met is an error naming the short concept and stratum and by how much
(``allow_short=True`` keeps what is possible and records the shortfall). Selections are stored
by name in the catalog: ``selections`` (one row per selected document), ``selection_runs``
(config and report) and ``selection_strata`` (achieved vs target per stratum), so they can be
queried, diffed and exported.
"""

from __future__ import annotations

import bisect
import json
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from sdfkit.errors import SdfError
from sdfkit.store.catalog import Store

SELECTION_TABLES = [
    """CREATE TABLE IF NOT EXISTS selections (
        name VARCHAR, doc_id VARCHAR, concept VARCHAR, doc_type VARCHAR, n_tokens BIGINT,
        universe VARCHAR, PRIMARY KEY (name, doc_id))""",
    """CREATE TABLE IF NOT EXISTS selection_runs (
        name VARCHAR PRIMARY KEY, created_at TIMESTAMPTZ, seed BIGINT, status VARCHAR,
        docs BIGINT, tokens BIGINT, tokenizer VARCHAR, config VARCHAR, report VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS selection_strata (
        name VARCHAR, concept VARCHAR, doc_type VARCHAR, pool_docs BIGINT, pool_tokens BIGINT,
        pool_share DOUBLE, target_docs BIGINT, docs BIGINT, share DOUBLE,
        target_tokens BIGINT, tokens BIGINT, short_docs BIGINT, short_tokens BIGINT)""",
]
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
NO_DOC_TYPE = "(none)"
#: What the targets are per: the concept, or the section (universe) of a split source.
BALANCE_BY = ("concept", "section")
#: The largest seed: the generators are seeded with 32-bit words, so 2**32 would sample as 0.
SEED_MAX = 2**32 - 1


class SelectionError(SdfError, ValueError):
    """The selection could not be made as asked; the message says which target and why."""


class SelectionShortError(SelectionError):
    """A target cannot be met by the eligible pool; nothing was stored."""

    def __init__(self, message: str, report: SelectionReport):
        super().__init__(message)
        self.report = report


# ---------------------------------------------------------------- config


#: A count as written: digits with commas only between groups of three (``5,100,000``; a
#: comma is a decimal mark in many locales, so ``5,1M`` must not read as 51M) or underscores
#: between digits (``5_100_000``), an optional fraction, an optional k/M/B suffix.
COUNT = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+(?:_\d+)*)(\.\d+)?([kKmMbBgG]?)")


def check_seed(seed: Any, error: type[SdfError] = SelectionError) -> None:
    """A seed of ``sdf select`` or ``sdf export``: a whole number in [0, 2**32 - 1]. Past it,
    the seed would wrap round (4294967296 gave seed 0's shards under its own name)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise error(
            f"seed {seed!r}: must be a whole number from 0 to {SEED_MAX} (2**32 - 1)",
            settings=("seed",),
        )


def parse_count(text: str | int | None, what: str = "count") -> int | None:
    """``5.1M`` -> 5_100_000; also ``20k``, ``2.5B``, ``5_100_000``, ``5,100,000``.

    A count is a target, so it is at least 1: 0 would silently mean "no target"."""
    if text is None:
        return None
    if isinstance(text, int):
        value = text
    else:
        m = COUNT.fullmatch(str(text).strip())
        if not m:
            raise SelectionError(
                f"{what} {text!r}: expected a number like 2400, 2,400, 20k or 5.1M"
            )
        digits = m.group(1).replace(",", "").replace("_", "") + (m.group(2) or "")
        mult = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}[m.group(3).lower()]
        exact = float(digits) * mult
        if exact != int(exact) and mult == 1:
            raise SelectionError(f"{what} {text!r}: must be a whole number")
        value = int(round(exact))
    if value < 1:
        raise SelectionError(f"{what} {text!r}: must be at least 1")
    return value


@dataclass
class ConceptTarget:
    docs: int
    tokens: int | None = None


def parse_concept_targets(items: list[str] | None) -> dict[str, ConceptTarget]:
    """``CONCEPT=DOCS[:TOKENS]`` items (``--concept-target eu=2400:5.1M``)."""
    out: dict[str, ConceptTarget] = {}
    for item in items or []:
        concept, eq, spec = item.partition("=")
        concept = concept.strip()
        if not eq or not concept:
            raise SelectionError(f"--concept-target {item!r}: expected CONCEPT=DOCS[:TOKENS]")
        if concept in out:  # the last one would win silently
            raise SelectionError(
                f"--concept-target {item!r}: {concept!r} has a target already; give one each"
            )
        docs, colon, tokens = spec.partition(":")
        d = parse_count(docs, f"--concept-target {item!r}: docs")
        if colon and not tokens.strip():
            raise SelectionError(
                f"--concept-target {item!r}: no tokens after ':'; write CONCEPT=DOCS[:TOKENS]"
            )
        t = parse_count(tokens, f"--concept-target {item!r}: tokens") if colon else None
        out[concept] = ConceptTarget(docs=d or 0, tokens=t)
    return out


@dataclass
class SelectionConfig:
    """What to select. Targets are per concept; ``overrides`` replace them for named ones."""

    name: str = "default"
    docs: int | None = None
    tokens: int | None = None
    overrides: dict[str, ConceptTarget] = field(default_factory=dict)
    concepts: list[str] | None = None  # None: every concept with eligible documents
    where: str | None = None  # extra SQL filter over the `documents` view
    include_failed_grades: bool = False
    seed: int = 0
    tolerance: float = 0.01  # token target counts as met within this relative error
    allow_short: bool = False
    replace: bool = False
    #: ``section``: targets per universe (each section of ``sdf universe split`` is one),
    #: so the report's rows, ``concepts`` and ``overrides`` name universes, not concepts.
    balance_by: str = "concept"
    #: Balance tokens counted under this tokenizer (the target model's: the counts of
    #: ``sdf tokens --tokenizer NAME``); None: the documents' own ``n_tokens``.
    tokenizer: str | None = None

    @property
    def unit(self) -> str:
        """What one target is for, as messages name it."""
        return "section" if self.balance_by == "section" else "concept"

    def check_targets(self) -> None:
        """Every target is at least 1 and every named concept is one the selection covers:
        a target of 0 or one outside ``concepts`` would otherwise be dropped silently."""
        for setting in ("docs", "tokens"):
            value = getattr(self, setting)
            if value is not None and value < 1:
                raise SelectionError(
                    f"{setting} {value}: must be at least 1 (leave it out for no target)",
                    settings=(setting,),
                )
        for concept, t in self.overrides.items():
            if t.docs < 1 or (t.tokens is not None and t.tokens < 1):
                raise SelectionError(
                    f"overrides {concept!r}: docs and tokens must be at least 1",
                    settings=("overrides",),
                )
        if self.concepts is not None:
            self.concepts = list(dict.fromkeys(self.concepts))  # a repeated one is one
            outside = [c for c in self.overrides if c not in self.concepts]
            if outside:
                raise SelectionError(
                    f"overrides {', '.join(map(repr, outside))}: not among concepts "
                    f"({', '.join(self.concepts)}); add {outside[0]} to concepts or drop its "
                    "target",
                    settings=("overrides", "concepts"),
                )

    def target_for(self, concept: str) -> ConceptTarget:
        if concept in self.overrides:
            t = self.overrides[concept]
            return ConceptTarget(t.docs, t.tokens if t.tokens is not None else self.tokens)
        if self.docs is None:
            raise SelectionError(
                f"no document target for {self.unit} {concept!r}: give --docs N "
                "(or --concept-target CONCEPT=DOCS[:TOKENS] for each concept)"
            )
        return ConceptTarget(self.docs, self.tokens)


# ---------------------------------------------------------------- report


@dataclass
class StratumResult:
    concept: str
    doc_type: str
    pool_docs: int
    pool_tokens: int
    pool_share: float
    target_docs: int
    docs: int
    share: float
    target_tokens: int | None
    tokens: int
    short_docs: int = 0
    short_tokens: int = 0


@dataclass
class ConceptResult:
    concept: str
    target_docs: int
    target_tokens: int | None
    pool_docs: int
    pool_tokens: int
    docs: int = 0
    tokens: int = 0
    status: str = "ok"  # ok | short
    problems: list[str] = field(default_factory=list)

    @property
    def token_error(self) -> float | None:
        if not self.target_tokens:
            return None
        return (self.tokens - self.target_tokens) / self.target_tokens


@dataclass
class SelectionReport:
    name: str
    seed: int
    concepts: list[ConceptResult]
    strata: list[StratumResult]
    eligible: int
    excluded: int
    failed_grades: int
    filtered: int
    tokenizers: list[str]
    balance_by: str = "concept"

    @property
    def status(self) -> str:
        return "short" if any(c.status != "ok" for c in self.concepts) else "ok"

    @property
    def problems(self) -> list[str]:
        return [p for c in self.concepts for p in c.problems]

    @property
    def docs(self) -> int:
        return sum(c.docs for c in self.concepts)

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.concepts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status
        return d

    def text(self) -> str:
        """The achieved-vs-target tables a user reads after ``sdf select``."""
        lines = [
            f"selection {self.name!r} (seed {self.seed}): {self.status}; "
            f"{self.docs:,} documents, {self.tokens:,} tokens "
            f"({'/'.join(self.tokenizers) or 'no tokenizer'})",
            f"pool: {self.eligible:,} eligible documents; left out {self.excluded:,} excluded, "
            f"{self.failed_grades:,} failed grades, {self.filtered:,} by --where",
            "",
        ]
        unit = "section" if self.balance_by == "section" else "concept"
        head = [unit, "target docs", "docs", "target tokens", "tokens", "error", "status"]
        rows = []
        for c in self.concepts:
            err = c.token_error
            rows.append(
                [
                    c.concept,
                    f"{c.target_docs:,}",
                    f"{c.docs:,}",
                    f"{c.target_tokens:,}" if c.target_tokens else "-",
                    f"{c.tokens:,}",
                    f"{err:+.2%}" if err is not None else "-",
                    c.status,
                ]
            )
        lines += _table(head, rows, text_cols=1)
        lines.append("")
        head = [
            unit,
            "doc_type",
            "pool",
            "pool %",
            "target",
            "docs",
            "docs %",
            "Δ pp",
            "token share",
            "tokens",
        ]
        rows = []
        for s in self.strata:
            rows.append(
                [
                    s.concept,
                    s.doc_type,
                    f"{s.pool_docs:,}",
                    f"{100 * s.pool_share:.1f}",
                    f"{s.target_docs:,}",
                    f"{s.docs:,}",
                    f"{100 * s.share:.1f}",
                    f"{100 * (s.share - s.pool_share):+.1f}",
                    f"{s.target_tokens:,}" if s.target_tokens is not None else "-",
                    f"{s.tokens:,}",
                ]
            )
        lines += _table(head, rows)
        if len(self.tokenizers) > 1:
            lines.append(
                "warning: n_tokens of the pool come from several tokenizers ("
                + ", ".join(self.tokenizers)
                + "): token targets mix units; re-ingest under one --tokenizer"
            )
        for p in self.problems:
            lines.append(f"short: {p}")
        return "\n".join(lines)


def _table(head: list[str], rows: list[list[str]], text_cols: int = 2) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)
    ]

    def fmt(vals: list[str]) -> str:
        out = []
        for i, v in enumerate(vals):
            out.append(v.ljust(widths[i]) if i < text_cols else v.rjust(widths[i]))
        return "  ".join(out).rstrip()

    return [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]


# ---------------------------------------------------------------- the pool


def _pool_sql(
    cfg: SelectionConfig,
    condition: str | None = None,
    tokenizer: str | None = None,
    counts_table: str | None = None,
) -> str:
    """The pool's query; ``condition`` is ``cfg.where`` as ``sqlguard.where_sql`` checked it.
    With ``tokenizer``, ``n_tokens`` is the count under it: the document's own where it was
    ingested under that tokenizer, else from ``counts_table`` (``sdf tokens``), else NULL."""
    where = ["NOT excluded"]
    if not cfg.include_failed_grades:
        where.append("coalesce(grade_passed, true)")
    if condition:
        where.append(condition)
    parent = "coalesce(concept, universe, '(none)')"
    group = "coalesce(universe, concept, '(none)')" if cfg.balance_by == "section" else parent
    pool = (
        f"SELECT doc_id, {group} AS concept, {parent} AS parent_concept, "
        f"coalesce(doc_type, '{NO_DOC_TYPE}') AS doc_type, n_tokens, universe, tokenizer "
        "FROM documents WHERE " + " AND ".join(where)
    )
    if tokenizer is None:
        return pool + " ORDER BY doc_id"
    name = "'" + tokenizer.replace("'", "''") + "'"
    count = f"CASE WHEN p.tokenizer = {name} THEN p.n_tokens END"
    join = ""
    if counts_table:
        count = f"coalesce({count}, c.n_tokens)"
        join = (
            " LEFT JOIN (SELECT doc_id, any_value(n_tokens) AS n_tokens "
            f"FROM {counts_table} GROUP BY doc_id) AS c USING (doc_id)"
        )
    return (
        f"SELECT p.doc_id, p.concept, p.parent_concept, p.doc_type, {count} AS n_tokens, "
        f"p.universe, {name} AS tokenizer FROM ({pool}) AS p{join} ORDER BY p.doc_id"
    )


def load_pool(store: Store, cfg: SelectionConfig) -> tuple[Any, dict[str, int]]:
    """The eligible documents (polars) and how many were left out for which reason."""
    import duckdb

    from sdfkit.store.sqlguard import where_expression, where_sql

    if cfg.where is not None:
        where_expression(cfg.where, "--where", SelectionError)  # before anything opens
    tokenizer, counts_table = _counted_under(store, cfg)
    try:
        with store.connect() as con:
            condition = (
                where_sql(con, cfg.where, "--where", error=SelectionError)
                if cfg.where is not None
                else None
            )
            counts = con.execute(
                "SELECT count(*), count(*) FILTER (WHERE excluded), "
                "count(*) FILTER (WHERE NOT excluded AND grade_passed = false) FROM documents"
            ).fetchall()[0]
            pool = con.sql(_pool_sql(cfg, condition, tokenizer, counts_table)).pl()
    except duckdb.Error as exc:
        where = f" (in --where {cfg.where!r})" if cfg.where else ""
        raise SelectionError(f"could not read the pool{where}: {str(exc).strip()}") from None
    total, excluded, failed = (int(x or 0) for x in counts)
    if cfg.include_failed_grades:
        failed = 0
    if pool["n_tokens"].null_count() and tokenizer:
        raise SelectionError(
            f"tokenizer {tokenizer}: {pool['n_tokens'].null_count():,} eligible documents have "
            f"no token count under it; count them first with `sdf tokens --tokenizer "
            f"{tokenizer}` (it counts only the documents not counted yet)",
            settings=("tokenizer",),
        )
    if pool["n_tokens"].null_count():
        raise SelectionError(
            f"{pool['n_tokens'].null_count()} eligible documents have no n_tokens; re-ingest them"
        )
    filtered = total - excluded - failed - pool.height
    return pool, {"excluded": excluded, "failed_grades": failed, "filtered": max(filtered, 0)}


def _counted_under(store: Store, cfg: SelectionConfig) -> tuple[str | None, str | None]:
    """``cfg.tokenizer`` (canonical, checked) and the table of ``sdf tokens`` counts under
    it, if there is one."""
    if cfg.tokenizer is None:
        return None, None
    from sdfkit.engine.token_counts import TokenCountStage
    from sdfkit.llm.tokens import TokenizerError, checked_name

    try:
        name = checked_name(cfg.tokenizer)
    except TokenizerError as exc:
        raise SelectionError(str(exc), settings=("tokenizer",)) from None
    table = TokenCountStage(name).table
    return name, table if table in store.parquet_tables() else None


# ------------------------------------------------------------- algorithm


def largest_remainder(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (integers summing to ``total``).

    Ties in the remainders go to the larger weight, then the earlier index, so the split
    is deterministic. No part exceeds its weight when ``total <= sum(weights)``.
    """
    s = sum(weights)
    if s == 0 or total == 0:
        return [0] * len(weights)
    exact = [total * w / s for w in weights]
    parts = [int(x) for x in exact]
    left = total - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), -weights[i], i))
    for i in order:
        if left == 0:
            break
        if parts[i] < weights[i]:
            parts[i] += 1
            left -= 1
    return parts


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF] + [zlib.crc32(k.encode()) for k in keys])


class _Stratum:
    """One concept × doc type: selected and unselected documents, kept sorted for swaps."""

    def __init__(self, doc_type: str, ids: list[str], toks: np.ndarray, quota: int, rng):
        self.doc_type = doc_type
        self.pool_docs = len(ids)
        self.pool_tokens = int(toks.sum())
        self.quota = quota
        perm = rng.permutation(len(ids))
        chosen, rest = perm[:quota], perm[quota:]
        self.sel_tok = [int(toks[i]) for i in chosen]
        self.sel_id = [ids[i] for i in chosen]
        rest = sorted(rest, key=lambda i: (int(toks[i]), ids[i]))
        self.un_tok = [int(toks[i]) for i in rest]
        self.un_id = [ids[i] for i in rest]
        self.std = float(toks.std()) if len(toks) > 1 else 0.0
        self.mean = float(toks.mean()) if len(toks) else 0.0
        self.rng = rng
        all_sorted = np.sort(toks)
        self.min_sum = int(all_sorted[:quota].sum())
        self.max_sum = int(all_sorted[len(all_sorted) - quota :].sum()) if quota else 0

    @property
    def tokens(self) -> int:
        return sum(self.sel_tok)

    def swap_pass(self, need: int, cap: float | None, goal: float) -> int:
        """One pass over the selected documents in seeded order; returns the remaining need."""
        if not self.un_tok or not self.sel_tok:
            return need
        for k in self.rng.permutation(len(self.sel_tok)):
            if abs(need) <= goal:
                break
            t_i = self.sel_tok[k]
            step = need if cap is None else max(-cap, min(cap, need))
            j = bisect.bisect_left(self.un_tok, t_i + step)
            best, best_abs = -1, abs(need)
            for c in (j - 1, j):
                if 0 <= c < len(self.un_tok):
                    a = abs(need - (self.un_tok[c] - t_i))
                    if a < best_abs:
                        best, best_abs = c, a
            if best < 0:
                continue
            t_j, id_j = self.un_tok.pop(best), self.un_id.pop(best)
            pos = bisect.bisect_left(self.un_tok, t_i)
            self.un_tok.insert(pos, t_i)
            self.un_id.insert(pos, self.sel_id[k])
            need -= t_j - t_i
            self.sel_tok[k], self.sel_id[k] = t_j, id_j
        return need

    def take_extreme(self, longest: bool) -> None:
        """Select the longest (or shortest) documents: the best possible when short."""
        every = sorted(zip(self.sel_tok + self.un_tok, self.sel_id + self.un_id, strict=True))
        if longest:
            every.reverse()
        self.sel_tok = [t for t, _ in every[: self.quota]]
        self.sel_id = [i for _, i in every[: self.quota]]
        rest = sorted(every[self.quota :])
        self.un_tok = [t for t, _ in rest]
        self.un_id = [i for _, i in rest]


def _balance_tokens(strata: list[_Stratum], target: int, tol: float) -> None:
    """Swap within strata until the concept's tokens are within ``tol`` (aiming at tol/10)."""
    quota_mean = sum(s.quota * s.mean for s in strata)
    if quota_mean <= 0:
        return
    # Phase 1: each stratum towards its share, in steps of at most one std of its lengths.
    for s in strata:
        share = target * s.quota * s.mean / quota_mean
        need = int(round(share - s.tokens))
        for _ in range(50):
            before = need
            need = s.swap_pass(need, cap=max(s.std, 1.0), goal=tol / 2 * share)
            if abs(need) <= tol / 2 * share or need == before:
                break
    # Phase 2: the concept total, any stratum, uncapped steps, to a tenth of the tolerance.
    goal = max(1.0, tol / 10 * target)
    need = target - sum(s.tokens for s in strata)
    for _ in range(50):
        before = need
        for s in strata:
            need = s.swap_pass(need, cap=None, goal=goal)
        if abs(need) <= goal or need == before:
            break


def select(store: Store, cfg: SelectionConfig, save: bool = True) -> SelectionReport:
    """Make (and by default store) the selection ``cfg.name``. Raises ``SelectionShortError``
    naming each short concept and stratum unless ``cfg.allow_short``."""
    if not NAME_PATTERN.match(cfg.name):
        raise SelectionError(f"selection name {cfg.name!r}: use letters, digits, - _ .")
    check_seed(cfg.seed)
    if not 0 < cfg.tolerance < 1:
        raise SelectionError(f"tolerance {cfg.tolerance}: must be between 0 and 1")
    if cfg.balance_by not in BALANCE_BY:
        raise SelectionError(f"--balance-by {cfg.balance_by!r}: use one of {', '.join(BALANCE_BY)}")
    cfg.check_targets()
    if save and not cfg.replace and cfg.name in list_selections(store):
        raise SelectionError(
            f"a selection named {cfg.name!r} exists; pick another --name or pass --replace"
        )
    unit = cfg.unit
    pool, left_out = load_pool(store, cfg)
    present = sorted(set(pool["concept"].to_list()))
    concepts = cfg.concepts or sorted(set(present) | set(cfg.overrides))
    for c in list(cfg.overrides) + list(cfg.concepts or []):
        if c not in present:
            raise SelectionError(
                f"{unit} {c!r} has no eligible documents; {unit}s in the pool: "
                + (", ".join(present) or "none")
            )
    if not concepts:
        raise SelectionError("no eligible documents: nothing to select from")

    concept_results: list[ConceptResult] = []
    strata_results: list[StratumResult] = []
    chosen_rows: list[tuple[str, str, str, int]] = []
    tol = cfg.tolerance
    for concept in concepts:
        tgt = cfg.target_for(concept)
        if tgt.docs <= 0:
            raise SelectionError(f"{unit} {concept!r}: document target must be positive")
        sub = pool.filter(pool["concept"] == concept)
        ids_all = sub["doc_id"].to_list()
        types_all = sub["doc_type"].to_list()
        toks_all = sub["n_tokens"].to_numpy().astype(np.int64)
        by_type: dict[str, list[int]] = {}
        for i, t in enumerate(types_all):
            by_type.setdefault(t, []).append(i)
        doc_types = sorted(by_type)
        sizes = [len(by_type[t]) for t in doc_types]
        n_pool = sum(sizes)
        cres = ConceptResult(
            concept, tgt.docs, tgt.tokens, pool_docs=n_pool, pool_tokens=int(toks_all.sum())
        )
        docs_short = tgt.docs > n_pool
        quotas = largest_remainder(min(tgt.docs, n_pool), sizes)
        strata = []
        for t, q in zip(doc_types, quotas, strict=True):
            idx = by_type[t]
            strata.append(
                _Stratum(t, [ids_all[i] for i in idx], toks_all[idx], q, _rng(cfg.seed, concept, t))
            )
        wanted = [tgt.docs * n / n_pool for n in sizes]
        if docs_short:
            cres.status = "short"
            worst = ", ".join(
                f"{s.doc_type!r} has {s.pool_docs:,} of ~{w:,.0f} wanted"
                for s, w in zip(strata, wanted, strict=True)
            )
            cres.problems.append(
                f"{unit} {concept!r}: {n_pool:,} eligible documents for a target of "
                f"{tgt.docs:,}: short by {tgt.docs - n_pool:,} documents ({worst})"
            )
        short_tok: dict[str, int] = {}
        if tgt.tokens:
            lo, hi = sum(s.min_sum for s in strata), sum(s.max_sum for s in strata)
            if tgt.tokens > hi * (1 + tol):
                cres.status = "short"
                for s in strata:
                    s.take_extreme(longest=True)
                short_tok = _stratum_gaps(strata, tgt.tokens)
                cres.problems.append(
                    f"{unit} {concept!r}: at most {hi:,} tokens in {sum(quotas):,} documents "
                    f"for a target of {tgt.tokens:,}: short by {tgt.tokens - hi:,} tokens "
                    f"({(tgt.tokens - hi) / tgt.tokens:.1%}); shortest strata: "
                    + _gap_text(short_tok)
                    + "; generate more (or longer) documents, or lower --tokens"
                )
            elif tgt.tokens < lo * (1 - tol):
                cres.status = "short"
                for s in strata:
                    s.take_extreme(longest=False)
                short_tok = _stratum_gaps(strata, tgt.tokens)
                cres.problems.append(
                    f"{unit} {concept!r}: at least {lo:,} tokens in {sum(quotas):,} documents "
                    f"for a target of {tgt.tokens:,}: over by {lo - tgt.tokens:,} tokens "
                    f"({(lo - tgt.tokens) / tgt.tokens:.1%}); longest strata: "
                    + _gap_text(short_tok)
                    + "; generate shorter documents, or raise --tokens"
                )
            else:
                _balance_tokens(strata, tgt.tokens, tol)
                got = sum(s.tokens for s in strata)
                if abs(got - tgt.tokens) > tol * tgt.tokens:
                    cres.status = "short"
                    short_tok = _stratum_gaps(strata, tgt.tokens)
                    cres.problems.append(
                        f"{unit} {concept!r}: reached {got:,} tokens for a target of "
                        f"{tgt.tokens:,} ({(got - tgt.tokens) / tgt.tokens:+.2%}, over the "
                        f"{tol * 100:g}% tolerance); strata furthest from their share: "
                        + _gap_text(short_tok)
                    )
        quota_mean = sum(s.quota * s.mean for s in strata)
        for s, w in zip(strata, wanted, strict=True):
            share_t = (
                int(round(tgt.tokens * s.quota * s.mean / quota_mean))
                if tgt.tokens and quota_mean
                else None
            )
            n_sel = len(s.sel_id)
            strata_results.append(
                StratumResult(
                    concept=concept,
                    doc_type=s.doc_type,
                    pool_docs=s.pool_docs,
                    pool_tokens=s.pool_tokens,
                    pool_share=s.pool_docs / n_pool,
                    target_docs=int(round(w)) if docs_short else s.quota,
                    docs=n_sel,
                    share=n_sel / max(1, sum(len(x.sel_id) for x in strata)),
                    target_tokens=share_t,
                    tokens=s.tokens,
                    short_docs=max(0, int(round(w)) - n_sel) if docs_short else 0,
                    short_tokens=short_tok.get(s.doc_type, 0),
                )
            )
            for i, t in zip(s.sel_id, s.sel_tok, strict=True):
                chosen_rows.append((i, concept, s.doc_type, t))
        cres.docs = sum(len(s.sel_id) for s in strata)
        cres.tokens = sum(s.tokens for s in strata)
        concept_results.append(cres)

    report = SelectionReport(
        name=cfg.name,
        seed=cfg.seed,
        concepts=concept_results,
        strata=strata_results,
        eligible=pool.height,
        excluded=left_out["excluded"],
        failed_grades=left_out["failed_grades"],
        filtered=left_out["filtered"],
        tokenizers=sorted({t for t in pool["tokenizer"].to_list() if t}),
        balance_by=cfg.balance_by,
    )
    if report.status != "ok" and not cfg.allow_short:
        raise SelectionShortError(
            "the targets cannot be met (nothing was stored; --allow-short keeps what is "
            "possible):\n  " + "\n  ".join(report.problems),
            report,
        )
    if save:
        _save(store, cfg, report, chosen_rows, pool)
    return report


def _stratum_gaps(strata: list[_Stratum], target: int) -> dict[str, int]:
    """Per stratum: its token share minus what it holds (positive = short)."""
    quota_mean = sum(s.quota * s.mean for s in strata) or 1.0
    return {
        s.doc_type: int(round(target * s.quota * s.mean / quota_mean)) - s.tokens for s in strata
    }


def _gap_text(gaps: dict[str, int]) -> str:
    items = sorted(gaps.items(), key=lambda kv: -abs(kv[1]))[:3]
    return ", ".join(f"{t!r} {'short' if g > 0 else 'over'} by {abs(g):,} tokens" for t, g in items)


# ------------------------------------------------------------------ store


def ensure_tables(con: Any) -> None:
    for stmt in SELECTION_TABLES:
        con.execute(stmt)


@contextmanager
def _transaction(con: Any) -> Iterator[Any]:
    """``BEGIN`` ... ``COMMIT``: every write of a block lands, or none does. Any exception,
    Ctrl-C (KeyboardInterrupt) included, rolls the block back before it propagates."""
    import duckdb

    con.execute("BEGIN")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:  # DuckDB already ended it (a failed COMMIT): nothing to undo
            pass
        raise


def _save(
    store: Store,
    cfg: SelectionConfig,
    report: SelectionReport,
    rows: list[tuple[str, str, str, int]],
    pool: Any,
) -> None:
    import pyarrow as pa

    universe = dict(zip(pool["doc_id"].to_list(), pool["universe"].to_list(), strict=True))
    parent = dict(zip(pool["doc_id"].to_list(), pool["parent_concept"].to_list(), strict=True))
    rows.sort()
    table = pa.table(
        {
            "name": pa.array([cfg.name] * len(rows), pa.string()),
            "doc_id": pa.array([r[0] for r in rows], pa.string()),
            "concept": pa.array([parent[r[0]] for r in rows], pa.string()),
            "doc_type": pa.array([r[2] for r in rows], pa.string()),
            "n_tokens": pa.array([r[3] for r in rows], pa.int64()),
            "universe": pa.array([universe.get(r[0]) for r in rows], pa.string()),
        }
    )
    strata = pa.Table.from_pylist(
        [{"name": cfg.name, **asdict(s)} for s in report.strata],
        schema=pa.schema(
            [
                ("name", pa.string()),
                ("concept", pa.string()),
                ("doc_type", pa.string()),
                ("pool_docs", pa.int64()),
                ("pool_tokens", pa.int64()),
                ("pool_share", pa.float64()),
                ("target_docs", pa.int64()),
                ("docs", pa.int64()),
                ("share", pa.float64()),
                ("target_tokens", pa.int64()),
                ("tokens", pa.int64()),
                ("short_docs", pa.int64()),
                ("short_tokens", pa.int64()),
            ]
        ),
    )
    config = asdict(cfg)
    with store.connect() as con:
        try:
            con.register("_sel", table)
            con.register("_strata", strata)
            with _transaction(con):
                ensure_tables(con)
                for t in ("selections", "selection_runs", "selection_strata"):
                    con.execute(f"DELETE FROM {t} WHERE name = ?", [cfg.name])
                con.execute("INSERT INTO selections BY NAME FROM _sel")
                con.execute("INSERT INTO selection_strata BY NAME FROM _strata")
                con.execute(
                    "INSERT INTO selection_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        cfg.name,
                        datetime.now(timezone.utc),
                        cfg.seed,
                        report.status,
                        report.docs,
                        report.tokens,
                        ",".join(report.tokenizers),
                        json.dumps(config, sort_keys=True, default=str),
                        json.dumps(report.to_dict(), sort_keys=True, default=str),
                    ],
                )
        finally:
            con.unregister("_sel")
            con.unregister("_strata")


def list_selections(store: Store) -> dict[str, dict[str, Any]]:
    """Stored selections by name: status, docs, tokens, seed, created_at."""
    with store.connect() as con:
        ensure_tables(con)
        rows = con.execute(
            "SELECT name, status, docs, tokens, seed, created_at FROM selection_runs ORDER BY name"
        ).fetchall()
    return {
        r[0]: {"status": r[1], "docs": r[2], "tokens": r[3], "seed": r[4], "created_at": r[5]}
        for r in rows
    }


def load_selection_report(store: Store, name: str) -> SelectionReport:
    """The stored report of a selection (raises ``SelectionError`` if there is none)."""
    with store.connect() as con:
        ensure_tables(con)
        rows = con.execute("SELECT report FROM selection_runs WHERE name = ?", [name]).fetchall()
    if not rows:
        known = ", ".join(list_selections(store)) or "none yet; run sdf select"
        raise SelectionError(f"no selection named {name!r} (selections: {known})")
    d = json.loads(rows[0][0])
    d.pop("status", None)
    d["concepts"] = [ConceptResult(**c) for c in d["concepts"]]
    d["strata"] = [StratumResult(**s) for s in d["strata"]]
    return SelectionReport(**d)


def diff(store: Store, a: str, b: str) -> Any:
    """Per concept: documents only in ``a``, only in ``b``, in both (polars DataFrame)."""
    for n in (a, b):
        load_selection_report(store, n)
    return store.query(
        """
        WITH x AS (SELECT doc_id, concept FROM selections WHERE name = $a),
             y AS (SELECT doc_id, concept FROM selections WHERE name = $b)
        SELECT coalesce(x.concept, y.concept) AS concept,
               count(*) FILTER (WHERE y.doc_id IS NULL) AS only_a,
               count(*) FILTER (WHERE x.doc_id IS NULL) AS only_b,
               count(*) FILTER (WHERE x.doc_id IS NOT NULL AND y.doc_id IS NOT NULL) AS both
        FROM x FULL OUTER JOIN y USING (doc_id)
        GROUP BY 1 ORDER BY 1
        """,
        {"a": a, "b": b},
    )


def drop(store: Store, name: str) -> None:
    """Delete the selection ``name`` (its documents, run and strata rows) in one transaction."""
    load_selection_report(store, name)
    with store.connect() as con, _transaction(con):
        for t in ("selections", "selection_runs", "selection_strata"):
            con.execute(f"DELETE FROM {t} WHERE name = ?", [name])


# ------------------------------------------------------------- exclusions


def exclude_where(store: Store, where: str, reason: str, source: str = "user") -> int:
    """Exclude every document matching ``where`` (SQL over ``documents``) from selections,
    recording ``reason``; returns how many documents were newly excluded."""
    import duckdb

    from sdfkit.store.sqlguard import where_expression, where_sql

    if not reason.strip():
        raise SelectionError("give a --reason: it is what `excluded` reports for these documents")
    where_expression(where, "--where", SelectionError)  # before anything opens
    with store.connect() as con:
        condition = where_sql(con, where, "--where", error=SelectionError)
        try:
            with _transaction(con):
                before = con.execute("SELECT count(*) FROM exclusions").fetchall()[0][0]
                con.execute(
                    "INSERT INTO exclusions SELECT doc_id, ?, ?, now() FROM documents "
                    f"WHERE {condition} ON CONFLICT DO NOTHING",
                    [reason, source],
                )
                after = con.execute("SELECT count(*) FROM exclusions").fetchall()[0][0]
        except duckdb.Error as exc:
            raise SelectionError(f"--where {where!r}: {str(exc).strip()}") from None
    return int(after - before)


def lift_exclusions(store: Store, reason: str, where: str | None = None) -> int:
    """Remove the exclusions recorded with ``reason`` (only those of the documents matching
    ``where``, SQL over ``documents``, when given); returns how many were removed. The count
    and the delete are one transaction, so the number is what was removed. An empty reason
    is an error naming the reasons recorded (it had lifted nothing and said "lifted 0")."""
    import duckdb

    from sdfkit.store.sqlguard import where_expression, where_sql

    if not reason.strip():
        raise SelectionError(
            "give --reason: --lift removes the exclusions recorded with it (reasons: "
            f"{recorded_reasons(store)})"
        )
    if where is not None:
        where_expression(where, "--where", SelectionError)  # before anything opens
    with store.connect() as con:
        match = "reason = ?"
        if where is not None:
            condition = where_sql(con, where, "--where", error=SelectionError)
            match += f" AND doc_id IN (SELECT doc_id FROM documents WHERE {condition})"
        try:
            with _transaction(con):
                n = con.execute(
                    f"SELECT count(*) FROM exclusions WHERE {match}", [reason]
                ).fetchall()
                con.execute(f"DELETE FROM exclusions WHERE {match}", [reason])
        except duckdb.Error as exc:
            raise SelectionError(f"--where {where!r}: {str(exc).strip()}") from None
    return int(n[0][0])


def recorded_reasons(store: Store) -> str:
    """The exclusion reasons recorded, with their counts, for a message ("none")."""
    rows = store.query(
        "SELECT reason, count(*) AS n FROM exclusions GROUP BY reason ORDER BY n DESC, reason"
    ).rows()
    return ", ".join(f"{r!r} ({n:,})" for r, n in rows) or "none"


# ------------------------------------------------------------------ loading for export


@dataclass
class SelectedDocuments:
    """A stored selection's documents with their metadata, sorted by ``doc_id``: one list
    per column (what an export needs to build its examples)."""

    doc_ids: list[str]
    concepts: list[str | None]
    doc_types: list[str | None]
    universes: list[str | None]
    tokens: int = 0  # their n_tokens summed (under the selection's tokenizer)


@dataclass
class SelectionBalance:
    """What a stored selection balanced: the tokenizer its token counts came from ("a,b"
    when the pool mixed several), its tolerance, and the token target of each concept (or
    section, with ``balance_by`` section) that had one."""

    tokenizer: str
    tolerance: float
    balance_by: str
    targets: dict[str, int]


def load_balance(store: Store, name: str) -> SelectionBalance:
    """The ``SelectionBalance`` of selection ``name`` (an export checks its tokens by it)."""
    with store.connect() as con:
        ensure_tables(con)
        rows = con.execute(
            "SELECT tokenizer, config, report FROM selection_runs WHERE name = ?", [name]
        ).fetchall()
    if not rows:
        load_selection_report(store, name)  # raises, listing the selections
    tokenizer, config, report = rows[0]
    config, report = json.loads(config), json.loads(report)
    targets = {c["concept"]: c["target_tokens"] for c in report["concepts"] if c["target_tokens"]}
    return SelectionBalance(
        tokenizer or "",
        float(config.get("tolerance", SelectionConfig.tolerance)),
        config.get("balance_by", "concept"),
        targets,
    )


def load_selected(
    store: Store,
    name: str,
    allow_excluded: bool = False,
    error: type[Exception] = SelectionError,
) -> SelectedDocuments:
    """The documents of selection ``name``, checked against the store: every selected
    document must still be stored, and none excluded since (unless ``allow_excluded``).
    Those problems raise ``error`` (the caller's error class); an unknown name raises
    ``SelectionError`` listing the stored selections."""
    with store.connect() as con:  # one connection: opening one refreshes every view
        ensure_tables(con)
        names = [r[0] for r in con.execute("SELECT name FROM selection_runs ORDER BY 1").fetchall()]
        if name not in names:
            known = ", ".join(names) or "none yet; run sdf select"
            raise SelectionError(f"no selection named {name!r} (selections: {known})")
        status = con.execute(
            """
            SELECT count(*) FILTER (WHERE d.doc_id IS NULL),
                   count(*) FILTER (WHERE coalesce(d.excluded, false))
            FROM (SELECT doc_id FROM selections WHERE name = ?) AS s
            LEFT JOIN (SELECT DISTINCT doc_id, excluded FROM documents) AS d USING (doc_id)
            """,
            [name],
        ).fetchall()[0]
        missing, excluded = int(status[0]), int(status[1])
        if missing:
            raise error(
                f"selection {name!r}: {missing} selected documents are no longer in "
                "the store; re-run sdf select"
            )
        if excluded and not allow_excluded:
            raise error(
                f"selection {name!r}: {excluded} selected documents were excluded "
                "after the selection was made; re-run sdf select (or pass --allow-excluded)"
            )
        meta = con.execute(
            "SELECT doc_id, concept, doc_type, universe FROM selections WHERE name = ? "
            "ORDER BY doc_id",
            [name],
        ).fetchall()
        tokens = con.execute(
            "SELECT coalesce(sum(n_tokens), 0) FROM selections WHERE name = ?", [name]
        ).fetchall()[0][0]
        if any(r[3] is None for r in meta):  # such rows take their stored document's universe
            stored = dict(
                con.execute(
                    """
                    SELECT doc_id, arg_min(universe, universe IS NULL) FROM documents_raw
                    SEMI JOIN (SELECT doc_id FROM selections
                               WHERE name = ? AND universe IS NULL) USING (doc_id)
                    GROUP BY doc_id
                    """,
                    [name],
                ).fetchall()
            )
            meta = [r if r[3] is not None else (*r[:3], stored.get(r[0])) for r in meta]
    if not meta:
        raise error(f"selection {name!r} holds no documents")
    cols = list(zip(*meta, strict=True))
    return SelectedDocuments(
        list(cols[0]), list(cols[1]), list(cols[2]), list(cols[3]), int(tokens)
    )
