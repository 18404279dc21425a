"""The compiled (numba) shingle kernels give exactly what the numpy route gives."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sdfkit.audits import dedup
from sdfkit.audits import shingles as sh

pytest.importorskip("numba")

WORDS = [
    "Straße", "naïve", "café—bar", "x_y", "don’t", "it's", "42", "ΑΣ", "日本語", "Ünïcode",
    "e.g.", "a", "the", "Foo", "bar.", "½", "x²", "--flag", "İstanbul", "😀", "𝔘nicode",
    "emoji😀inside", "ﬃ", "\ud800", "tab\there", "new\nline", "z" * 9, "y" * 300,
    "antidisestablishmentarianism", "ÀÉÎÕÜ" * 3,
] + [f"w{i}" for i in range(150)]  # fmt: skip


def _texts(n: int, seed: int, longest: int = 300) -> list[str]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, longest))) for _ in range(n)]
    # edge cases: empty, punctuation only, fewer words than a shingle, exactly k words
    return texts + ["", "  ,.;  ", "one", "one two three four", "a b c d e", "ascii only text"]


@pytest.mark.parametrize(("k", "num_perm", "seed"), [(5, 128, 1), (3, 64, 77), (1, 16, 5)])
def test_compiled_signatures_equal_numpy_signatures(k, num_perm, seed):
    texts = _texts(150, seed=k + seed)
    want = sh.signatures(texts, k, num_perm, seed, route="numpy")
    got = sh.signatures(texts, k, num_perm, seed, route="compiled")
    assert got[0].dtype == np.uint32 and got[0].shape == (len(texts), num_perm)
    assert np.array_equal(want[0], got[0])
    assert np.array_equal(want[1], got[1])


def test_compiled_route_streams_texts_longer_than_a_chunk_through_numpy():
    """A text over chunk_chars keeps its bounded-memory streaming; its signature and
    count are those of one pass, next to short texts done by the kernels."""
    texts = _texts(30, seed=3, longest=2000)
    long_ones = [i for i, t in enumerate(texts) if len(t) > 4096]
    assert long_ones
    one_pass = sh.signatures(texts, route="compiled")
    chunked = sh.signatures(texts, chunk_chars=4096, route="compiled")
    assert np.array_equal(one_pass[0], chunked[0]) and np.array_equal(one_pass[1], chunked[1])


def test_compiled_shingle_sets_equal_the_numpy_sets():
    texts = _texts(120, seed=11)
    want = sh.shingle_sets(texts, 5, route="numpy")
    got = sh.shingle_sets(texts, 5, route="compiled")
    assert len(got) == len(want)
    for a, b in zip(want, got, strict=True):
        assert np.array_equal(a, b)
    chunked = sh.shingle_sets(texts, 5, chunk_chars=512, route="compiled")
    for a, b in zip(want, chunked, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_compiled_pair_jaccards_equal_the_exact_jaccard_of_the_sets(threads):
    """Merges, the binary-search branch (a set 16x smaller than its partner), empty
    documents and pairs whose documents were hashed on different threads."""
    rng = random.Random(4)
    texts = _texts(60, seed=9)
    texts += [" ".join(rng.choice(WORDS) for _ in range(5000)), "w1 w2 w3 w4 w5 w6", ""]
    for i in range(0, 20, 2):  # near-duplicates: a few words changed
        words = texts[i].split(" ")
        for _ in range(3):
            words[rng.randrange(len(words))] = rng.choice(WORDS) if words else ""
        texts.append(" ".join(words))
    n = len(texts)
    a = np.array([rng.randrange(n) for _ in range(400)] + [n - 1, n - 3, n - 4], np.int64)
    b = np.array([rng.randrange(n) for _ in range(400)] + [n - 14, n - 2, n - 2], np.int64)
    kernels = sh.compiled_kernels("compiled")
    got = sh.compiled_pair_jaccards(texts, a, b, 5, sh.DEFAULT_CHUNK_CHARS, threads, kernels)
    sets = sh.shingle_sets(texts, 5, route="numpy")
    want = [dedup.jaccard(sets[x], sets[y]) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    assert got.tolist() == pytest.approx(want, abs=0, rel=1e-12)
    assert {0.0, 1.0} <= set(np.round(got, 12).tolist())  # disjoint and identical pairs seen


def test_dedup_finds_the_same_pairs_on_either_route(store):
    from sdfkit.store.ingest import build_documents

    rng = random.Random(8)
    vocab = [w for w in WORDS if w != "\ud800"]  # a lone surrogate cannot be stored
    base = [" ".join(rng.choice(vocab) for _ in range(rng.randint(50, 400))) for _ in range(60)]
    edited = []
    for text in base[:20]:
        words = text.split(" ")
        for _ in range(max(1, len(words) // 60)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        edited.append(" ".join(words))
    store.append("documents_raw", build_documents([{"text": t} for t in base + edited]))
    runs = {
        route: dedup.run(store, dedup.Config(write_exclusions=False, route=route))
        for route in ("numpy", "compiled")
    }
    numpy_run, compiled_run = runs["numpy"], runs["compiled"]
    assert numpy_run.figures["n_pairs"] >= 15
    for key in ("pairs", "n_pairs", "candidate_pairs", "documents"):
        assert numpy_run.figures[key] == compiled_run.figures[key]


def test_routes_are_checked():
    with pytest.raises(ValueError, match="unknown shingle route 'fast'"):
        sh.signatures(["a text"], route="fast")
    assert sh.compiled_kernels("numpy") is None
    from sdfkit.settings import ConfigError

    with pytest.raises(ConfigError, match="audits.dedup.route"):
        dedup.Config(route="fast")


def test_kernels_loaded_in_the_background_are_then_used(monkeypatch):
    """dedup starts loading the kernels on a thread while it reads the catalog; once that
    thread is done, "auto" hashes with them (a failure there would recur in the caller)."""
    texts = _texts(20, seed=2)
    want = sh.signatures(texts, route="numpy")
    thread = sh.warm_in_background()
    thread.join(timeout=120)
    assert not thread.is_alive()
    used: list[int] = []
    kernels = sh.compiled_kernels("auto")
    real = kernels.signatures

    def spy(buf, *args):
        used.append(len(buf))
        return real(buf, *args)

    monkeypatch.setattr(kernels, "signatures", spy)
    got = sh.signatures(texts)
    assert used and np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_a_damaged_numba_cache_is_one_warning_and_compiled_again():
    """A cache file cut short (a kill mid-write, a bad disk) is not a traceback: the kernels'
    cache files are removed with a one-line warning naming their folder, the kernels are
    compiled again, and the results are the same."""
    import subprocess
    import sys
    from pathlib import Path

    from sdfkit.audits import shingle_kernels

    sh.warm_kernels()  # the cache exists
    folder = Path(shingle_kernels.signatures._cache._cache_path)
    data = sorted(folder.glob("shingle_kernels.signatures-*.nbc"))
    index = sorted(folder.glob("shingle_kernels.intersections-*.nbi"))
    assert data and index
    for path in data:
        path.write_bytes(b"\xb3 not a pickle")
    for path in index:
        path.write_bytes(path.read_bytes()[:7])
    code = (
        "from sdfkit.audits import shingles as sh; "
        "s, d = sh.signatures(['one two three four five six', ''], route='compiled'); "
        "print(d.tolist())"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(
        sh.signatures(["one two three four five six", ""], route="numpy")[1].tolist()
    )
    lines = [x for x in run.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert str(folder) in lines[0] and "compiling again" in lines[0]
    # the cache was written again: a second process loads it without a warning
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert again.returncode == 0 and again.stderr.strip() == ""


def test_kernels_that_fail_to_import_are_one_warning_and_the_numpy_route(monkeypatch, capsys):
    """numba raises RuntimeError at import where it finds no folder to cache a kernel in
    (a read-only install, an unwritable HOME); that used to be a traceback. "auto" takes
    the numpy route (the same values) with one warning; "compiled" is one line."""
    import importlib.abc
    import sys

    import sdfkit.audits as audits
    from sdfkit.errors import SdfError

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "sdfkit.audits.shingle_kernels":
                raise RuntimeError("cannot cache function 'signatures': no locator available")
            return None

    texts = _texts(12, seed=5)
    want = sh.signatures(texts, route="numpy")
    monkeypatch.delitem(sys.modules, "sdfkit.audits.shingle_kernels", raising=False)
    monkeypatch.delattr(audits, "shingle_kernels", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Refuse(), *sys.meta_path])
    monkeypatch.setattr(sh, "_KERNELS", {})
    sh.warm_kernels()  # the background load says nothing: the route that uses it does
    assert capsys.readouterr().err == ""
    for _ in range(2):
        got = sh.signatures(texts)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    err = capsys.readouterr().err
    assert err.count("warning: compiled shingle kernels failed to load (RuntimeError") == 1
    with pytest.raises(SdfError, match=r"audits.dedup.route: compiled failed to load .*locator"):
        sh.signatures(texts, route="compiled")
