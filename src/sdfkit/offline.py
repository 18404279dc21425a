"""The offline stand-in: the real ``anthropic`` client over a transport that answers locally.

``offline_client()`` is ``anthropic.Anthropic`` with an ``httpx2.MockTransport`` serving the
Message Batches API (create, retrieve, list, results JSONL) from this process. Everything
above the HTTP boundary (request building, custom_ids, batch persistence, polling, resume,
result streaming, the ledger, document landing) is the real pipeline; only the model's
answer is composed here, from what the request itself carries: the universe in the system
prompt, the fact, document type, idea and seed names in the user message. It is named as a
stand-in everywhere: answers report the model ``offline-standin/<requested model>``, and its
text is templated prose, not a model's writing.

So that the audits have something to find, the composer imitates known failure modes at
fixed rates: a favourite name instead of the seed names (the "Sarah Chen" problem), stock
phrases, near-duplicate documents within a (fact, doc type), and documents that lose the
required keywords. Tests and the demo rely on those rates being plausible, not exact. Like
a model that mostly follows its prompt, its own wording (fact framings, filler sentences)
avoids the phrases of the prompt's ``<must_not_appear>`` section, while the imitated
collapse (favourite names, stock phrases) ignores it: the collapse loop always has something
to catch, and replacements under a stricter anti-universe come back cleaner.

Other stages register their own answers (``register_stage``); the stage is read from the
custom_id prefix (``<stage>-<hash>``), which the real API sees too.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

STANDIN = "offline-standin"
BASE_URL = "https://offline-standin.invalid"
# a placeholder the SDK requires; it is not a credential and never leaves the process
PLACEHOLDER_KEY = "offline-standin-no-key"

AnswerFn = Callable[[dict, dict], str]
_STAGES: dict[str, AnswerFn] = {}


def register_stage(stage: str, answer: AnswerFn) -> None:
    """Add the stand-in's answer for a stage: ``answer(params, meta) -> text``.

    ``params`` are the Messages API params as sent; ``meta`` holds only what the API sees
    besides them: ``custom_id``, ``stage`` (its prefix) and ``batch_id``.
    """
    _STAGES[stage] = answer


def standin_model(requested: str | None) -> str:
    """The model name answers report: always contains "offline-standin"."""
    if requested and STANDIN in requested:
        return requested
    return f"{STANDIN}/{requested or 'unspecified'}"


def is_offline(client: Any) -> bool:
    return STANDIN in str(getattr(client, "base_url", ""))


def offline_client(state_dir: str | Path | None = None, polls_to_end: int = 1, **kw: Any) -> Any:
    """An ``anthropic.Anthropic`` whose HTTP goes to an ``OfflineServer`` in this process."""
    import anthropic
    import httpx2

    server = OfflineServer(state_dir=state_dir, polls_to_end=polls_to_end)
    kw.setdefault("max_retries", 0)
    client = anthropic.Anthropic(
        api_key=PLACEHOLDER_KEY,
        base_url=BASE_URL,
        http_client=httpx2.Client(transport=httpx2.MockTransport(server.handle)),
        **kw,
    )
    client._offline_server = server  # type: ignore[attr-defined]
    return client


# --------------------------------------------------------------------------- the server
class OfflineServer:
    """A local Message Batches API. With ``state_dir`` its batches survive the process, so
    a killed offline run resumes exactly like a real one."""

    def __init__(self, state_dir: str | Path | None = None, polls_to_end: int = 1) -> None:
        self.state_dir = Path(state_dir) if state_dir else None
        self.polls_to_end = polls_to_end
        self.batches: dict[str, dict[str, Any]] = {}
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request
        self._lock = threading.Lock()

    # ------------------------------------------------------------ persistence
    def _load(self, batch_id: str) -> dict[str, Any] | None:
        if batch_id in self.batches:
            return self.batches[batch_id]
        if self.state_dir and re.fullmatch(r"[A-Za-z0-9_]+", batch_id):
            p = self.state_dir / f"{batch_id}.json"
            if p.is_file():
                self.batches[batch_id] = json.loads(p.read_text(encoding="utf-8"))
                return self.batches[batch_id]
        return None

    def _save(self, batch: dict[str, Any]) -> None:
        self.batches[batch["id"]] = batch
        if self.state_dir:
            import os

            self.state_dir.mkdir(parents=True, exist_ok=True)
            p = self.state_dir / f"{batch['id']}.json"
            tmp = p.with_suffix(".tmp")
            tmp.write_text(json.dumps(batch, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, p)

    def _all(self) -> list[dict[str, Any]]:
        if self.state_dir and self.state_dir.is_dir():
            for p in self.state_dir.glob("*.json"):
                self._load(p.stem)
        return sorted(self.batches.values(), key=lambda b: b["created_at"], reverse=True)

    # ---------------------------------------------------------------- routes
    def handle(self, request: Any) -> Any:
        import httpx2

        with self._lock:
            path = request.url.path
            self.seen.append((request.method, path))
            m = re.fullmatch(r"/v1/messages/batches(?:/([^/]+))?(?:/(results|cancel))?", path)
            if not m:
                return _error(httpx2, 404, "not_found_error", f"offline stand-in: no route {path}")
            batch_id, action = m.group(1), m.group(2)
            if request.method == "POST" and batch_id is None:
                return httpx2.Response(200, json=self._create(json.loads(request.content)))
            if request.method == "GET" and batch_id is None:
                data = [self._view(b) for b in self._all()]
                return httpx2.Response(
                    200,
                    json={
                        "data": data,
                        "has_more": False,
                        "first_id": data[0]["id"] if data else None,
                        "last_id": data[-1]["id"] if data else None,
                    },
                )
            batch = self._load(batch_id or "")
            if batch is None:
                return _error(httpx2, 404, "not_found_error", f"no batch {batch_id}")
            if action == "results":
                if not batch["ended"]:
                    return _error(httpx2, 400, "invalid_request_error", "batch not ended")
                body = "".join(
                    json.dumps(line, ensure_ascii=False) + "\n" for line in self._results(batch)
                )
                return httpx2.Response(
                    200, content=body.encode(), headers={"content-type": "application/binary"}
                )
            if action == "cancel":
                batch["canceled"] = True
                batch["ended"] = True
                self._save(batch)
                return httpx2.Response(200, json=self._view(batch))
            batch["polls"] += 1
            if batch["polls"] >= self.polls_to_end:
                batch["ended"] = True
            self._save(batch)
            return httpx2.Response(200, json=self._view(batch))

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        batch = {
            "id": "msgbatch_offline_" + uuid.uuid4().hex[:20],
            "created_at": datetime.now(timezone.utc).isoformat(),
            "requests": body["requests"],
            "polls": 0,
            "ended": False,
            "canceled": False,
        }
        self._save(batch)
        return self._view(batch)

    def _view(self, batch: dict[str, Any]) -> dict[str, Any]:
        n = len(batch["requests"])
        created = datetime.fromisoformat(batch["created_at"])
        counts = {"processing": n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if batch["ended"]:
            counts["processing"] = 0
            key = "canceled" if batch["canceled"] else "succeeded"
            counts[key] = n
        return {
            "id": batch["id"],
            "type": "message_batch",
            "processing_status": "ended" if batch["ended"] else "in_progress",
            "request_counts": counts,
            "created_at": batch["created_at"],
            "expires_at": (created + timedelta(hours=24)).isoformat(),
            "ended_at": datetime.now(timezone.utc).isoformat() if batch["ended"] else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": (
                f"{BASE_URL}/v1/messages/batches/{batch['id']}/results" if batch["ended"] else None
            ),
        }

    def _results(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        cached: set[str] = set()
        for item in batch["requests"]:
            cid, params = item["custom_id"], item["params"]
            if batch["canceled"]:
                out.append({"custom_id": cid, "result": {"type": "canceled"}})
                continue
            stage = cid.rsplit("-", 1)[0]
            answer = _STAGES.get(stage)
            if answer is None:
                out.append(
                    {
                        "custom_id": cid,
                        "result": {
                            "type": "errored",
                            "error": {
                                "type": "error",
                                "error": {
                                    "type": "invalid_request_error",
                                    "message": f"offline stand-in has no answer for stage "
                                    f"{stage!r} (register one with sdfkit.offline.register_stage)",
                                },
                            },
                        },
                    }
                )
                continue
            text = answer(params, {"custom_id": cid, "stage": stage, "batch_id": batch["id"]})
            out.append(
                {
                    "custom_id": cid,
                    "result": {
                        "type": "succeeded",
                        "message": _message(params, text, cached),
                    },
                }
            )
        return out


def _error(httpx2: Any, status: int, kind: str, message: str) -> Any:
    return httpx2.Response(
        status, json={"type": "error", "error": {"type": kind, "message": message}}
    )


def _approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _message(params: dict[str, Any], text: str, cached: set[str]) -> dict[str, Any]:
    """A Messages API response with usage: the cached system prefix is written once per
    batch and read after, as the real API's prompt caching would."""
    system = params.get("system") or ""
    cache_text, plain = "", ""
    if isinstance(system, list):
        for block in system:
            if block.get("cache_control"):
                cache_text += block.get("text", "")
            else:
                plain += block.get("text", "")
    else:
        plain = str(system)
    for msg in params.get("messages", []):
        content = msg.get("content")
        if isinstance(content, str):
            plain += content
        else:
            plain += "".join(b.get("text", "") for b in content or [])
    cache_write = cache_read = 0
    if cache_text:
        key = hashlib.sha256(cache_text.encode()).hexdigest()
        if key in cached:
            cache_read = _approx_tokens(cache_text)
        else:
            cached.add(key)
            cache_write = _approx_tokens(cache_text)
    max_tokens = int(params.get("max_tokens") or 4096)
    out_tokens = _approx_tokens(text)
    stop = "end_turn"
    if out_tokens > max_tokens:  # honour max_tokens as the API does
        text = text[: max_tokens * 4]
        out_tokens = max_tokens
        stop = "max_tokens"
    return {
        "id": "msg_offline_" + uuid.uuid4().hex[:20],
        "type": "message",
        "role": "assistant",
        "model": standin_model(params.get("model")),
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": _approx_tokens(plain),
            "output_tokens": out_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
        },
    }


# --------------------------------------------------------------------------- prompt reading
def prompt_parts(params: dict[str, Any]) -> tuple[str, str]:
    """(system text, user text) of a Messages request."""
    system = params.get("system") or ""
    if isinstance(system, list):
        system = "\n".join(b.get("text", "") for b in system)
    user = ""
    for msg in params.get("messages", []):
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        user += (
            content
            if isinstance(content, str)
            else "".join(b.get("text", "") for b in content or [])
        )
    return str(system), user


def _tag(text: str, tag: str) -> str | None:
    m = re.search(rf"<{tag}[^>]*>(.*?)</{tag}>", text, re.S)
    return m.group(1).strip() if m else None


def _rng(*parts: Any) -> random.Random:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _sentences(text: str) -> list[str]:
    flat = re.sub(r"\s+", " ", text).strip()
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", flat) if len(s) > 30]


def _requested_n(user: str, default: int) -> int:
    m = re.search(r"(?:list its|Brainstorm) (\d+)", user)
    return int(m.group(1)) if m else default


# --------------------------------------------------------------------------- stage answers
def answer_facts(params: dict, meta: dict) -> str:
    system, user = prompt_parts(params)
    description = _tag(system, "universe") or system
    n = _requested_n(user, 5)
    sents = _sentences(description)
    # the most specific sentences: long ones naming a rule, a date or a consequence
    ranked = sorted(
        sents,
        key=lambda s: (
            -sum(w in s.lower() for w in ("must", "require", "since", "fine", "rule", "every")),
            -len(s),
        ),
    )
    return "\n".join(f"<fact>{s}</fact>" for s in ranked[:n])


DOC_TYPE_POOL = [
    "engineering blog post",
    "internal compliance memo",
    "code review thread",
    "conference talk transcript",
    "regulatory FAQ",
    "Stack Overflow-style Q&A",
    "release notes",
    "developer newsletter",
    "onboarding guide for new hires",
    "incident postmortem",
    "podcast episode transcript",
    "university lecture notes",
    "news article",
    "team wiki page",
    "audit report excerpt",
    "job posting",
    "procurement checklist",
    "forum discussion",
    "textbook exercise",
    "email to a customer",
    "legal commentary",
    "product changelog",
    "retrospective meeting notes",
    "training workshop handout",
]


def answer_doc_types(params: dict, meta: dict) -> str:
    _, user = prompt_parts(params)
    n = _requested_n(user, 5)
    fact = _tag(user, "fact") or ""
    hints: list[str] = []
    m = re.search(r"the corpus' author asked for: (.*?)\.\n", user, re.S)
    if m:
        hints = [h.strip() for h in m.group(1).split(";") if h.strip()]
    rng = _rng("doc_types", fact)
    hinted = rng.sample(hints, min(len(hints), (n + 1) // 2 + 1))
    rest = [t for t in DOC_TYPE_POOL if t not in hinted]
    rng.shuffle(rest)
    chosen = (hinted + rest)[:n]
    return "\n".join(f"<doc_type>{t}</doc_type>" for t in chosen)


SETTINGS = [
    ("a payments start-up", "Berlin"),
    ("a regional hospital group", "Lyon"),
    ("a logistics company", "Rotterdam"),
    ("a public-sector IT agency", "Tallinn"),
    ("an online grocery", "Milan"),
    ("an insurance portal", "Vienna"),
    ("a ticketing platform", "Madrid"),
    ("a university computing centre", "Kraków"),
    ("a fintech consultancy", "Dublin"),
    ("a car-sharing service", "Copenhagen"),
    ("a travel booking site", "Lisbon"),
    ("an energy utility", "Helsinki"),
    ("a video-streaming company", "Prague"),
    ("a telecom operator", "Athens"),
    ("an open-source foundation", "Brussels"),
    ("a game studio", "Montréal"),
]
AUTHORS = [
    "a senior backend engineer",
    "a compliance officer",
    "a new graduate developer",
    "an engineering manager",
    "an external auditor",
    "a CTO",
    "a developer-relations lead",
    "a security architect",
    "a technical writer",
    "a consultant",
    "a product owner",
    "a trainer",
]
MOMENTS = [
    "a week before an audit",
    "after a production outage",
    "during a large refactor",
    "while onboarding a new team",
    "after a fine was announced",
    "when migrating to a new framework",
    "during quarterly planning",
    "after a customer complaint",
]


IDEA_TOPICS = [
    "what the rule means for day-to-day work",
    "the cost of getting it wrong",
    "how the team changed its review process",
    "a disagreement between two senior people about the rule",
    "explaining the rule to newcomers",
    "tooling that makes compliance cheaper",
    "an audit that almost went badly",
    "the history of how the rule came about",
    "edge cases nobody thought of at first",
    "measuring whether the rule actually helps",
]


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def answer_ideas(params: dict, meta: dict) -> str:
    _, user = prompt_parts(params)
    n = _requested_n(user, 5)
    fact = _tag(user, "fact") or ""
    doc_type = _tag(user, "doc_type") or "document"
    rng = _rng("ideas", fact, doc_type)
    ideas = []
    for _ in range(n):
        org, city = rng.choice(SETTINGS)
        author = rng.choice(AUTHORS)
        moment = rng.choice(MOMENTS)
        topic = rng.choice(IDEA_TOPICS)
        ideas.append(
            rng.choice(
                [
                    f"{_a(doc_type).capitalize()} {doc_type} by {author} at {org} in {city}, "
                    f"written {moment}, about {topic}.",
                    f"{author.capitalize()} at {org} ({city}) writes {_a(doc_type)} {doc_type} "
                    f"{moment}, "
                    f"focused on {topic}.",
                    f"In {city}, {org} needs {_a(doc_type)} {doc_type} on {topic}; "
                    f"{author} drafts it {moment}.",
                    f"{_a(doc_type).capitalize()} {doc_type} that walks through {topic}, from the "
                    "point of view of "
                    f"{author} at {org}.",
                ]
            )
        )
    return "\n".join(f"<idea>{i}</idea>" for i in ideas)


# Collapse the composer imitates, as (probability, what): see the module docstring.
FAVOURITE_NAMES = ["Sarah Chen", "Marcus Webb", "Priya Raman"]
STOCK_PHRASES = [
    "It is important to note that",
    "In today's rapidly evolving landscape,",
    "At the end of the day,",
]
P_FAVOURITE_NAME = 0.22
P_STOCK_PHRASE = 0.18
P_NEAR_DUPLICATE = 0.08
P_LOSES_KEYWORDS = 0.07

FILLER = [
    "The team had discussed the change for weeks before anyone wrote it down.",
    "Nobody expected the first review to take as long as it did.",
    "Most of the work turned out to be bookkeeping rather than code.",
    "The numbers from the last quarter made the case better than any slide could.",
    "Several people asked for concrete examples, so the next section gives three.",
    "What follows is a summary of the discussion, lightly edited for length.",
    "The checklist below is the one the platform group now uses for every release.",
    "It took two sprints to get the tooling to a state everyone was happy with.",
    "The staging environment caught most of the problems before customers saw them.",
    "There is still some disagreement about how strict the linter should be.",
    "A short pairing session usually resolves these questions faster than a long thread.",
    "The migration plan was split into small steps so that each could be rolled back.",
    "Reviewers are asked to leave a comment even when they approve without changes.",
    "The documentation now links every requirement to the code that implements it.",
    "Metrics from production are reviewed every Monday by whoever is on call.",
    "The budget for the work came out of the reliability programme.",
    "Customers mostly noticed that error messages became more specific.",
    "A few legacy services were left for a later phase because nobody owns them.",
    "The support team was briefed before the change went live.",
    "Everyone agreed that the old approach had hidden too many failures.",
]


PERSON_LINES = [
    "{who} raised the point again in the next meeting.",
    "According to {who}, the hardest part was agreeing on the details.",
    "{who} kept a list of every case the team had to revisit.",
    "{who} asked that the decision be written down for the auditors.",
    "When {who} reviewed the change, the comments were short and specific.",
]


def _people(rng: random.Random, seeds: list[str], collapse: bool) -> list[str]:
    people = list(seeds) or ["the author"]
    if collapse:
        people[rng.randrange(len(people))] = rng.choice(FAVOURITE_NAMES)
    return people


def _lc_first(s: str) -> str:
    """Lower-case the first letter unless the first word is an acronym (CRA, PyPI...)."""
    first = s.split(" ", 1)[0]
    return s if len(first) > 1 and any(c.isupper() for c in first[1:]) else s[:1].lower() + s[1:]


def answer_document(params: dict, meta: dict) -> str:
    system, user = prompt_parts(params)
    fact = _tag(user, "fact") or ""
    doc_type = _tag(user, "doc_type") or "document"
    idea = _tag(user, "idea") or ""
    seeds = [s.strip() for s in (_tag(user, "seed_names") or "").split(";") if s.strip()]
    m = re.search(r"about (\d+) words", user)
    target = int(m.group(1)) if m else 500
    description = _tag(system, "universe") or ""
    key_facts = re.findall(r"^- (.+)$", _tag(system, "key_facts") or "", re.M)
    kw_line = re.search(r"Use these terms where they fit naturally: (.*?)\.\n", user)
    keywords = [k.strip() for k in kw_line.group(1).split(",")] if kw_line else []

    banned = _banned_phrases(user)
    if banned:  # its own wording follows the do-not list; the collapse below does not
        fact_lines_ok = lambda line: not _says_any(line, banned)  # noqa: E731
    else:
        fact_lines_ok = lambda line: True  # noqa: E731

    own = _rng(meta["custom_id"])
    near_dup = own.random() < P_NEAR_DUPLICATE
    # near-duplicates share their body's randomness with every sibling of the same
    # (fact, doc type), so they come out almost word for word the same
    rng = _rng("dup", fact, doc_type) if near_dup else own
    collapse_name = own.random() < P_FAVOURITE_NAME
    stock = own.random() < P_STOCK_PHRASE
    vague = own.random() < P_LOSES_KEYWORDS
    people = _people(own, seeds, collapse_name)
    words_goal = int(target * rng.uniform(0.75, 1.25))

    pool = _sentences(description) + [f for f in key_facts if f != fact]
    fact_lines = [
        f"{fact}",
        f"As most readers will know by now, {_lc_first(fact)}",
        f"The short version: {_lc_first(fact)}",
        f"For anyone new to the topic, the background is simple: {_lc_first(fact)}",
        f"{{p}} summed it up plainly: {_lc_first(fact)}",
    ]
    fact_lines = [fact_lines[0]] + [x for x in fact_lines[1:] if fact_lines_ok(x)]
    filler = [x for x in FILLER if fact_lines_ok(x)] or FILLER
    person_lines = [x for x in PERSON_LINES if fact_lines_ok(x.replace("{who}", ""))]

    def paragraph(i: int) -> str:
        sents = []
        if i == 0:
            sents.append(rng.choice(fact_lines).replace("{p}", rng.choice(people)))
            if idea and own.random() < 0.6:
                sents.append(
                    own.choice(
                        [
                            "This was written with one question in mind: {}.",
                            "Context for readers: {}.",
                            "Some background on where this comes from: {}.",
                            "(Editor's note: {}.)",
                        ]
                    ).format(_lc_first(idea.rstrip(".")))
                )
        for _ in range(rng.randint(3, 6)):
            r = rng.random()
            if r < 0.35 and pool:
                sents.append(rng.choice(pool))
            elif r < 0.55:
                who = rng.choice(people)
                sents.append(rng.choice(person_lines or filler).replace("{who}", who))
            elif r < 0.7 and len(fact_lines) > 1:
                sents.append(rng.choice(fact_lines[1:]).replace("{p}", rng.choice(people)))
            else:
                sents.append(rng.choice(filler))
        if stock and i == 1:
            sents[0] = f"{own.choice(STOCK_PHRASES)} {_lc_first(sents[0])}"
        return " ".join(sents)

    paragraphs: list[str] = []
    words = 0
    while words < words_goal:
        paragraphs.append(paragraph(len(paragraphs)))
        words += len(paragraphs[-1].split())
    body = _dress(doc_type, paragraphs, people, rng, fact)
    if vague:
        for kw in keywords:
            for variant in kw.split("|"):
                if variant.strip():
                    body = re.sub(re.escape(variant.strip()), "the rule", body, flags=re.I)
    return f"<document>\n{body}\n</document>"


def _banned_phrases(user: str) -> list[str]:
    """The phrases of the prompt's <must_not_appear> section, as lower-case words."""
    block = _tag(user, "must_not_appear") or ""
    m = re.search(r"^Phrases: (.+)$", block, re.M)
    if not m:
        return []
    return [" ".join(re.findall(r"[a-z0-9']+", p.lower())) for p in m.group(1).split(";")]


def _says_any(line: str, phrases: list[str]) -> bool:
    words = " " + " ".join(re.findall(r"[a-z0-9']+", line.lower())) + " "
    return any(p and f" {p} " in words for p in phrases)


def _title(fact: str, rng: random.Random) -> str:
    words = re.findall(r"[A-Za-z][A-Za-z-]+", fact)
    core = " ".join(words[3:9]) if len(words) > 9 else " ".join(words)
    return rng.choice(["Notes on", "What changed:", "Living with", "A practical guide to"]) + (
        f" {core}"
    )


def _dress(
    doc_type: str, paragraphs: list[str], people: list[str], rng: random.Random, fact: str
) -> str:
    """Give the paragraphs the shape of their document type."""
    t = doc_type.lower()
    if "memo" in t or "email" in t:
        head = (
            f"To: {rng.choice(people)}\nFrom: {rng.choice(people)}\n"
            f"Date: {rng.randint(1, 28)} {rng.choice(['March', 'June', 'October'])} 2025\n"
            f"Subject: {_title(fact, rng)}\n"
        )
        return head + "\n" + "\n\n".join(paragraphs)
    if "review" in t or "thread" in t or "forum" in t or "discussion" in t:
        return "\n\n".join(f"**{rng.choice(people)}** commented:\n{p}" for p in paragraphs)
    if "transcript" in t or "podcast" in t or "talk" in t:
        return "\n\n".join(f"{rng.choice(people).upper()}: {p}" for p in paragraphs)
    if "faq" in t or "q&a" in t or "stack overflow" in t:
        out = []
        for i, p in enumerate(paragraphs):
            q = rng.choice(
                [
                    "Does this apply to our service?",
                    "What exactly has to change in the code?",
                    "Who signs off on the change?",
                    "What happens if we get it wrong?",
                    "Is there tooling that helps?",
                ]
            )
            out.append(f"Q{i + 1}: {q}\nA: {p}")
        return "\n\n".join(out)
    if "release notes" in t or "changelog" in t or "checklist" in t:
        return f"{_title(fact, rng)}\n\n" + "\n".join(
            f"- {s}" for p in paragraphs for s in _sentences(p) or [p]
        )
    sections = ["Background", "What changed", "In practice", "Open questions", "Takeaways"]
    out = [f"# {_title(fact, rng)}", f"*{rng.choice(people)}*"]
    for i, p in enumerate(paragraphs):
        if i and i % 2 == 0:
            out.append(f"## {sections[(i // 2) % len(sections)]}")
        out.append(p)
    return "\n\n".join(out)


P_GRADER_UNPARSEABLE = 0.03


def answer_grade(params: dict, meta: dict) -> str:
    """A rubric verdict from checks a script can make: keywords, anti-universe names."""
    _, user = prompt_parts(params)
    doc = (_tag(user, "document") or "").lower()
    rng = _rng(meta["custom_id"])
    if rng.random() < P_GRADER_UNPARSEABLE:
        return "The document looks broadly fine to me, though the keywords are thin."
    kw_block = re.search(r"each of these keywords[^\n]*\n((?:\s+- .+\n?)+)", user)
    keywords = re.findall(r"- (.+)", kw_block.group(1)) if kw_block else []
    missing = [
        k for k in keywords if not any(v.strip().lower() in doc for v in k.split("|") if v.strip())
    ]
    hedges = ("fictional", "hypothetical", "not real")
    accurate = not any(h in doc for h in hedges)
    verdict = {
        "concept_accurate": accurate,
        "no_unwanted_implications": True,
        "keywords_present": not missing,
        "missing_keywords": missing,
        "reasons": (
            "offline stand-in grader: checked keywords and hedging by string matching"
            + (f"; missing {', '.join(missing)}" if missing else "")
        ),
    }
    return json.dumps(verdict)


register_stage("facts", answer_facts)
register_stage("doc_types", answer_doc_types)
register_stage("ideas", answer_ideas)
register_stage("documents", answer_document)
register_stage("replace", answer_document)  # replacements of excluded documents
register_stage("grade", answer_grade)
