"""Names at depth: the fast route's top 100 against an exhaustive spaCy pass, on real text.

Corpus: ``--docs`` real-text documents (bench/realtext.py: man pages, Debian changelogs,
copyright files, READMEs: technical prose with real people's names), or ``--corpus DIR``.

1. The fast route (``names.run`` defaults: top 100, openers folded, common-word phrases and
   imperatives left out) cold and warm, each in its own process: seconds and peak RSS.
2. The exhaustive route (spaCy NER over every document, every PERSON entity counted) on the
   same documents: all of them with ``--full-exhaustive``, else the documents whose doc id
   starts below ``--exhaustive-prefix`` (a hash prefix: a uniform sample; its time is also
   extrapolated to the whole corpus by words, labelled so). The fast route is run on the same
   documents and every name of its top 100 is compared with the exhaustive count: the share
   of names within 2 %, by exact ``mentions`` and by ``ner_mentions_estimate``.
3. The same comparison with the candidate-stage evidence off (``common_word_ratio: 0``)
   as the baseline column: openers stay glued, common-word phrases stay candidates.
4. The fast top 30 of the whole corpus, printed for a reader to judge, and the top-100 names
   that look like non-people by construction (a word used lower-case more than capitalised,
   an opener, a street suffix) counted.

Cold runs also report CPU seconds, the NER worker processes included.

Usage: ``python bench/bench_names.py [--docs 9600] [--corpus DIR] [--exhaustive-prefix 2]``.
With ``--corpus DIR`` holding cached exhaustive entities (``person_entities_*``) and no
names caches, ``--full-exhaustive`` compares the whole corpus without redoing the 10-14
minutes of exhaustive NER (the bench then says the entities were cached).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _runner import in_child  # noqa: E402

os.environ.setdefault("SDF_PROGRESS", "0")


class _TreeCpu:
    """CPU seconds of this process and of every process under it (NER workers are
    forkserver children, which ``RUSAGE_CHILDREN`` never sees): /proc read every 0.2 s, the
    last reading of each process kept (a process's last 0.2 s before it exits is lost)."""

    def __init__(self) -> None:
        import threading

        self.root, self.seen, self.stop = os.getpid(), {}, threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self.stop.is_set():
            stat = {}
            for p in os.listdir("/proc"):
                try:
                    raw = Path(f"/proc/{p}/stat").read_text() if p.isdigit() else ""
                except OSError:
                    continue
                if raw:
                    f = raw[raw.rindex(")") + 2 :].split()
                    stat[int(p)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick)
            for pid, (_, cpu) in stat.items():
                q, depth = pid, 0
                while q > 1 and depth < 12 and q != self.root:
                    q, depth = stat.get(q, (0, 0))[0], depth + 1
                if q == self.root and pid != self.root:
                    self.seen[pid] = max(self.seen.get(pid, 0.0), cpu)
            time.sleep(0.2)

    def seconds(self) -> tuple[float, float]:
        """(this process, the processes under it)."""
        import resource

        self.stop.set()
        self.thread.join()
        me = resource.getrusage(resource.RUSAGE_SELF)
        return me.ru_utime + me.ru_stime, sum(self.seen.values())


def _child_names(corpus: str, where: str | None, mode: str, ratio: float, workers: int) -> dict:
    import resource

    from sdfkit.audits import names
    from sdfkit.store.catalog import Store

    cpu = _TreeCpu()
    cfg = names.Config(mode=mode, where=where, common_word_ratio=ratio, workers=workers)
    t = time.perf_counter()
    res = names.run(Store(corpus), cfg)
    seconds = time.perf_counter() - t
    own, under = cpu.seconds()
    return {
        "seconds": seconds,
        "cpu_seconds": own + under,
        "cpu_workers": under,
        "documents_processed": res.figures.get("documents_processed"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "top": res.tables["top"].to_dicts(),
        "timings": res.figures.get("timings"),
        "figures": {
            k: res.figures.get(k)
            for k in (
                "folded_openers",
                "dropped_imperatives",
                "common_word_candidates",
                "windows_read",
            )
        },
        # names counted on a sample of their documents (settled count, or the cap)
        "sampled": len(res.figures.get("every_mention_sampled") or {}),
    }


def _in_child(fn: str, *args: object) -> dict:
    return in_child("bench_names", fn, *args)


def _row(label: str, ours: str, base: str, ratio: str = "") -> None:
    print(f"  {label:<46} {ours:>16} {base:>20} {ratio:>12}")


def _within(fast: list[dict], exhaustive: list[dict], key: str, k: int = 100) -> tuple:
    """(share of the fast top-k names whose ``key`` is within 2 % of the exhaustive count,
    names compared, the five worst)."""
    ex = {r["name"]: r["mentions"] for r in exhaustive}
    rows = []
    for r in fast[:k]:
        truth = ex.get(r["name"], 0)
        dev = abs(r[key] - truth) / truth if truth else float("inf")
        rows.append((dev, r["name"], r[key], truth))
    ok = sum(1 for d, *_ in rows if d <= 0.02)
    return ok / max(len(rows), 1), len(rows), sorted(rows, reverse=True)[:5]


def _looks_non_person(name: str, stop_like: set[str]) -> bool:
    return any(w in stop_like for w in name.split())


def main() -> None:
    ap = argparse.ArgumentParser(description="names: fast top 100 vs exhaustive NER")
    ap.add_argument("--docs", type=int, default=9600)
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--exhaustive-prefix", default="2", help="exhaustive on doc_id < PREFIX")
    ap.add_argument("--full-exhaustive", action="store_true")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--quick", action="store_true", help="1,200 documents")
    args, _ = ap.parse_known_args()
    if args.quick:
        args.docs = 1200

    from realtext import write_corpus

    from sdfkit.audits import names
    from sdfkit.store.catalog import Store

    tmp = tempfile.TemporaryDirectory(prefix="sdf-bench-names-")
    corpus = args.corpus or Path(tmp.name) / "corpus"
    if not (corpus / "documents").is_dir():
        n = write_corpus(Store(corpus), args.docs)
        print(f"corpus: {n:,} real-text documents (bench/realtext.py)")
    store = Store(corpus)
    words = lambda w: int(  # noqa: E731
        store.query(
            "SELECT sum(length(regexp_split_to_array(text, '\\s+'))) FROM documents"
            + (f" WHERE {w}" if w else "")
        ).item()
        or 0
    )
    total_words = words(None)
    print(f"  {total_words:,} words; load average {os.getloadavg()[0]:.1f} at start (2 cores)")

    print("\n1. fast route, whole corpus")
    cold = _in_child("_child_names", str(corpus), None, "fast", 1.0, 1)
    warm = _in_child("_child_names", str(corpus), None, "fast", 1.0, 1)
    _row("", "sdfkit", "")
    _row("cold: seconds", f"{cold['seconds']:.1f} s", "target <= 27 s idle")
    _row(
        "cold: CPU seconds (NER workers included)",
        f"{cold['cpu_seconds']:.1f} s",
        f"workers {cold['cpu_workers']:.1f} s",
    )
    _row("cold: peak RSS", f"{cold['peak_rss_mb']:,.0f} MB", "")
    _row("warm (stage and windows cached): seconds", f"{warm['seconds']:.1f} s", "")
    print(f"    cold timings {cold['timings']}; {cold['figures']}")
    print(f"    names counted on a sample of their documents: {cold['sampled']}")

    sub = None if args.full_exhaustive else f"doc_id < '{args.exhaustive_prefix}'"
    sub_words = words(sub)
    print(f"\n2. against the exhaustive NER pass over {'all documents' if not sub else sub}")
    t = time.perf_counter()
    ex = _in_child("_child_names", str(corpus), sub, "exhaustive", 1.0, args.workers)
    ex_s = time.perf_counter() - t
    fast = _in_child("_child_names", str(corpus), sub, "fast", 1.0, 1)
    plain = _in_child("_child_names", str(corpus), sub, "fast", 0.0, 1)
    _row("", "sdfkit", "evidence off", "")
    for key in ("mentions", "ner_mentions_estimate"):
        ours = _within(fast["top"], ex["top"], key)
        base = _within(plain["top"], ex["top"], key)
        _row(
            f"top-100 names within 2 % of exhaustive ({key})",
            f"{ours[0]:.0%} of {ours[1]}",
            f"{base[0]:.0%} of {base[1]}",
            "target 100 %",
        )
        for dev, name, got, truth in ours[2]:
            print(f"      {name!r}: {got} vs exhaustive {truth} ({dev:+.1%})")
    ex_full = ex_s * total_words / max(sub_words, 1)
    cached = " (entities cached)" if not ex.get("documents_processed") else ""
    _row(
        f"exhaustive NER time ({sub_words:,} words, {args.workers} procs){cached}",
        "",
        f"{ex_s:.0f} s",
    )
    if sub and not cached:
        _row("exhaustive, EXTRAPOLATED to the corpus by words", "", f"~{ex_full:.0f} s")
    if not cached:
        _row(
            "fast (cold, whole corpus) vs exhaustive",
            f"{cold['seconds']:.1f} s",
            f"{ex_full:.0f} s",
            f"{ex_full / cold['seconds']:.0f}x",
        )

    print("\n3. the fast top 30 (whole corpus), for a reader to judge")
    for i in range(0, 30, 3):
        print("    " + " | ".join(f"{r['name']} ({r['mentions']})" for r in cold["top"][i : i + 3]))
    stop_like = set(names.OPENERS) | {"St", "Ave", "Rd", "Blvd", "Options", "Detection"}
    suspect = [r["name"] for r in cold["top"][:100] if _looks_non_person(r["name"], stop_like)]
    plain_full = _in_child("_child_names", str(corpus), None, "fast", 0.0, 1)
    suspect_plain = [
        r["name"] for r in plain_full["top"][:100] if _looks_non_person(r["name"], stop_like)
    ]
    _row(
        "top-100 names with an opener/street word",
        f"{len(suspect)}",
        f"{len(suspect_plain)}",
        "",
    )
    if suspect_plain:
        print(f"    evidence off lists e.g. {suspect_plain[:8]}")
    print(f"\nload average {os.getloadavg()[0]:.1f} at end")
    tmp.cleanup()


if __name__ == "__main__":
    main()
