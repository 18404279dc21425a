"""--engine ray runs the very same stages as the local engine, with identical stored results."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is the optional extra sdfkit[ray]; make test installs it")

from sdfkit.engine.local import read_results, run_stage  # noqa: E402
from sdfkit.engine.token_counts import TokenCountStage  # noqa: E402
from sdfkit.store.catalog import Store  # noqa: E402
from sdfkit.store.ingest import build_documents  # noqa: E402

TESTS = Path(__file__).resolve().parent


def _corpus(root: Path, n: int = 120) -> Store:
    store = Store(root)
    recs = [{"text": f"doc {i}: " + "token soup " * (i % 17 + 1)} for i in range(n)]
    store.append("documents_raw", build_documents(recs))
    return store


def test_token_counts_identical_across_engines_and_only_counts_reach_the_driver(
    ray_local, tmp_path, monkeypatch
):
    """The workers store the results; the driver never lands a row nor receives a result
    column (it gets one row count per batch)."""
    import ray

    import sdfkit.engine.local
    from sdfkit.store.catalog import Store as StoreClass

    a, b = _corpus(tmp_path / "a"), _corpus(tmp_path / "b")
    stage = TokenCountStage("cl100k_base")
    assert run_stage(a, stage, engine="local").processed == 120

    def driver_must_not_store(*args, **kwargs):
        raise AssertionError("the driver stored result rows itself")

    monkeypatch.setattr(StoreClass, "append", driver_must_not_store)
    monkeypatch.setattr(StoreClass, "part_writer", driver_must_not_store)
    monkeypatch.setattr(sdfkit.engine.local, "_store_results", driver_must_not_store)
    received: list[list[str]] = []
    real_iter = ray.data.Dataset.iter_batches

    def spy(self, *args, **kwargs):
        for batch in real_iter(self, *args, **kwargs):
            received.append(batch.column_names)
            yield batch

    monkeypatch.setattr(ray.data.Dataset, "iter_batches", spy)
    res = run_stage(b, stage, engine="ray")
    assert res.engine == "ray" and res.processed == 120
    assert received and all(cols == ["rows"] for cols in received)  # no result column
    assert read_results(a, stage).sort_by("doc_id").equals(read_results(b, stage).sort_by("doc_id"))
    assert b.parts(stage.table) and not list(b.temp_dir(stage.table).glob(".tmp-*"))
    # cached by content: nothing pending on either engine
    assert run_stage(b, stage, engine="ray").processed == 0


def test_killed_worker_is_retried_without_gaps_or_duplicates(ray_local, tmp_path):
    from ray_stages import DiesOnceStage

    store = _corpus(tmp_path / "c", n=80)
    ids = store.read("documents_raw", ["doc_id"]).column("doc_id").to_pylist()
    marker = tmp_path / "died"
    stage = DiesOnceStage(str(marker), victim=ids[37])
    res = run_stage(store, stage, engine="ray", batch_rows=8)
    assert marker.exists()  # the worker really died once
    got = read_results(store, stage).column("doc_id").to_pylist()
    assert res.processed == 80 and sorted(got) == sorted(ids)  # no gaps, no duplicates


@pytest.mark.parametrize(
    ("when", "in_actor"),
    [("before", False), ("after", False), ("after", True)],
    ids=["before-rename", "after-rename", "after-rename-actor"],
)
def test_worker_killed_while_publishing_leaves_no_duplicate(ray_local, tmp_path, when, in_actor):
    """Killed before its rename: only a temporary file is left, which nothing reads. Killed
    just after it: the retried task publishes the same batch under the same name."""
    from ray_stages import DiesAtPublishInActorStage, DiesAtPublishStage

    from sdfkit.engine.ray_data import run_stage_ray

    store = _corpus(tmp_path / "c", n=80)
    ids = store.read("documents_raw", ["doc_id"]).column("doc_id").to_pylist()
    marker = tmp_path / "died"
    kind = DiesAtPublishInActorStage if in_actor else DiesAtPublishStage
    stage = kind(str(marker), victim=ids[37], when=when)
    stored = run_stage_ray(store, stage, batch_rows=8, actors=1)  # several parts per task
    assert marker.exists(), "the worker really died once"
    table_dir = store.table_dir(stage.table)
    rows, distinct = store.query(f"SELECT count(*), count(DISTINCT doc_id) FROM {stage.table}").row(
        0
    )
    assert stored == 80 and rows == 80 and distinct == 80
    assert sorted(read_results(store, stage).column("doc_id").to_pylist()) == sorted(ids)
    leftovers = list(store.temp_dir(stage.table).glob(".tmp-*"))
    if when == "before":
        # the dead worker's finished temporary file holds the victim's batch: had anything
        # read it, the victim would be counted twice above
        assert [p.name for p in leftovers] == [marker.read_text()]
        import pyarrow.parquet as pq

        assert ids[37] in pq.read_table(leftovers[0]).column("doc_id").to_pylist()
        assert store.clean_temporaries() == 1  # its writer is gone
        assert not list(store.temp_dir(stage.table).glob(".tmp-*"))
    else:
        assert not leftovers and (table_dir / marker.read_text()).exists()
    assert store.query(f"SELECT count(*) FROM {stage.table}").item() == 80


def test_corpus_the_workers_cannot_see_is_named(ray_local, tmp_path):
    from sdfkit.engine.local import EngineError
    from sdfkit.engine.ray_data import check_paths_visible

    seen = tmp_path / "seen.parquet"
    seen.write_bytes(b"")
    check_paths_visible(ray_local, [str(seen)])  # visible: no error
    lost = str(tmp_path / "elsewhere" / "part-0.parquet")
    with pytest.raises(EngineError, match="Ray workers cannot see the corpus: .*part-0.parquet"):
        check_paths_visible(ray_local, [str(seen), lost])


def test_engine_ray_without_ray_says_how_to_install(monkeypatch, tmp_path):
    import builtins

    from sdfkit.engine.local import EngineError

    real_import = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    store = _corpus(tmp_path / "d", n=3)
    with pytest.raises(EngineError, match=r"pip install 'sdfkit\[ray\]'"):
        run_stage(store, TokenCountStage(), engine="ray")


@pytest.fixture(scope="module")
def synth_corpora(tmp_path_factory):
    """Two copies of one small synthetic corpus (planted names and near-duplicates)."""
    import shutil
    import sys

    sys.path.insert(0, str(TESTS.parent / "bench"))
    from synth import make_corpus

    root = tmp_path_factory.mktemp("synth")
    a = Store(root / "a")
    make_corpus(a, n_docs=60, seed=3, tokens_per_doc=250)
    (root / "b" / "documents").mkdir(parents=True)
    for part in a.parts("documents_raw"):
        shutil.copy(part, root / "b" / "documents" / part.name)
    return a, Store(root / "b")


def _stage_cases():
    from sdfkit.audits.dedup import MinHashStage
    from sdfkit.audits.names import NameCandidatesStage, PersonEntitiesStage

    return [MinHashStage(), NameCandidatesStage(), PersonEntitiesStage()]


@pytest.mark.parametrize("index", range(3), ids=["minhash", "name_candidates", "ner"])
def test_audit_stages_identical_across_engines(ray_local, synth_corpora, index):
    a, b = synth_corpora
    stage = _stage_cases()[index]
    run_stage(a, stage, engine="local")
    run_stage(b, stage, engine="ray", batch_rows=16)
    left, right = read_results(a, stage).sort_by("doc_id"), read_results(b, stage).sort_by("doc_id")
    assert left.num_rows == 60 and left.equals(right)


def test_embeddings_equal_within_tolerance(ray_local, synth_corpora):
    import numpy as np

    from sdfkit.audits.diversity import EmbeddingStage

    a, b = synth_corpora
    ids = set(a.read("documents_raw", ["doc_id"]).column("doc_id").to_pylist()[:12])
    stage = EmbeddingStage(precision="fp32")
    run_stage(a, stage, engine="local", where=ids)
    run_stage(b, stage, engine="ray", where=ids, actors=1)
    left, right = read_results(a, stage).sort_by("doc_id"), read_results(b, stage).sort_by("doc_id")
    assert left.column("doc_id").to_pylist() == right.column("doc_id").to_pylist()
    assert left.num_rows == 12
    x = np.asarray(left.column("embedding").to_pylist())
    y = np.asarray(right.column("embedding").to_pylist())
    assert np.abs(x - y).max() < 1e-5


def test_report_on_ray_matches_local(ray_local, synth_corpora, cli, tmp_path):
    import json

    a, b = synth_corpora
    for store, engine in ((a, "local"), (b, "ray")):
        cli(
            "--corpus",
            store.root,
            "report",
            "--engine",
            engine,
            "--skip",
            "diversity",
            "--json",
            tmp_path / f"{engine}.json",
            "--html",
            tmp_path / f"{engine}.html",
            expect=None,
        )
    local = json.loads((tmp_path / "local.json").read_text())
    ray = json.loads((tmp_path / "ray.json").read_text())
    assert local["near_duplicates"]["pairs"], "the synthetic corpus plants near-duplicates"
    assert local["names"]["top"], "the synthetic corpus plants names"
    for key in ("near_duplicates", "names", "ngrams"):
        sub = {"near_duplicates": ("pairs", "clusters"), "names": ("top",), "ngrams": ("top",)}
        for field in sub[key]:
            assert ray[key][field] == local[key][field], (key, field)
