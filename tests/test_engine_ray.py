"""--engine ray runs the very same stages as the local engine, with identical stored results."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is the optional extra sdfkit[ray]; make test installs it")

from sdfkit.engine import read_results, run_stage  # noqa: E402
from sdfkit.ingest import build_documents  # noqa: E402
from sdfkit.store import Store  # noqa: E402
from sdfkit.tokens import TokenCountStage  # noqa: E402

TESTS = Path(__file__).resolve().parent


def _corpus(root: Path, n: int = 120) -> Store:
    store = Store(root)
    recs = [{"text": f"doc {i}: " + "token soup " * (i % 17 + 1)} for i in range(n)]
    store.append("documents_raw", build_documents(recs))
    return store


def test_token_counts_identical_across_engines(ray_local, tmp_path):
    a, b = _corpus(tmp_path / "a"), _corpus(tmp_path / "b")
    stage = TokenCountStage("cl100k_base")
    assert run_stage(a, stage, engine="local").processed == 120
    res = run_stage(b, stage, engine="ray", batch_rows=16)
    assert res.engine == "ray" and res.processed == 120
    assert read_results(a, stage).sort_by("doc_id").equals(read_results(b, stage).sort_by("doc_id"))
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


def test_engine_ray_without_ray_says_how_to_install(monkeypatch, tmp_path):
    import builtins

    from sdfkit.engine import EngineError

    real_import = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    store = _corpus(tmp_path / "d", n=3)
    with pytest.raises(EngineError, match=r"pip install 'sdfkit\[ray\]'"):
        run_stage(store, TokenCountStage(), engine="ray")
