"""`sdf universe split` on a large synthetic Markdown source, against the raw tokenizer.

The source: 40 chapters × 10 sections of seeded random sentences (~1.2M tokens; `--quick`:
a quarter). Baseline: quicktok encoding the whole text once (the least any token-bounded
split must do). Measured: ``split_text`` (headings, merging, cutting at 2,000 tokens with
100 of overlap, every part counted as written) and ``split_source`` (the same plus writing
one universe file per section, validating each, and ``sections.json``). Median of 3 runs.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sdfkit.generate.universe_split import SplitConfig, split_source, split_text
from sdfkit.llm.tokens import get_tokenizer

WORDS = (
    "the rule requires records retained archive review service engineers audit national "
    "office fine turnover course exam certificate directive refactoring module typed error"
).split()


def source(chapters: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    parts = []
    for ch in range(chapters):
        parts.append(f"# Chapter {ch}\n")
        for sec in range(10):
            parts.append(f"## {ch}.{sec} Section {sec} of chapter {ch}\n")
            for _ in range(rng.randint(2, 60)):
                sents = [
                    " ".join(rng.choices(WORDS, k=rng.randint(8, 30))).capitalize() + "."
                    for _ in range(rng.randint(2, 8))
                ]
                parts.append(" ".join(sents) + "\n")
    return "\n".join(parts)


def timed(fn, runs: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main(argv: list[str]) -> None:
    chapters = 10 if "--quick" in argv else 40
    text = source(chapters)
    tok = get_tokenizer("o200k_harmony")
    tok.encode("warm up")
    cfg = SplitConfig()
    base, ids = timed(lambda: tok.encode(text))
    n = len(ids)
    t_split, secs = timed(lambda: split_text(text, cfg))
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "source.md"
        src.write_text(text)
        k = iter(range(100))
        t_write, _ = timed(lambda: split_source(src, Path(d) / f"out{next(k)}", cfg))
    print(f"source: {n:,} tokens, {len(text):,} chars; {len(secs)} sections")
    print(f"{'route':44s} {'seconds':>8s} {'tokens/s':>12s} {'x baseline':>10s}")
    for name, t in (
        ("quicktok encode of the whole text (baseline)", base),
        ("split_text (sections, merge, cut, recount)", t_split),
        ("split_source (+ files, validation, json)", t_write),
    ):
        print(f"{name:44s} {t:8.2f} {n / t:12,.0f} {t / base:10.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
