"""Word shingles hashed and MinHashed with numpy: vectorized over batches, streamed per document.

Why: one Python ``bytes`` object per shingle and datasketch's per-shingle update were ~85 % of
the near-duplicate audit's time, and one 50 MB document made it peak at 10.7 GB. Here no
Python object exists per word or shingle, and no step holds more than one chunk's arrays.

What a shingle is does not change: the words are ``re.findall(r"\\w+", text.lower())``
(Python's own notion of a word character, taken from its regex engine over every code point
once per process), a k-shingle is k consecutive words, and a text of fewer than k words is one
shingle of all its words.

How:
- The lower-cased text is encoded as UTF-32 code points; a lookup table marks word characters;
  word starts and ends are where the mark changes.
- Each word is hashed from its code points by a polynomial hash over 64-bit integers
  (wrap-around arithmetic), computed for all words at once from one prefix sum, then mixed
  (splitmix64). A shingle's hash combines its k word hashes the same way; signatures mix it
  again with their seed.
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

from collections.abc import Iterator, Sequence

import numpy as np

#: Code points per vectorized pass (about 60 bytes of working memory each).
DEFAULT_CHUNK_CHARS = 1 << 20

_U64 = np.uint64
_CHAR_MUL = _U64(0x9E3779B97F4A7C15 | 1)  # odd: invertible modulo 2**64
_WORD_MUL = _U64(0xC2B2AE3D27D4EB4F)
_SEED_MUL = _U64(0xD6E8FEB86659FD93)
_DENSIFY_STEP = _U64(0x2545F491)
_LOW32 = _U64(0xFFFFFFFF)
_EMPTY_BIN = _U64(1 << 32)  # above every 32-bit value

_TABLE: np.ndarray | None = None
_POWERS: tuple[np.ndarray, np.ndarray] = (np.ones(1, _U64), np.ones(1, _U64))


def word_table() -> np.ndarray:
    """A boolean per code point: is it a word character (``\\w``) for Python's ``re``?"""
    global _TABLE
    if _TABLE is None:
        import re

        chars = "".join(map(chr, range(0x110000)))
        marked = re.sub(r"\W", "\x00", chars)  # U+0000 is not a word character itself
        codes = np.frombuffer(marked.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        _TABLE = codes != 0
    return _TABLE


def _ascii_table() -> np.ndarray:
    return word_table()[:128]


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``_CHAR_MUL**i`` and its modular inverse's powers for i < n (grown on demand)."""
    global _POWERS
    if len(_POWERS[0]) < n:
        size = max(n, 2 * len(_POWERS[0]))
        inverse = _U64(pow(int(_CHAR_MUL), -1, 1 << 64))
        with np.errstate(over="ignore"):
            up = np.cumprod(np.full(size, _CHAR_MUL, _U64))
            down = np.cumprod(np.full(size, inverse, _U64))
        _POWERS = (np.concatenate(([_U64(1)], up[:-1])), np.concatenate(([_U64(1)], down[:-1])))
    return _POWERS[0][:n], _POWERS[1][:n]


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


def _words(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hash, start) of each word of a lower-cased text given as code points."""
    n = len(codes)
    marks = np.zeros(n + 2, np.int8)
    marks[1:-1] = np.take(_ascii_table() if codes.dtype == np.uint8 else word_table(), codes)
    edges = np.diff(marks)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    if not len(starts):
        return np.zeros(0, _U64), starts
    up, down = _powers(n + 1)
    prefix = np.zeros(n + 1, _U64)
    np.cumsum(np.multiply(codes, up[:n], dtype=_U64), out=prefix[1:])
    poly = (prefix[ends] - prefix[starts]) * down[starts]
    return _mix(poly ^ (ends - starts).astype(_U64)), starts


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
            words, _ = _words(_codes(low))
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
                non_word = np.flatnonzero(~word_table()[codes.astype(np.uint32)])
                if len(non_word):
                    cut = int(non_word[-1]) + 1
                    codes = codes[:cut]
                    break
                end = min(pos + 2 * (end - pos), len(low))  # one word wider than a chunk
            self.widest_pass = max(self.widest_pass, len(codes))
            words, _ = _words(codes)
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
        pass covers at most ``chunk_chars`` code points; long texts stream alone."""
        group: list[int] = []
        lowered: list[str] = []
        size = 0
        for i, text in enumerate(texts):
            if len(text) > self.chunk_chars:
                for hashes in self.document(text):
                    yield np.full(len(hashes), i, np.int64), hashes
                continue
            low = text.lower()
            if group and size + len(low) + 1 > self.chunk_chars:
                yield self._group(group, lowered)
                group, lowered, size = [], [], 0
            group.append(i)
            lowered.append(low)
            size += len(low) + 1
        if group:
            yield self._group(group, lowered)

    def _group(self, index: list[int], lowered: list[str]) -> tuple[np.ndarray, np.ndarray]:
        k = self.k
        joined = "\n".join(lowered)  # a non-word separator: no word spans two texts
        self.widest_pass = max(self.widest_pass, len(joined))
        words, starts = _words(_codes(joined))
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


def signatures(
    texts: Sequence[str],
    k: int = 5,
    num_perm: int = 128,
    seed: int = 1,
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
    hasher: ShingleHasher | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One-permutation MinHash signatures (``uint32``, one row of ``num_perm`` per text) and
    each text's number of distinct shingles."""
    hasher = hasher or ShingleHasher(k, chunk_chars)
    n = len(texts)
    mins = np.full(n * num_perm, _EMPTY_BIN, _U64)
    distinct = np.zeros(n, np.int64)
    streamed: dict[int, Distinct] = {}  # distinct shingles of texts longer than a chunk
    seed_key = _mix(np.array([seed], _U64)) * _SEED_MUL
    for doc, hashes in hasher.batch(texts):
        keyed = _mix(hashes ^ seed_key)
        bins = ((keyed >> _U64(32)) * _U64(num_perm)) >> _U64(32)
        np.minimum.at(mins, doc * num_perm + bins.astype(np.int64), keyed & _LOW32)
        if len(doc) and doc[0] == doc[-1] and len(texts[int(doc[0])]) > hasher.chunk_chars:
            streamed.setdefault(int(doc[0]), Distinct()).add(hashes)
            continue
        if len(doc) > 1 and (doc[1:] < doc[:-1]).any():
            order = np.argsort(doc, kind="stable")
            doc, hashes = doc[order], hashes[order]
        bounds = np.flatnonzero(doc[1:] != doc[:-1]) + 1
        for d, part in zip(doc[np.r_[0, bounds]], np.split(hashes, bounds), strict=True):
            distinct[d] += _count_distinct(part)
    for doc_index, seen in streamed.items():
        distinct[doc_index] = len(seen.values())
    return densify(mins.reshape(n, num_perm)), distinct


def _sorted_distinct(values: np.ndarray) -> np.ndarray:
    # np.sort and a neighbour comparison: several times faster than np.unique here
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
        part = _sorted_distinct(values)
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


def _count_distinct(values: np.ndarray) -> int:
    ordered = np.sort(values)
    return int((ordered[1:] != ordered[:-1]).sum()) + (len(ordered) > 0)


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
