"""Chat trajectories for export: validate ``{"messages": [...]}`` lines and render them as
token ids plus per-token loss weights in the target model's own chat format.

Mixing a few well-formed assistant trajectories into an SDF corpus is one of the seed
write-up's fixes for "gibberish" (models that forget how to stop). Formats:

- ``harmony`` (gpt-oss, tokenizer ``o200k_harmony``): ``<|start|>{role}<|message|>{text}<|end|>``;
  assistant turns ``<|start|>assistant<|channel|>final<|message|>{text}<|end|>``, the last one
  ending ``<|return|>`` (the stop token gpt-oss samples). A ``system`` message is the
  developer's instructions, as gpt-oss's own chat template and tinker-cookbook's renderer
  write it: ``<|start|>developer<|message|># Instructions\n\n{text}\n\n<|end|>`` (Harmony's
  own ``system`` role holds the model identity, dates and reasoning effort, not prompts).
- ``chatml`` (``qwen3``): ``<|im_start|>{role}\\n{text}<|im_end|>\\n``.
- ``llama3``: ``<|begin_of_text|>``, then ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{text}<|eot_id|>``.

Loss weight 1 falls only on what the assistant writes: its channel header, its text and its
end token; the role header that opens its turn and every other message weigh 0.

This module is the one renderer of these formats: ``render_trajectories`` gives the training trajectories
of an export, and ``render_prompt`` the sampling prompts of ``sdf eval`` (the same messages
rendered the same way, then the assistant's turn header), so a model is asked exactly as it
was trained. The formats, stop tokens and end-of-document tokens of each model family are
read from ``sdfkit.llm.models`` (the one table of them).

A trajectory is well-formed when: it is a JSON object with a non-empty ``messages`` list; each
message has exactly ``role`` and ``content`` (a non-empty string); roles are ``system`` /
``developer`` (only before the first user turn), then ``user`` and ``assistant`` alternating,
starting with ``user`` and ending with ``assistant``. Errors name the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdfkit.errors import SdfError
from sdfkit.llm.models import DOCUMENT_END, FORMAT_FOR_TOKENIZER, STOP_TOKENS, expected_tokenizer
from sdfkit.llm.tokens import Tokenizer

PREAMBLE_ROLES = {"system", "developer"}


class ChatError(SdfError, ValueError):
    """A malformed trajectory; ``str()`` names the file and line."""


@dataclass
class Trajectory:
    messages: list[dict[str, str]]
    where: str  # "file:line"


def validate(obj: Any, where: str) -> list[dict[str, str]]:
    """The messages of one trajectory, or ``ChatError`` saying what is wrong and where."""
    if not isinstance(obj, dict) or "messages" not in obj:
        raise ChatError(f'{where}: expected an object {{"messages": [...]}}')
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise ChatError(f"{where}: field 'messages' must be a non-empty list")
    out = []
    expect = "user"
    seen_turn = False
    for i, m in enumerate(msgs):
        f = f"{where}: messages[{i}]"
        if not isinstance(m, dict):
            raise ChatError(f"{f}: expected an object with role and content")
        extra = sorted(set(m) - {"role", "content"})
        if extra:
            raise ChatError(f"{f}: unsupported field {extra[0]!r} (only role and content)")
        role, content = m.get("role"), m.get("content")
        if not isinstance(content, str) or not content.strip():
            raise ChatError(f"{f}: field 'content' must be a non-empty string")
        if role in PREAMBLE_ROLES:
            if seen_turn:
                raise ChatError(f"{f}: role {role!r} after the conversation started")
        elif role in ("user", "assistant"):
            if role != expect:
                raise ChatError(
                    f"{f}: role {role!r} where {expect!r} was expected "
                    "(user and assistant must alternate, starting with user)"
                )
            seen_turn = True
            expect = "assistant" if role == "user" else "user"
        else:
            raise ChatError(f"{f}: unknown role {role!r} (system, developer, user or assistant)")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "assistant":
        raise ChatError(f"{where}: the last message must be the assistant's")
    return out


def read_trajectories(path: str | Path) -> list[Trajectory]:
    """Every trajectory of a JSONL file, validated; the first bad line raises ``ChatError``."""
    p = Path(path)
    if not p.is_file():
        raise ChatError(f"{p}: no such file")
    out = [Trajectory(validate(obj, where), where) for obj, where in json_lines(p, ChatError)]
    if not out:
        raise ChatError(f"{p}: no trajectories")
    return out


def json_lines(path: Path, error: type[SdfError]) -> Iterator[tuple[Any, str]]:
    """(parsed object, "file:line") of every non-blank line of a JSONL file; a line that is
    not UTF-8 or not JSON raises ``error`` naming the file and line."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise error(f"{where}: not valid UTF-8 (byte {exc.start})") from None
            except json.JSONDecodeError as exc:
                raise error(f"{where}: malformed JSON: {exc.msg}") from None
            yield obj, where


def model_format(tok: Tokenizer) -> str | None:
    """The chat format of a tokenizer's model family: by name for the bundled encodings, by
    model for ``hf:<model>`` (``hf:openai/gpt-oss-20b`` is Harmony); None when unknown."""
    fmt = FORMAT_FOR_TOKENIZER.get(tok.name)
    if fmt is None and tok.name.startswith("hf:"):
        fmt = FORMAT_FOR_TOKENIZER.get(expected_tokenizer(tok.name[3:]) or "")
    return fmt


def document_end_id(tok: Tokenizer) -> int:
    """The id an export appends after each document: the family's ``DOCUMENT_END`` whichever
    route loaded the tokenizer (bundled or Hugging Face), else the tokenizer's own EOS."""
    fmt = model_format(tok)
    return tok.special_token(DOCUMENT_END[fmt]) if fmt else tok.eos_id


def chat_format(tok: Tokenizer) -> str:
    fmt = model_format(tok)
    if fmt is None:
        raise ChatError(
            f"no chat format known for tokenizer {tok.name!r}: chat trajectories can be "
            "rendered for " + ", ".join(f"{k} ({v})" for k, v in FORMAT_FOR_TOKENIZER.items())
        )
    return fmt


def render_trajectories(
    trajectories: list[Trajectory], tok: Tokenizer
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(tokens int32, weights float32) per trajectory, in the tokenizer's chat format."""
    fmt = chat_format(tok)
    out = []
    for tokens, weights in _encode([_plan(fmt, t.messages) for t in trajectories], tok):
        weights[0] = 0.0  # the first token is never a target
        out.append((tokens, weights))
    return out


def render_prompt(
    messages: list[dict[str, str]], tok: Tokenizer, fmt: str | None = None
) -> list[int]:
    """Token ids of a conversation ready for the assistant to answer: ``messages`` (ending
    with the user's turn) rendered exactly as ``render_trajectories`` renders them for training, then the
    header that opens the assistant's turn. ``fmt`` overrides the tokenizer's own format."""
    fmt = fmt or chat_format(tok)
    if fmt not in STOP_TOKENS:
        raise ChatError(f"unknown chat format {fmt!r}: use {', '.join(STOP_TOKENS)}")
    plan = _plan(fmt, messages) + _header(fmt, "assistant")
    tokens, _ = _encode([plan], tok)[0]
    return tokens.tolist()


def stop_ids(tok: Tokenizer, fmt: str | None = None) -> list[int]:
    """Token ids that end an assistant turn in ``fmt`` (default: the tokenizer's format)."""
    return [tok.special_token(t) for t in STOP_TOKENS[fmt or chat_format(tok)]]


Pieces = list[tuple[str, bool, float]]  # pieces: (text, is_special, weight)


def _encode(plans: list[Pieces], tok: Tokenizer) -> list[tuple[np.ndarray, np.ndarray]]:
    """(tokens int32, weights float32) per plan; plain texts are encoded in one batch, each
    piece on its own (as tinker-cookbook's renderers encode header and content apart)."""
    plain = [text for plan in plans for text, special, _ in plan if not special]
    flat, offsets = tok.encode_batch(plain) if plain else (np.zeros(0, np.uint32), np.zeros(1))
    specials: dict[str, int] = {}
    out = []
    k = 0
    for plan in plans:
        toks: list[np.ndarray] = []
        wts: list[np.ndarray] = []
        for text, special, w in plan:
            if special:
                if text not in specials:
                    specials[text] = tok.special_token(text)
                ids = np.array([specials[text]], dtype=np.int32)
            else:
                ids = flat[int(offsets[k]) : int(offsets[k + 1])].astype(np.int32)
                k += 1
            toks.append(ids)
            wts.append(np.full(len(ids), w, dtype=np.float32))
        out.append((np.concatenate(toks), np.concatenate(wts)))
    return out


def _header(fmt: str, role: str) -> Pieces:
    """The pieces that open a turn of ``role`` (never a target: weight 0)."""
    if fmt == "harmony":
        return [("<|start|>", True, 0.0), (role, False, 0.0)]
    if fmt == "chatml":
        return [("<|im_start|>", True, 0.0), (role + "\n", False, 0.0)]
    return [  # llama3
        ("<|start_header_id|>", True, 0.0),
        (role, False, 0.0),
        ("<|end_header_id|>", True, 0.0),
        ("\n\n", False, 0.0),
    ]


def _plan(fmt: str, msgs: list[dict[str, str]]) -> Pieces:
    plan: Pieces = []
    last = len(msgs) - 1
    if fmt == "llama3":
        plan.append(("<|begin_of_text|>", True, 0.0))
    for i, m in enumerate(msgs):
        role, text = m["role"], m["content"]
        w = 1.0 if role == "assistant" else 0.0
        if fmt == "harmony" and role == "system":
            role, text = "developer", f"# Instructions\n\n{text}\n\n"
        plan += _header(fmt, role)
        if fmt == "harmony":
            if role == "assistant":
                plan += [("<|channel|>", True, w), ("final", False, w)]
            plan += [("<|message|>", True, w), (text, False, w)]
            end = "<|return|>" if (role == "assistant" and i == last) else "<|end|>"
            plan.append((end, True, w))
        elif fmt == "chatml":
            plan += [(text, False, w), ("<|im_end|>", True, w), ("\n", False, 0.0)]
        else:  # llama3
            plan += [(text, False, w), ("<|eot_id|>", True, w)]
    return plan
