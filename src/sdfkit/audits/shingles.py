"""Word shingles hashed and MinHashed with numpy: vectorized over batches, streamed per document.

Why: one Python ``bytes`` object per shingle and datasketch's per-shingle update were ~85 % of
the near-duplicate audit's time, and one 50 MB document made it peak at 10.7 GB. Here no
Python object exists per word or shingle, and no step holds more than one chunk's arrays.

What a shingle is does not change: the words are ``re.findall(r"\\w+", text.lower())``
(Python's own notion of a word character, taken from its regex engine, block by block of
code points as texts need them, once per process), a k-shingle is k consecutive words, and a text of fewer than k words is one
shingle of all its words.

How:
- The lower-cased text is taken as code points (one byte each when it is ASCII, else
  UTF-32); a lookup table marks word characters; word starts and ends are where the mark
  changes.
- Each word is hashed from its UTF-8 bytes, read 8 at a time straight from the byte buffer
  (one gather per 8 bytes of a word, not arithmetic per character), mixed with splitmix64;
  a word hashes alike in ASCII and non-ASCII texts. A shingle's hash combines its k word
  hashes by a polynomial over 64-bit integers; signatures mix it again with their seed.
- Signatures are one-permutation MinHash with rotation densification: the seeded 64-bit hash
  of each shingle picks one of ``num_perm`` bins (its high bits) and a 32-bit value (its low
  bits); each bin keeps its minimum, and an empty bin borrows the next non-empty bin's value
  (shifted by the distance). Two documents' bins agree with probability equal to their
  Jaccard, as classic MinHash's do, but each shingle is hashed once instead of ``num_perm``
  times.
- Streaming: small documents are processed together in groups of at most ``chunk_chars``
  code points; a longer document is processed in chunks of at most ``chunk_chars`` cut at a
  non-word character, the last k-1 words carried over, so the result equals one pass. Working
  memory is bounded by the chunk (a single word longer than a chunk widens it: memory grows
  with the longest word, never with the document); what grows with a document is only its
  text and, for its exact distinct-shingle count, 8 bytes per distinct shingle.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Code points per vectorized pass (about 60 bytes of working memory each).
DEFAULT_CHUNK_CHARS = 1 << 20

_U64 = np.uint64
_WORD_MUL = _U64(0xC2B2AE3D27D4EB4F)
_SEED_MUL = _U64(0xD6E8FEB86659FD93)
_DENSIFY_STEP = _U64(0x2545F491)
_LOW32 = _U64(0xFFFFFFFF)
_EMPTY_BIN = _U64(1 << 32)  # above every 32-bit value
#: ``_BLOCK_MASKS[b]`` keeps the low b bytes of an 8-byte block (b = 0..8).
_BLOCK_MASKS = np.array([(1 << (8 * b)) - 1 for b in range(9)], dtype=_U64)

_BLOCK = 0x10000  # code points per lazily built block of the word table
_UNICODE = 0x110000
_TABLE = np.zeros(_UNICODE, bool)
_BUILT: set[int] = set()


def word_table(size: int = _UNICODE) -> np.ndarray:
    """A boolean per code point below ``size``: is it a word character (``\\w``) for
    Python's ``re``? Built in blocks of 65,536 code points as texts need them (a few
    milliseconds each, once per process), not for all of Unicode at once (~0.25 s)."""
    import re

    for block in range(min(-(-size // _BLOCK), _UNICODE // _BLOCK)):
        if block in _BUILT:
            continue
        chars = "".join(map(chr, range(block * _BLOCK, (block + 1) * _BLOCK)))
        marked = re.sub(r"\W", "\x00", chars)  # U+0000 is not a word character itself
        codes = np.frombuffer(marked.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        _TABLE[block * _BLOCK : (block + 1) * _BLOCK] = codes != 0
        _BUILT.add(block)
    return _TABLE[:size]


def _ascii_table() -> np.ndarray:
    return word_table(128)[:128]


def _is_word(codes: np.ndarray) -> np.ndarray:
    """Word-character marks of code points (``uint8`` ASCII or ``uint32``)."""
    if codes.dtype == np.uint8:
        return np.take(_ascii_table(), codes)
    top = int(codes.max()) + 1 if len(codes) else 0
    return np.take(word_table(top), codes)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit reaches every output bit."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _codes(text: str) -> np.ndarray:
    """Code points of a text: one byte each when it is ASCII (most text), else four."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _words(codes: np.ndarray, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(hash, start) of each word of a lower-cased ``text`` given also as its code points.

    A word's hash is a function of its UTF-8 bytes alone (``_word_hashes``), so a word hashes
    alike in ASCII and non-ASCII texts; word boundaries come from the code points."""
    n = len(codes)
    marks = np.zeros(n + 2, np.int8)
    marks[1:-1] = _is_word(codes)
    edges = np.diff(marks)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    if not len(starts):
        return np.zeros(0, _U64), starts
    if codes.dtype == np.uint8:  # ASCII: the code points are the UTF-8 bytes
        return _word_hashes(codes, starts, ends - starts), starts
    raw = np.frombuffer(text.encode("utf-8", "surrogatepass"), np.uint8)
    width = 1 + (codes >= 0x80) + (codes >= 0x800) + (codes >= 0x10000)  # UTF-8 bytes each
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(width, out=offsets[1:])
    return _word_hashes(raw, offsets[starts], offsets[ends] - offsets[starts]), starts


def _word_hashes(raw: np.ndarray, first: np.ndarray, size: np.ndarray) -> np.ndarray:
    """64-bit hashes of the words ``raw[first[i] : first[i] + size[i]]`` (UTF-8 bytes).

    Each word is read 8 bytes at a time as little-endian integers, straight from the byte
    buffer (an unaligned 8-byte view at every byte offset) and masked to the word: one
    gather per 8 bytes of each word instead of arithmetic on every character. The first
    block is mixed with the length; each further block (words over 8 bytes) is folded in
    and mixed again, so the hash depends on every byte of the word and on nothing else."""
    pad = np.zeros(len(raw) + 8, np.uint8)  # every 8-byte read stays inside
    pad[: len(raw)] = raw
    view = np.ndarray((len(raw),), dtype="<u8", buffer=pad, strides=(1,))
    size = size.astype(np.int64)
    hashes = _mix(
        (view[first] & _BLOCK_MASKS[np.minimum(size, 8)]) ^ (size.astype(_U64) << _U64(56))
    )
    longer = np.flatnonzero(size > 8)
    offset = 8
    while len(longer):
        rest = size[longer] - offset
        block = view[first[longer] + offset] & _BLOCK_MASKS[np.minimum(rest, 8)]
        hashes[longer] = _mix((hashes[longer] * _WORD_MUL) ^ block)
        longer = longer[rest > 8]
        offset += 8
    return hashes


def _combine(words: np.ndarray, k: int) -> np.ndarray:
    """Hashes of every run of k consecutive word hashes (len(words) >= k)."""
    n = len(words) - k + 1
    acc = words[:n].copy()
    for t in range(1, k):
        acc *= _WORD_MUL
        acc += words[t : t + n]
    return acc  # already well spread (the word hashes are mixed); signatures mix it seeded


def _whole(words: np.ndarray) -> np.ndarray:
    """The one shingle of a text with fewer words than the shingle size."""
    acc = 0
    for w in words.tolist():
        acc = (acc * int(_WORD_MUL) + w) & 0xFFFFFFFFFFFFFFFF
    return _mix(np.array([acc ^ len(words)], _U64))


class ShingleHasher:
    """64-bit hashes of the word k-shingles of texts, in bounded working memory."""

    def __init__(self, k: int = 5, chunk_chars: int = DEFAULT_CHUNK_CHARS) -> None:
        if k < 1 or chunk_chars < 1:
            raise ValueError("shingle size and chunk_chars must be at least 1")
        self.k = k
        self.chunk_chars = chunk_chars
        #: Code points of the largest single vectorized pass so far (for tests and benches).
        self.widest_pass = 0

    def document(self, text: str) -> Iterator[np.ndarray]:
        """The shingle hashes of one text (duplicates included), chunk by chunk."""
        low = text.lower()
        if len(low) <= self.chunk_chars:
            self.widest_pass = max(self.widest_pass, len(low))
            words, _ = _words(_codes(low), low)
            yield _combine(words, self.k) if len(words) >= self.k else _whole(words)
            return
        k, pos = self.k, 0
        carry = np.zeros(0, _U64)
        seen_words = 0
        while pos < len(low):
            end = min(pos + self.chunk_chars, len(low))
            while True:
                codes = _codes(low[pos:end])
                if end == len(low):
                    cut = len(codes)
                    break
                non_word = np.flatnonzero(~_is_word(codes))
                if len(non_word):
                    cut = int(non_word[-1]) + 1
                    codes = codes[:cut]
                    break
                end = min(pos + 2 * (end - pos), len(low))  # one word wider than a chunk
            self.widest_pass = max(self.widest_pass, len(codes))
            words, _ = _words(codes, low[pos : pos + cut])
            pos += cut
            seen_words += len(words)
            joined = np.concatenate((carry, words)) if len(carry) else words
            if len(joined) >= k:
                yield _combine(joined, k)
            carry = joined[max(0, len(joined) - (k - 1)) :] if k > 1 else joined[:0]
        if seen_words < k:
            yield _whole(carry[-seen_words:] if seen_words else carry[:0])

    def set_of(self, text: str) -> np.ndarray:
        """Sorted distinct shingle hashes of a text (for exact Jaccard)."""
        distinct = Distinct()
        for hashes in self.document(text):
            distinct.add(hashes)
        return distinct.values()

    def batch(self, texts: Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(document index, shingle hash) arrays over many texts, grouped so each vectorized
        pass covers at most ``chunk_chars`` code points; long texts stream alone. ASCII
        texts are grouped apart from the others, so one accented text does not send a whole
        group down the wider non-ASCII route."""
        groups: dict[bool, tuple[list[int], list[str]]] = {True: ([], []), False: ([], [])}
        sizes = {True: 0, False: 0}
        for i, text in enumerate(texts):
            if len(text) > self.chunk_chars:
                for hashes in self.document(text):
                    yield np.full(len(hashes), i, np.int64), hashes
                continue
            low = text.lower()
            kind = low.isascii()
            index, lowered = groups[kind]
            if index and sizes[kind] + len(low) + 1 > self.chunk_chars:
                yield self._group(index, lowered)
                groups[kind] = index, lowered = [], []
                sizes[kind] = 0
            index.append(i)
            lowered.append(low)
            sizes[kind] += len(low) + 1
        for index, lowered in groups.values():
            if index:
                yield self._group(index, lowered)

    def _group(self, index: list[int], lowered: list[str]) -> tuple[np.ndarray, np.ndarray]:
        k = self.k
        joined = "\n".join(lowered)  # a non-word separator: no word spans two texts
        self.widest_pass = max(self.widest_pass, len(joined))
        words, starts = _words(_codes(joined), joined)
        offsets = np.cumsum([0] + [len(t) + 1 for t in lowered[:-1]])
        word_doc = np.searchsorted(offsets, starts, side="right") - 1
        counts = np.bincount(word_doc, minlength=len(lowered))
        docs, hashes = [], []
        if len(words) >= k:
            whole = _combine(words, k)
            inside = word_doc[: len(whole)] == word_doc[k - 1 :]
            docs.append(word_doc[: len(whole)][inside])
            hashes.append(whole[inside])
        first = np.cumsum(counts) - counts
        for j in np.flatnonzero(counts < k):
            docs.append(np.array([j], np.int64))
            hashes.append(_whole(words[first[j] : first[j] + counts[j]]))
        doc = np.concatenate(docs)
        return np.asarray(index, np.int64)[doc], np.concatenate(hashes)


def shingle_sets(
    texts: Sequence[str],
    k: int = 5,
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
    route: str = "auto",
) -> list[np.ndarray]:
    """Sorted distinct shingle hashes of each text (for exact Jaccard): the same values as
    ``ShingleHasher.set_of`` text by text, computed by the compiled kernels (``route``
    "auto" when numba is installed, or "compiled") or in the batched numpy passes of
    ``ShingleHasher.batch`` ("numpy")."""
    kernels = compiled_kernels(route)
    if kernels is not None:
        flat, starts, sizes = compiled_shingle_sets(texts, k, chunk_chars, kernels)
        return [flat[a : a + n] for a, n in zip(starts.tolist(), sizes.tolist(), strict=True)]
    return _numpy_shingle_sets(texts, k, chunk_chars)


def _numpy_shingle_sets(texts: Sequence[str], k: int, chunk_chars: int) -> list[np.ndarray]:
    hasher = ShingleHasher(k, chunk_chars)
    out: list[np.ndarray | None] = [None] * len(texts)
    streamed: dict[int, Distinct] = {}
    for doc, hashes in hasher.batch(texts):
        if len(doc) and doc[0] == doc[-1] and len(texts[int(doc[0])]) > chunk_chars:
            streamed.setdefault(int(doc[0]), Distinct()).add(hashes)
            continue
        if len(doc) > 1 and (doc[1:] < doc[:-1]).any():
            order = np.argsort(doc, kind="stable")
            doc, hashes = doc[order], hashes[order]
        bounds = np.flatnonzero(doc[1:] != doc[:-1]) + 1
        for d, part in zip(doc[np.r_[0, bounds]].tolist(), np.split(hashes, bounds), strict=True):
            out[d] = sorted_distinct(part)
    for index, seen in streamed.items():
        out[index] = seen.values()
    return [np.zeros(0, _U64) if v is None else v for v in out]


ROUTES = ("auto", "compiled", "numpy")
_KERNELS: dict[str, object] = {}
_LOADING = threading.Lock()


def compiled_kernels(route: str = "auto") -> object | None:
    """The compiled kernels module for ``route`` ("auto": when numba is installed;
    "compiled": required; "numpy": never), or None for the numpy route."""
    if route not in ROUTES:
        raise ValueError(f"unknown shingle route {route!r}: use one of {', '.join(ROUTES)}")
    if route == "numpy":
        return None
    module = _loaded()
    if module is None and route == "compiled":
        from sdfkit.errors import SdfError

        why = _KERNELS.get("why") or "needs numba (pip install numba)"
        raise SdfError(f"audits.dedup.route: compiled {why}; use auto or numpy")
    if module is None and _KERNELS.pop("warn", False):  # once per process
        import sys

        print(
            f"warning: compiled shingle kernels {_KERNELS['why']}; using the numpy route "
            "(the same values, slower)",
            file=sys.stderr,
        )
    return module


def _loaded() -> Any:
    """The kernels module (loaded once per process), or None."""
    if "module" not in _KERNELS:
        with _LOADING:  # one thread loads; the others wait for it
            if "module" not in _KERNELS:
                _KERNELS["module"] = _load_kernels()
    return _KERNELS["module"]


def utf8_batch(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The UTF-8 bytes of texts end to end, each text's byte bounds, and the word-character
    table covering every code point they hold (built only as far as needed: a block of
    65,536 code points at a time). Texts that are not all ASCII are lower-cased here; ASCII
    capitals are left for the kernels, which lower them as they read (no copy of a text)."""
    parts = [
        t.encode("ascii") if t.isascii() else t.lower().encode("utf-8", "surrogatepass")
        for t in texts
    ]
    bounds = np.zeros(len(parts) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)), out=bounds[1:])
    buf = np.frombuffer(b"".join(parts), np.uint8)
    top = int(buf.max()) if len(buf) else 0
    if top < 0x80:
        return buf, bounds, _ascii_table()
    if top < 0xF0:
        return buf, bounds, word_table(0x10000)
    at = np.flatnonzero(buf >= 0xF0)  # lead bytes of 4-byte sequences
    cps = (
        ((buf[at].astype(np.int64) & 0x07) << 18)
        | ((buf[at + 1].astype(np.int64) & 0x3F) << 12)
        | ((buf[at + 2].astype(np.int64) & 0x3F) << 6)
        | (buf[at + 3].astype(np.int64) & 0x3F)
    )
    return buf, bounds, word_table(int(cps.max()) + 1)


def compiled_shingle_sets(
    texts: Sequence[str], k: int, chunk_chars: int, kernels: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted distinct shingle sets of ``texts`` laid end to end: (values, start of each
    set, size of each set). Texts longer than ``chunk_chars`` stream through numpy."""
    n = len(texts)
    short = [i for i, t in enumerate(texts) if len(t) <= chunk_chars]
    pieces: dict[int, np.ndarray] = {
        i: _numpy_shingle_sets([texts[i]], k, chunk_chars)[0]
        for i in sorted(set(range(n)) - set(short))
    }
    room = np.zeros(n, np.int64)
    if short:
        buf, bounds, table = utf8_batch([texts[i] for i in short])
        room[short] = np.maximum(kernels.count_words(buf, bounds, table), 1)
    for i, values in pieces.items():
        room[i] = len(values)
    starts = np.zeros(n, np.int64)
    np.cumsum(room[:-1], out=starts[1:])
    flat = np.empty(int(room.sum()), _U64)
    sizes = np.zeros(n, np.int64)
    if short:
        idx = np.asarray(short, np.int64)
        got = np.zeros(len(short), np.int64)
        kernels.shingle_sets(buf, bounds, table, k, starts[idx], flat, got)
        sizes[idx] = got
    for i, values in pieces.items():
        flat[starts[i] : starts[i] + len(values)] = values
        sizes[i] = len(values)
    return flat, starts, sizes


def compiled_pair_jaccards(
    texts: Sequence[str],
    a: np.ndarray,
    b: np.ndarray,
    k: int,
    chunk_chars: int,
    threads: int,
    kernels: object,
) -> np.ndarray:
    """Exact Jaccard of the shingle sets of ``texts[a[p]]`` and ``texts[b[p]]`` for each p,
    by the compiled kernels on ``threads`` threads (they release the GIL): the sets are
    hashed and sorted in slices of the texts, then each pair is intersected by a merge."""
    from concurrent.futures import ThreadPoolExecutor

    n = len(texts)
    if not len(a):
        return np.zeros(0, np.float64)
    cuts = np.linspace(0, n, max(1, min(threads, n)) + 1).astype(np.int64)
    slices = [(int(lo), int(hi)) for lo, hi in zip(cuts, cuts[1:], strict=False) if hi > lo]

    def sets_of(bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return compiled_shingle_sets(texts[bounds[0] : bounds[1]], k, chunk_chars, kernels)

    with ThreadPoolExecutor(len(slices), thread_name_prefix="shingle-sets") as pool:
        parts = list(pool.map(sets_of, slices))
        flat = np.concatenate([p[0] for p in parts])
        shift = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
        starts = np.concatenate([p[1] + s for p, s in zip(parts, shift, strict=True)])
        sizes = np.concatenate([p[2] for p in parts])
        inter = np.zeros(len(a), np.int64)
        step = -(-len(a) // len(slices))

        def intersect(lo: int) -> None:
            hi = lo + step
            kernels.intersections(flat, starts, sizes, a[lo:hi], b[lo:hi], inter[lo:hi])

        list(pool.map(intersect, range(0, len(a), step)))
    union = sizes[a] + sizes[b] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def warm_in_background() -> threading.Thread:
    """Load the kernels on a daemon thread (see ``warm_kernels``), so that loading overlaps
    with reading the catalog. A failure while loading is not raised here: it recurs, and is
    reported, where the kernels are next asked for. (Hashing with numpy meanwhile was
    measured slower: numba's import holds the GIL, and the threads compete for 2 cores.)"""

    def warm() -> None:
        try:
            warm_kernels()
        except Exception:  # noqa: BLE001, S110 - recurs where the kernels are used
            pass

    thread = threading.Thread(target=warm, name="shingle-kernels", daemon=True)
    thread.start()
    return thread


def warm_kernels() -> None:
    """Import numba and load (or compile) every kernel, so a later call does not pay it.
    Meant for a background thread: most of the work is in LLVM, which runs without the
    GIL. Silent: the route that uses them says what it found."""
    _loaded()


def _load_kernels() -> Any:
    """The kernels module with every kernel loaded from numba's cache (or compiled), or None
    without numba. A damaged cache file (an interrupted write, a bad disk) is not a
    traceback: the module's cache files are removed, with a one-line warning naming their
    folder, and the kernels compiled again."""
    try:
        from sdfkit.audits import shingle_kernels
    except ImportError as exc:  # numba missing or broken: the numpy route gives the same values
        _KERNELS["why"] = f"needs numba (pip install numba; {exc})"
        return None
    except Exception as exc:  # noqa: BLE001 - e.g. numba finds no folder to cache them in
        _KERNELS["why"] = f"failed to load ({type(exc).__name__}: {exc})"
        _KERNELS["warn"] = True
        return None
    try:
        _run_each_kernel(shingle_kernels)
    except Exception as exc:  # noqa: BLE001 - only a cache load fails on these inputs
        import sys

        folder = Path(shingle_kernels.signatures._cache._cache_path)
        damaged = [p for p in folder.glob("shingle_kernels.*") if p.suffix in (".nbi", ".nbc")]
        for path in damaged:
            path.unlink(missing_ok=True)
        print(
            f"warning: {folder}: numba cache of the shingle kernels unreadable "
            f"({type(exc).__name__}); {len(damaged)} files removed, compiling again",
            file=sys.stderr,
        )
        _run_each_kernel(shingle_kernels)
    return shingle_kernels


def _run_each_kernel(kernels: Any) -> None:
    """Every kernel once on a tiny input, with the argument types the audit passes."""
    _compiled_signatures(["warm up the kernels"], 5, 128, 1, DEFAULT_CHUNK_CHARS, kernels)
    compiled_pair_jaccards(
        ["warm up the kernels", "warm the kernels up"],
        np.array([0]),
        np.array([1]),
        5,
        DEFAULT_CHUNK_CHARS,
        1,
        kernels,
    )
    kernels.agreeing_bins(
        np.zeros((2, 4), np.uint32), np.array([0]), np.array([1]), np.zeros(1, np.int64)
    )


def signatures(
    texts: Sequence[str],
    k: int = 5,
    num_perm: int = 128,
    seed: int = 1,
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
    hasher: ShingleHasher | None = None,
    route: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """One-permutation MinHash signatures (``uint32``, one row of ``num_perm`` per text) and
    each text's number of distinct shingles. ``route``: "auto" (the compiled kernels when
    numba is installed, else numpy), "compiled" or "numpy"; every route gives the same
    values. Texts longer than ``chunk_chars`` always stream through numpy's chunks, so
    working memory stays bounded by the chunk whatever a document's size. A ``hasher``
    given is numpy's: it takes the numpy route."""
    kernels = compiled_kernels(route)
    if kernels is None or hasher is not None:
        return _numpy_signatures(texts, k, num_perm, seed, chunk_chars, hasher)
    return _compiled_signatures(texts, k, num_perm, seed, chunk_chars, kernels)


def _compiled_signatures(
    texts: Sequence[str], k: int, num_perm: int, seed: int, chunk_chars: int, kernels: Any
) -> tuple[np.ndarray, np.ndarray]:
    n = len(texts)
    short = [i for i, t in enumerate(texts) if len(t) <= chunk_chars]
    distinct = np.zeros(n, np.int64)
    sigs = np.empty((n, num_perm), np.uint32)
    if short:
        buf, bounds, table = utf8_batch([texts[i] for i in short])
        part = np.empty((len(short), num_perm), np.uint32)
        found = np.zeros(len(short), np.int64)
        kernels.signatures(buf, bounds, table, k, _seed_key(seed), part, found)
        sigs[short], distinct[short] = part, found
    for i in sorted(set(range(n)) - set(short)):  # long texts: streamed in chunks
        one, count = _numpy_signatures([texts[i]], k, num_perm, seed, chunk_chars, None)
        sigs[i], distinct[i] = one[0], count[0]
    return sigs, distinct


def _seed_key(seed: int) -> np.uint64:
    return (_mix(np.array([seed], _U64)) * _SEED_MUL)[0]


def _numpy_signatures(
    texts: Sequence[str],
    k: int,
    num_perm: int,
    seed: int,
    chunk_chars: int,
    hasher: ShingleHasher | None,
) -> tuple[np.ndarray, np.ndarray]:
    hasher = hasher or ShingleHasher(k, chunk_chars)
    n = len(texts)
    mins = np.full(n * num_perm, _EMPTY_BIN, _U64)
    distinct = np.zeros(n, np.int64)
    streamed: dict[int, Distinct] = {}  # distinct shingles of texts longer than a chunk
    seed_key = _seed_key(seed)
    for doc, hashes in hasher.batch(texts):
        keyed = _mix(hashes ^ seed_key)
        bins = ((keyed >> _U64(32)) * _U64(num_perm)) >> _U64(32)
        np.minimum.at(mins, doc * num_perm + bins.astype(np.int64), keyed & _LOW32)
        if len(doc) and doc[0] == doc[-1] and len(texts[int(doc[0])]) > hasher.chunk_chars:
            streamed.setdefault(int(doc[0]), Distinct()).add(hashes)
            continue
        if len(doc):
            first = int(doc.min())
            counts = _distinct_per_document(doc - first, hashes)
            distinct[first : first + len(counts)] += counts
    for doc_index, seen in streamed.items():
        distinct[doc_index] = len(seen.values())
    return densify(mins.reshape(n, num_perm)), distinct


def sorted_distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an array: a sort and a neighbour comparison, which
    numpy's SIMD sort makes far faster than ``np.unique`` (numpy 2.4: ~50x on a million
    LSH pair codes)."""
    ordered = np.sort(values)
    keep = np.ones(len(ordered), bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]


class Distinct:
    """The distinct values of arrays added one by one, merged as they come so memory stays
    within a small multiple of the distinct values (not of everything added)."""

    def __init__(self) -> None:
        self._merged = np.zeros(0, _U64)
        self._parts: list[np.ndarray] = []
        self._pending = 0

    def add(self, values: np.ndarray) -> None:
        part = sorted_distinct(values)
        self._parts.append(part)
        self._pending += len(part)
        if self._pending > max(len(self._merged), 1 << 16):
            self._merge()

    def _merge(self) -> None:
        if self._parts:
            # Sorted in place once the inputs are released: about twice the distinct
            # values at the peak, not four times.
            values = np.concatenate([self._merged, *self._parts])
            self._merged, self._parts, self._pending = values[:0], [], 0
            values.sort()
            keep = np.ones(len(values), bool)
            keep[1:] = values[1:] != values[:-1]
            self._merged = values[keep]

    def values(self) -> np.ndarray:
        """Sorted distinct values."""
        self._merge()
        return self._merged


def _distinct_per_document(local: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Distinct hashes per document (``local``: document numbers from 0) in one sort: each
    hash's top bits are replaced by its document number, so equal keys are equal hashes of
    one document (two different shingles of a document agree on the other 44 or more bits
    with probability ~2^-44 per pair: counts, not sets, are computed this way)."""
    bits = max(1, int(local.max()).bit_length())
    keys = (hashes >> _U64(bits)) | (local.astype(_U64) << _U64(64 - bits))
    keys.sort()
    new = np.ones(len(keys), bool)
    new[1:] = keys[1:] != keys[:-1]
    return np.bincount(
        (keys[new] >> _U64(64 - bits)).astype(np.int64),
        minlength=len(local) and int(local.max()) + 1,
    )


def densify(mins: np.ndarray) -> np.ndarray:
    """Fill empty bins (rotation densification): an empty bin takes the next non-empty bin's
    value to its right (circularly) plus a step per bin of distance, so two documents with
    the same non-empty neighbour agree there too."""
    n, p = mins.shape
    empty = mins == _EMPTY_BIN
    if empty.any():
        cols = np.arange(p)
        filled = np.where(~empty, cols, 2 * p)
        ahead = np.concatenate((filled, np.where(~empty, cols + p, 2 * p)), axis=1)
        nearest = np.minimum.accumulate(ahead[:, ::-1], axis=1)[:, ::-1][:, :p]
        source = np.take_along_axis(mins, nearest % p, axis=1)
        shifted = (source + (nearest - cols).astype(_U64) * _DENSIFY_STEP) & _LOW32
        mins = np.where(empty, shifted, mins)
    return mins.astype(np.uint32)
