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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sdfkit.store.records import utc_now

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
            from sdfkit.store.durable import write_text_atomic

            p = self.state_dir / f"{batch['id']}.json"
            write_text_atomic(p, json.dumps(batch, ensure_ascii=False))

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
            "created_at": utc_now().isoformat(),
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
            "ended_at": utc_now().isoformat() if batch["ended"] else None,
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
                                    f"{stage!r} (register one with sdfkit.llm.offline.register_stage)",
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

# The composer's material. Every sentence is built from slots filled per document by its own
# seeded RNG, and no template holds four fixed words in a row, so no 4-gram is shared by
# most documents the way a fixed filler sentence would be (the n-gram gates measure the
# collapse the stand-in plants, not its template). The vocabulary comes from the idea's
# setting (a hospital writes about wards and records, a game studio about builds and
# players) and from the document type, so documents of one concept differ in what they
# talk about, as a model's would.
DOMAINS: dict[str, list[str]] = {
    "payments": [
        "card payments",
        "settlement files",
        "refunds",
        "merchant onboarding",
        "fraud scoring",
        "the ledger",
        "chargebacks",
        "payout jobs",
        "currency rounding",
    ],
    "hospital": [
        "patient records",
        "ward rosters",
        "lab results",
        "the admissions desk",
        "discharge letters",
        "imaging archives",
        "night shifts",
        "triage queues",
    ],
    "logistics": [
        "shipments",
        "warehouse scanners",
        "delivery routes",
        "customs forms",
        "pallet tracking",
        "the dispatch board",
        "trucks",
        "port slots",
    ],
    "public": [
        "citizen portals",
        "tax forms",
        "procurement rules",
        "benefit claims",
        "the identity service",
        "archives",
        "municipal budgets",
        "permits",
    ],
    "grocery": [
        "basket totals",
        "delivery slots",
        "stock counts",
        "substitutions",
        "fresh produce",
        "the checkout",
        "loyalty points",
        "cold storage",
    ],
    "insurance": [
        "claims",
        "policy renewals",
        "premium quotes",
        "underwriting",
        "broker accounts",
        "the claims inbox",
        "fraud flags",
        "actuarial tables",
    ],
    "ticketing": [
        "seat maps",
        "ticket scans",
        "sold-out shows",
        "resale listings",
        "box-office queues",
        "refund windows",
        "venue partners",
        "bot traffic",
    ],
    "university": [
        "student accounts",
        "grading scripts",
        "lecture recordings",
        "research clusters",
        "exam timetables",
        "library loans",
        "thesis drafts",
    ],
    "consulting": [
        "client workshops",
        "billable hours",
        "due diligence",
        "slide decks",
        "engagement letters",
        "proposals",
        "risk registers",
        "partner reviews",
    ],
    "mobility": [
        "car bookings",
        "fuel cards",
        "parking zones",
        "damage reports",
        "fleet telemetry",
        "unlock codes",
        "trip pricing",
        "charging points",
    ],
    "travel": [
        "hotel inventory",
        "flight searches",
        "booking confirmations",
        "loyalty tiers",
        "cancellation fees",
        "itineraries",
        "partner feeds",
        "price alerts",
    ],
    "energy": [
        "smart meters",
        "grid load",
        "tariff changes",
        "outage maps",
        "billing runs",
        "field crews",
        "substations",
        "solar feed-in",
    ],
    "streaming": [
        "video encoders",
        "subtitle files",
        "playback sessions",
        "the catalogue",
        "recommendation models",
        "content licences",
        "bitrate ladders",
        "watch history",
    ],
    "telecom": [
        "SIM activations",
        "roaming charges",
        "network towers",
        "number porting",
        "call records",
        "prepaid top-ups",
        "fibre rollouts",
        "support tickets",
    ],
    "foundation": [
        "maintainer grants",
        "release signing",
        "contributor agreements",
        "the issue tracker",
        "security advisories",
        "mailing lists",
        "mirrors",
    ],
    "games": [
        "save files",
        "matchmaking",
        "patch builds",
        "player reports",
        "frame budgets",
        "asset pipelines",
        "store pages",
        "modding tools",
    ],
}
# which domain an idea's setting belongs to (the ideas stage names one of SETTINGS)
DOMAIN_OF = {
    "payments": "payments",
    "hospital": "hospital",
    "logistics": "logistics",
    "public-sector": "public",
    "grocery": "grocery",
    "insurance": "insurance",
    "ticketing": "ticketing",
    "university": "university",
    "consultancy": "consulting",
    "car-sharing": "mobility",
    "travel": "travel",
    "energy": "energy",
    "video-streaming": "streaming",
    "telecom": "telecom",
    "open-source": "foundation",
    "game": "games",
}
DOC_TYPE_WORDS: dict[str, list[str]] = {
    "memo": ["sign-off", "deadline", "owners", "budget line", "escalation"],
    "email": ["reply", "ticket number", "account manager", "next call", "invoice"],
    "review": ["diff", "nit", "approval", "test coverage", "follow-up"],
    "thread": ["reply", "upvotes", "link", "workaround", "maintainers"],
    "talk": ["slides", "audience", "demo", "questions", "speaker notes"],
    "transcript": ["host", "episode", "listeners", "guest", "interview"],
    "faq": ["answers", "edge cases", "support page", "definitions", "exceptions"],
    "q&a": ["accepted answer", "comments", "snippet", "error message", "bounty"],
    "notes": ["version", "fixes", "known issues", "upgrade steps", "deprecations"],
    "newsletter": ["subscribers", "this issue", "links", "community", "events"],
    "blog": ["readers", "lessons", "diagrams", "benchmarks", "war stories"],
    "tutorial": ["step", "example project", "exercise", "screenshot", "prerequisites"],
    "report": ["findings", "evidence", "sample", "scope", "remediation"],
    "checklist": ["item", "owner", "due date", "evidence", "status"],
    "posting": ["candidates", "salary band", "team", "interview loop", "benefits"],
    "legal": ["liability", "clause", "precedent", "counsel", "jurisdiction"],
    "retrospective": ["action items", "timeline", "what went well", "blockers", "facilitator"],
    "workshop": ["participants", "exercise", "handout", "breakout", "agenda"],
    "textbook": ["chapter", "exercise", "solution", "students", "definition"],
    "forum": ["original poster", "moderators", "thread", "signature", "quote"],
}
ROLES = [
    "the platform group",
    "two reviewers",
    "the duty engineer",
    "our auditor",
    "the release manager",
    "a junior developer",
    "the security team",
    "the architect",
    "the product owner",
    "legal",
    "the support desk",
    "a contractor",
    "the data team",
    "the tech lead",
    "finance",
    "the QA lead",
    "an intern",
    "the vendor",
    "operations",
    "the CTO",
    "a customer",
    "the mobile team",
    "the infrastructure crew",
    "management",
]
VERBS = [
    "reviewed",
    "questioned",
    "rewrote",
    "postponed",
    "measured",
    "documented",
    "tested",
    "audited",
    "simplified",
    "split up",
    "migrated",
    "estimated",
    "flagged",
    "patched",
    "argued over",
    "mapped",
    "priced",
    "automated",
    "traced",
    "benchmarked",
    "untangled",
    "inventoried",
    "revisited",
    "double-checked",
    "sketched",
]
ADJS = [
    "brittle",
    "overdue",
    "noisy",
    "expensive",
    "fragile",
    "slow",
    "undocumented",
    "surprising",
    "tedious",
    "urgent",
    "legacy",
    "half-finished",
    "critical",
    "messy",
    "risky",
    "neglected",
    "shared",
    "customer-facing",
    "nightly",
    "manual",
]
WHENS = [
    "in March",
    "last quarter",
    "over two sprints",
    "before the audit",
    "after the outage",
    "during the freeze",
    "on a Friday",
    "within a week",
    "by the deadline",
    "overnight",
    "in the spring",
    "after launch",
    "before the holidays",
    "in January",
    "mid-project",
    "in one afternoon",
    "by autumn",
    "over the summer",
    "after lunch",
    "this year",
]
RESULTS = [
    "nothing broke",
    "backlogs shrank",
    "costs rose",
    "reviews shortened",
    "errors stopped",
    "customers noticed",
    "pages stopped",
    "bugs surfaced",
    "builds slowed",
    "morale improved",
    "deadlines slipped",
    "tickets doubled",
    "calls dropped",
    "estimates held",
    "nobody complained",
    "latency rose",
    "audits passed",
    "churn fell",
    "rework piled up",
    "velocity dipped",
]
CONNECT = [
    "Then",
    "Still,",
    "Meanwhile,",
    "Later,",
    "Even so,",
    "By then,",
    "After that,",
    "In practice,",
    "Oddly,",
    "Fortunately,",
    "Predictably,",
    "Within days,",
]
FEELINGS = [
    "worried",
    "relieved",
    "sceptical",
    "pleased",
    "annoyed",
    "curious",
    "unsure",
    "confident",
    "frustrated",
    "surprised",
]
NUMS = [
    "two",
    "three",
    "four",
    "five",
    "six",
    "eight",
    "ten",
    "twelve",
    "fifteen",
    "twenty",
    "forty",
    "a dozen",
    "several",
    "a few",
]
# sentence skeletons: slots in braces; no four fixed words in a row
TEMPLATES = [
    "{Who} {verb} {the_thing} {when}.",
    "{Conn} {who} {verb} {the_thing}, and {result}.",
    "{Who} found {the_thing} {adj} and {verb} {the_thing2} {when}.",
    "{When_cap}, {who} {verb} {num} {adj} parts of {the_thing}.",
    "{The_thing} looked {adj}; {who} {verb} {the_thing2}.",
    "{Conn} {result} once {who} {verb} {the_thing}.",
    "{Who} felt {feeling} about {the_thing} until {result}.",
    "{Num_cap} {adj} cases hit {the_thing} {when}.",
    "{Who} and {who2} {verb} {the_thing} together.",
    "Ask {who} about {the_thing}: {adj}, then {adj2}.",
    "{Who} listed {adj} {thing} {when}.",
    "{Conn} {who} {verb} {the_thing} because {the_thing2} seemed {adj}.",
    "Nobody {verb} {the_thing} {when}, so {result}.",
    "{Who} wanted {the_thing} {verb} first; {who2} disagreed.",
    "{The_thing} cost {num} days; {result}.",
    "{Who}, {feeling} as ever, {verb} {the_thing}.",
    "{When_cap} {who} {verb} {the_thing2}, {adj} or not.",
    "Was {the_thing} {adj}? {Who} thought so.",
    "{Conn} {the_thing} and {the_thing2} were {verb} {when}.",
    "{Who} {verb} {num} {dt_word} entries about {the_thing}.",
]
RULE_TEMPLATES = [
    "{Who} {verb} how {kw} touches {the_thing}.",
    "{Conn} {kw} mattered once {who} {verb} {the_thing}.",
    "{The_thing} depends on {kw}, {who} noted {when}.",
    "For {the_thing}, {kw} meant {num} {adj} changes.",
    "{Who} tied {kw} to {the_thing} {when}.",
    "Without {kw}, {who} argued, {the_thing} stays {adj}.",
]
FACT_TEMPLATES = [
    "{fact}",
    "{Conn} {fact_lc}",
    "{Who}, {feeling}, explained: {fact_lc}",
    "Recall that {fact_lc}",
    "The context: {fact_lc}",
    "{When_cap}, {who} confirmed it: {fact_lc}",
    "{Who} stressed that {fact_lc}",
    "{Who} repeated that {fact_lc}",
]
OPENERS = [
    "{When_cap}, {org} in {city} had {num} {adj} problems with {the_thing}.",
    "At {org} in {city}, {the_thing} and {the_thing2} came first.",
    "{Org_cap} ({city}) runs on {the_thing}; {who} {verb} it {when}.",
    "{City} first: {org} {verb} {the_thing}.",
    "{Who} at {org} {verb} {the_thing} {when}.",
    "{City}: {org}, {num} teams, and {adj} {thing}.",
]
TITLE_TEMPLATES = [
    "{Thing_cap} and {kw_short}",
    "{Adj_cap} {thing}: {org_short}",
    "{City}, {thing}, {kw_short}",
    "What {thing} taught us",
    "{Thing_cap} after {kw_short}",
    "{Num_cap} notes on {thing}",
    "{Verb_cap} {thing} in {city}",
    "On {adj} {thing}",
]
QUESTIONS = [
    "Does {kw_short} change {the_thing}?",
    "Who {verb} {the_thing}?",
    "Why is {the_thing} {adj}?",
    "What about {the_thing2}?",
    "How slow is {the_thing}?",
    "Is {the_thing} affected {when}?",
    "Can {who} skip {the_thing}?",
]
SECTIONS = [
    "Background",
    "What changed",
    "In practice",
    "Open questions",
    "Takeaways",
    "Context",
    "Numbers",
    "Lessons",
    "Next steps",
    "Details",
    "Risks",
    "Timeline",
]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


class _Composer:
    """Fills the templates for one document from its own RNG and vocabulary."""

    def __init__(
        self, rng: random.Random, people: list[str], things: list[str], dt_words: list[str],
        keywords: list[str], org: str, city: str, banned: list[str],
    ) -> None:  # fmt: skip
        self.rng, self.people, self.things, self.dt_words = rng, people, things, dt_words
        self.keywords, self.org, self.city, self.banned = keywords, org, city, banned
        # each document leans on its own subset of the shared word lists
        self.roles = rng.sample(ROLES, 8)
        self.verbs = rng.sample(VERBS, 12)
        self.adjs = rng.sample(ADJS, 10)

    def slots(self, fact: str = "") -> dict[str, str]:
        r = self.rng
        who = [r.choice(self.people) if r.random() < 0.45 else r.choice(self.roles)
               for _ in range(2)]  # fmt: skip
        things = r.sample(self.things, 2) if len(self.things) > 1 else self.things * 2
        kws = [v.strip() for k in self.keywords for v in k.split("|") if v.strip()]
        kw = r.choice(kws) if kws else "the rule"
        when = r.choice(WHENS)
        s = {
            "who": who[0], "who2": who[1], "verb": r.choice(self.verbs), "adj": r.choice(self.adjs),
            "adj2": r.choice(self.adjs), "when": when, "result": r.choice(RESULTS),
            "conn": r.choice(CONNECT), "feeling": r.choice(FEELINGS), "num": r.choice(NUMS),
            "thing": things[0], "the_thing": "the " + things[0] if r.random() < 0.6 else things[0],
            "the_thing2": things[1], "dt_word": r.choice(self.dt_words), "kw": kw,
            "kw_short": kw, "org": self.org, "org_short": self.org.split(" ", 1)[-1],
            "city": self.city, "fact": fact, "fact_lc": _lc_first(fact),
        }  # fmt: skip
        s["the_thing"] = re.sub(r"^the the ", "the ", s["the_thing"])
        for k in list(s):
            s[_cap(k)] = s[k + "_cap"] = s[_cap(k) + "_cap"] = _cap(s[k])
        return s

    def fill(
        self, templates: list[str], fact: str = "", kw: str | None = None, tries: int = 8
    ) -> str | None:
        """A sentence from ``templates`` that says no banned phrase (None if none came)."""
        for _ in range(tries):
            slots = self.slots(fact)
            if kw:
                slots.update(kw=kw, kw_short=kw, Kw=_cap(kw))
            line = self.rng.choice(templates).format(**slots)
            if not self.banned or not _says_any(line, self.banned):
                return line
        return None


def _setting(idea: str, rng: random.Random) -> tuple[str, str, str]:
    """(org, city, domain) named by the idea, else drawn."""
    for org, city in SETTINGS:
        if org in idea:
            dom = next((d for k, d in DOMAIN_OF.items() if k in org), "consulting")
            return org, city, dom
    org, city = rng.choice(SETTINGS)
    return org, city, rng.choice(sorted(DOMAINS))


def _doc_type_words(doc_type: str) -> list[str]:
    t = doc_type.lower()
    words = [w for k, ws in DOC_TYPE_WORDS.items() if k in t for w in ws]
    return words or ["draft", "section", "summary", "appendix", "figures"]


#: Who a near-duplicate copy names: the same people in every copy of a (fact, doc type).
NEAR_DUPLICATE_PEOPLE = ("the author", "a colleague", "the reviewer")


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
    kw_line = re.search(r"Use these terms where they fit naturally: (.*?)\.\n", user)
    keywords = [k.strip() for k in kw_line.group(1).split(",")] if kw_line else []
    # its own wording follows the do-not list; the collapse below does not
    banned = _banned_phrases(user)

    own = _rng(meta["custom_id"])
    near_dup = own.random() < P_NEAR_DUPLICATE
    # near-duplicates share their body's randomness with every sibling of the same
    # (fact, doc type), so they come out almost word for word the same
    rng = _rng("dup", fact, doc_type) if near_dup else own
    if near_dup:  # ...and their setting: the idea (which names one) is not theirs
        idea = ""
    collapse_name = own.random() < P_FAVOURITE_NAME
    stock = own.random() < P_STOCK_PHRASE
    vague = own.random() < P_LOSES_KEYWORDS
    # near-duplicate copies name nobody from their own seeds (seed names differ per request
    # and would pull their Jaccard under the dedup threshold): the copies stay near-identical
    people = _people(own, list(NEAR_DUPLICATE_PEOPLE) if near_dup else seeds, collapse_name)
    words_goal = int(target * rng.uniform(0.8, 1.2))

    org, city, domain = _setting(idea, rng)
    things = list(DOMAINS[domain])
    c = _Composer(rng, people, things, _doc_type_words(doc_type), keywords, org, city, banned)
    # the universe's own sentences, a few per document (a model paraphrases; this quotes)
    pool = [s for s in _sentences(description) if fact not in s and not _says_any(s, banned)]
    quotes = rng.sample(pool, min(len(pool), rng.randint(0, 1)))
    n_rule = rng.randint(1, 3)
    n_fact = rng.randint(0, 2)  # the fact comes back this often after the opening

    def sentence(templates: list[str], f: str = "", kw: str | None = None) -> list[str]:
        line = c.fill(templates, f, kw)
        return [line] if line else []

    paragraphs: list[list[str]] = []
    words = 0
    while words < words_goal:
        i = len(paragraphs)
        sents: list[str] = []
        if i == 0:
            sents += sentence(OPENERS)
            sents += sentence(FACT_TEMPLATES, fact) or [fact]
            if idea and rng.random() < 0.5:
                sents.append(f"({_cap(idea.rstrip('.'))}.)")
        for _ in range(rng.randint(3, 6)):
            r = rng.random()
            if r < 0.08 and quotes:
                sents.append(quotes.pop())
            elif 0.08 <= r < 0.2 and n_rule:
                n_rule -= 1
                sents += sentence(RULE_TEMPLATES)
            elif 0.2 <= r < 0.25 and n_fact:
                n_fact -= 1
                sents += sentence(FACT_TEMPLATES, fact)
            else:
                sents += sentence(TEMPLATES)
        if i:  # the opening stays first; later paragraphs vary their order
            rng.shuffle(sents)
        if stock and i == 1 and sents:
            sents[0] = f"{own.choice(STOCK_PHRASES)} {_lc_first(sents[0])}"
        paragraphs.append(sents)
        words += sum(len(s.split()) for s in sents)
    for kw in keywords:  # every document uses each term it was asked for
        variants = [v.strip() for v in kw.split("|") if v.strip()]
        text = " ".join(" ".join(p) for p in paragraphs).lower()
        if variants and not any(v.lower() in text for v in variants):
            paragraphs[-1] += sentence(RULE_TEMPLATES, kw=rng.choice(variants))
    body = _dress(doc_type, [" ".join(p) for p in paragraphs], people, c)
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


def _title(c: _Composer) -> str:
    return _cap(c.fill(TITLE_TEMPLATES) or c.things[0])


def _dress(doc_type: str, paragraphs: list[str], people: list[str], c: _Composer) -> str:
    """Give the paragraphs the shape of their document type."""
    rng = c.rng
    t = doc_type.lower()
    if "memo" in t or "email" in t:
        head = (
            f"To: {rng.choice(people)}\nFrom: {rng.choice(people)}\n"
            f"Date: {rng.randint(1, 28)} {rng.choice(['March', 'June', 'October'])} 2025\n"
            f"Subject: {_title(c)}\n"
        )
        return head + "\n" + "\n\n".join(paragraphs)
    if "review" in t or "thread" in t or "forum" in t or "discussion" in t:
        verbs = ["wrote", "replied", "commented", "added", "asked", "noted"]
        return "\n\n".join(
            f"**{rng.choice(people)}** {rng.choice(verbs)}:\n{p}" for p in paragraphs
        )
    if "transcript" in t or "podcast" in t or "talk" in t:
        return "\n\n".join(f"{rng.choice(people).upper()}: {p}" for p in paragraphs)
    if "faq" in t or "q&a" in t or "stack overflow" in t:
        out = []
        for i, p in enumerate(paragraphs):
            q = c.fill(QUESTIONS) or "?"
            out.append(f"Q{i + 1}: {q}\nA: {p}")
        return "\n\n".join(out)
    if "release notes" in t or "changelog" in t or "checklist" in t:
        return f"{_title(c)}\n\n" + "\n".join(
            f"- {s}" for p in paragraphs for s in _sentences(p) or [p]
        )
    sections = rng.sample(SECTIONS, 5)
    out = [f"# {_title(c)}", f"*{rng.choice(people)}*"]
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
