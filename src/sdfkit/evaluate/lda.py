"""Logit difference amplification (LDA) through Tinker's sampling API.

LDA samples from ``logits_sdf + α·(logits_sdf − logits_base)`` = ``(1+α)·logits_sdf −
α·logits_base``. Tinker returns log-probabilities, not logits, but at one position a model's
log-probabilities are its logits minus one constant (the log of the softmax normaliser), so
``(1+α)·lp_sdf − α·lp_base`` differs from the logit form by a constant that cancels in the
softmax: over any candidate set the two give the same distribution, exactly.

Per generated token this costs two requests:

1. the fine-tuned model, prompted with the context, samples one token and returns its top-k
   next-token log-probabilities (``topk_sample_logprobs=k``): those k tokens are the
   candidates, with ``lp_sdf``;
2. the base model scores exactly those candidates at the same position
   (``target_prompt_logprobs``: the context plus one token, the last row naming the k ids),
   giving ``lp_base``.

The amplified distribution is renormalised over the k candidates and one token is drawn.
The truncation is the approximation: a token outside the fine-tuned model's top k can never
be chosen, however much the amplification would favour it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sdfkit.errors import SdfError

DEFAULT_TOP_K = 20


class LdaError(SdfError, ValueError):
    """The service's answer lacks the log-probabilities amplification needs."""


@dataclass
class AmplifiedSample:
    tokens: list[int]
    logprobs: list[float]  # of each chosen token under the amplified distribution
    stop_reason: str  # "stop" or "length"
    requests: int  # service requests made (two per generated token)


def amplified_logprobs(
    lp_sdf: Sequence[float], lp_base: Sequence[float], alpha: float, temperature: float = 1.0
) -> list[float]:
    """Log-probabilities of the candidates under ``(1+α)·lp_sdf − α·lp_base`` (and a
    temperature), renormalised over the candidates."""
    scores = [((1 + alpha) * s - alpha * b) for s, b in zip(lp_sdf, lp_base, strict=True)]
    if temperature > 0:
        scores = [x / temperature for x in scores]
    top = max(scores)
    z = top + math.log(sum(math.exp(x - top) for x in scores))
    return [x - z for x in scores]


def _target_rows(context_len: int, candidates: list[int]) -> Any:
    """``target_prompt_logprobs`` for a prompt of ``context_len + 1`` tokens: shape
    ``[context_len, k]`` (row i scores position i+1), only the last row filled, sent sparse
    (CSR) so a long context costs nothing extra on the wire."""
    import numpy as np
    from tinker import types

    k = len(candidates)
    return types.TensorData(
        data=np.asarray(candidates, dtype=np.int64),
        dtype="int64",
        shape=[context_len, k],
        sparse_crow_indices=[0] * context_len + [k],
        sparse_col_indices=list(range(k)),
    )


def sample_amplified(
    sdf_client: Any,
    base_client: Any,
    prompt_tokens: list[int],
    alpha: float,
    *,
    max_tokens: int,
    stop_ids: Sequence[int],
    temperature: float = 1.0,
    top_k: int = DEFAULT_TOP_K,
    seed: int = 0,
    call: Callable[[str, Callable[[], Any]], Any] | None = None,
) -> AmplifiedSample:
    """Generate one completion token by token with LDA (see the module docstring).

    ``call(what, fn)`` runs each service call (the evaluator passes a deadline wrapper);
    ``temperature`` 0 takes the most likely candidate.
    """
    from tinker import types

    run = call or (lambda _what, fn: fn())
    rng = random.Random(seed)
    context = list(prompt_tokens)
    out: list[int] = []
    out_lp: list[float] = []
    stops = set(int(s) for s in stop_ids)
    requests = 0
    one = types.SamplingParams(max_tokens=1, temperature=1.0)
    while len(out) < max_tokens:
        resp = run(
            "sampling top-k candidates (LDA)",
            lambda: sdf_client.sample(
                prompt=types.ModelInput.from_ints(context),
                num_samples=1,
                sampling_params=one,
                topk_sample_logprobs=top_k,
            ).result(),
        )
        requests += 1
        top = (resp.sequences[0].topk_logprobs or [None])[0]
        if not top:
            raise LdaError("the fine-tuned model returned no top-k log-probabilities")
        cands = [int(t) for t, _ in top]
        lp_sdf = [float(lp) for _, lp in top]
        # the base model scores the candidates at the same position (context + 1 token)
        probe = context + [cands[0]]
        base = run(
            "scoring candidates on the base model (LDA)",
            lambda probe=probe, cands=cands: base_client.sample(
                prompt=types.ModelInput.from_ints(probe),
                num_samples=1,
                sampling_params=one,
                target_prompt_logprobs=_target_rows(len(context), cands),
            ).result(),
        )
        requests += 1
        table = base.target_prompt_logprobs
        if table is None:
            raise LdaError("the base model returned no target log-probabilities")
        lp_base = [float(x) for x in table.to_numpy()[len(context) - 1][: len(cands)]]
        lps = amplified_logprobs(lp_sdf, lp_base, alpha, temperature)
        if temperature <= 0:
            j = max(range(len(cands)), key=lambda i: lps[i])
        else:
            j = rng.choices(range(len(cands)), weights=[math.exp(x) for x in lps])[0]
        tok = cands[j]
        out.append(tok)
        out_lp.append(lps[j])
        context.append(tok)
        if tok in stops:
            return AmplifiedSample(out, out_lp, "stop", requests)
    return AmplifiedSample(out, out_lp, "length", requests)
