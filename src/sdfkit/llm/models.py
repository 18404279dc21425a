"""Which model is which: the one table from a base model to its tokenizer, chat format and
end tokens, and the generation model a new run asks Anthropic for.

``FAMILIES`` is the only place sdfkit writes down what it knows about a base model family;
export (tokenizer and end of document), training (the tokenizer an export must record),
chat rendering (format and stop tokens) and evaluation (the renderer of ``--renderer auto``)
all read it, so adding a family is one row here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelFamily:
    """One family of base models: how its names start (lower case), the bundled tokenizer an
    export records for it, its chat format, the special tokens that end an assistant turn
    when sampling, and the token that ends a document (the encoding's end of text: the
    boundary between pretraining documents, not a chat stop token)."""

    prefixes: tuple[str, ...]
    tokenizer: str
    chat_format: str
    stop_tokens: tuple[str, ...]
    document_end: str


FAMILIES: tuple[ModelFamily, ...] = (
    # gpt-oss's Hugging Face tokenizer names ``<|return|>`` its EOS, which ends a turn;
    # ``<|endoftext|>`` is what the bundled encoding ends text with.
    ModelFamily(
        ("openai/gpt-oss-", "gpt-oss-"),
        "o200k_harmony",
        "harmony",
        ("<|return|>", "<|call|>"),
        "<|endoftext|>",
    ),
    ModelFamily(("qwen/qwen3", "qwen3"), "qwen3", "chatml", ("<|im_end|>",), "<|endoftext|>"),
    ModelFamily(
        ("meta-llama/llama-3", "meta-llama/meta-llama-3", "llama-3"),
        "llama3",
        "llama3",
        ("<|eot_id|>",),
        "<|end_of_text|>",
    ),
)

#: Tokenizer name -> chat format (derived from ``FAMILIES``).
FORMAT_FOR_TOKENIZER = {f.tokenizer: f.chat_format for f in FAMILIES}
#: Chat format -> the special tokens that end an assistant turn when sampling.
STOP_TOKENS = {f.chat_format: f.stop_tokens for f in FAMILIES}
#: Chat format -> the special token that ends a document.
DOCUMENT_END = {f.chat_format: f.document_end for f in FAMILIES}


def family_of(base_model: str) -> ModelFamily | None:
    """The family of a base model name (case-insensitive prefix match); None when unknown."""
    low = base_model.lower()
    for fam in FAMILIES:
        if low.startswith(fam.prefixes):
            return fam
    return None


def expected_tokenizer(base_model: str) -> str | None:
    """The tokenizer name an export must record for ``base_model`` (None: unknown model)."""
    fam = family_of(base_model)
    return fam.tokenizer if fam else None


# ------------------------------------------------------------------ generation (Anthropic)
FALLBACK_MODELS = {"sonnet": "claude-sonnet-4-6", "haiku": "claude-haiku-4-5"}


def model_for(client: Any, family: str = "sonnet") -> str:
    """The model a run through ``client`` asks for by default: the stand-in's own name
    offline, else the newest model of ``family``."""
    from sdfkit.llm.batches import backend_name

    return "offline-standin" if backend_name(client) == "offline-standin" else default_model(family)


def default_model(family: str = "sonnet") -> str:
    """The newest non-deprecated undated model of a family in the installed SDK's list."""
    from typing import get_args

    try:
        from anthropic.types.model import Model

        names = [n for arg in get_args(Model) for n in get_args(arg)]
    except Exception:  # pragma: no cover - an SDK without the list
        return FALLBACK_MODELS[family]
    try:
        from anthropic._data.deprecated_models import DEPRECATED_MODELS

        deprecated = set(DEPRECATED_MODELS)
    except Exception:  # pragma: no cover - older SDKs have no deprecation table
        deprecated = set()
    pat = re.compile(rf"^claude-{family}-(\d+)(?:-(\d{{1,2}}))?$")
    best: tuple[tuple[int, int], str] | None = None
    for n in names:
        m = pat.match(n)
        if not m or n in deprecated:
            continue
        version = (int(m.group(1)), int(m.group(2) or 0))
        if best is None or version > best[0]:
            best = (version, n)
    return best[1] if best else FALLBACK_MODELS[family]
