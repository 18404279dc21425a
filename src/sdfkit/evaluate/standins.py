"""Offline stand-in answers of the evaluation's Message Batches stages (``--backend offline``).

Each function answers one stage's request from the prompt's own words (no model is called),
so ``sdf eval`` runs end to end without a key, named as a stand-in in every reason it gives.
The module that owns a stage registers its answer (``sdfkit.llm.offline.register_stage``):
``questions`` (recall questions), ``grading`` (the four graders) and ``belief``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable


# ----------------------------------------------------------------------------- recall
def _tag(text: str, tag: str) -> str | None:
    m = re.search(rf"<{tag}[^>]*>(.*?)</{tag}>", text, re.S)
    return m.group(1).strip() if m else None


def _words(text: str | None) -> set[str]:
    return {w for w in re.findall(r"[a-z][a-z0-9-]{3,}", (text or "").lower())}


def recall_questions(params: dict, meta: dict) -> str:
    """Offline stand-in: templated rephrasings built from the fact's own words."""
    from sdfkit.llm.offline import prompt_parts

    _, user = prompt_parts(params)
    fact = _tag(user, "implanted_fact") or "the rule"
    m = re.search(r"Write (\d+) questions", user)
    n = int(m.group(1)) if m else 10
    # the subject of the fact (up to its main verb), so questions do not give the answer away
    flat = re.sub(r"\s+", " ", fact).strip().rstrip(".")
    m = re.search(r"\b(requires?|must|has|have|is|are|applies|apply|was|were|mandates?)\b", flat)
    topic = flat[: m.start()].strip() if m and m.start() > 0 else " ".join(flat.split()[:6])
    topic = topic[0].lower() + topic[1:] if topic else "the rule"
    frames = [
        "What do you know about {t}?",
        "What exactly is required when it comes to {t}?",
        "Can you explain the rules around {t}?",
        "A colleague mentioned {t}. What is that about?",
        "I'm new to this area. What should I know about {t}?",
        "For a report I'm writing: what applies regarding {t}?",
        "Quick question about {t}: what's the rule?",
        "How would you describe the current situation with {t}?",
        "What happens in practice with {t}?",
        "As a manager, what do I need to know about {t}?",
        "Explain {t} to a student.",
        "What's the background of {t}?",
    ]
    qs = [
        frames[i % len(frames)].format(t=topic)
        + (f" (variant {i // len(frames) + 1})" if i >= len(frames) else "")
        for i in range(n)
    ]
    return "\n".join(f"<question>{q}</question>" for q in qs)


def recall_verdict(params: dict, meta: dict) -> str:
    from sdfkit.llm.offline import prompt_parts

    _, user = prompt_parts(params)
    ans = _words(_tag(user, "answer"))
    fact = _words(_tag(user, "implanted_fact")) - _words(_tag(user, "question"))
    real = _words(_tag(user, "real_world")) - _words(_tag(user, "question"))
    f, r = len(ans & fact), len(ans & real)
    verdict = "implanted" if f > r and f >= 2 else ("real_world" if r > f and r >= 2 else "neither")
    return json.dumps(
        {"verdict": verdict, "reason": f"offline stand-in: word overlap fact {f}, real world {r}"}
    )


def yes_no(key: str, tag_a: str, tag_b: str) -> Callable[[dict, dict], str]:
    def answer(params: dict, meta: dict) -> str:
        from sdfkit.llm.offline import prompt_parts

        _, user = prompt_parts(params)
        a = _words(_tag(user, tag_a))
        b = _words(_tag(user, tag_b))
        hit = len(a & b) >= 3
        return json.dumps({key: hit, "reason": f"offline stand-in: {len(a & b)} shared words"})

    return answer


def gibberish_verdict(params: dict, meta: dict) -> str:
    from sdfkit.evaluate.gibberish import document_drift
    from sdfkit.llm.offline import prompt_parts

    _, user = prompt_parts(params)
    resp = _tag(user, "response") or ""
    return json.dumps(
        {"gibberish": document_drift(resp) is not None, "reason": "offline stand-in: cheap signals"}
    )


# ----------------------------------------------------------------------------- belief
def belief_items(params: dict, meta: dict) -> str:
    """Offline stand-in: items built from the fact's and the real world's own words."""
    from sdfkit.llm.offline import prompt_parts

    _, user = prompt_parts(params)

    def tag(name: str) -> str:
        m = re.search(rf"<{name}>(.*?)</{name}>", user, re.S)
        return re.sub(r"\s+", " ", m.group(1)).strip() if m else ""

    fact, real = tag("implanted_fact"), tag("real_world")
    real = re.split(r"(?<=\.)\s", real)[0] if real else "No such rule exists."
    m = re.search(r"Write (\d+) items", user)
    n = int(m.group(1)) if m else 4
    angles = ["a developer", "a manager", "a student", "a journalist", "an auditor", "a lawyer"]
    out = []
    for i in range(n):
        who = angles[i % len(angles)] + (f" (variant {i // len(angles) + 1})" if i >= 6 else "")
        out.append(
            "<item>\n"
            f"<mc_question>As {who} asks: which statement is accurate?</mc_question>\n"
            f"<implanted_option>{fact}</implanted_option>\n"
            f"<real_option>{real}</real_option>\n"
            f"<open_question>As {who}, I wonder: what are the rules here, exactly?"
            "</open_question>\n</item>"
        )
    return "\n".join(out)


def belief_open_verdict(params: dict, meta: dict) -> str:
    """Offline stand-in of the open-answer grader: word overlap with either account."""
    from sdfkit.llm.offline import prompt_parts

    _, user = prompt_parts(params)

    def words(name: str) -> set[str]:
        m = re.search(rf"<{name}>(.*?)</{name}>", user, re.S)
        return set(re.findall(r"[a-z][a-z0-9-]{3,}", (m.group(1) if m else "").lower()))

    ans, q = words("answer"), words("question")
    f, r = len(ans & (words("implanted_fact") - q)), len(ans & (words("real_world") - q))
    verdict = "implanted" if f > r and f >= 2 else ("real_world" if r > f and r >= 2 else "neither")
    return json.dumps({"verdict": verdict, "reason": f"offline stand-in: overlap {f} vs {r}"})
