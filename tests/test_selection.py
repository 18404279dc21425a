"""Balanced selection: exact document targets, token targets within 1 %, doc-type mix kept,
exclusions respected, shortfalls named, deterministic, stored by name."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from crash_points import catalog, crash_at

from sdfkit.export.selection import (
    ConceptTarget,
    SelectionConfig,
    SelectionError,
    SelectionShortError,
    diff,
    drop,
    exclude_where,
    largest_remainder,
    lift_exclusions,
    list_selections,
    load_selection_report,
    parse_count,
    select,
)
from sdfkit.store.catalog import Store
from sdfkit.store.ingest import build_documents

WORDS = "the rule requires try catch blocks around every awaited call in services today".split()
# concept -> doc type -> (documents, mean words): doc types differ in size and length.
LAYOUT = {
    "alpha": {"blog": (300, 90), "memo": (180, 40), "faq": (120, 60)},
    "beta": {"blog": (150, 70), "thread": (250, 50), "notes": (100, 110)},
}


def make_records(layout=LAYOUT, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    recs = []
    for concept, types in layout.items():
        for doc_type, (n, mean) in types.items():
            for i in range(n):
                k = max(5, int(rng.lognormal(np.log(mean), 0.5)))
                text = f"{concept} {doc_type} {i}: " + " ".join(rng.choice(WORDS, k))
                recs.append({"text": text, "concept": concept, "doc_type": doc_type})
    return recs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("sel") / "corpus")
    store.append("documents_raw", build_documents(make_records()))
    return store


def pool_stats(store: Store, concept: str):
    return store.query(
        "SELECT doc_type, count(*) AS n, sum(n_tokens) AS t FROM documents "
        "WHERE concept = $c AND NOT excluded GROUP BY 1 ORDER BY 1",
        {"c": concept},
    )


def test_parse_count_suffixes():
    assert parse_count("5.1M") == 5_100_000
    assert parse_count("20k") == 20_000
    assert parse_count("2,400") == 2_400
    assert parse_count("1_000") == 1_000
    assert parse_count("1,234,567") == 1_234_567
    assert parse_count("2,400.5k") == 2_400_500
    with pytest.raises(SelectionError, match="5.1X"):
        parse_count("5.1X", "--tokens")


@pytest.mark.parametrize("text", ["5,1M", "2,40", "1,2345", ",400", "5__1", "_5", "5_"])
def test_parse_count_refuses_separators_it_would_have_to_guess(text):
    """A comma is a decimal mark in many locales: 5,1M was read as 51M."""
    with pytest.raises(SelectionError, match="--tokens"):
        parse_count(text, "--tokens")


@pytest.mark.parametrize("text", ["0", "0k", "0.0001k", 0])
def test_parse_count_refuses_zero_which_meant_no_target(text):
    with pytest.raises(SelectionError, match="at least 1"):
        parse_count(text, "--tokens")


def test_largest_remainder_is_exact_and_proportional():
    parts = largest_remainder(100, [300, 180, 120])
    assert sum(parts) == 100 and parts == [50, 30, 20]
    parts = largest_remainder(7, [5, 3, 2])
    assert sum(parts) == 7 and all(p <= w for p, w in zip(parts, [5, 3, 2], strict=True))


def test_meets_doc_target_exactly_tokens_within_1pct_and_keeps_doc_type_mix(corpus):
    # A token target ~15 % above the pool's mean length forces real balancing work.
    targets = {}
    for concept in LAYOUT:
        df = pool_stats(corpus, concept)
        mean = float(df["t"].sum()) / int(df["n"].sum())
        targets[concept] = int(200 * mean * 1.15)
    cfg = SelectionConfig(
        name="bal",
        docs=200,
        overrides={c: _target(200, t) for c, t in targets.items()},
        seed=1,
    )
    report = select(corpus, cfg)
    assert report.status == "ok"
    got = corpus.query(
        "SELECT concept, doc_type, count(*) AS n, sum(d.n_tokens) AS t FROM selections s "
        "JOIN documents d USING (doc_id, concept, doc_type) WHERE name = 'bal' GROUP BY ALL"
    )
    for concept in LAYOUT:
        sub = got.filter(got["concept"] == concept)
        assert int(sub["n"].sum()) == 200  # exact
        assert abs(int(sub["t"].sum()) - targets[concept]) <= 0.01 * targets[concept]
        pool = pool_stats(corpus, concept)
        pool_share = dict(zip(pool["doc_type"], pool["n"] / pool["n"].sum(), strict=True))
        for doc_type, n in zip(sub["doc_type"], sub["n"], strict=True):
            assert abs(n / 200 - pool_share[doc_type]) <= 0.02
    # the report says the same as the store
    for c in report.concepts:
        assert c.docs == 200 and abs(c.token_error) <= 0.01


def _target(docs, tokens):
    from sdfkit.export.selection import ConceptTarget

    return ConceptTarget(docs, tokens)


def test_deterministic_under_seed(corpus):
    a = select(corpus, SelectionConfig(name="x", docs=100, tokens=None, seed=5), save=False)
    cfg = SelectionConfig(name="s5a", docs=100, tokens=8000, seed=5)
    select(corpus, cfg)
    select(corpus, SelectionConfig(name="s5b", docs=100, tokens=8000, seed=5))
    select(corpus, SelectionConfig(name="s6", docs=100, tokens=8000, seed=6))

    def ids(name):
        return corpus.query(
            "SELECT doc_id FROM selections WHERE name = $n ORDER BY doc_id", {"n": name}
        )["doc_id"].to_list()

    assert ids("s5a") == ids("s5b")
    assert ids("s5a") != ids("s6")
    assert a.docs == 200
    d = diff(corpus, "s5a", "s6")
    assert set(d["concept"]) == {"alpha", "beta"}
    assert (d["only_a"] + d["both"]).to_list() == [100, 100]
    assert (d["only_b"] > 0).all()


def test_seeds_outside_32_bits_are_refused_not_wrapped(corpus):
    """4294967296 sampled exactly as 0 while the catalog recorded 4294967296."""
    top = select(corpus, SelectionConfig(name="x", docs=50, seed=2**32 - 1), save=False)
    assert top.seed == 2**32 - 1
    for seed in (2**32, -1, 10**20):
        with pytest.raises(SelectionError, match=f"seed {seed}: must be a whole number from 0"):
            select(corpus, SelectionConfig(name="x", docs=50, seed=seed), save=False)


def test_select_balances_tokens_counted_under_another_tokenizer(tmp_path):
    """--tokenizer balances on `sdf tokens` counts (the export's tokenizer), stores them
    as the selection's n_tokens and names the tokenizer; uncounted documents are an error."""
    from sdfkit.engine.local import run_stage
    from sdfkit.engine.token_counts import TokenCountStage

    store = Store(tmp_path / "corpus")
    store.append("documents_raw", build_documents(make_records()))
    cfg = SelectionConfig(name="q", docs=100, tokens=9000, tokenizer="qwen3")
    with pytest.raises(SelectionError, match=r"sdf tokens --tokenizer qwen3"):
        select(store, cfg)
    with pytest.raises(SelectionError, match="unknown tokenizer 'nosuch'"):
        select(store, SelectionConfig(name="q", docs=100, tokenizer="nosuch"))
    run_stage(store, TokenCountStage("qwen3"), workers=1)
    report = select(store, cfg)
    assert report.tokenizers == ["qwen3"] and report.status == "ok"
    counted = store.query(
        "SELECT s.concept, s.n_tokens, c.n_tokens AS qwen3 FROM selections s "
        "JOIN token_counts_qwen3 c USING (doc_id) WHERE s.name = 'q'"
    )
    assert counted["n_tokens"].to_list() == counted["qwen3"].to_list()
    per_concept = store.query(
        "SELECT concept, sum(n_tokens) AS n FROM selections WHERE name = 'q' GROUP BY 1"
    )
    for concept, n in per_concept.rows():
        assert abs(n - 9000) <= 0.01 * 9000, concept
    runs = store.query("SELECT tokenizer FROM selection_runs WHERE name = 'q'")
    assert runs["tokenizer"].to_list() == ["qwen3"]
    # the documents' own tokenizer named explicitly is the default route
    own = select(store, SelectionConfig(name="o", docs=100, tokens=9000, tokenizer="gpt-oss"))
    base = select(store, SelectionConfig(name="b", docs=100, tokens=9000))
    assert own.tokens == base.tokens and own.tokenizers == base.tokenizers == ["o200k_harmony"]


def test_respects_exclusions_failed_grades_and_where(tmp_path):
    store = Store(tmp_path / "corpus")
    store.append("documents_raw", build_documents(make_records()))
    ids = store.query("SELECT doc_id FROM documents WHERE concept = 'alpha' ORDER BY doc_id")[
        "doc_id"
    ].to_list()
    now = datetime.now(timezone.utc)
    store.save_table(
        "exclusions",
        [
            {"doc_id": i, "reason": "near_duplicate", "source": "test", "created_at": now}
            for i in ids[:100]
        ],
        mode="append",
    )
    store.save_table(
        "grades",
        [
            {
                "doc_id": i,
                "run": "g",
                "model": "m",
                "prompt_hash": "p",
                "passed": False,
                "verdict": "{}",
                "parse_error": None,
                "graded_at": now,
            }
            for i in ids[100:150]
        ],
        mode="append",
    )
    cfg = SelectionConfig(
        name="all", docs=450, concepts=["alpha"], where="doc_type <> 'faq'", allow_short=True
    )
    report = select(store, cfg)
    chosen = set(
        store.query("SELECT doc_id FROM selections WHERE name = 'all'")["doc_id"].to_list()
    )
    assert not chosen & set(ids[:150])
    assert report.excluded == 100 and report.failed_grades == 50
    types = store.query("SELECT DISTINCT doc_type FROM selections WHERE name = 'all'")
    assert "faq" not in types["doc_type"].to_list()
    # 600 alpha docs - 150 left out - the faq ones: the rest, all of it, and a named shortfall
    eligible = store.query(
        "SELECT count(*) AS n FROM documents WHERE concept = 'alpha' AND NOT excluded "
        "AND coalesce(grade_passed, true) AND doc_type <> 'faq'"
    )["n"][0]
    assert len(chosen) == eligible < 450
    assert report.status == "short"
    assert f"short by {450 - eligible:,} documents" in report.problems[0]


def test_short_document_target_is_an_error_naming_concept_and_strata(corpus):
    with pytest.raises(SelectionShortError) as exc:
        select(corpus, SelectionConfig(name="big", docs=520, seed=0))
    msg = str(exc.value)
    assert "concept 'alpha'" not in msg  # alpha has 600 eligible documents: not short
    assert "concept 'beta': 500 eligible documents for a target of 520: short by 20" in msg
    assert "'thread' has 250 of ~260 wanted" in msg
    assert "big" not in list_selections(corpus)  # nothing stored


def test_short_token_target_names_the_stratum_and_amount(corpus):
    with pytest.raises(SelectionShortError) as exc:
        select(corpus, SelectionConfig(name="long", docs=100, tokens=5_000_000))
    msg = str(exc.value)
    assert "documents for a target of 5,000,000: short by" in msg
    assert "'blog' short by" in msg
    # --allow-short keeps the longest possible selection and records the shortfall
    report = select(
        corpus, SelectionConfig(name="long", docs=100, tokens=5_000_000, allow_short=True)
    )
    assert report.status == "short"
    stored = load_selection_report(corpus, "long")
    assert stored.status == "short" and stored.problems == report.problems
    strata = corpus.query("SELECT * FROM selection_strata WHERE name = 'long'")
    assert (strata["short_tokens"] > 0).all()
    assert int(strata.filter(strata["concept"] == "alpha")["docs"].sum()) == 100


def test_token_target_below_the_shortest_possible_is_reported(corpus):
    with pytest.raises(SelectionShortError, match="over by .* tokens"):
        select(corpus, SelectionConfig(name="tiny", docs=100, tokens=100))


def test_name_exists_needs_replace_and_unknown_concept(corpus):
    select(corpus, SelectionConfig(name="dup", docs=10))
    with pytest.raises(SelectionError, match="--replace"):
        select(corpus, SelectionConfig(name="dup", docs=10))
    select(corpus, SelectionConfig(name="dup", docs=12, replace=True))
    n = corpus.query("SELECT count(*) AS n FROM selections WHERE name = 'dup'")["n"][0]
    assert n == 24
    with pytest.raises(SelectionError, match="concept 'gamma' has no eligible documents"):
        select(corpus, SelectionConfig(name="g", docs=10, concepts=["gamma"]))
    with pytest.raises(SelectionError, match="--where"):
        select(corpus, SelectionConfig(name="w", docs=10, where="no_such_column > 1"))


def test_cli_select_show_list_diff(cli, tmp_path):
    store = Store(tmp_path / "corpus")
    store.append("documents_raw", build_documents(make_records()))
    out = cli(
        "select",
        "--name",
        "c1",
        "--docs",
        "150",
        "--tokens",
        "12k",
        "--concept-target",
        "beta=100:9k",
        "--seed",
        "3",
    ).output
    assert "selection 'c1' (seed 3): ok" in out
    assert "alpha" in out and "beta" in out and "Δ pp" in out
    assert cli("select", "show", "c1").output.startswith("selection 'c1'")
    cli("select", "--name", "c2", "--docs", "150")
    assert "c1" in cli("select", "list").output
    assert "only_a" in cli("select", "diff", "c1", "c2").output
    bad = cli("select", "--name", "c3", "--docs", "10k", expect=2)
    assert "error:" in bad.output and "short by" in bad.output
    cli("select", "drop", "c2")
    assert "c2" not in cli("select", "list").output


@pytest.mark.parametrize(
    ("cfg", "wanted"),
    [
        (dict(docs=0), "docs 0: must be at least 1"),
        (dict(docs=10, tokens=0), "tokens 0: must be at least 1"),
        (dict(docs=10, overrides={"beta": ConceptTarget(5, 0)}), "overrides 'beta'"),
        (dict(overrides={"beta": ConceptTarget(0)}), "overrides 'beta'"),
        (
            dict(docs=10, concepts=["alpha"], overrides={"beta": ConceptTarget(7)}),
            "'beta': not among concepts",
        ),
    ],
)
def test_a_target_the_selection_would_drop_is_refused_before_any_work(corpus, cfg, wanted):
    """A target of 0, or one for a concept outside ``concepts``, used to be ignored."""
    with pytest.raises(SelectionError, match=wanted):
        select(corpus, SelectionConfig(name="refused", **cfg))
    assert "refused" not in list_selections(corpus)


def test_a_repeated_concept_is_selected_once(corpus, cli, tmp_path):
    """``--concept a --concept a`` stored every document twice: a duplicate-key traceback."""
    report = select(
        corpus, SelectionConfig(name="twice", docs=10, concepts=["beta", "beta"]), save=False
    )
    assert [c.concept for c in report.concepts] == ["beta"] and report.docs == 10
    store = Store(tmp_path / "corpus")
    store.append("documents_raw", build_documents(make_records(SMALL)))
    out = cli("select", "--name", "t", "--docs", "5", "--concept", "beta", "--concept", "beta")
    assert "selection 't'" in out.output
    assert store.query("SELECT count(*) AS n FROM selections WHERE name = 't'")["n"][0] == 5


def test_user_sql_exclusions_are_left_out_and_can_be_lifted(cli, tmp_path):
    store = Store(tmp_path / "corpus")
    store.append("documents_raw", build_documents(make_records()))
    longest = store.query(
        "SELECT count(*) AS n FROM documents WHERE n_tokens > 120 AND concept = 'beta'"
    )["n"][0]
    assert longest > 0
    out = cli("exclude", "--where", "n_tokens > 120 AND concept = 'beta'", "--reason", "long")
    assert f"excluded {longest:,} more documents" in out.output
    again = cli("exclude", "--where", "n_tokens > 120 AND concept = 'beta'", "--reason", "long")
    assert "excluded 0 more documents" in again.output  # idempotent
    report = select(store, SelectionConfig(name="x", docs=100, concepts=["beta"]))
    assert report.excluded == longest
    got = store.query(
        "SELECT max(n_tokens) AS m FROM selections WHERE name = 'x' AND concept = 'beta'"
    )["m"][0]
    assert got <= 120
    assert f"lifted {longest:,}" in cli("exclude", "--reason", "long", "--lift").output
    bad = cli("exclude", "--where", "nope > 1", "--reason", "r", expect=2)
    assert "error: --where 'nope > 1'" in bad.output


def test_lift_needs_a_reason_and_with_where_lifts_only_those_documents(cli, tmp_path):
    """`--lift` without `--reason` said "lifted 0" (exit 0), and `--lift --where` ignored the
    --where and lifted every exclusion of the reason."""
    store = Store(tmp_path / "corpus")
    store.append("documents_raw", build_documents(make_records()))
    cli("exclude", "--where", "n_tokens > 100", "--reason", "long")

    def long_ones(where: str = "true") -> int:
        return store.query(
            f"SELECT count(*) AS n FROM documents WHERE exclusion_reason = 'long' AND {where}"
        )["n"][0]

    total, beta = long_ones(), long_ones("concept = 'beta'")
    assert 0 < beta < total
    res = cli("exclude", "--lift", expect=2)
    assert (
        res.output
        == f"error: give --reason: --lift removes the exclusions recorded with it (reasons: 'long' ({total:,}))\n"
    )  # noqa: E501
    out = cli("exclude", "--lift", "--reason", "long", "--where", "concept = 'beta'").output
    assert (
        out == f"lifted {beta:,} exclusions ('long') of documents matching \"concept = 'beta'\"\n"
    )
    assert long_ones() == total - beta and long_ones("concept = 'beta'") == 0
    out = cli("exclude", "--lift", "--reason", "lnog").output  # a typo is named, not silent
    assert out == f"lifted 0 exclusions ('lnog'); recorded reasons: 'long' ({total - beta:,})\n"
    assert lift_exclusions(store, "long", where="concept = 'alpha'") == total - beta
    with pytest.raises(SelectionError, match="give --reason"):
        lift_exclusions(store, " ")


# ------------------------------------------------- atomic writes: a failure changes nothing

SMALL = {"alpha": {"blog": (12, 30), "memo": (8, 20)}, "beta": {"faq": (10, 25)}}


@pytest.fixture
def small(tmp_path) -> Store:
    """A fresh 30-document corpus with a stored selection 's' and a user exclusion 'long'."""
    store = Store(tmp_path / "corpus")
    store.append("documents_raw", build_documents(make_records(SMALL)))
    select(store, SelectionConfig(name="s", docs=8, seed=1))
    assert exclude_where(store, "n_tokens > 40", "long") > 0
    return store


def selected(store: Store, name: str) -> list[str]:
    return store.query(
        "SELECT doc_id FROM selections WHERE name = $n ORDER BY doc_id", {"n": name}
    )["doc_id"].to_list()


ERRORS = [KeyboardInterrupt(), RuntimeError("disk on fire")]


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize(
    "pattern", [r"DELETE FROM selection_runs", r"DELETE FROM selection_strata", r"^COMMIT"]
)
def test_interrupted_drop_changes_nothing(small, pattern, error):
    before = catalog(small)
    point = crash_at(small, pattern, error)
    with pytest.raises(type(error)):
        drop(small, "s")
    assert point.fired, point.statements
    assert catalog(small) == before
    fresh = Store(small.root)
    assert "s" in list_selections(fresh) and load_selection_report(fresh, "s").docs == 16
    drop(fresh, "s")  # the next run works
    assert "s" not in list_selections(fresh) and selected(fresh, "s") == []
    assert fresh.query("SELECT count(*) AS n FROM selection_strata WHERE name = 's'")["n"][0] == 0


@pytest.mark.parametrize("error", ERRORS)
def test_interrupted_lift_changes_nothing(small, error):
    before = catalog(small)
    n = small.query("SELECT count(*) AS n FROM exclusions WHERE reason = 'long'")["n"][0]
    point = crash_at(small, r"DELETE FROM exclusions", error)  # after counting them
    with pytest.raises(type(error)):
        lift_exclusions(small, "long")
    assert point.fired
    assert catalog(small) == before
    assert lift_exclusions(Store(small.root), "long") == n
    assert Store(small.root).query("SELECT count(*) AS n FROM exclusions")["n"][0] == 0


@pytest.mark.parametrize("error", ERRORS)
def test_interrupted_exclude_changes_nothing(small, error):
    before = catalog(small)
    # The second count runs after the INSERT: fail there, with the rows already inserted.
    point = crash_at(small, r"SELECT count\(\*\) FROM exclusions", error, skip=1)
    with pytest.raises(type(error)):
        exclude_where(small, "concept = 'beta'", "beta out")
    assert point.fired
    assert catalog(small) == before
    assert exclude_where(Store(small.root), "concept = 'beta'", "beta out") == 10


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize(
    "pattern", [r"INSERT INTO selections ", r"INSERT INTO selection_runs", r"^COMMIT"]
)
def test_interrupted_replace_keeps_the_old_selection(small, pattern, error):
    old = selected(small, "s")
    before = catalog(small)
    point = crash_at(small, pattern, error)
    cfg = SelectionConfig(name="s", docs=6, seed=2, replace=True)
    with pytest.raises(type(error)):
        select(small, cfg)
    assert point.fired, point.statements
    assert catalog(small) == before
    fresh = Store(small.root)
    assert selected(fresh, "s") == old and load_selection_report(fresh, "s").docs == 16
    assert select(fresh, cfg).docs == 12  # the next run works
    assert len(selected(fresh, "s")) == 12 and load_selection_report(fresh, "s").docs == 12
