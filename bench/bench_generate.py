"""Benchmark: the generation pipeline's own overhead, measured with the offline stand-in.

The model call is what a real run waits for (minutes to hours per batch); what sdfkit adds
around it (rendering prompts, custom_ids, the catalog, the SDK round trips, streaming
results, landing documents, the ledger) must stay small next to it and must not grow badly
with corpus size. Both example universes are generated at ~2,100 documents (``--quick``:
~420) through ``sdfkit.generate.documents.generate`` with the offline backend, and compared side by
side with a baseline that composes the same documents by calling the stand-in's composer
directly and lands them with one ``build_documents`` + ``store.append`` (no batches, no
catalog). Also timed: a resume of the finished run (the same command again: must submit
nothing and be quick).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sdfkit.generate.documents import GenerateConfig, generate  # noqa: E402
from sdfkit.generate.universe import load_universes  # noqa: E402
from sdfkit.llm.batches import make_client  # noqa: E402
from sdfkit.llm.offline import answer_document  # noqa: E402
from sdfkit.llm.tokens import get_tokenizer  # noqa: E402
from sdfkit.store.catalog import Store  # noqa: E402
from sdfkit.store.ingest import build_documents  # noqa: E402


def main() -> None:
    quick = "--quick" in sys.argv
    counts = (
        dict(doc_types=4, ideas=5, docs_per_idea=3)
        if quick
        else dict(doc_types=5, ideas=10, docs_per_idea=6)
    )
    universes = load_universes(sorted((ROOT / "examples" / "universes").glob("*.md")))
    get_tokenizer()  # loaded once, outside both timings
    make_client("offline")  # imports the SDK outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "pipeline")
        client = make_client("offline", state_dir=store.root / ".offline-standin")
        cfg = GenerateConfig(run="bench", poll_interval=0.0, **counts)
        t0 = time.perf_counter()
        res = generate(universes, store, cfg, client=client)
        t_pipe = time.perf_counter() - t0
        n_docs = res.documents_in_run
        n_req = sum(s.requests for s in res.stages.values())

        t0 = time.perf_counter()
        again = generate(universes, store, cfg, client=client)
        t_resume = time.perf_counter() - t0
        assert again.documents_added == 0

        # baseline: the same document requests' answers, composed and landed directly
        requests = [
            r["params"] | {"custom_id": r["custom_id"]}
            for b in client._offline_server.batches.values()
            for r in b["requests"]
            if r["custom_id"].startswith("documents-")
        ]
        base = Store(Path(tmp) / "baseline")
        t0 = time.perf_counter()
        records = []
        for p in requests:
            cid = p.pop("custom_id")
            text = answer_document(p, {"custom_id": cid})
            records.append({"text": text[len("<document>\n") : -len("\n</document>")]})
        base.append("documents_raw", build_documents(records))
        t_base = time.perf_counter() - t0

    rows = [
        ("baseline: compose + land directly", t_base, n_docs / t_base),
        ("pipeline: batches + catalog + SDK", t_pipe, n_docs / t_pipe),
    ]
    print(f"documents: {n_docs}   requests over all stages: {n_req}")
    print(f"{'route':38s} {'seconds':>8s} {'docs/s':>9s} {'ratio':>7s}")
    for name, t, rate in rows:
        print(f"{name:38s} {t:8.2f} {rate:9.0f} {t / t_base:6.2f}x")
    print(f"{'resume of the finished run':38s} {t_resume:8.2f} {'':>9s} {t_resume / t_base:6.2f}x")
    print(
        f"overhead per document: {(t_pipe - t_base) / n_docs * 1000:.2f} ms "
        "(a real batch takes minutes to hours; target: well under 10 ms)"
    )


if __name__ == "__main__":
    main()
