"""Compiled kernels (numba) for word shingles, MinHash signatures and exact Jaccard.

They compute the same shingles and hashes as the numpy route of ``shingles.py``, bit for bit
(``tests/test_shingle_kernels.py`` compares them), but one document at a time in machine
code: no temporary array per step, and no GIL (``nogil=True``), so plain Python threads run
them on every core. numpy's route makes a dozen passes over arrays the size of a batch's
words; here each byte of a text is read once, while its words are found and hashed, and each
shingle is hashed and binned as it is formed.

Input is the texts' UTF-8 bytes, concatenated (``bounds[d]:bounds[d + 1]`` is document d),
lower-cased except for ASCII capitals (the kernels lower those as they read them: a text that
is all ASCII needs no ``str.lower()`` copy), and the word-character table of ``shingles.word_table`` covering every code
point the bytes hold. Import this module only where the kernels run: importing numba costs
~0.3 s, and the first call of each kernel in a fresh install compiles it (a few seconds,
then cached next to this file, or in numba's user cache when that folder is read-only).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_U = np.uint64
_WORD_MUL = _U(0xC2B2AE3D27D4EB4F)
_LOW32 = _U(0xFFFFFFFF)
_EMPTY_BIN = _U(1 << 32)
_DENSIFY_STEP = _U(0x2545F491)


@njit(inline="always")
def _mix(x):  # splitmix64's finalizer, as shingles._mix
    x = x + _U(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U(27))) * _U(0x94D049BB133111EB)
    return x ^ (x >> _U(31))


@njit(inline="always")
def _load(buf, at, size):
    """Up to 8 bytes from ``buf[at:]`` as a little-endian integer (the rest zero), ASCII
    capitals lower-cased as they are read."""
    v = _U(0)
    for j in range(size):
        b = buf[at + j]
        if 65 <= b <= 90:
            b += 32
        v |= _U(b) << _U(8 * j)
    return v


@njit(inline="always")
def _word_hash(buf, at, size):
    """As shingles._word_hashes: the first 8-byte block mixed with the length, each
    further block folded in and mixed again."""
    h = _mix(_load(buf, at, min(size, 8)) ^ (_U(size) << _U(56)))
    offset = 8
    while size > offset:
        h = _mix((h * _WORD_MUL) ^ _load(buf, at + offset, min(size - offset, 8)))
        offset += 8
    return h


@njit(inline="always")
def _doc_words(buf, lo, hi, table, words):
    """Hashes of the words of ``buf[lo:hi]`` written to ``words``; their number."""
    n = 0
    i = lo
    start = -1
    while i < hi:
        b = buf[i]
        if b < 0x80:
            cp = np.int64(b)
            width = 1
        elif b < 0xE0:
            cp = (np.int64(b & 0x1F) << 6) | np.int64(buf[i + 1] & 0x3F)
            width = 2
        elif b < 0xF0:
            cp = (
                (np.int64(b & 0x0F) << 12)
                | (np.int64(buf[i + 1] & 0x3F) << 6)
                | np.int64(buf[i + 2] & 0x3F)
            )
            width = 3
        else:
            cp = (
                (np.int64(b & 0x07) << 18)
                | (np.int64(buf[i + 1] & 0x3F) << 12)
                | (np.int64(buf[i + 2] & 0x3F) << 6)
                | np.int64(buf[i + 3] & 0x3F)
            )
            width = 4
        if table[cp]:
            if start < 0:
                start = i
        elif start >= 0:
            words[n] = _word_hash(buf, start, i - start)
            n += 1
            start = -1
        i += width
    if start >= 0:
        words[n] = _word_hash(buf, start, hi - start)
        n += 1
    return n


@njit(inline="always")
def _doc_shingles(words, n_words, k, out):
    """The k-shingle hashes of a document's words into ``out``; their number (a document
    of fewer than k words is one shingle of all its words, as shingles._whole)."""
    if n_words >= k:
        count = n_words - k + 1
        for i in range(count):
            acc = words[i]
            for t in range(1, k):
                acc = acc * _WORD_MUL + words[i + t]
            out[i] = acc
        return count
    acc = _U(0)
    for i in range(n_words):
        acc = acc * _WORD_MUL + words[i]
    out[0] = _mix(acc ^ _U(n_words))
    return 1


@njit(inline="always")
def _count_distinct(values, n, table):
    """Distinct values among ``values[:n]`` (an open-addressing set in ``table``, whose
    length is a power of two at least 2n; zero marks an empty slot)."""
    size = 2
    while size < 2 * n:
        size *= 2
    mask = _U(size - 1)
    table[:size] = 0
    found = 0
    zero = False
    for i in range(n):
        v = values[i]
        if v == 0:
            if not zero:
                zero = True
                found += 1
            continue
        slot = (v ^ (v >> _U(29))) & mask
        while True:
            here = table[slot]
            if here == 0:
                table[slot] = v
                found += 1
                break
            if here == v:
                break
            slot = (slot + _U(1)) & mask
    return found


@njit(inline="always")
def _longest(bounds):
    """The most bytes of one document."""
    longest = 0
    for d in range(len(bounds) - 1):
        longest = max(longest, bounds[d + 1] - bounds[d])
    return longest


@njit(inline="always")
def _densify(row, out):
    """``out`` = ``row`` with each empty bin filled as shingles.densify does: from the
    nearest non-empty bin to its right (circularly), plus a step per bin of distance."""
    p = len(row)
    nearest = -1
    for j in range(2 * p - 1, -1, -1):
        if row[j % p] != _EMPTY_BIN:
            nearest = j
            if j < p:
                out[j] = np.uint32(row[j])
        elif j < p and nearest >= 0:
            out[j] = np.uint32((row[nearest % p] + _U(nearest - j) * _DENSIFY_STEP) & _LOW32)


@njit(nogil=True, cache=True)
def signatures(buf, bounds, table, k, seed_key, sigs, distinct):
    """Densified one-permutation MinHash signatures (``sigs``: one ``uint32`` row of
    num_perm bins per document) and the distinct shingles of each document."""
    n = len(bounds) - 1
    longest = _longest(bounds)
    words = np.empty(longest // 2 + 2, np.uint64)
    shingles = np.empty(longest // 2 + 2, np.uint64)
    room = 2
    while room < 2 * (longest // 2 + 2):
        room *= 2
    seen = np.zeros(room, np.uint64)
    num_perm = sigs.shape[1]
    p = _U(num_perm)
    row = np.empty(num_perm, np.uint64)
    for d in range(n):
        n_words = _doc_words(buf, bounds[d], bounds[d + 1], table, words)
        count = _doc_shingles(words, n_words, k, shingles)
        row[:] = _EMPTY_BIN
        for s in range(count):
            keyed = _mix(shingles[s] ^ seed_key)
            b = ((keyed >> _U(32)) * p) >> _U(32)
            v = keyed & _LOW32
            if v < row[b]:
                row[b] = v
        _densify(row, sigs[d])
        distinct[d] = _count_distinct(shingles, count, seen)


@njit(nogil=True, cache=True)
def count_words(buf, bounds, table):
    """Words of each document (an upper bound of its shingles once at least one)."""
    n = len(bounds) - 1
    out = np.zeros(n, np.int64)
    longest = _longest(bounds)
    words = np.empty(longest // 2 + 2, np.uint64)
    for d in range(n):
        out[d] = _doc_words(buf, bounds[d], bounds[d + 1], table, words)
    return out


@njit(nogil=True, cache=True)
def shingle_sets(buf, bounds, table, k, starts, flat, sizes):
    """Sorted distinct shingle hashes of each document, written to ``flat[starts[d]:]``
    (room for max(1, words) values); ``sizes[d]`` receives their number."""
    n = len(bounds) - 1
    longest = _longest(bounds)
    words = np.empty(longest // 2 + 2, np.uint64)
    for d in range(n):
        n_words = _doc_words(buf, bounds[d], bounds[d + 1], table, words)
        at = starts[d]
        count = _doc_shingles(words, n_words, k, flat[at:])
        part = flat[at : at + count]
        part.sort()
        kept = 1
        for i in range(1, count):
            if part[i] != part[kept - 1]:
                part[kept] = part[i]
                kept += 1
        sizes[d] = kept


@njit(nogil=True, cache=True)
def intersections(flat, starts, sizes, a, b, out):
    """``out[p]`` = the size of the intersection of sorted distinct sets ``a[p]`` and
    ``b[p]`` (set d is ``flat[starts[d] : starts[d] + sizes[d]]``): a merge, or a binary
    search of the smaller set's values in the larger when one is far smaller."""
    for p in range(len(a)):
        x, y = a[p], b[p]
        if sizes[x] > sizes[y]:
            x, y = y, x
        i, i_end = starts[x], starts[x] + sizes[x]
        j, j_end = starts[y], starts[y] + sizes[y]
        found = 0
        if sizes[x] * 16 < sizes[y]:
            big = flat[j:j_end]
            for t in range(i, i_end):
                v = flat[t]
                at = np.searchsorted(big, v)
                if at < len(big) and big[at] == v:
                    found += 1
        else:
            while i < i_end and j < j_end:
                u, v = flat[i], flat[j]
                if u == v:
                    found += 1
                    i += 1
                    j += 1
                elif u < v:
                    i += 1
                else:
                    j += 1
        out[p] = found


@njit(nogil=True, cache=True)
def agreeing_bins(matrix, a, b, out):
    """``out[p]`` = the bins on which rows ``a[p]`` and ``b[p]`` of ``matrix`` agree."""
    width = matrix.shape[1]
    for p in range(len(a)):
        x = matrix[a[p]]
        y = matrix[b[p]]
        same = 0
        for j in range(width):
            if x[j] == y[j]:
                same += 1
        out[p] = same
