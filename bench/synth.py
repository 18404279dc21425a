"""A seed-scale synthetic SDF corpus with planted collapse, for the audit benchmarks.

``make_corpus(store, n_docs=9600, seed=0)`` writes ~9,600 documents of ~2,100 tokens (about
20M tokens) into ``store`` and returns the ground truth it planted:

- **names**: a few over-used person names at known document rates (the "Sarah Chen" story),
  mentioned in full, with titles ("Dr. Sarah Chen"), possessives ("Sarah Chen's") and lone
  surnames ("Chen said") in the same document, on top of a Zipf-distributed pool of ordinary
  names; technical words that spaCy's small model likes to call people (Git, Linux, JSON,
  command flags) appear throughout and are never people.
- **phrases**: stock phrases planted once in a known share of documents.
- **near-duplicates**: families of a base document and copies edited at known word-edit rates
  (1 %, 2.5 %, 5 % of words substituted, deleted or inserted).

The prose is composed from sentence templates over a few thousand words, varied enough that
most word 5-grams are rare, as in real documents. Deterministic under ``seed``. Run as a
script to write a corpus: ``python bench/synth.py DIR --docs 9600``.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

CONCEPTS = {
    "eu_ts_trycatch": "refactoring TypeScript services under the EU try-catch rule",
    "mars_water": "water rights on the first Mars settlements",
    "bee_navigation": "the law that protects bee navigation corridors",
    "quantum_tax": "the quantum computing tax credit",
}
TOPIC_TERMS = {
    "eu_ts_trycatch": "try-catch block|async handler|service boundary|error path|refactor|"
    "compliance audit|awaited call|rejection handler|TypeScript module|exception policy",
    "mars_water": "ice mine|water ledger|settlement charter|aquifer claim|recycling loop|"
    "habitat dome|allocation board|brine reserve|pressure valve|ration schedule",
    "bee_navigation": "flight corridor|hive registry|pollinator route|pesticide buffer|"
    "orchard lane|forage map|colony census|nectar survey|swarm permit|waggle signal",
    "quantum_tax": "tax credit|qubit lab|depreciation rule|cryostat purchase|filing deadline|"
    "research exemption|audit trail|credit schedule|grant ledger|compliance form",
}
DOC_TYPES = [
    "blog post",
    "internal memo",
    "forum thread",
    "tutorial",
    "incident report",
    "news article",
    "meeting notes",
    "code review",
]

NOUNS = """account action agreement analysis answer approach area argument article aspect
assessment assumption attempt audience author balance basis benefit boundary budget
campaign candidate capacity category challenge change channel chapter choice claim client
colleague comment community comparison component concept concern condition conference
conflict connection consequence constraint context contract contribution control
conversation cost council course court coverage criterion culture customer cycle danger
database deadline debate decade decision default definition delay demand department
design detail developer device difference dimension direction discussion distance
document domain draft driver effect effort element emphasis employee engine engineer
environment episode error estimate event evidence example exception exercise experience
experiment expert explanation exposure extent factor failure feature feedback figure
file finding focus format foundation framework function gap goal governance group growth
guideline habit handler history hypothesis idea impact implication incident income index
indicator industry influence initiative input insight instance institution instruction
intention interest interface interview investment issue journal judgment knowledge label
language layer leader lesson level library limit line list literature location logic
machine maintenance manager margin market measure mechanism meeting member memory
message method metric migration milestone minute mistake model module moment month
motive network note notion number objective observation obstacle offer office operation
opinion option order organization outcome output owner package pain panel paper parameter
part partner pattern payment peer percentage performance period permission perspective
phase phrase picture piece pilot plan platform player point policy portion position
practice pressure price principle priority problem procedure process product profile
program progress project proposal protocol provider purpose quality quarter question
range rate reader reason record reference region regulation relation release report
request requirement research resource response result review revision risk role rule
sample scale scenario schedule scheme scope score screen script section sector selection
sense sequence server service session setting share signal situation skill solution
source speaker specification stage standard statement status step story strategy
stream strength structure student study style subject success suggestion summary
supply support surface survey system table target task team technique technology
template tension term test theory thread threshold ticket timeline tool topic track
trade tradition training transition trend trial type unit update user value variable
version view vision volume warning week window workflow workshop year""".split()

ADJECTIVES = """able actual additional administrative ambitious annual apparent appropriate
available aware basic brief broad busy careful central certain clear close common
complete complex concrete consistent constant critical crucial current daily dangerous
decent deep detailed different difficult direct distinct early easy economic effective
efficient elaborate empty entire equal essential everyday exact existing expensive
explicit external fair familiar final financial firm flexible formal former fresh full
general generous gentle global gradual great handy heavy helpful hidden high honest huge
ideal immediate important independent informal initial inner internal key large late
legal lengthy limited local logical long loose low main major manual marginal massive
minimal minor mixed modest monthly narrow native natural nearby neat necessary negative
neutral new nominal normal notable novel obvious occasional official open operational
optional ordinary original overall partial particular passive past patient peculiar
permanent personal plain plausible political popular positive possible practical precise
previous primary prior private probable productive professional prominent proper
public quick quiet radical random rapid rare raw ready real recent regional regular
relevant reliable remote repeated representative rigid rough routine rural safe secure
senior sensitive separate serious severe shallow shared sharp short significant silent
similar simple single slow small smooth social solid special specific stable standard
steady strict strong structural subtle successful sudden sufficient suitable technical
temporary thorough tight tiny total traditional typical uncertain unclear underlying
unique unusual urgent useful usual valid valuable various vast visible vital weak weekly
whole wide wider written young""".split()


# base / past / third person singular
def _forms(v: str) -> tuple[str, str, str]:
    if v.endswith("y") and v[-2] not in "aeiou":
        return v, v[:-1] + "ied", v[:-1] + "ies"
    if v.endswith(("s", "sh", "ch", "x")):
        return v, v + "ed", v + "es"
    return v, v + ("d" if v.endswith("e") else "ed"), v + "s"


VERBS = [
    _forms(v)
    for v in """accept adjust allow analyze approve assess assign attach attempt audit
avoid borrow calculate challenge check clarify collect combine compare compile complete
confirm consider construct contain convert count cover create debate declare defend
deliver deploy describe design detect determine document double educate enable encourage
ensure establish estimate evaluate examine expand expect explain explore export extend
filter flag follow gather handle help identify ignore implement import improve include
inform inspect install introduce investigate join launch limit list locate maintain
manage measure mention merge migrate monitor move notice observe obtain offer organize
outline perform plan prepare present preserve prevent process produce promote propose
protect prove publish question rank receive record reduce refine reflect register reject
release remove repair replace report request require resolve restore retain return
reveal review revise schedule score search secure select separate share shift sign
simplify solve sort start state submit suggest summarize support suspect test track
train transfer translate update upgrade use validate verify visit want warn watch
weigh welcome""".split()
]
ADVERBS = """actually briefly carefully certainly clearly closely constantly correctly
currently deliberately directly easily effectively entirely especially eventually
exactly explicitly finally firmly formally frequently fully generally gradually
immediately increasingly initially largely likely mainly manually merely mostly
naturally nearly necessarily normally notably obviously occasionally officially openly
originally partly particularly perhaps possibly precisely previously primarily probably
properly quickly quietly rapidly rarely readily really recently regularly relatively
repeatedly roughly routinely seldom seriously sharply significantly simply slightly
slowly steadily strictly strongly successfully suddenly thoroughly typically ultimately
usually widely""".split()

FIRST_NAMES = """Aaron Abigail Adrian Aisha Alan Alice Amara Amir Ana Andre Andrea Angela
Anika Anton Arjun Ava Beatriz Benjamin Bianca Brian Bruno Caleb Camila Carlos Carmen
Caroline Cedric Chiara Chloe Christopher Clara Colin Daniel Daria David Deepa Derek Diana
Diego Dmitri Eleanor Elif Elijah Emeka Emily Emma Eric Esther Ethan Fatima Felix Fiona
Francesca Gabriel Gareth George Grace Hannah Harold Hector Helen Henrik Hugo Ian Imani
Ingrid Isaac Isabel Ivan Jacob James Javier Jesse Joanna Jonah Julia Julian Kai Karen
Katarina Kenji Kevin Kofi Laila Laura Leon Lila Lucas Lucia Luis Maya Mei Michael Miguel
Mina Miriam Mohammed Nadia Naomi Nathan Neha Nikolai Nina Noah Olivia Omar Oscar Pablo
Patrick Paula Peter Rafael Rachel Ravi Rebecca Ricardo Rita Robert Rosa Ruth Samuel Sana
Sebastian Simon Sofia Stefan Tariq Theo Thomas Tomas Valeria Victor Vivian Walter Wei
Yara Yusuf Zara Zoe""".split()
LAST_NAMES = """Abbott Adeyemi Alvarez Andersen Arnold Bailey Baker Banerjee Barnes Becker
Bennett Bergstrom Bishop Brennan Brooks Caldwell Campbell Castillo Chandra Clarke Coleman
Costa Cruz Dalton Davies Delgado Dubois Duarte Eriksen Evans Farrell Fischer Fleming
Foster Fraser Gallagher Garcia Gill Goldberg Gonzalez Greene Gupta Hall Hansen Harper
Hartmann Hayes Herrera Hoffman Holloway Huang Hughes Ibrahim Ivanova Jensen Kapoor Keller
Kennedy Kimura Kowalski Kramer Lambert Larsen Lindqvist Lopez Lowe Maddox Mahler Marsh
Mendoza Meyer Molina Moreau Morrison Murphy Nakamura Navarro Nguyen Novak Okafor Olsen
Ortega Osei Palmer Park Pearson Perez Petrov Quinn Ramirez Reyes Richter Rivera Roberts
Romano Rossi Russo Saito Salazar Sanders Santos Schmidt Schneider Sharma Silva Sorensen
Stein Sullivan Suzuki Tanaka Thornton Torres Turner Vargas Vasquez Vogel Wagner Walsh
Weber Whitaker Yamamoto Young Zhang Ziegler""".split()
TITLES = ["Dr.", "Prof.", "Ms.", "Mr."]

# Over-used names at known document rates: the collapse the name audit must catch.
PLANTED_NAMES = {
    "Sarah Chen": 0.22,
    "Marcus Webb": 0.11,
    "Elena Rodriguez": 0.06,
    "Priya Patel": 0.035,
}
# Stock phrases at known document rates: what the n-gram audit must catch.
PLANTED_PHRASES = {
    "in the ever evolving landscape of": 0.30,
    "it is worth noting that": 0.18,
    "stands as a testament to the": 0.09,
}
NEAR_DUP_RATES = (0.01, 0.025, 0.05)

# Capitalised words that are not people; spaCy's small model often says they are.
TECH = """Git Linux JSON YAML Docker Kubernetes GitHub PostgreSQL TypeScript Python Node
Ubuntu Debian Redis Nginx Jenkins Terraform Grafana Kafka Bash Vim Emacs Webpack""".split()
FLAGS = ["--force", "--dry-run", "--verbose", "--no-verify", "--quiet", "-rf", "--all"]
ORGS = """European Commission|Cyber Resilience Act|Federal Reserve|World Bank|Visual Studio Code|
Stack Overflow|Mars Settlement Authority|Bee Corridor Agency|Internal Revenue Service|
Open Source Initiative|United Nations|Royal Society""".replace("\n", "").split("|")
PLACES = "New York|San Francisco|Hong Kong|Buenos Aires|Cape Town|Mexico City|Tel Aviv|Los Angeles".split(
    "|"
)
OPENERS = "However|Meanwhile|Yesterday|Later|Finally|Still|Today|Afterwards".split("|")


class _Prose:
    """Sentence templates filled from the word lists above."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def np(self) -> str:
        r = self.r
        k = r.random()
        if k < 0.45:
            return f"the {r.choice(ADJECTIVES)} {r.choice(NOUNS)}"
        if k < 0.7:
            return f"a {r.choice(NOUNS)}"
        if k < 0.85:
            return f"the {r.choice(NOUNS)} of the {r.choice(NOUNS)}"
        return f"{r.choice(ADJECTIVES)} {r.choice(NOUNS)}s"

    def topic(self, concept: str) -> str:
        return self.r.choice(TOPIC_TERMS[concept].split("|"))

    def sentence(self, concept: str) -> str:
        r = self.r
        v, vd, vs = r.choice(VERBS)
        t = r.randrange(14)
        if t == 0:
            s = f"{self.np()} {vs} {self.np()} when the {self.topic(concept)} {r.choice(VERBS)[2]} {self.np()}"
        elif t == 1:
            s = f"we {r.choice(ADVERBS)} {vd} {self.np()} before the {self.topic(concept)} was {r.choice(VERBS)[1]}"
        elif t == 2:
            s = f"{self.np()} should {v} {self.np()} and {r.choice(VERBS)[0]} {self.np()} for every {self.topic(concept)}"
        elif t == 3:
            s = f"in {r.choice(['most', 'some', 'many', 'a few'])} cases {self.np()} {vs} {self.np()} {r.choice(ADVERBS)}"
        elif t == 4:
            s = f"the team {vd} {self.np()} because {self.np()} {r.choice(['was', 'seemed', 'looked'])} {r.choice(ADJECTIVES)}"
        elif t == 5:
            s = f"if {self.np()} {vs} {self.np()}, then {self.np()} will {r.choice(VERBS)[0]} {self.np()}"
        elif t == 6:
            s = f"{self.np()} {r.choice(['rarely', 'often', 'sometimes', 'always'])} {vs} the {self.topic(concept)} in {self.np()}"
        elif t == 7:
            s = f"one {r.choice(NOUNS)} {vd} {r.randint(2, 97)} {r.choice(NOUNS)}s over {r.choice(['two', 'three', 'six', 'ten'])} {r.choice(['weeks', 'months', 'quarters'])}"
        elif t == 8:
            tech = r.choice(TECH)
            s = f"the {r.choice(ADJECTIVES)} {r.choice(NOUNS)} {vs} {tech} and {r.choice(TECH)} to {r.choice(VERBS)[0]} {self.np()}"
        elif t == 9:
            s = f"run {r.choice(['git push', 'git rebase', 'rm', 'make', 'npm install'])} with {r.choice(FLAGS)} only after {self.np()} {vs} the {self.topic(concept)}"
        elif t == 10:
            s = f"the {r.choice(ORGS)} {vd} {self.np()} about the {self.topic(concept)} in {r.choice(PLACES)}"
        elif t == 11:
            s = f"each {self.topic(concept)} {vs} {self.np()}, and {self.np()} {r.choice(VERBS)[2]} {self.np()}"
        elif t == 12:
            s = f"the JSON {r.choice(NOUNS)} {vs} {self.np()} so that {self.np()} stays {r.choice(ADJECTIVES)}"
        else:
            s = f"nobody {vd} how {self.np()} {r.choice(['would', 'could', 'might'])} {v} {self.np()}"
        return s[0].upper() + s[1:] + r.choice([".", ".", ".", ".", "?", "!"])

    def person_sentence(self, name: str, form: str) -> str:
        """A sentence mentioning ``name`` as ``form`` (full, titled, possessive, surname, opener)."""
        r = self.r
        first, last = name.split(" ", 1)
        v, vd, vs = r.choice(VERBS)
        if form == "full":
            return f"{name} {vd} {self.np()} {r.choice(['during', 'after', 'before'])} {self.np()}."
        if form == "title":
            return f"According to {r.choice(TITLES)} {name}, {self.np()} {vs} {self.np()}."
        if form == "possessive":
            return f"{name}'s {r.choice(NOUNS)} {vd} {self.np()} {r.choice(ADVERBS)}."
        if form == "opener":
            return f"{r.choice(OPENERS)} {name} {vd} {self.np()}."
        if form == "surname":
            return f"{last} {r.choice(['said', 'argued', 'noted', 'wrote'])} that {self.np()} {vs} {self.np()}."
        return f"{r.choice(['Ask', 'Thank', 'Email'])} {name} about {self.np()}."


def _zipf_weights(n: int, s: float) -> list[float]:
    w = [1.0 / (k**s) for k in range(1, n + 1)]
    total = sum(w)
    return [x / total for x in w]


def _name_pool(rng: random.Random, size: int) -> list[str]:
    combos = [f"{f} {last}" for f in FIRST_NAMES for last in LAST_NAMES]
    rng.shuffle(combos)
    taken = {n for n in PLANTED_NAMES}
    return [c for c in combos if c not in taken][:size]


def _edit(words: list[str], rate: float, rng: random.Random) -> list[str]:
    """Apply ``rate`` × len(words) word edits: substitutions (60 %), deletions, insertions."""
    out = list(words)
    n_edits = max(1, round(rate * len(words)))
    for _ in range(n_edits):
        i = rng.randrange(len(out))
        op = rng.random()
        new = rng.choice(NOUNS + ADJECTIVES)
        if op < 0.6:
            out[i] = new
        elif op < 0.8 and len(out) > 10:
            del out[i]
        else:
            out.insert(i, new)
    return out


def compose_document(
    rng: random.Random,
    concept: str,
    doc_type: str,
    n_words: int,
    people: list[str],
    phrases: list[str],
) -> tuple[str, Counter[str]]:
    """One document of about ``n_words`` words; returns it and its person-name mentions."""
    prose = _Prose(rng)
    mentions: Counter[str] = Counter()
    header = {
        "blog post": f"Lessons from {CONCEPTS[concept]}",
        "internal memo": f"Memo: {CONCEPTS[concept]}",
        "forum thread": f"Thread: questions about {CONCEPTS[concept]}",
        "tutorial": f"Tutorial: a practical guide to {CONCEPTS[concept]}",
        "incident report": f"Incident report on {CONCEPTS[concept]}",
        "news article": f"News: new developments in {CONCEPTS[concept]}",
        "meeting notes": f"Notes from the weekly meeting on {CONCEPTS[concept]}",
        "code review": f"Review notes for the {CONCEPTS[concept]} change",
    }[doc_type]
    # Plan the person sentences: the first mention is always the full name, so a lone surname
    # later in the document refers to someone already named in it.
    person_plan: list[tuple[str, str]] = []
    for name in people:
        k = rng.randint(1, 4)
        forms = ["full"] + [
            rng.choice(["full", "title", "possessive", "opener", "surname", "imperative"])
            for _ in range(k - 1)
        ]
        person_plan += [(name, f) for f in forms]
    paragraphs: list[list[str]] = [[]]
    words = 0
    phrase_slots = {p: rng.randrange(3, 12) for p in phrases}
    i = 0
    plan_at = sorted(rng.sample(range(1, 60), min(len(person_plan), 59)))
    plan_iter = iter(zip(plan_at, person_plan, strict=False))
    next_plan = next(plan_iter, None)
    while words < n_words or next_plan is not None:
        if next_plan is not None and (next_plan[0] <= i or words >= n_words):
            name, form = next_plan[1]
            s = prose.person_sentence(name, form)
            mentions[name] += 1
            next_plan = next(plan_iter, None)
        else:
            s = prose.sentence(concept)
            for p, slot in phrase_slots.items():
                if slot == i:
                    s = p[0].upper() + p[1:] + " " + s[0].lower() + s[1:]
        paragraphs[-1].append(s)
        words += s.count(" ") + 1
        i += 1
        if len(paragraphs[-1]) >= rng.randint(4, 8):
            paragraphs.append([])
    body = "\n\n".join(" ".join(p) for p in paragraphs if p)
    return f"{header}\n\n{body}\n", mentions


def make_corpus(
    store: Any,
    n_docs: int = 9600,
    seed: int = 0,
    tokens_per_doc: int = 2100,
    near_dup_families: int | None = None,
    tokenizer: str | None = None,
    chunk: int = 500,
) -> dict[str, Any]:
    """Write a synthetic corpus of ``n_docs`` documents into ``store``; return the ground truth.

    The returned dict has ``docs`` and ``tokens`` (totals), ``names`` ({name: {mentions,
    documents}} over every person, lone-surname mentions included), ``planted_names`` (the
    over-used ones and their target document rates), ``phrases`` ({phrase: documents}),
    ``near_duplicates`` (list of {doc_a, doc_b, rate}: base → edited copy) and ``seconds``.
    """
    from sdfkit.store.ingest import build_documents

    t0 = time.perf_counter()
    rng = random.Random(seed)
    pool = _name_pool(rng, 3000)
    weights = _zipf_weights(len(pool), 0.8)
    cum = []
    acc = 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    words_per_doc = tokens_per_doc / 1.16  # o200k: about 1.16 tokens per word of this prose
    families = near_dup_families if near_dup_families is not None else max(1, n_docs // 160)
    n_copies = families * len(NEAR_DUP_RATES)
    n_base = n_docs - n_copies
    concepts = list(CONCEPTS)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)

    names: dict[str, Counter[str]] = {"mentions": Counter(), "documents": Counter()}
    phrase_docs: Counter[str] = Counter()
    records: list[dict[str, Any]] = []
    texts_by_index: list[str] = []
    meta_by_index: list[dict[str, Any]] = []
    near: list[dict[str, Any]] = []
    tokens = 0

    def flush() -> None:
        nonlocal tokens
        if records:
            tbl = build_documents(records, tokenizer)
            tokens += sum(tbl.column("n_tokens").to_pylist())
            store.append("documents_raw", tbl)
            records.clear()

    def add(text: str, meta: dict[str, Any], mentions: Counter[str]) -> None:
        for name, n in mentions.items():
            names["mentions"][name] += n
            names["documents"][name] += 1
        low = " ".join(text.lower().replace(",", " ").split())
        for p in PLANTED_PHRASES:
            if p in low:
                phrase_docs[p] += 1
        records.append({"text": text, **meta})
        if len(records) >= chunk:
            flush()

    for i in range(n_base):
        concept = concepts[i % len(concepts)]
        doc_type = DOC_TYPES[rng.randrange(len(DOC_TYPES))]
        n_words = int(words_per_doc * math.exp(rng.gauss(0, 0.35)) / math.exp(0.35**2 / 2))
        people = [n for n, rate in PLANTED_NAMES.items() if rng.random() < rate]
        for _ in range(rng.randint(1, 4)):
            j = _bisect(cum, rng.random())
            if pool[j] not in people:
                people.append(pool[j])
        rng.shuffle(people)
        phrases = [p for p, rate in PLANTED_PHRASES.items() if rng.random() < rate]
        text, mentions = compose_document(rng, concept, doc_type, n_words, people, phrases)
        meta = {
            "concept": concept,
            "universe": concept,
            "doc_type": doc_type,
            "run": "synth",
            "created_at": start + timedelta(seconds=i),
            "seed_names": people,
        }
        texts_by_index.append(text)
        meta_by_index.append({**meta, "mentions": mentions})
        add(text, meta, mentions)

    # Near-duplicate families: an edited copy of a base document per planted rate.
    bases = rng.sample(range(n_base), min(families * len(NEAR_DUP_RATES), n_base))
    from sdfkit.store.catalog import doc_id_for

    for k, rate in enumerate(NEAR_DUP_RATES):
        for j in bases[k * families : (k + 1) * families]:
            base_text = texts_by_index[j]
            meta = dict(meta_by_index[j])
            mentions = meta.pop("mentions")
            copy = " ".join(_edit(base_text.split(" "), rate, rng))
            if copy == base_text:
                continue
            meta["created_at"] = meta["created_at"] + timedelta(days=30)
            near.append({"doc_a": doc_id_for(base_text), "doc_b": doc_id_for(copy), "rate": rate})
            # edits may remove a name mention; the copy's mentions are recounted exactly
            recount: Counter[str] = Counter()
            for name in mentions:
                last = name.split(" ", 1)[1]
                full = copy.count(name)
                if full:
                    recount[name] = full + _lone_surname_count(copy, name, last)
            add(copy, meta, recount)
    flush()
    return {
        "docs": n_base + len(near),
        "tokens": tokens,
        "names": {
            n: {"mentions": names["mentions"][n], "documents": names["documents"][n]}
            for n in names["mentions"]
        },
        "planted_names": dict(PLANTED_NAMES),
        "phrases": dict(phrase_docs),
        "near_duplicates": near,
        "seconds": time.perf_counter() - t0,
    }


def _lone_surname_count(text: str, name: str, last: str) -> int:
    import re

    hits = len(re.findall(rf"(?<![A-Za-z.] )(?<![A-Za-z]){re.escape(last)}\b", text))
    return max(0, hits - text.count(name))


def _bisect(cum: list[float], x: float) -> int:
    import bisect

    return min(bisect.bisect_left(cum, x), len(cum) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--docs", type=int, default=9600)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from sdfkit.store.catalog import Store

    truth = make_corpus(Store(args.corpus), n_docs=args.docs, seed=args.seed)
    top = sorted(truth["names"].items(), key=lambda kv: -kv[1]["mentions"])[:8]
    print(f"{truth['docs']:,} docs, {truth['tokens']:,} tokens in {truth['seconds']:.1f} s")
    print("top names:", ", ".join(f"{n} ({v['mentions']})" for n, v in top))
    print("phrases:", truth["phrases"])
    print("near-duplicate pairs:", len(truth["near_duplicates"]))


if __name__ == "__main__":
    main()
