"""Near-duplicates: sdfkit's audit against datasketch's bulk route, side by side, one process tree.

Each contender runs cold in its own child process (so peak memory is its own) over the same
corpus, then both are judged against exact Jaccard computed independently here (Python
string sets of lower-cased ``\\w+`` word 5-shingles) on the pooled pairs: every pair either
contender reported plus every planted near-duplicate. Printed: documents/s (wall, and per
CPU-second, which the shared machine's load disturbs less), precision, recall and peak RSS,
with ratios sdfkit / baseline.

- **sdfkit**: ``dedup.run`` with its defaults (one-permutation MinHash vectorized with numpy,
  threads on every core, numpy LSH banding, exact verification of candidates).
- **datasketch bulk route**: ``MinHash.bulk`` with xxhash over Python ``bytes`` shingles in a
  process pool of ``--workers`` (fork), ``MinHashLSH`` at the threshold, pairs whose MinHash
  estimate reaches the threshold (as DEPS.md measured: 1,429 docs/s for signatures alone).
- text-dedup is not run: installing it would downgrade urllib3 and pull in pyspark and
  onnxruntime (``pip install --dry-run text-dedup``, 2026-12-06).

Memory per document (issue item 2): one document of ``--big-mb`` MB (ingest's ``--max-bytes``
raised) through ``dedup.run`` in a child, peak RSS reported; the datasketch route on the same
document at ``--baseline-big-mb`` MB (it needs ~200x the text: 10.7 GB at 50 MB).

Corpora: bench/synth.py (default, ``--docs``), or ``--real N``: N real-text documents
(bench/realtext.py: man pages, Debian changelogs, copyright files, READMEs) with 1 / 2.5 /
5 % word-edited copies of 1 % of them planted.

Usage: ``python bench/bench_dedup.py [--docs 9600] [--real 9600] [--big-mb 50] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _runner import in_child  # noqa: E402

os.environ.setdefault("SDF_PROGRESS", "0")
THRESHOLD = 0.7


# ----------------------------------------------------------------- child processes
def _usage() -> dict:
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
        # the largest process of the tree plus its largest child (a bound on the tree's peak)
        "peak_rss_mb": (me.ru_maxrss + kids.ru_maxrss) / 1024,
    }


def _child_sdfkit(corpus: str, seed: int) -> dict:
    from sdfkit.audits import dedup
    from sdfkit.store.catalog import Store

    start = _usage()
    t = time.perf_counter()
    res = dedup.run(Store(corpus), dedup.Config(seed=seed, write_exclusions=False))
    secs = time.perf_counter() - t
    end = _usage()
    pairs = [(p["doc_a"], p["doc_b"]) for p in res.tables["pairs"].iter_rows(named=True)]
    return {
        "seconds": secs,
        "cpu_s": end["cpu_s"] - start["cpu_s"],
        "peak_rss_mb": end["peak_rss_mb"],
        "documents": res.figures["documents"],
        "pairs": pairs,
        "timings": res.figures["timings"],
    }


def _bulk_signatures(texts: list[str]) -> list:
    import xxhash
    from datasketch import MinHash

    from sdfkit.audits.dedup import shingles

    sets = [shingles(t, 5) for t in texts]
    return [
        m.hashvalues
        for m in MinHash.bulk(sets, num_perm=128, seed=1, hashfunc=xxhash.xxh32_intdigest)
    ]


def _child_datasketch(corpus: str, workers: int) -> dict:
    import multiprocessing

    import numpy as np
    from datasketch import LeanMinHash, MinHashLSH

    from sdfkit.store.catalog import Store

    start = _usage()
    t = time.perf_counter()
    docs = Store(corpus).query("SELECT DISTINCT doc_id, text FROM documents ORDER BY doc_id")
    ids, texts = docs["doc_id"].to_list(), docs["text"].to_list()
    del docs
    chunks = [texts[i : i + 256] for i in range(0, len(texts), 256)]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            sigs = [s for part in pool.imap(_bulk_signatures, chunks) for s in part]
    else:
        sigs = [s for part in map(_bulk_signatures, chunks) for s in part]
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=128)
    sketches = [LeanMinHash(seed=1, hashvalues=s, scheme="affine32") for s in sigs]
    with lsh.insertion_session() as session:
        for d, m in zip(ids, sketches, strict=True):
            session.insert(d, m, check_duplication=False)
    index = {d: i for i, d in enumerate(ids)}
    pairs = set()
    for d, m in zip(ids, sketches, strict=True):
        for other in lsh.query(m):
            if other != d:
                a, b = sorted((d, other))
                if np.mean(sigs[index[a]] == sigs[index[b]]) >= THRESHOLD:
                    pairs.add((a, b))
    secs = time.perf_counter() - t
    end = _usage()
    return {
        "seconds": secs,
        "cpu_s": end["cpu_s"] - start["cpu_s"],
        "peak_rss_mb": end["peak_rss_mb"],
        "documents": len(ids),
        "pairs": sorted(pairs),
    }


def _in_child(fn: str, *args: object) -> dict:
    return in_child("bench_dedup", fn, *args)


# --------------------------------------------------------------------------- corpora
def real_corpus(store, n: int, seed: int = 0) -> dict:
    """``n`` real-text documents (bench/realtext.py) of which 1 % get a copy at each of 1 /
    2.5 / 5 % word edits (a random word of the document substituted); the planted pairs."""
    from realtext import real_records

    from sdfkit.store.catalog import doc_id_for
    from sdfkit.store.ingest import build_documents

    rng = random.Random(seed)
    records = real_records(n, seed)
    seen = {r["text"] for r in records}
    planted = []
    for rate in (0.01, 0.025, 0.05):
        for i in rng.sample(range(len(records)), max(1, len(records) // 300)):
            words = records[i]["text"].split(" ")
            for _ in range(max(1, round(rate * len(words)))):
                words[rng.randrange(len(words))] = rng.choice(words)
            copy = " ".join(words)
            if copy not in seen:
                seen.add(copy)
                records.append({**records[i], "text": copy})
                planted.append(tuple(sorted((doc_id_for(records[i]["text"]), doc_id_for(copy)))))
    for i in range(0, len(records), 500):
        store.append("documents_raw", build_documents(records[i : i + 500]))
    return {"docs": len(records), "planted": planted}


def _exact(a: str, b: str, k: int = 5) -> float:
    def sh(t: str) -> set[str]:
        w = re.findall(r"\w+", t.lower())
        if len(w) <= k:
            return {" ".join(w)}
        return {" ".join(w[i : i + k]) for i in range(len(w) - k + 1)}

    sa, sb = sh(a), sh(b)
    return len(sa & sb) / len(sa | sb)


def _row(label: str, ours: str, base: str, ratio: str = "") -> None:
    print(f"  {label:<34} {ours:>16} {base:>22} {ratio:>10}")


# ------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description="near-duplicates vs datasketch's bulk route")
    ap.add_argument("--docs", type=int, default=9600)
    ap.add_argument("--real", type=int, default=0, help="real text: this many documents")
    ap.add_argument("--corpus", type=Path, help="reuse a corpus directory")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--big-mb", type=float, default=50.0)
    ap.add_argument("--baseline-big-mb", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true", help="1,200 documents, 5 MB document")
    ap.add_argument("--sections", default="speed,memory")
    args, _ = ap.parse_known_args()
    if args.quick:
        args.docs, args.big_mb, args.baseline_big_mb = 1200, 5.0, 1.0
        args.real = min(args.real, 1200)

    from sdfkit.store.catalog import Store

    tmp = tempfile.TemporaryDirectory(prefix="sdf-bench-dedup-")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    if "speed" in args.sections.split(","):
        corpus = args.corpus or Path(tmp.name) / "corpus"
        planted: list[tuple[str, str]] = []
        if not (corpus / "documents").is_dir():
            if args.real:
                made = real_corpus(Store(corpus), args.real)
                planted = made["planted"]
                print(
                    f"corpus: {made['docs']:,} real-text documents (man pages, Debian docs), "
                    f"{len(planted)} planted near-duplicates"
                )
            else:
                from synth import make_corpus

                truth = make_corpus(Store(corpus), n_docs=args.docs, seed=0)
                planted = [
                    tuple(sorted((p["doc_a"], p["doc_b"]))) for p in truth["near_duplicates"]
                ]
                print(f"corpus: {truth['docs']:,} synthetic documents (bench/synth.py)")
        _bench_speed(Store(corpus), corpus, planted, args.workers)
    if "memory" in args.sections.split(","):
        _bench_memory(Path(tmp.name), args.big_mb, args.baseline_big_mb)
    print(f"\nmachine: load average {os.getloadavg()[0]:.1f} at end")
    tmp.cleanup()


def _bench_speed(store, corpus: Path, planted: list, workers: int) -> None:
    seed = random.randrange(1000, 2**31)  # a fresh seed: signatures are computed cold
    ours = _in_child("_child_sdfkit", str(corpus), seed)
    base = _in_child("_child_datasketch", str(corpus), workers)
    reported = {
        "ours": {tuple(p) for p in ours["pairs"]},
        "base": {tuple(p) for p in base["pairs"]},
    }
    pool = set(planted) | reported["ours"] | reported["base"]
    need = sorted({d for p in pool for d in p})
    text = dict(
        store.query(
            "SELECT doc_id, any_value(text) FROM documents WHERE doc_id IN (SELECT unnest($i)) "
            "GROUP BY 1",
            {"i": need},
        ).iter_rows()
    )
    truth = {
        p for p in pool if p[0] in text and p[1] in text and _exact(*map(text.get, p)) >= THRESHOLD
    }

    def pr(found: set) -> tuple[float, float]:
        tp = len(found & truth)
        return tp / max(len(found), 1), tp / max(len(truth), 1)

    p_ours, r_ours = pr(reported["ours"])
    p_base, r_base = pr(reported["base"])
    n = ours["documents"]
    print(
        f"\nnear-duplicates at Jaccard >= {THRESHOLD} over word 5-shingles, {n:,} documents; "
        f"truth: {len(truth)} pairs by exact Jaccard over the pooled {len(pool)} pairs"
    )
    _row("", "sdfkit", f"datasketch bulk ({workers}p)", "ratio")
    _row(
        "documents/s (wall)",
        f"{n / ours['seconds']:,.0f}",
        f"{n / base['seconds']:,.0f}",
        f"{base['seconds'] / ours['seconds']:.1f}x",
    )
    _row(
        "documents per CPU-second",
        f"{n / ours['cpu_s']:,.0f}",
        f"{n / base['cpu_s']:,.0f}",
        f"{base['cpu_s'] / ours['cpu_s']:.1f}x",
    )
    _row("precision", f"{p_ours:.4f}", f"{p_base:.4f}", f"{p_ours / max(p_base, 1e-9):.2f}x")
    _row("recall", f"{r_ours:.4f}", f"{r_base:.4f}", f"{r_ours / max(r_base, 1e-9):.2f}x")
    _row(
        "peak RSS",
        f"{ours['peak_rss_mb']:,.0f} MB",
        f"{base['peak_rss_mb']:,.0f} MB",
        f"{ours['peak_rss_mb'] / base['peak_rss_mb']:.2f}x",
    )
    print(f"  sdfkit stage timings: {ours['timings']}")


def _child_make_big_doc(root: str, mb: float) -> dict:
    """Write one document of ``mb`` MB (and a 50 kB piece of it) into a corpus: done in a
    process of its own, so making the text never counts in the audit's peak memory."""
    from sdfkit.store.catalog import Store
    from sdfkit.store.ingest import build_documents

    rng = random.Random(4)
    vocab = [f"term{i}" for i in range(50_000)] + ["the", "of", "and", "a", "to"]
    text = " ".join(rng.choice(vocab) for _ in range(int(mb * 1_000_000 / 8)))
    store = Store(root)
    store.append("documents_raw", build_documents([{"text": text, "concept": "big"}]))
    store.append("documents_raw", build_documents([{"text": text[:50_000], "concept": "big"}]))
    return {"chars": len(text)}


def _child_big_doc(root: str, route: str) -> dict:
    from sdfkit.store.catalog import Store

    store = Store(root)
    before = _usage()["peak_rss_mb"]
    t = time.perf_counter()
    if route == "sdfkit":
        from sdfkit.audits import dedup

        dedup.run(store, dedup.Config(write_exclusions=False))
    else:
        texts = store.query("SELECT text FROM documents")["text"].to_list()
        _bulk_signatures(texts)
    return {
        "seconds": time.perf_counter() - t,
        "peak_rss_mb": _usage()["peak_rss_mb"],
        "before_mb": before,
    }


def _big(tmp: Path, name: str, mb: float, route: str) -> dict:
    root = str(tmp / name)
    _in_child("_child_make_big_doc", root, mb)
    return _in_child("_child_big_doc", root, route)


def _bench_memory(tmp: Path, big_mb: float, base_mb: float) -> None:
    print(f"\nmemory per document: one {big_mb:g} MB document (+ one 50 kB piece of it)")
    ours = _big(tmp, "big-ours", big_mb, "sdfkit")
    small = _big(tmp, "big-small", base_mb, "sdfkit")
    base = _big(tmp, "big-base", base_mb, "datasketch")
    _row("peak RSS after imports, before the audit", f"{small['before_mb']:,.0f} MB", "", "")
    _row("", "sdfkit", "datasketch bulk", "ratio")
    _row(
        f"peak RSS, {base_mb:g} MB document",
        f"{small['peak_rss_mb']:,.0f} MB",
        f"{base['peak_rss_mb']:,.0f} MB",
        f"{small['peak_rss_mb'] / base['peak_rss_mb']:.2f}x",
    )
    _row(
        f"peak RSS, {big_mb:g} MB document",
        f"{ours['peak_rss_mb']:,.0f} MB",
        f"~{base['peak_rss_mb'] * big_mb / base_mb:,.0f} MB (scaled)",
        "target <= 1,024 MB",
    )
    growth = (
        (ours["peak_rss_mb"] - small["peak_rss_mb"]) / (big_mb - base_mb)
        if big_mb != base_mb
        else 0
    )
    _row("sdfkit peak growth per MB of text", f"{growth:.1f} MB/MB", "", "")
    _row(f"time, {big_mb:g} MB document", f"{ours['seconds']:.1f} s", "", "")


if __name__ == "__main__":
    main()
