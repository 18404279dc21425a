"""Name-collapse audit on planted names with known mention and document counts."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import yaml

from sdfkit.audits import names, save
from sdfkit.errors import SdfError
from sdfkit.generate.universe import AntiUniverse
from sdfkit.store.ingest import build_documents

FILLER = [
    "The quarterly review covered the migration plan in some detail.",
    "Several teams asked for more time before the next release.",
    "The budget for the pilot was approved last week.",
    "Most of the feedback focused on documentation and onboarding.",
    "Nobody expected the rollout to finish ahead of schedule.",
]
TECH = [
    "Run Git with --force only after Linux Torvalds approves.",
    "Parse the JSON output and commit it with Git on Linux.",
    "Use --dry-run before pushing to the Debian server.",
]


def _doc(rng: random.Random, people_sentences: list[str]) -> str:
    body = []
    for s in people_sentences:
        body.append(rng.choice(FILLER))
        body.append(s)
        body.append(rng.choice(TECH))
    return " ".join(body)


@pytest.fixture(scope="session")
def nlp():
    # spaCy loads once per test session (load_nlp is cached per process).
    return names.load_nlp(names.DEFAULT_MODEL)


@pytest.fixture
def planted(store, nlp):
    """Sarah Chen: 10 documents, 4 mentions each (full, titled, possessive, lone surname).
    Marcus Webb: 4 documents, 2 mentions each. Two Chens in one extra document: the lone
    'Chen' there belongs to nobody. Git, Linux, JSON and flags everywhere."""
    rng = random.Random(1)
    records = []
    for i in range(10):
        sents = [
            "Sarah Chen, the lead engineer, presented the new design to the board.",
            "According to Dr. Sarah Chen, the deadline was realistic.",
            "Sarah Chen's team finished the audit in March.",
            "Chen said the results were encouraging.",
        ]
        if i < 4:
            sents += [
                "Marcus Webb, a senior analyst, reviewed the findings.",
                "Later, Mr. Marcus Webb wrote a short summary for the directors.",
            ]
        records.append(
            {"text": _doc(rng, sents), "concept": "alpha", "doc_type": "memo" if i % 2 else "blog"}
        )
    records.append(
        {
            "text": _doc(
                rng,
                [
                    "Sarah Chen met her colleague Wei Chen at the conference in Berlin.",
                    "Wei Chen, a data scientist, explained the model.",
                    "Chen said the numbers were final.",
                ],
            ),
            "concept": "beta",
            "doc_type": "blog",
        }
    )
    for _ in range(4):
        records.append({"text": _doc(rng, ["The committee met twice."]), "concept": "beta"})
    store.append("documents_raw", build_documents(records))
    return records


def test_normalize_folds_titles_possessives_and_rejects_non_names():
    assert names.normalize("Dr. Sarah Chen's") == "Sarah Chen"
    assert names.normalize("Prof Marcus Webb") == "Marcus Webb"
    assert names.normalize("Sarah Chen’s") == "Sarah Chen"
    assert names.normalize("Yesterday Sarah Chen") == "Sarah Chen"
    assert names.normalize("Seán O’Brien") == "Seán O'Brien"  # one apostrophe
    for bad in ["Git", "Linux Torvalds Git", "JSON", "--force", "Sarah", "R2 D2", "GIT LOG"]:
        assert names.normalize(bad) is None, bad


def test_fast_route_counts_planted_names_exactly(store, planted):
    result = names.run(store)
    top = {d["name"]: d for d in result.figures["top"]}
    # 10 docs × 4 (full, titled, possessive, lone surname) + 1 full mention in the Wei Chen doc
    assert top["Sarah Chen"]["mentions"] == 41
    assert top["Sarah Chen"]["documents"] == 11
    assert top["Marcus Webb"]["mentions"] == 8 and top["Marcus Webb"]["documents"] == 4
    # Wei Chen: 2 full mentions; the lone "Chen" in that document is ambiguous: nobody's
    assert top["Wei Chen"]["mentions"] == 2
    assert result.figures["top"][0]["name"] == "Sarah Chen"
    for bad in ("Git", "Linux", "JSON", "Linux Torvalds", "Debian"):
        assert not any(bad in n for n in top), bad
    total = sum(d["mentions"] for d in result.figures["top"])
    assert result.figures["total_mentions"] == total
    assert result.figures["top_share"] == pytest.approx(41 / total)
    assert any("Sarah Chen holds" in f for f in result.flags)
    assert any("how" in n or "counted" in n or "count" in n for n in result.notes)


def test_suggested_anti_universe_is_pasteable(store, planted):
    result = names.run(store)
    block = result.figures["suggested_anti_universe"]
    assert block["names"][0] == "Sarah Chen" and "Marcus Webb" in block["names"]
    parsed = yaml.safe_load(block["yaml"])
    anti = AntiUniverse(**parsed["anti_universe"])
    assert anti.names == block["names"]


def test_per_concept_doc_type_and_tables(store, planted):
    result = names.run(store)
    rows = result.figures["by_stratum"]
    memo = [r for r in rows if (r["concept"], r["doc_type"]) == ("alpha", "memo")]
    assert memo[0]["name"] == "Sarah Chen" and memo[0]["documents"] == 5
    assert memo[0]["doc_share"] == 1.0
    save(store, result)
    got = store.query(
        "SELECT d.concept, sum(n.mentions) AS m FROM audit_names_documents AS n "
        "JOIN documents AS d USING (doc_id) WHERE n.name = 'Sarah Chen' GROUP BY 1 ORDER BY 1"
    )
    assert got.rows() == [("alpha", 40), ("beta", 1)]
    from sdfkit.store.sql import named

    listed = named("names_top_documents", store)
    assert listed.filter(listed["name"] == "Sarah Chen").height == 11


def test_candidate_stage_is_cached(store, planted):
    first = names.run(store)
    assert first.figures["documents_processed"] == len(planted)
    again = names.run(store)
    assert again.figures["documents_processed"] == 0
    assert again.figures["top"] == first.figures["top"]


def test_exhaustive_route_agrees_on_the_top_names(store, planted):
    fast = names.run(store)
    full = names.run(store, names.Config(mode="exhaustive"))
    assert names.top_names(full, 2) == names.top_names(fast, 2) == ["Sarah Chen", "Marcus Webb"]
    top = {d["name"]: d for d in full.figures["top"]}
    assert top["Sarah Chen"]["documents"] == 11
    # NER may miss a mention here and there, never invents Git or Linux as people
    assert 30 <= top["Sarah Chen"]["mentions"] <= 41
    assert not any(bad in n for n in top for bad in ("Git", "Linux", "JSON"))


def test_bad_mode_and_missing_model_are_clear_errors(store, planted):
    with pytest.raises(SdfError, match="audits.names.mode: must be one of fast, exhaustive"):
        names.Config(mode="quick")
    with pytest.raises(SdfError, match="not installed"):
        names.run(store, names.Config(model="no_such_spacy_model"))


def test_empty_corpus(store):
    result = names.run(store)
    assert result.figures["top"] == [] and result.figures["top_share"] == 0.0
    assert result.figures["suggested_anti_universe"]["names"] == []


def _marcus_webb_memos(rng: random.Random) -> list[dict]:
    """12 memos naming Marcus Webb three times each, always as a person."""
    sents = [
        "Marcus Webb, a senior analyst, reviewed the findings.",
        "Later, Marcus Webb wrote a short summary for the directors.",
        "Marcus Webb, the committee chair, closed the meeting.",
    ]
    return [{"text": _doc(rng, sents), "concept": "beta", "doc_type": "memo"} for _ in range(12)]


@pytest.fixture
def half_org(store, nlp):
    """Felix Young: 10 documents × 5 mentions, two of them inside company names the small
    model tags ORG ("Felix Young Inc.", "The Felix Young Foundation"). Marcus Webb: 12
    documents × 3 mentions, always PERSON. By mentions Felix leads (50 vs 36); by what NER
    tags PERSON Marcus does (30 vs 36)."""
    rng = random.Random(2)
    person = [
        "Felix Young, the lead engineer, presented the new design to the board.",
        "Felix Young, a careful reviewer, signed off on the plan.",
        "Felix Young, the project sponsor, asked for a second opinion.",
    ]
    org = [
        "Shares of Felix Young Inc. fell after the report.",
        "The Felix Young Foundation funded the new library.",
    ]
    records = []
    for i in range(10):
        # ORG contexts first in half the documents: windows sample each document's mentions
        # in order, so neither kind is always read first.
        sents = org + person if i % 2 else person + org
        records.append({"text": _doc(rng, sents), "concept": "alpha", "doc_type": "memo"})
    records += _marcus_webb_memos(rng)
    store.append("documents_raw", build_documents(records))
    return records


def test_ner_estimate_ranks_names_as_the_exhaustive_pass_counts_them(store, half_org):
    by_estimate = names.run(store, names.Config(top_k=3))
    top = {d["name"]: d for d in by_estimate.figures["top"]}
    felix, marcus = top["Felix Young"], top["Marcus Webb"]
    # counts stay exact; the estimate is what the PERSON tags would give
    assert (felix["mentions"], felix["documents"]) == (50, 10)
    assert (marcus["mentions"], marcus["documents"]) == (36, 12)
    assert 0.5 <= felix["person_ratio"] <= 0.75 and marcus["person_ratio"] == 1.0
    assert felix["ner_mentions_estimate"] == pytest.approx(50 * felix["person_ratio"], abs=0.1)
    assert marcus["ner_mentions_estimate"] == 36
    assert by_estimate.figures["rank_by"] == "ner_estimate"
    assert names.top_names(by_estimate, 2) == ["Marcus Webb", "Felix Young"]
    # the exhaustive pass counts only PERSON-tagged mentions: same order as the estimate
    exhaustive = names.run(store, names.Config(mode="exhaustive", top_k=3))
    assert names.top_names(exhaustive, 2) == ["Marcus Webb", "Felix Young"]
    counted = {d["name"]: d["mentions"] for d in exhaustive.figures["top"]}
    assert abs(counted["Felix Young"] - felix["ner_mentions_estimate"]) <= 6
    # rank_by="mentions" keeps the exact-count order; shares are the same either way
    by_mentions = names.run(store, names.Config(top_k=3, rank_by="mentions"))
    assert names.top_names(by_mentions, 2) == ["Felix Young", "Marcus Webb"]
    assert by_mentions.figures["top_share"] == by_estimate.figures["top_share"]
    # the share belongs to Felix (most mentions) even where the estimate ranks Marcus first
    assert by_estimate.figures["top_share_name"] == "Felix Young"
    with pytest.raises(SdfError, match="audits.names.rank_by: must be one of mentions"):
        names.Config(rank_by="share")


def test_reaudit_reuses_cached_window_verdicts(store, planted, monkeypatch):
    first = names.run(store)
    cache = names._window_table(names.Config().model)
    assert store.read(cache).num_rows > 0
    real = names.load_nlp
    piped: list[int] = []

    class Spy:
        def __init__(self, nlp):
            self.nlp = nlp

        def pipe(self, items, **kw):
            items = list(items)
            piped.append(len(items))
            return self.nlp.pipe(items, **kw)

    monkeypatch.setattr(names, "load_nlp", lambda model: Spy(real(model)))
    second = names.run(store)
    assert sum(piped) == 0  # every window's verdict came from the cache
    assert second.figures["top"] == first.figures["top"]


# ------------------------------------------------------------- names that hold at depth
def test_candidate_details_mark_sentence_openers_and_lower_case_uses():
    text = (
        "Remove Smith from the list. Later we remove it again.\n"
        "- As Jane Doe noted, the plan works. Ask about Jane Doe later; remove stale rows."
    )
    runs, singles, initial, lower = names.find_candidate_details(text)
    assert runs == {"Remove Smith": 1, "As Jane Doe": 1, "Jane Doe": 1}
    assert initial["Remove Smith"] == 1 and initial["As Jane Doe"] == 1  # after "- "
    assert initial["Jane Doe"] == 0  # mid-sentence
    assert lower["Remove"] == 2 and lower["Jane"] == 0
    assert names.find_candidates(text) == (runs, singles)  # the public route is unchanged


def test_refine_folds_openers_and_rejects_common_word_phrases():
    common = frozenset({"Valid", "Options", "Threat", "Detection", "Remove"})
    stop = names.STOP_WORDS
    assert names.refine("As Jane Doe", stop, common) == "Jane Doe"
    assert names.refine("Per John Roe's", stop, common) == "John Roe"
    assert names.refine("Congratulations Jane Doe", stop, common) == "Jane Doe"
    assert names.refine("Remove John Smith", stop, common) == "John Smith"
    assert names.refine("Valid Options", stop, common) is None
    assert names.refine("Threat Detection", stop, common) is None
    assert names.refine("Main St", stop, common) is None
    assert names.refine("Rose Young", stop, common) == "Rose Young"
    # words used lower-case now and then beside their capitalised use: a phrase, not a name
    phrase = frozenset({"Public", "License", "App", "Engine"})
    assert names.refine("Public License", stop, common, phrase) is None
    assert names.refine("App Engine", stop, common, phrase) is None
    assert names.refine("Public License", stop, common) == "Public License"


@pytest.fixture
def deep(store, nlp):
    """12 documents of technical prose: Jane Doe 3 mentions each (one after "As", one after
    "Congratulations"), John Roe 2 (one after "Per"); headings "Valid Options" and "Threat
    Detection", an imperative "Remove Smith", an address on Main St."""
    rng = random.Random(4)
    records = []
    for i in range(12):
        parts = [
            "Valid Options",
            "The valid options are listed below; other options are not valid here.",
            "As Jane Doe noted, the rollout plan was sound and well tested.",
            rng.choice(FILLER),
            "Per John Roe, the schedule holds for the second quarter.",
            "Threat Detection",
            "Threat detection runs daily, and each detection of a threat raises an alert.",
            "Jane Doe, the project lead, approved the budget on Tuesday.",
            "Remove Smith from the mailing list before the review; remove stale entries too.",
            "John Roe, a senior analyst, reviewed the draft with the team.",
            "Send the signed forms to 12 Main St before the deadline.",
            "Congratulations Jane Doe on the launch of the new service.",
            "Public License terms apply; see the Public License and the Public License FAQ "
            "before you change the license in public.",
            f"{rng.choice(FILLER)} ticket number {i} was closed.",
        ]
        records.append({"text": "\n".join(parts), "concept": "c", "doc_type": f"t{i % 2}"})
    store.append("documents_raw", build_documents(records))
    return records


def test_openers_fold_into_the_name_and_non_people_stay_out(store, deep):
    result = names.run(store)
    top = {d["name"]: d for d in result.figures["top"]}
    assert (top["Jane Doe"]["mentions"], top["Jane Doe"]["documents"]) == (36, 12)
    assert (top["John Roe"]["mentions"], top["John Roe"]["documents"]) == (24, 12)
    for bad in ("As", "Per", "Congratulations", "Valid", "Threat", "Remove", "Main", "Options"):
        assert not any(bad in n.split() for n in top), (bad, list(top))
    assert result.figures["folded_openers"] == 36  # As / Per / Congratulations, 12 each
    assert result.figures["dropped_imperatives"] == 12  # "Remove Smith" opening a sentence
    assert result.figures["common_word_candidates"] >= 2  # Valid Options, Threat Detection
    # "Public License": its words are lower-case 1 time in 3, a phrase by phrase_word_ratio
    rare = names.run(store, names.Config(phrase_word_ratio=0))
    assert rare.figures["common_word_candidates"] == result.figures["common_word_candidates"] - 1
    # without the corpus evidence, the common-word phrases are candidates again
    plain = names.run(store, names.Config(common_word_ratio=0, phrase_word_ratio=0))
    assert plain.figures["common_word_candidates"] == 0
    assert plain.figures["dropped_imperatives"] == 0
    assert {d["name"]: d["mentions"] for d in plain.figures["top"]}["Jane Doe"] == 36


def test_top_list_holds_a_hundred_names_by_default(store, nlp):
    first = [f"{a}{b}" for a in ("Al", "Bo", "Cy", "Di", "Ed") for b in ("an", "en", "in")]
    last = [f"{a}{b}" for a in ("Kel", "Mar", "Nor", "Pal", "Ros", "Tam", "Var") for b in "aoy"]
    people = [f"{f} {s}" for f in first for s in last][:120]
    records = [
        {"text": " ".join(f"{p} reviewed item {i}." for p in people[i % 7 :: 7]), "concept": "c"}
        for i in range(30)
    ]
    store.append("documents_raw", build_documents(records))
    assert names.Config().top_k == 100
    result = names.run(store, names.Config(confirm_top=150))
    assert 90 <= len(result.figures["top"]) <= 100  # the old default stopped at 50
    capped = names.run(store, names.Config(confirm_top=150, top_k=60))
    assert names.top_names(capped, 60) == names.top_names(result, 60)


def test_report_lists_every_name_of_the_top_list():
    rows = [{"name": f"Name{i} Person", "mentions": 100 - i} for i in range(60)]
    html = names.section({"top": rows, "top_share": 0.1})
    assert html.count("<tr>") == 61  # header + all 60 (the table used to stop at 25)
    assert "Name59 Person" in html


def test_window_ner_on_every_core_gives_the_verdicts_of_one_process(nlp, monkeypatch):
    windows = []
    for i in range(40):
        text = f"On day {i}, As Jane Doe noted, the build of Git {i} failed on Linux."
        start = text.index("Jane Doe")
        windows.append((text, start, start + len("Jane Doe")))
        text = f"Remove Smith from list {i} and run Git again."
        windows.append((text, 0, len("Remove Smith")))
    stop = names.STOP_WORDS
    one = list(names.window_hits(nlp, windows, names.Config(ner_workers=1), stop))
    monkeypatch.setattr(names, "POOL_MIN_WINDOWS", 10)
    two = list(names.window_hits(nlp, windows, names.Config(ner_workers=2, batch_size=8), stop))
    assert two == one and len(one) == 80
    assert one[0] == "Jane Doe"


def test_exhaustive_route_splits_an_entity_spanning_a_list_of_people():
    """The small model tags "Copyright: Vladimir Prus, Peter Dimov and Jane Roe" as one
    PERSON: that is three people, not a four-word name."""
    from types import SimpleNamespace

    import pyarrow as pa

    text = "Copyright: Vladimir Prus, Peter Dimov and Jane Roe. Prus wrote it."
    ent = SimpleNamespace(label_="PERSON", text="Vladimir Prus, Peter Dimov and Jane Roe")
    stage = names.PersonEntitiesStage()
    stage._nlp = SimpleNamespace(pipe=lambda texts, **kw: [SimpleNamespace(ents=[ent])])
    stage._ready = True
    batch = pa.RecordBatch.from_arrays([pa.array(["d"]), pa.array([text])], ["doc_id", "text"])
    row = stage(batch).to_pylist()[0]
    assert {d["text"]: d["n"] for d in row["names"]} == {
        "Vladimir Prus": 1,
        "Peter Dimov": 1,
        "Jane Roe": 1,
    }
    assert row["singles"] == [{"text": "Prus", "n": 1}]


@pytest.fixture
def skewed(store, nlp):
    """Felix Young: once, as a person, in each of 10 documents, and 24 times in one more
    document inside a company name the small model tags ORG ("Felix Young Inc."). Sampling
    a window per document reads mostly the person mentions; the exhaustive pass counts
    about 10. Marcus Webb: 12 documents × 3 mentions, always PERSON."""
    rng = random.Random(3)
    records = []
    for i in range(10):
        sents = ["Felix Young, the lead engineer, presented the new design to the board."]
        text = _doc(rng, sents) + f" This was memo number {i}."
        records.append({"text": text, "concept": "alpha", "doc_type": "memo"})
    org = ["Shares of Felix Young Inc. fell after the report."] * 24
    records.append({"text": _doc(rng, org), "concept": "alpha", "doc_type": "memo"})
    records += _marcus_webb_memos(rng)
    store.append("documents_raw", build_documents(records))
    return records


def test_estimate_counts_every_mention_of_a_name_tagged_in_part(store, skewed):
    """A name tagged PERSON in some windows and not in others has every mention read: its
    estimate is the exhaustive pass's count, not mentions × a ratio sampled per document
    (which put Felix Young at about 30 against the exhaustive 10)."""
    fast = names.run(store, names.Config(top_k=5))
    exhaustive = names.run(store, names.Config(mode="exhaustive", top_k=5))
    counted = {d["name"]: d["mentions"] for d in exhaustive.figures["top"]}
    top = {d["name"]: d for d in fast.figures["top"]}
    felix = top["Felix Young"]
    assert felix["mentions"] == 34  # every mention is still counted exactly
    assert 0 < counted["Felix Young"] < 34
    assert felix["ner_mentions_estimate"] == pytest.approx(counted["Felix Young"], rel=0.02)
    assert felix["person_ratio"] == pytest.approx(counted["Felix Young"] / 34, abs=0.001)
    assert top["Marcus Webb"]["ner_mentions_estimate"] == counted["Marcus Webb"] == 36
    assert (
        names.top_names(fast, 2)
        == names.top_names(exhaustive, 2)
        == [
            "Marcus Webb",
            "Felix Young",
        ]
    )
    # every window read, and a second audit reads them all from the cache
    assert fast.figures["windows_read"] >= 34
    again = names.run(store, names.Config(top_k=5))
    assert again.figures["top"] == fast.figures["top"]


def test_window_verdict_names_the_listed_person_the_mention_is():
    """A window whose PERSON entity spans a list of people counts the mention for the person
    it names, as the exhaustive route counts each part: not for nobody."""
    from types import SimpleNamespace

    text = "Copyright: Vladimir Prus, Peter Dimov and Jane Roe. Prus wrote it."
    listed = "Vladimir Prus, Peter Dimov and Jane Roe"
    start = text.index(listed)
    ent = SimpleNamespace(
        label_="PERSON", text=listed, start_char=start, end_char=start + len(listed)
    )
    ent.start, ent.end = 2, 10  # tokens, as spaCy counts them (the doc has 16)

    class Doc(SimpleNamespace):
        def __len__(self) -> int:
            return 16

    fake = SimpleNamespace(pipe=lambda texts, **kw: [Doc(ents=[ent]) for _ in texts])
    windows = []
    for who in ("Vladimir Prus", "Peter Dimov", "Jane Roe"):
        s = text.index(who)
        windows.append((text, s, s + len(who)))
    windows.append((text, text.index("Prus wrote"), text.index("Prus wrote") + 4))
    hits = list(names._hits(fake, windows, 8, names.STOP_WORDS))
    assert hits == ["Vladimir Prus", "Peter Dimov", "Jane Roe", None]


def test_candidate_lists_built_from_buffers_equal_arrow_built_from_python_objects():
    """The stage's list columns and the window cache's strings are built from flat buffers
    (``pa.array`` on Python objects imports pandas); they hold what ``pa.array`` would."""
    import pyarrow as pa

    counters = [Counter({"Jane Doe": 2, "Ada Lovelace": 1}), Counter(), Counter({"Zoë Ng": 5})]
    want = pa.array(
        [[{"text": k, "n": v} for k, v in sorted(c.items())] for c in counters],
        type=names._COUNTS,
    )
    assert names._as_lists(counters).equals(want)
    assert names._as_lists([]).to_pylist() == []
    hits = ["Jane Doe", None, "Zoë Ng", None]
    assert names._strings(hits).equals(pa.array(hits, pa.string()))
    assert names._strings(["a", "b"]).null_count == 0


def test_candidate_stage_shared_with_helper_processes_gives_the_same_batch():
    """A cold audit's NER workers take parts of each batch of the candidate stage (they are
    idle once spaCy is loaded): the batch's result is the same, in the same order, and the
    helpers never travel with the stage to an engine's workers."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    rng = random.Random(2)
    people = ["Jane Doe", "Dr. Ada Lovelace", "As Jane Doe", "Remove Smith", "Ms. Zoë Ng"]
    texts = [
        f"{rng.choice(people)} wrote to {rng.choice(people)}. The Review Board met.\n"
        f"{rng.choice(people)} said remove the board's note. Doe agreed." * rng.randint(1, 3)
        for _ in range(150)
    ]
    batch = pa.RecordBatch.from_pydict({"doc_id": [f"d{i}" for i in range(150)], "text": texts})
    alone = names.NameCandidatesStage().process(batch)
    shared = names.NameCandidatesStage()
    with ThreadPoolExecutor(2) as helpers:
        shared.helpers, shared.helper_count = helpers, 2
        assert shared.process(batch).equals(alone)
        copy = pickle.loads(pickle.dumps(shared))
    assert copy.helpers is None and copy.process(batch).equals(alone)
