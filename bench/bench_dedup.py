"""Near-duplicates: sdfkit's audit against datasketch's bulk route, side by side, one process tree.

Each contender runs cold in its own child process (so peak memory is its own) over the same
corpus, then both are judged against exact Jaccard computed independently here (Python
string sets of lower-cased ``\\w+`` word 5-shingles) on the pooled pairs: every pair either
contender reported plus every planted near-duplicate. Printed: documents/s (wall, and per
CPU-second, which the shared machine's load disturbs less), precision, recall and peak RSS,
with ratios sdfkit / baseline.

- **sdfkit**: ``dedup.run`` with its defaults (one-permutation MinHash in compiled numba
  kernels, threads on every core, numpy LSH banding, exact verification of candidates). The
  timer starts after importing sdfkit's audit, so it includes importing polars and numba
  and loading the kernels, as a cold ``sdf audit dedup`` pays them.
- **sdfkit numpy route**: the same audit with ``route: numpy`` (the vectorized numpy hashing
  that was the default before the kernels), with another fresh seed so it too runs cold.
- **datasketch bulk route**: ``MinHash.bulk`` with xxhash over Python ``bytes`` shingles in a
  process pool of ``--workers`` (fork), ``MinHashLSH`` at the threshold, pairs whose MinHash
  estimate reaches the threshold (as DEPS.md measured: 1,429 docs/s for signatures alone).
- **text-dedup** (``python -m text_dedup.minhash``: ``MinHash`` with xxh3 over word
  5-grams in a ``datasets`` process pool of ``--workers``, LSH banding, union-find
  clusters, no verification): run from its own virtual environment, because installing it
  into ours would downgrade urllib3 and pull in pyspark. ``make bench`` builds it
  (``bench/.venv-text-dedup``, from ``bench/requirements-text-dedup.txt``); ``--text-dedup
  PYTHON`` points at another interpreter. Its claims are its clusters, so its pairs are
  every pair of documents in one cluster. Without the environment the column says so.

Memory per document (issue item 2): one document of ``--big-mb`` MB (ingest's ``--max-bytes``
raised) through ``dedup.run`` in a child, peak RSS reported; the datasketch route on the same
document at ``--baseline-big-mb`` MB (it needs ~200x the text: 10.7 GB at 50 MB).

Corpora: ``--real N`` real-text documents and ``--docs N`` synthetic ones (bench/synth.py),
both by default, or ``--corpus DIR``. The real text is this machine's man pages, Debian
changelogs, copyright files and READMEs (bench/realtext.py), with 1 / 2.5 / 5 % word-edited
copies of 1 % of the documents planted.

Usage: ``python bench/bench_dedup.py [--docs 9600] [--real 9600] [--corpus DIR] [--big-mb 50]
[--text-dedup PYTHON] [--quick]``: by default both a real-text and a synthetic corpus.
"""

from __future__ import annotations

import argparse
import itertools
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


def _child_sdfkit(corpus: str, seed: int, route: str = "auto") -> dict:
    from sdfkit.audits import dedup
    from sdfkit.store.catalog import Store

    start = _usage()
    t = time.perf_counter()
    config = dedup.Config(seed=seed, write_exclusions=False, route=route)
    res = dedup.run(Store(corpus), config)
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


def _child_text_dedup(corpus: str, python: str, workers: int, tmp: str) -> dict:
    """text-dedup's MinHash CLI in a subprocess of this child (same process tree) on the
    corpus exported to Parquet beforehand (the export is not timed); its union-find is
    dumped (``--debug``) and read back as clusters of row numbers."""
    import json
    import subprocess

    import pyarrow.parquet as pq

    from sdfkit.store.catalog import Store

    docs = Store(corpus).query("SELECT DISTINCT doc_id, text FROM documents ORDER BY doc_id")
    ids = docs["doc_id"].to_list()
    data = Path(tmp) / "td-input.parquet"
    pq.write_table(docs.select("text").to_arrow(), data)
    del docs
    out = Path(tmp) / "td-output"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    start = _usage()
    t = time.perf_counter()
    run = subprocess.run(
        [python, "-m", "text_dedup.minhash", "--path", "parquet", "--data_files", str(data),
         "--split", "train", "--cache_dir", str(Path(tmp) / "td-cache"), "--output", str(out),
         "--column", "text", "--ngram", "5", "--min_length", "0", "--num_perm", "128",
         "--threshold", str(THRESHOLD), "--hash_func", "xxh3", "--num_proc", str(workers),
         "--debug"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    secs = time.perf_counter() - t
    end = _usage()
    if run.returncode:
        return {"error": (run.stderr or run.stdout).strip().splitlines()[-1:]}
    read = (
        "import json, pickle, sys\n"
        "uf = pickle.load(open(sys.argv[1], 'rb'))\n"
        "groups = {}\n"
        "for x in uf.parent:\n"
        "    groups.setdefault(uf.find(x), []).append(int(x))\n"
        "print(json.dumps([g for g in groups.values() if len(g) > 1]))\n"
    )
    found = subprocess.run(
        [python, "-c", read, str(out / "uf.pkl")], env=env, capture_output=True, text=True
    )
    clusters = json.loads(found.stdout or "[]")
    pairs = sorted(
        tuple(sorted((ids[a], ids[b])))
        for group in clusters
        for a, b in itertools.combinations(sorted(set(group)), 2)
        if a < len(ids) and b < len(ids)
    )
    return {
        "seconds": secs,
        "cpu_s": end["cpu_s"] - start["cpu_s"],
        # the CLI's processes are this child's children: their largest RSS, not a sum
        "peak_rss_mb": end["peak_rss_mb"],
        "documents": len(ids),
        "pairs": pairs,
    }


def text_dedup_python(given: str | None) -> str | None:
    """The interpreter that has text-dedup: ``--text-dedup``, else bench/.venv-text-dedup."""
    if given:
        return given
    venv = HERE / ".venv-text-dedup"
    return str(venv / "bin" / "python") if (venv / ".installed").exists() else None


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


def _shingle_set(text: str, k: int = 5) -> set[str]:
    """Lower-cased ``\\w+`` word k-shingles as Python strings: the reference."""
    w = re.findall(r"\w+", text.lower())
    if len(w) <= k:
        return {" ".join(w)}
    return {" ".join(w[i : i + k]) for i in range(len(w) - k + 1)}


def _row(label: str, ours: str, base: str, ratio: str = "") -> None:
    print(f"  {label:<34} {ours:>16} {base:>22} {ratio:>10}")


# ------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description="near-duplicates vs datasketch's bulk route")
    ap.add_argument("--docs", type=int, default=9600, help="synthetic documents (0: none)")
    ap.add_argument("--real", type=int, default=9600, help="real-text documents (0: none)")
    ap.add_argument("--corpus", type=Path, help="reuse a corpus directory")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--big-mb", type=float, default=50.0)
    ap.add_argument("--baseline-big-mb", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true", help="1,200 documents, 5 MB document")
    ap.add_argument("--sections", default="speed,memory")
    ap.add_argument("--text-dedup", help="a Python interpreter that has text-dedup installed")
    args, _ = ap.parse_known_args()
    if args.quick:
        args.docs, args.big_mb, args.baseline_big_mb = 1200, 5.0, 1.0
        args.real = min(args.real, 1200)

    from sdfkit.store.catalog import Store

    tmp = tempfile.TemporaryDirectory(prefix="sdf-bench-dedup-")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    if "speed" in args.sections.split(","):
        td = text_dedup_python(args.text_dedup)
        for kind in ("given",) if args.corpus else ("real", "synthetic"):
            corpus = args.corpus or Path(tmp.name) / f"corpus-{kind}"
            planted: list[tuple[str, str]] = []
            if kind == "real" and args.real:
                made = real_corpus(Store(corpus), args.real)
                planted = made["planted"]
                print(
                    f"\ncorpus: {made['docs']:,} real-text documents (man pages, Debian docs), "
                    f"{len(planted)} planted near-duplicates"
                )
            elif kind == "synthetic" and args.docs:
                from synth import make_corpus

                truth = make_corpus(Store(corpus), n_docs=args.docs, seed=0)
                planted = [
                    tuple(sorted((p["doc_a"], p["doc_b"]))) for p in truth["near_duplicates"]
                ]
                print(f"\ncorpus: {truth['docs']:,} synthetic documents (bench/synth.py)")
            elif kind != "given":
                continue
            work = Path(tmp.name) / f"text-dedup-{kind}"  # its input, cache, output
            work.mkdir()
            _bench_speed(Store(corpus), corpus, planted, args.workers, td, str(work))
    if "memory" in args.sections.split(","):
        _bench_memory(Path(tmp.name), args.big_mb, args.baseline_big_mb)
    print(f"\nmachine: load average {os.getloadavg()[0]:.1f} at end")
    tmp.cleanup()


def _bench_speed(
    store, corpus: Path, planted: list, workers: int, td_python: str | None, tmp: str
) -> None:
    seed = random.randrange(1000, 2**31)  # a fresh seed: signatures are computed cold
    ours = _in_child("_child_sdfkit", str(corpus), seed)
    runs = {
        # the same audit with its numpy hashing route (the default before the numba kernels)
        "sdfkit numpy route": _in_child("_child_sdfkit", str(corpus), seed + 1, "numpy"),
        "datasketch": _in_child("_child_datasketch", str(corpus), workers),
    }
    if td_python:
        runs["text-dedup"] = _in_child("_child_text_dedup", str(corpus), td_python, workers, tmp)
    reported = {"sdfkit": {tuple(p) for p in ours["pairs"]}}
    for name, res in runs.items():
        reported[name] = {tuple(p) for p in res.get("pairs", [])}
    pool = set(planted).union(*reported.values())
    need = sorted({d for p in pool for d in p})
    text = dict(
        store.query(
            "SELECT doc_id, any_value(text) FROM documents WHERE doc_id IN (SELECT unnest($i)) "
            "GROUP BY 1",
            {"i": need},
        ).iter_rows()
    )
    sets = {d: _shingle_set(t) for d, t in text.items()}  # once per document, not per pair
    truth = {
        p
        for p in pool
        if p[0] in sets
        and p[1] in sets
        and len(sets[p[0]] & sets[p[1]]) / len(sets[p[0]] | sets[p[1]]) >= THRESHOLD
    }

    def pr(found: set) -> tuple[float, float]:
        tp = len(found & truth)
        return tp / max(len(found), 1), tp / max(len(truth), 1)

    n = ours["documents"]
    print(
        f"\nnear-duplicates at Jaccard >= {THRESHOLD} over word 5-shingles, {n:,} documents; "
        f"truth: {len(truth)} pairs by exact Jaccard over the pooled {len(pool)} pairs"
    )
    if not td_python:
        print("  text-dedup: not run (no bench/.venv-text-dedup: `make bench` builds it)")
    for name, base in runs.items():
        if "error" in base:
            print(f"  {name}: failed: {' '.join(base['error'])}")
            continue
        p_ours, r_ours = pr(reported["sdfkit"])
        p_base, r_base = pr(reported[name])
        print()
        label = name if name.startswith("sdfkit") else f"{name} ({workers}p)"
        _row("", "sdfkit", label, "ratio")
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
