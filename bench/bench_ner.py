"""The names audit's NER: spaCy's ``nlp.pipe`` against the compiled decoding, side by side.

``names.Config.ner_decoder`` picks how the windows' entities come out of spaCy's NER model:
``spacy`` (``nlp.pipe``) or ``compiled`` (spaCy and thinc compute the model's numbers, and
``audits/ner_kernels.py`` runs spaCy's greedy BILUO loop in numba). Two parts:

1. **Windows**: ``--windows`` windows (``window_words`` words either side of a capitalised
   word, as the audit cuts them) from the corpus, NER'd by each route in its own process,
   one core each: CPU seconds, tokens per CPU-second, the ratio, and the windows whose
   entities differ between the routes (spans and labels; expected 0).
2. **The names audit, cold** (``--audit``): ``names.run`` on a fresh copy of the corpus with
   each decoder, each in its own process tree (the NER workers included): seconds, CPU
   seconds of every process, and whether every figure but the timings is identical.

Corpus: ``--corpus DIR`` (an sdfkit store, e.g. one ``bench/bench_memory.py`` made), or by
default real text (``bench/realtext.py``, ``--docs`` documents) where this machine has it,
else a synthetic corpus (``bench/synth.py``).

Usage: ``python bench/bench_ner.py [--corpus DIR] [--docs 2000] [--windows 20000] [--audit]
[--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _runner import in_child, load_average, machine_speed, measure  # noqa: E402

os.environ.setdefault("SDF_PROGRESS", "0")
ROUTES = ("spacy", "compiled")


def _texts(corpus: str, limit: int | None = None) -> list[str]:
    import pyarrow.parquet as pq

    out: list[str] = []
    for part in sorted(Path(corpus, "documents").glob("*.parquet")):
        out += pq.read_table(part, columns=["text"]).column("text").to_pylist()
        if limit and len(out) >= limit:
            break
    return out[:limit] if limit else out


def windows(corpus: str, n: int, words: int = 6, seed: int = 0) -> list[str]:
    """``n`` windows of ``words`` words either side of a capitalised word, drawn uniformly
    over the corpus's documents."""
    rng = random.Random(seed)
    texts = _texts(corpus)
    out = []
    while len(out) < n and texts:
        text = texts[rng.randrange(len(texts))]
        spans = [m.span() for m in re.finditer(r"\S+", text)]
        caps = [i for i, (s, _) in enumerate(spans) if text[s].isupper()]
        if not caps:
            continue
        i = rng.choice(caps)
        out.append(text[spans[max(0, i - words)][0] : spans[min(len(spans) - 1, i + words)][1]])
    return out


def ner_route(corpus: str, n: int, route: str, out: str) -> dict:
    """In a child: NER the windows by ``route`` on one thread; write the entities to ``out``."""
    from sdfkit.audits import names

    texts = windows(corpus, n)
    nlp = names.load_nlp(names.DEFAULT_MODEL)
    list(names._entities(nlp, texts[:50], 64, route))  # load (and warm) what the route uses
    t0, c0 = time.perf_counter(), time.process_time()
    found = [
        [(e.start, e.end, e.label_) for e in ents]
        for _, ents in names._entities(nlp, texts, 64, route)
    ]
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    tokens = sum(len(nlp.make_doc(t)) for t in texts)
    Path(out).write_text(json.dumps(found))
    return {"cpu": cpu, "wall": wall, "tokens": tokens, "windows": len(texts)}


def audit_child(corpus: str, route: str, out: str) -> None:
    """Body of ``python bench_ner.py --audit-child``: a cold names audit."""
    from sdfkit.audits import names
    from sdfkit.store.catalog import Store

    result = names.run(Store(corpus), names.Config(ner_decoder=route))
    figures = {k: v for k, v in result.figures.items() if k != "timings"}
    Path(out).write_text(json.dumps(figures, sort_keys=True, default=str))


def _corpus(args: argparse.Namespace, tmp: Path) -> str:
    if args.corpus:
        return str(args.corpus)
    from sdfkit.store.catalog import Store

    store = Store(tmp / "corpus")
    try:
        from realtext import write_corpus

        if write_corpus(store, args.docs) >= args.docs // 2:
            print(f"corpus: {args.docs:,} real-text documents (bench/realtext.py)")
            return str(store.root)
    except Exception as exc:  # noqa: BLE001 - no man pages here: synthetic text instead
        print(f"(no real text: {type(exc).__name__}: {exc})")
    from synth import make_corpus

    shutil.rmtree(tmp / "corpus", ignore_errors=True)
    store = Store(tmp / "corpus")
    make_corpus(store, n_docs=args.docs, seed=0, tokens_per_doc=1000)
    print(f"corpus: {args.docs:,} synthetic documents (bench/synth.py)")
    return str(store.root)


def main() -> None:
    ap = argparse.ArgumentParser(description="names NER: nlp.pipe vs the compiled decoding")
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--windows", type=int, default=20_000)
    ap.add_argument("--audit", action="store_true", help="also the cold names audit per route")
    ap.add_argument("--quick", action="store_true", help="600 documents, 4,000 windows")
    ap.add_argument("--audit-child", nargs=3, metavar=("CORPUS", "ROUTE", "OUT"))
    args = ap.parse_args()
    if args.quick:
        args.docs, args.windows = 600, 4000
    if args.audit_child:
        audit_child(*args.audit_child)
        return
    print(f"machine: {machine_speed()}; load {load_average()}")
    with tempfile.TemporaryDirectory(prefix="sdf-bench-ner-") as tmp:
        corpus = _corpus(args, Path(tmp))
        got = {}
        for route in ROUTES:
            got[route] = in_child(
                "bench_ner", "ner_route", corpus, args.windows, route, f"{tmp}/{route}.json"
            )
        base = got["spacy"]
        print(f"\n{base['windows']:,} windows, {base['tokens']:,} tokens, one core each")
        print(f"{'route':<10} {'CPU s':>8} {'tokens/CPU-s':>13} {'x spacy':>8}")
        for route in ROUTES:
            r = got[route]
            print(
                f"{route:<10} {r['cpu']:>8.2f} {r['tokens'] / r['cpu']:>13,.0f} {base['cpu'] / r['cpu']:>8.2f}"
            )
        ents = {route: json.loads(Path(f"{tmp}/{route}.json").read_text()) for route in ROUTES}
        differ = sum(a != b for a, b in zip(ents["spacy"], ents["compiled"], strict=True))
        total = sum(len(e) for e in ents["spacy"])
        print(
            f"windows whose entities differ: {differ} of {len(ents['spacy']):,} ({total:,} entities)"
        )
        if not args.audit:
            return
        print(f"\ncold names audit, each in its own process tree (load {load_average()})")
        print(f"{'route':<10} {'seconds':>8} {'CPU s, all processes':>21} {'x spacy':>8}")
        rows = {}
        for route in ROUTES:
            copy = Path(tmp, f"audit-{route}")
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(Path(corpus, "documents"), copy / "documents")
            out = f"{tmp}/audit-{route}.json"
            rows[route] = measure(
                [sys.executable, __file__, "--audit-child", str(copy), route, out]
            )
        for route in ROUTES:
            r, b = rows[route], rows["spacy"]
            print(
                f"{route:<10} {r['seconds']:>8.1f} {r['tree_cpu']:>21.1f} {b['seconds'] / r['seconds']:>8.2f}"
            )
        same = (
            Path(f"{tmp}/audit-spacy.json").read_text()
            == Path(f"{tmp}/audit-compiled.json").read_text()
        )
        print(f"every figure but the timings identical: {same}")
        print(f"machine: {machine_speed()}")


if __name__ == "__main__":
    main()
