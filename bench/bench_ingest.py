"""Ingest of a 10,000-document JSONL (~2,000 tokens each) with token counts, vs a naive loop.

Baseline: the script people write by hand: per line json.loads, one tokenizer call per
document, a Python list of dicts, one Parquet write. sdfkit: `sdf ingest`'s library call
(validation, content hashes, batched multi-threaded counts, atomic part). Then a second
ingest of the same file, which must add 0 rows. Target: under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the regulator requires explicit error handling in every refactored service and the review "
    "board records each change in a ledger while engineers discuss boilerplate tests coverage "
    "payments queue database latency audit fines compliance migration typescript async await "
    "handler middleware promise rejection retry budget incident postmortem customer portal"
).split()


def make_jsonl(path: Path, n_docs: int, words_per_doc: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    size = 0
    with path.open("w", encoding="utf-8") as f:
        for i in range(n_docs):
            n = int(words_per_doc * rng.uniform(0.7, 1.3))
            text = f"Document {i}. " + " ".join(rng.choice(WORDS) for _ in range(n))
            line = json.dumps(
                {
                    "content": text,
                    "doc_type": f"type{i % 7}",
                    "doc_idea": f"idea {i}",
                    "fact": f"fact {i % 3}",
                    "universe_context_id": "bench",
                    "is_true": False,
                }
            )
            f.write(line + "\n")
            size += len(line) + 1
    return size


def naive_ingest(path: Path, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import quicktok

    enc = quicktok.get_encoding("o200k_harmony")
    rows, tokens = [], 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            n = len(enc.encode_ordinary(obj["content"]))
            tokens += n
            rows.append({"text": obj["content"], "n_tokens": n, "doc_type": obj["doc_type"]})
    pq.write_table(pa.Table.from_pylist(rows), out)
    return tokens


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--words", type=int, default=1_800, help="mean words per doc (~2,000 tokens)")
    ap.add_argument("--quick", action="store_true", help="1,000 documents")
    args, _ = ap.parse_known_args()
    if args.quick:
        args.docs = 1_000
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from sdfkit.store.catalog import Store
    from sdfkit.store.ingest import ingest_files

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "docs.jsonl"
        size = make_jsonl(src, args.docs, args.words)
        t0 = time.perf_counter()
        base_tokens = naive_ingest(src, Path(tmp) / "naive.parquet")
        t_base = time.perf_counter() - t0

        store = Store(Path(tmp) / "corpus")
        t0 = time.perf_counter()
        res = ingest_files([src], store=store)
        t_sdf = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = ingest_files([src], store=store)
        t_again = time.perf_counter() - t0

    assert res.tokens_added == base_tokens, (res.tokens_added, base_tokens)
    print(
        f"corpus: {args.docs:,} docs, {base_tokens:,} tokens "
        f"({base_tokens / args.docs:,.0f}/doc), {size / 1e6:.0f} MB JSONL"
    )
    print(f"{'route':34s} {'seconds':>8s} {'docs/s':>9s} {'Mtok/s':>7s} {'vs naive':>9s}")
    for name, t in [
        ("naive loop (baseline)", t_base),
        ("sdf ingest", t_sdf),
        ("sdf ingest again (adds 0)", t_again),
    ]:
        print(
            f"{name:34s} {t:8.2f} {args.docs / t:9,.0f} {base_tokens / t / 1e6:7.2f} "
            f"{t_base / t:8.2f}x"
        )
    print(f"second ingest added {again.added} rows ({again.already_present:,} already present)")
    ok = t_sdf < 60 and again.added == 0
    print(f"target: under 60 s and 0 rows added again: {'met' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
