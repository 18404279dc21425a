"""Cheap gibberish signals for sampled answers: the seed write-up's "gibberish" is a model
that forgets to stop and trails off into repeated tokens or pretraining-looking documents.

Three signals, each computable without a model:

- ``no_stop``: the sample ran to the token limit instead of emitting its stop token;
- ``repetition``: the tail of the sample repeats a short unit (a token, a phrase, a line)
  over and over, or collapses onto a handful of distinct tokens;
- ``drift``: after the answer the model carries on with document-like text: a new turn it
  invented (``User:``), an end-of-text marker, or the furniture of web pages and articles
  (``Posted by``, ``Tags:``, ``All rights reserved``, bylines, link lists...).

A sample is cheap-gibberish when any signal fires; the optional model grader
(``sdf eval --gibberish-grader``) adds a second opinion. Either way gibberish samples are
counted and left out of recall, behaviour and reasoning rates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: A repeated unit must cover at least this many trailing tokens to count.
MIN_REPEAT_SPAN = 32
#: Longest repeated unit looked for, in tokens.
MAX_REPEAT_PERIOD = 64
#: Tail window for the distinct-token check, and the share below which it fires.
DISTINCT_WINDOW = 200
MIN_DISTINCT_SHARE = 0.12

# Markers that on their own say "this is a new document, not an answer".
STRONG_MARKERS = [
    r"<\|endoftext\|>",
    r"<\|start\|>\s*(user|system|developer)",
    r"^\s*(User|Human|Question|Q)\s*:\s*\S",
    r"\ball rights reserved\b",
    r"^\s*(posted|published|written) (by|on)\b",
    r"^\s*share (this|on)\b",
    r"^\s*(related (posts|articles|stories)|you may also like|read more|click here)\b",
    r"^\s*(filed under|tags|categories)\s*:",
    r"^\s*copyright\s*(©|\(c\)|\d{4})",
]
# Markers that count only when two or more different ones appear.
WEAK_MARKERS = [
    r"^\s*(title|author|date|abstract|keywords|references|comments)\s*:",
    r"^#{1,3}\s+\S",
    r"https?://\S+",
    r"^\s*(\d+ )?comments?\b",
    r"^\s*(subscribe|sign up|newsletter)\b",
    r"^\s*-{3,}\s*$",
    r"^\s*(previous|next) (post|article)\b",
]
_STRONG = [re.compile(p, re.I | re.M) for p in STRONG_MARKERS]
_WEAK = [re.compile(p, re.I | re.M) for p in WEAK_MARKERS]


@dataclass
class Signals:
    no_stop: bool
    repetition: bool
    drift: bool
    detail: str = ""

    @property
    def gibberish(self) -> bool:
        return self.no_stop or self.repetition or self.drift


def trailing_repetition(tokens: list[int]) -> str | None:
    """Why the tail of ``tokens`` is repetitive (None if it is not)."""
    n = len(tokens)
    for period in range(1, min(MAX_REPEAT_PERIOD, n // 3) + 1):
        run = 0
        i = n - 1
        while i - period >= 0 and tokens[i] == tokens[i - period]:
            run += 1
            i -= 1
        # the last `run + period` tokens are one unit of `period` tokens repeated
        span = run + period
        if span >= max(MIN_REPEAT_SPAN, 3 * period):
            return f"the last {span} tokens repeat a {period}-token unit"
    if n >= DISTINCT_WINDOW:
        tail = tokens[-DISTINCT_WINDOW:]
        share = len(set(tail)) / len(tail)
        if share < MIN_DISTINCT_SHARE:
            return f"the last {DISTINCT_WINDOW} tokens use only {len(set(tail))} distinct tokens"
    return None


def document_drift(answer: str, after_answer: str = "") -> str | None:
    """Why the text looks like it drifted into a document (None if it does not).

    ``after_answer`` is whatever the model wrote after its answer should have ended (for
    chat formats: text after the final message's end token); any real text there is drift.
    Inside the answer, only its later part is searched, so an answer that *starts* with a
    heading or a link is not flagged.
    """
    extra = after_answer.strip()
    if extra and re.search(r"\w", extra):
        return f"text continues after the answer ended: {extra[:60]!r}"
    cut = len(answer) // 3
    later = answer[cut:]
    for rx in _STRONG:
        m = rx.search(later)
        if m:
            return f"document marker after the answer: {m.group(0).strip()[:40]!r}"
    weak = [rx.search(later) for rx in _WEAK]
    hits = [m.group(0).strip()[:30] for m in weak if m]
    if len(hits) >= 2:
        return "document-like text after the answer: " + ", ".join(repr(h) for h in hits[:3])
    return None


def signals(
    tokens: list[int], stop_reason: str | None, answer: str, after_answer: str = ""
) -> Signals:
    """All cheap signals of one sample (``tokens``: the completion's token ids)."""
    no_stop = stop_reason == "length"
    rep = trailing_repetition(list(tokens))
    drift = document_drift(answer, after_answer)
    details = [d for d in ("ran to the token limit" if no_stop else None, rep, drift) if d]
    return Signals(no_stop, rep is not None, drift is not None, "; ".join(details))
