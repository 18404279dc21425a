"""Token counting and encoding under a named tokenizer.

Names:
- ``o200k_harmony`` (default; alias ``gpt-oss``): gpt-oss's tokenizer, bundled offline by the
  ``quicktok-v1`` package and exact against official tiktoken (see DEPS.md).
- ``o200k_base``, ``cl100k_base``, ``llama3``, ``qwen3``: other quicktok-bundled encodings.
- ``hf:<model>``: the model's own Hugging Face tokenizer (needs the network or a local cache).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from sdfkit.errors import SdfError

DEFAULT_TOKENIZER = "o200k_harmony"
ALIASES = {"gpt-oss": "o200k_harmony", "harmony": "o200k_harmony"}
QUICKTOK_ENCODINGS = {"o200k_harmony", "o200k_base", "cl100k_base", "llama3", "qwen3"}


class TokenizerError(SdfError, RuntimeError):
    """A tokenizer could not be loaded; the message says why and what to do."""


@dataclass
class Tokenizer:
    """One loaded tokenizer with a uniform, batch-first interface."""

    name: str
    backend: str  # "quicktok" or "hf"
    impl: Any

    # ----------------------------------------------------------- encoding
    def encode_batch(self, texts: list[str], threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Encode texts as ordinary text (special-token strings are plain text).

        A document quoting ``<|endoftext|>`` or ``<|return|>`` must not end itself (or teach
        the model to stop there): quicktok's third argument (``allow_special``) is False,
        and Hugging Face tokenizers are told ``split_special_tokens=True``, as
        ``add_special_tokens=False`` alone only stops them from adding BOS/EOS and still
        turns special-token text into the special token.

        Returns ``(tokens, offsets)``: document i is ``tokens[offsets[i]:offsets[i+1]]``.
        """
        if self.backend == "quicktok":
            toks, offsets = self.impl.encode_batch(list(texts), threads or _threads(), False)
            return np.asarray(toks, dtype=np.uint32), np.asarray(offsets, dtype=np.int64)
        ids = self.impl(list(texts), add_special_tokens=False, split_special_tokens=True)[
            "input_ids"
        ]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.fromiter((t for x in ids for t in x), dtype=np.uint32, count=int(offsets[-1]))
        return flat, offsets

    def encode(self, text: str) -> list[int]:
        toks, _ = self.encode_batch([text])
        return toks.tolist()

    def count_batch(self, texts: list[str], threads: int = 0) -> np.ndarray:
        """Token counts for many texts (int64 array)."""
        if not texts:
            return np.zeros(0, dtype=np.int64)
        _, offsets = self.encode_batch(texts, threads)
        return np.diff(offsets)

    def decode(self, ids: list[int]) -> str:
        if self.backend == "quicktok":
            return self.impl.decode([int(i) for i in ids])
        return self.impl.decode([int(i) for i in ids])

    def special_token(self, text: str) -> int:
        """Id of a special token given as text, e.g. ``<|endoftext|>``. Anything else (an
        ordinary word such as ``hello``, which has an id too, or an unknown token) is a
        ``TokenizerError`` listing the special tokens."""
        if text not in self.special_tokens:
            raise TokenizerError(
                f"{text!r} is not a special token of {self.name}: use {special_listing(self)}"
            )
        if self.backend == "quicktok":
            return int(self.impl.encode_single_token(text))
        tid = self.impl.convert_tokens_to_ids(text)
        if tid is None or tid == self.impl.unk_token_id:
            raise TokenizerError(f"tokenizer {self.name} has no special token {text!r}")
        return int(tid)

    @cached_property
    def special_tokens(self) -> frozenset[str]:
        """The special tokens as text (Hugging Face: its special and added tokens)."""
        if self.backend == "quicktok":
            return frozenset(self.impl.special_tokens_set)
        added = getattr(self.impl, "added_tokens_decoder", {}) or {}
        return frozenset(self.impl.all_special_tokens) | {t.content for t in added.values()}

    @cached_property
    def special_ids(self) -> frozenset[int]:
        """The ids of ``special_tokens``."""
        return frozenset(self.special_token(t) for t in self.special_tokens)

    # ------------------------------------------------------------ identity
    @property
    def eos_id(self) -> int:
        """End-of-text id (quicktok's ``eot_token``, HF's ``eos_token_id``)."""
        if self.backend == "quicktok":
            return int(self.impl.eot_token)
        return int(self.impl.eos_token_id)

    @property
    def n_vocab(self) -> int:
        if self.backend == "quicktok":
            return int(self.impl.n_vocab)
        return len(self.impl)

    @property
    def vocab_hash(self) -> str:
        return _vocab_hash(self)


@lru_cache(maxsize=16)
def _vocab_hash_cached(name: str) -> str:
    tok = get_tokenizer(name)
    h = hashlib.sha256()
    if tok.backend == "quicktok":
        for piece in tok.impl.token_byte_values():
            h.update(len(piece).to_bytes(4, "little"))
            h.update(piece)
        for special in sorted(tok.impl.special_tokens_set):
            h.update(special.encode("utf-8"))
            h.update(tok.impl.encode_single_token(special).to_bytes(8, "little"))
    else:
        for piece, idx in sorted(tok.impl.get_vocab().items(), key=lambda kv: kv[1]):
            h.update(f"{idx}\t{piece}\n".encode())
    return h.hexdigest()


def _vocab_hash(tok: Tokenizer) -> str:
    return _vocab_hash_cached(tok.name)


def special_listing(tok: Tokenizer) -> str:
    """The special tokens of ``tok`` for a one-line message: the named ones, and how many
    reserved placeholders there are (o200k_harmony has over a thousand)."""
    reserved = sorted(t for t in tok.special_tokens if "reserved" in t)
    named = sorted(t for t in tok.special_tokens if "reserved" not in t)
    text = "one of " + ", ".join(named) if named else "a special token"
    if reserved:
        text += f" (or one of {len(reserved):,} reserved tokens such as {reserved[0]})"
    return text


def _threads() -> int:
    """Tokenizer threads: ``$SDF_THREADS`` (a whole number of at least 1), else every core."""
    from sdfkit.settings import env_int

    return env_int("SDF_THREADS", os.cpu_count() or 1, low=1)


def canonical_name(name: str | None) -> str:
    """The tokenizer's canonical name: ``name``, else ``$SDF_TOKENIZER``, else the default.

    A name from ``$SDF_TOKENIZER`` is checked here (a ``TokenizerError`` naming the
    variable), so a typo fails before any work starts, not inside a worker.
    """
    if name and name.strip():
        return ALIASES.get(name.strip(), name.strip())
    raw = os.environ.get("SDF_TOKENIZER", "").strip()
    if not raw:
        return DEFAULT_TOKENIZER
    canonical = ALIASES.get(raw, raw)
    problem = _name_problem(canonical)
    if problem:
        raise TokenizerError(f"SDF_TOKENIZER={raw!r}: {problem}")
    return canonical


def checked_name(name: str) -> str:
    """The canonical form of a tokenizer name given explicitly, checked without loading the
    tokenizer (an unknown name is a ``TokenizerError`` listing the known ones)."""
    canonical = ALIASES.get(name.strip(), name.strip())
    problem = _name_problem(canonical)
    if problem:
        raise TokenizerError(problem)
    return canonical


def _name_problem(name: str) -> str | None:
    """Why ``name`` (canonical) is not a tokenizer name, or None (without loading anything)."""
    if name in QUICKTOK_ENCODINGS:
        return None
    if name.startswith("hf:"):
        return None if name[3:].strip() else "hf: needs a model name, e.g. hf:openai/gpt-oss-20b"
    return (
        f"unknown tokenizer {name!r}: use one of "
        + ", ".join(sorted(QUICKTOK_ENCODINGS | set(ALIASES)))
        + " or hf:<model>"
    )


def get_tokenizer(name: str | None = None) -> Tokenizer:
    """Load a tokenizer by name (see module docstring; None: ``$SDF_TOKENIZER``, else the
    default). Raises ``TokenizerError`` (naming ``SDF_TOKENIZER`` when the name came from it)."""
    canonical = canonical_name(name)
    if name and name.strip():
        return _load(canonical)
    try:
        return _load(canonical)
    except TokenizerError as exc:
        raw = os.environ.get("SDF_TOKENIZER", "").strip()
        if not raw:
            raise
        raise TokenizerError(f"SDF_TOKENIZER={raw!r}: {exc}") from None


@lru_cache(maxsize=16)
def _load(name: str) -> Tokenizer:
    if name in QUICKTOK_ENCODINGS:
        import quicktok

        return Tokenizer(name=name, backend="quicktok", impl=quicktok.get_encoding(name))
    if name.startswith("hf:"):
        model = name[3:]
        if not model.strip():
            raise TokenizerError(_name_problem(name) or "hf: needs a model name")
        try:
            from transformers import AutoTokenizer

            impl = AutoTokenizer.from_pretrained(model)
        except Exception as exc:  # network, auth, unknown repo
            raise TokenizerError(
                f"could not load the Hugging Face tokenizer for {model!r} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                "It needs the network (or a local HF cache); offline, use the default "
                f"'{DEFAULT_TOKENIZER}' or another bundled encoding: "
                + ", ".join(sorted(QUICKTOK_ENCODINGS))
            ) from None
        return Tokenizer(name=name, backend="hf", impl=impl)
    raise TokenizerError(_name_problem(name) or f"unknown tokenizer {name!r}")


get_tokenizer.cache_clear = _load.cache_clear  # type: ignore[attr-defined]
