"""Local engine vs Ray Data, per per-document stage, on the seed-scale synthetic corpus.

For each stage: the local engine (a process pool of --workers) and --engine ray (a local Ray
with the same cores, started once; its start-up is reported apart) over the same documents,
with the overhead ratio ray/local and a check that the stored results are identical (exact
for signatures, counts and names; within float tolerance for embeddings). On Ray the workers
write the result parts themselves (one per batch of up to 512 documents) and the driver only
gets row counts; the local engine lands one part per 20,000 rows: "parts" shows both.

The model stages are slow on 2 CPU cores (NER ~13k words/s, MiniLM ~20-40 docs/s), so they
run on a subset (--ner-docs, --embed-docs), labelled as such in the table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))


def _copy_corpus(src, dst_root: Path):
    from sdfkit.store.catalog import Store

    dst = Store(dst_root)
    (dst_root / "documents").mkdir(parents=True, exist_ok=True)
    for p in src.parts("documents_raw"):
        shutil.copy(p, dst_root / "documents" / p.name)
    return dst


def _same(a, b, float_tol: float | None) -> bool:
    import numpy as np

    a, b = a.sort_by("doc_id"), b.sort_by("doc_id")
    if a.num_rows != b.num_rows or a.column("doc_id") != b.column("doc_id"):
        return False
    if float_tol is None:
        return a.equals(b)
    x = np.asarray(a.column("embedding").to_pylist(), dtype=np.float32)
    y = np.asarray(b.column("embedding").to_pylist(), dtype=np.float32)
    return bool(np.abs(x - y).max() <= float_tol)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=9600)
    ap.add_argument("--ner-docs", type=int, default=400)
    ap.add_argument("--embed-docs", type=int, default=600)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--quick", action="store_true", help="1,000 docs, small model subsets")
    args, _ = ap.parse_known_args()
    if args.quick:
        args.docs, args.ner_docs, args.embed_docs = 1000, 100, 100

    from synth import make_corpus

    from sdfkit.audits.dedup import MinHashStage
    from sdfkit.audits.diversity import EmbeddingStage
    from sdfkit.audits.names import NameCandidatesStage, PersonEntitiesStage
    from sdfkit.engine.local import read_results, run_stage
    from sdfkit.engine.ray_data import ray_session
    from sdfkit.engine.token_counts import TokenCountStage
    from sdfkit.store.catalog import Store

    os.environ["SDF_PROGRESS"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        local = Store(tmp / "local")
        truth = make_corpus(local, n_docs=args.docs, seed=0)
        remote = _copy_corpus(local, tmp / "ray")
        ids = sorted(local.read("documents_raw", ["doc_id"]).column("doc_id").to_pylist())
        print(
            f"corpus: {truth['docs']:,} docs, {truth['tokens']:,} tokens; "
            f"{args.workers} local workers vs a local Ray with {os.cpu_count()} CPUs"
        )
        stages = [
            ("token counts", TokenCountStage("o200k_harmony"), None, None),
            ("MinHash signatures", MinHashStage(), None, None),
            ("name candidates", NameCandidatesStage(), None, None),
            ("NER (spaCy)", PersonEntitiesStage(), set(ids[: args.ner_docs]), None),
            ("embeddings (MiniLM)", EmbeddingStage(), set(ids[: args.embed_docs]), 1e-5),
        ]
        os.environ["SDF_RAY_TMP"] = str(tmp / "raytmp")
        t0 = time.perf_counter()
        with ray_session(num_cpus=os.cpu_count()):
            t_start = time.perf_counter() - t0
            print(f"local Ray start-up: {t_start:.1f}s (paid once per command)")
            print(
                f"{'stage':22s} {'docs':>6s} {'local s':>8s} {'ray s':>8s} "
                f"{'ray/local':>9s} {'docs/s local':>12s} {'identical':>9s} {'parts l/r':>9s}"
            )
            for label, stage, where, tol in stages:
                n = len(where) if where is not None else len(ids)
                t0 = time.perf_counter()
                run_stage(local, stage, engine="local", workers=args.workers, where=where)
                t_local = time.perf_counter() - t0
                t0 = time.perf_counter()
                run_stage(remote, stage, engine="ray", where=where)
                t_ray = time.perf_counter() - t0
                same = _same(read_results(local, stage), read_results(remote, stage), tol)
                parts = f"{len(local.parts(stage.table))}/{len(remote.parts(stage.table))}"
                print(
                    f"{label:22s} {n:6,d} {t_local:8.1f} {t_ray:8.1f} {t_ray / t_local:8.2f}x "
                    f"{n / t_local:12,.0f} {'yes' if same else 'NO':>9s} {parts:>9s}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
