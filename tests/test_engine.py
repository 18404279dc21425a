"""The local engine: one result row per document, cached by content hash, process pool = serial."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet
import pytest

from sdfkit.engine.local import EngineError, Stage, read_results, run_stage
from sdfkit.store.ingest import build_documents


class WordCount(Stage):
    name = "test_wordcount"
    columns = ("doc_id", "text")

    @property
    def output_schema(self) -> pa.Schema:
        return pa.schema([("doc_id", pa.string()), ("words", pa.int64())])

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        words = [len(t.split()) for t in batch.column("text").to_pylist()]
        return pa.RecordBatch.from_arrays(
            [batch.column("doc_id"), pa.array(words, pa.int64())], schema=self.output_schema
        )


class Broken(WordCount):
    name = "test_broken"

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return super().process(batch).slice(0, 1)


class InterruptState(WordCount):
    """Each row: 1 where the process computing it ignores Ctrl-C."""

    name = "test_interrupt_state"

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import signal

        ignored = int(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
        return pa.RecordBatch.from_arrays(
            [batch.column("doc_id"), pa.array([ignored] * batch.num_rows, pa.int64())],
            schema=self.output_schema,
        )


def _docs(store, texts):
    store.append("documents_raw", build_documents([{"text": t, "concept": "c"} for t in texts]))


def test_stage_results_are_cached_by_content(store):
    _docs(store, [f"word {'x ' * i}" for i in range(1, 51)])
    first = run_stage(store, WordCount(), batch_rows=7)
    assert first.processed == 50
    again = run_stage(store, WordCount())
    assert again.processed == 0  # nothing new: cached by doc_id
    _docs(store, ["a brand new document here"])
    assert run_stage(store, WordCount()).processed == 1
    res = read_results(store, WordCount())
    assert res.num_rows == 51
    got = dict(zip(res.column("doc_id").to_pylist(), res.column("words").to_pylist(), strict=True))
    stored = store.query("SELECT doc_id, text FROM documents")
    for did, text in stored.iter_rows():
        assert got[did] == len(text.split())
    # results are joinable in SQL by their table name
    joined = store.query(
        "SELECT count(*) AS n FROM documents JOIN test_wordcount USING (doc_id)"
    ).item()
    assert joined == 51


def test_pending_documents_come_in_full_batches_after_filtering(store):
    # A sample (``where``) or cached results thin out each Parquet batch; the rows left are
    # gathered into full batches, so a stage that pads its batches (the embeddings) pads
    # only the last one. Every pending document comes once, in storage order.
    from sdfkit.engine.stage import pending_documents

    _docs(store, [f"document number {i}" for i in range(100)])
    _docs(store, [f"a later part {i}" for i in range(30)])  # a second Parquet part
    ids = store.query("SELECT doc_id FROM documents")["doc_id"].to_list()
    every_third = set(ids[::3])
    run_stage(store, WordCount(), where=set(ids[1::3]))  # some are done already
    batches = list(
        pending_documents(store, WordCount(), batch_rows=8, where=every_third | set(ids[1::3]))
    )
    sizes = [b.num_rows for b in batches]
    assert sizes[:-1] == [8] * (len(sizes) - 1) and 0 < sizes[-1] <= 8
    got = [d for b in batches for d in b.column("doc_id").to_pylist()]
    assert len(got) == len(set(got)) and set(got) == every_third
    order = [
        d
        for part in store.parts("documents")
        for d in pa.parquet.read_table(part, columns=["doc_id"]).column("doc_id").to_pylist()
        if d in every_third
    ]
    assert got == order


def test_pending_documents_join_parts_of_other_string_types(store):
    # A part written elsewhere (polars, DuckDB) may hold string where sdfkit writes
    # large_string: gathering rows across parts casts them to one schema, not an error.
    import pyarrow.parquet as pq

    from sdfkit.engine.stage import pending_documents

    _docs(store, [f"document number {i}" for i in range(5)])
    foreign = build_documents([{"text": f"from elsewhere {i}", "concept": "c"} for i in range(5)])
    foreign = foreign.cast(
        pa.schema(
            [
                f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f
                for f in foreign.schema
            ]
        )
    )
    pq.write_table(foreign, store.root / "documents" / "part-foreign-strings.parquet")
    batches = list(pending_documents(store, WordCount(), batch_rows=4))
    assert [b.num_rows for b in batches] == [4, 4, 2]
    assert len({d for b in batches for d in b.column("doc_id").to_pylist()}) == 10
    assert run_stage(store, WordCount()).processed == 10


def test_process_pool_gives_the_same_results(store, tmp_path):
    from sdfkit.store.catalog import Store

    texts = [f"doc {i} " + "w " * (i % 13) for i in range(40)]
    _docs(store, texts)
    other = Store(tmp_path / "other")
    _docs(other, texts)
    run_stage(store, WordCount(), workers=1, batch_rows=5)
    run_stage(other, WordCount(), workers=2, batch_rows=5)
    a = read_results(store, WordCount()).sort_by("doc_id")
    b = read_results(other, WordCount()).sort_by("doc_id")
    assert a.equals(b)


def test_pool_workers_leave_ctrl_c_to_the_command(store):
    """A Ctrl-C reaches every process of the group: the workers ignore it (the command's
    process stops the pool), where each used to print a KeyboardInterrupt traceback."""
    _docs(store, [f"doc {i}" for i in range(12)])
    run_stage(store, InterruptState(), workers=2, batch_rows=3)
    assert read_results(store, InterruptState()).column("words").to_pylist() == [1] * 12


def test_sdf_engine_chooses_the_engine(store, monkeypatch, cli):
    _docs(store, ["one two"])
    monkeypatch.setenv("SDF_ENGINE", "spark")
    with pytest.raises(EngineError, match="unknown engine 'spark'"):
        run_stage(store, WordCount())
    out = cli("--corpus", store.root, "audit", "dedup", expect=2)
    assert "unknown engine 'spark'" in out.output
    monkeypatch.setenv("SDF_ENGINE", "local")
    assert run_stage(store, WordCount()).engine == "local"


def test_bad_sdf_workers_is_a_clear_error(store, monkeypatch):
    _docs(store, ["one two"])
    monkeypatch.setenv("SDF_WORKERS", "two")
    with pytest.raises(EngineError, match="SDF_WORKERS must be a whole number, got 'two'"):
        run_stage(store, WordCount())
    assert "test_wordcount" not in store.parquet_tables()


@pytest.mark.parametrize("workers", [-1, 0, True])
def test_workers_below_one_are_refused_as_sdf_workers_is(store, monkeypatch, workers):
    """`sdf tokens --workers -1` ran in-process without a word (0 fell back to
    $SDF_WORKERS), while SDF_WORKERS=-1 was refused."""
    _docs(store, ["one two"])
    with pytest.raises(EngineError, match=f"workers must be at least 1, got {workers}") as err:
        run_stage(store, WordCount(), workers=workers)
    assert err.value.settings == ("workers",)
    assert "test_wordcount" not in store.parquet_tables()


def test_sdf_workers_is_checked_even_when_nothing_is_pending(store, monkeypatch):
    _docs(store, ["one two"])
    assert run_stage(store, WordCount()).processed == 1
    monkeypatch.setenv("SDF_WORKERS", "-1")
    with pytest.raises(EngineError, match="SDF_WORKERS must be at least 1, got '-1'"):
        run_stage(store, WordCount())


def test_stage_must_return_one_row_per_document(store):
    _docs(store, ["one two", "three four five"])
    with pytest.raises(EngineError, match="returned 1 rows for 2 documents"):
        run_stage(store, Broken())
    assert "test_broken" not in store.parquet_tables()  # nothing half-written


def test_cli_tokens_recounts_under_another_tokenizer(cli, tmp_path):
    from sdfkit.llm.tokens import get_tokenizer
    from sdfkit.store.catalog import Store

    store = Store(tmp_path / "corpus")
    _docs(store, ["Tokens differ between vocabularies: naïve café résumé", "plain words"])
    out = cli("tokens", "--tokenizer", "cl100k_base").output
    assert "2 documents counted on the local engine into token_counts_cl100k_base" in out
    df = store.query(
        "SELECT d.text, t.n_tokens FROM documents d JOIN token_counts_cl100k_base t USING (doc_id)"
    )
    tok = get_tokenizer("cl100k_base")
    for text, n in df.iter_rows():
        assert n == len(tok.encode(text))
    assert (
        "unknown engine 'spark'"
        in cli("tokens", "--tokenizer", "qwen3", "--engine", "spark", expect=2).output
    )


def test_ray_address_option_applies_to_one_command(cli, monkeypatch):
    import os

    import sdfkit.report.build
    from sdfkit.errors import SdfError
    from sdfkit.store.catalog import Store

    def fake_build(*args, **kwargs):
        raise SdfError(f"would join {os.environ.get('RAY_ADDRESS')}")

    monkeypatch.setattr(sdfkit.report.build, "build", fake_build)
    with Store("corpus").connect():  # report and check read an existing corpus
        pass
    res = cli("report", "--engine", "ray", "--ray-address", "ray://head:10001", expect=2)
    assert "would join ray://head:10001" in res.output
    assert "RAY_ADDRESS" not in os.environ  # restored after the command
    res = cli("check", "--run", "--ray-address", "ray://other:1", expect=2)
    assert "would join ray://other:1" in res.output


def test_process_pool_after_polars_threads_does_not_hang(tmp_path):
    """A process pool started after polars ran its thread pool (every audit does) must not
    inherit a held lock: with fork-started workers the n-gram stage hung at 0 % CPU. Run in a
    subprocess with a timeout, so a regression fails instead of hanging the suite."""
    import subprocess
    import sys

    script = f"""
import numpy as np, polars as pl
from sdfkit.store.catalog import Store
from sdfkit.store.ingest import build_documents
from sdfkit.engine.local import run_stage, read_results
from sdfkit.audits.ngrams import TokenHashStage
store = Store({str(tmp_path / "corpus")!r})
store.append("documents_raw", build_documents(
    [{{"text": f"document {{i}}. " + "alpha beta gamma " * (i % 50 + 1)}} for i in range(400)]))
df = pl.DataFrame({{"k": np.arange(3_000_000) % 1000, "v": np.arange(3_000_000)}})
for _ in range(3):  # keep polars' pool busy right up to the fork
    df.group_by("k").agg(pl.col("v").sum().alias("s"), pl.col("v").cast(pl.Utf8).str.len_chars().max().alias("m"))
run_stage(store, TokenHashStage(), workers=2, batch_rows=20)
print("rows", read_results(store, TokenHashStage()).num_rows)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rows 400" in proc.stdout


def test_prefetched_keeps_order_raises_errors_and_stops_when_left():
    import threading
    import time

    from sdfkit.engine.local import prefetched

    assert list(prefetched(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad part")

    got = []
    with pytest.raises(ValueError, match="bad part"):
        for x in prefetched(failing()):
            got.append(x)
    assert got == [1]

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = prefetched(endless(), depth=2)
    assert [next(it), next(it)] == [0, 1]
    it.close()  # the consumer leaves early: the reading thread stops
    time.sleep(0.2)
    assert not any(t.name == "sdf-prefetch" for t in threading.enumerate())
    assert len(produced) <= 6
