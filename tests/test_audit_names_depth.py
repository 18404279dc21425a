"""Name counts that hold at depth: the fast route's window verdicts against NER on the
whole document (real spaCy model, as in test_audit_names.py)."""

from __future__ import annotations

import os
import random
import re

import pytest

from sdfkit.audits import names
from sdfkit.store.ingest import build_documents

FILLER = [
    "The quarterly review covered the migration plan in some detail.",
    "Several teams asked for more time before the next release.",
    "The budget for the pilot was approved last week.",
    "Most of the feedback focused on documentation and onboarding.",
]

#: A changelog entry: "Remove <name> from Uploaders" between two other items.
CHANGELOG = (
    "  * Stop depending on fdisk (Closes: #947134)\n"
    "  * Remove Martin Keller from Uploaders: per request\n"
    "  * Enable fstrim.timer by default\n"
)


@pytest.fixture(scope="module")
def nlp():
    return names.load_nlp(names.DEFAULT_MODEL)


def _full_document_verdict(nlp, text: str, start: int, end: int) -> str | None:
    """What the exhaustive route makes of the mention at text[start:end]."""
    for ent in nlp(text).ents:
        if ent.label_ == "PERSON" and ent.start_char < end and ent.end_char > start:
            part = names._part_at(ent.text, start - ent.start_char, end - ent.start_char)
            hit = names.normalize(part)
            if hit:
                return hit
    return None


def test_cut_keeps_whole_words_either_side_of_the_mention():
    text = "one two  three\nMartin Keller's four, five six"
    s = text.index("Martin")
    e = s + len("Martin Keller")
    lo, hi = names._cut(text, s, e, 2)
    assert text[lo:hi] == "two  three\nMartin Keller's four,"  # "'s" counts as a word
    assert names._cut(text, s, e, 50) == (0, len(text))  # the document's edges
    assert names._windows(text, "Martin Keller", 5, 1) == [("three\nMartin Keller's", 6, 19)]


def test_window_whose_entity_reaches_the_cut_is_read_wider(store, nlp):
    """One word each side gives NER "Remove Martin Keller from", which it tags as the
    person "Remove Martin Keller"; the whole entry tags "Martin Keller". The entity starts
    within NER_REACH tokens of the cut, so the window is read wider, and the verdict is the
    whole document's."""
    s = CHANGELOG.index("Martin Keller")
    e = s + len("Martin Keller")
    full = _full_document_verdict(nlp, CHANGELOG, s, e)
    assert full == "Martin Keller"
    lo, hi = names._cut(CHANGELOG, s, e, 1)
    narrow = (CHANGELOG[lo:hi], s - lo, e - lo)
    assert narrow[0] == "Remove Martin Keller from"
    [(hit, left, right)] = names._results(nlp, [narrow], 8, names.STOP_WORDS)
    assert hit == "Remove Martin Keller" and left  # the cut changes the verdict
    config = names.Config(window_words=1, ner_workers=1)
    ner = names._Ner(config, names.STOP_WORDS, nlp)
    assert names.mention_hits(store, config, ner, [(CHANGELOG, s, e)]) == [full]
    cached = store.read(names._window_table(config.model)).to_pylist()
    assert {r["window_key"]: r["hit"] for r in cached}[names._window_key(*narrow)] == "<wider>"
    # the second time, both verdicts come from the cache: no NER at all
    dead = names._Ner(config, names.STOP_WORDS, nlp=object())
    assert names.mention_hits(store, config, dead, [(CHANGELOG, s, e)]) == [full]


def test_document_edge_is_no_cut(store, nlp):
    """A name opening a short document: its entity starts at the window's first token, but
    that is the document's start, so the window's verdict stands (no wider read)."""
    text = "Martin Keller fixed the build on Tuesday."
    end = len("Martin Keller")
    [(hit, left, _)] = names._results(nlp, [(text, 0, end)], 8, names.STOP_WORDS)
    assert hit == "Martin Keller" and left
    config = names.Config(ner_workers=1)
    ner = names._Ner(config, names.STOP_WORDS, nlp)
    assert names.mention_hits(store, config, ner, [(text, 0, end)]) == ["Martin Keller"]
    hits = [r["hit"] for r in store.read(names._window_table(config.model)).to_pylist()]
    assert hits == ["Martin Keller"]


def test_default_windows_give_the_whole_document_verdict(store, nlp):
    """Every mention of a changelog-like text, read in its window, gets the verdict NER
    gives it in the whole text."""
    rng = random.Random(7)
    people = ["Martin Keller", "Tobias Brandt", "Jana Novak", "Pablo Ortega"]
    parts = []
    for i in range(12):
        who = rng.choice(people)
        parts.append(f"pkg ({i}.0-1) unstable; urgency=medium\n\n  [ {who} ]\n")
        parts.append(f"  * {rng.choice(FILLER)}\n  * Remove {rng.choice(people)} from Uploaders\n")
        parts.append(
            f"\n -- {rng.choice(people)} <dev@example.org>  Sat, 0{i % 9 + 1} Jan 2021\n\n"
        )
    text = "".join(parts)
    mentions = [(text, m.start(), m.end()) for who in people for m in re.finditer(who, text)]
    want = [_full_document_verdict(nlp, text, s, e) for _, s, e in mentions]
    config = names.Config(ner_workers=1)
    got = names.mention_hits(store, config, names._Ner(config, names.STOP_WORDS, nlp), mentions)
    assert len(mentions) == 36 and got == want


@pytest.fixture
def tagged_in_part(store, nlp):
    """Felix Young: 10 documents, each opening with a person mention ("Felix Young, the lead
    engineer, ...") and, further down, a company mention the small model tags ORG ("Felix
    Young Inc."). One window per document, first mention first, always reads the person;
    the exhaustive pass counts about 10 of the 20 mentions."""
    rng = random.Random(5)
    records = []
    for i in range(10):
        body = [
            "Felix Young, the lead engineer, presented the new design to the board.",
            rng.choice(FILLER),
            rng.choice(FILLER),
            "Shares of Felix Young Inc. fell after the report.",
            f"This was memo number {i}.",
        ]
        records.append({"text": " ".join(body), "concept": "alpha", "doc_type": "memo"})
    store.append("documents_raw", build_documents(records))
    return records


def test_name_tagged_in_every_sampled_window_still_has_every_mention_read(store, tagged_in_part):
    """A name whose sampled windows are all tagged PERSON is not tagged in every mention:
    its estimate is the count of tagged mentions, as the exhaustive pass counts (the
    previous code took the sampled ratio, 1, and estimated all 20 mentions)."""
    fast = names.run(store, names.Config(top_k=5))
    exhaustive = names.run(store, names.Config(mode="exhaustive", top_k=5))
    counted = {d["name"]: d["mentions"] for d in exhaustive.figures["top"]}
    felix = {d["name"]: d for d in fast.figures["top"]}["Felix Young"]
    assert felix["mentions"] == 20
    assert 0 < counted["Felix Young"] < 20
    assert felix["ner_mentions_estimate"] == counted["Felix Young"]
    assert felix["person_ratio"] == pytest.approx(counted["Felix Young"] / 20, abs=0.001)


@pytest.fixture
def inside_runs(store, nlp):
    """Martin Keller signs 8 changelog entries; 3 more documents name him only inside the
    capitalised run "Remove Martin Keller" (here "Remove" is never written lower-case, so
    no rule folds it), which NER tags as the person Martin Keller."""
    records = []
    for i in range(8):
        text = (
            f"pkg (1.{i}-1) unstable; urgency=medium\n\n  * New upstream release.\n"
            f"  * {FILLER[i % 4]}\n\n -- Martin Keller <mk@example.org>  Sat, 0{i + 1} Jan 2021"
            " 15:23:12 +0100\n"
        )
        records.append({"text": text, "concept": "c", "doc_type": "changelog"})
    for i in range(3):
        text = f"pkg (2.{i}-1) unstable; urgency=medium\n\n{CHANGELOG}\n -- Jana Novak <jn@example.org>"
        records.append({"text": text, "concept": "c", "doc_type": "changelog"})
    store.append("documents_raw", build_documents(records))
    return records


def test_name_inside_a_longer_run_counts_where_ner_tags_it(store, inside_runs):
    """The exhaustive pass counts "Martin Keller" in "Remove Martin Keller from Uploaders".
    That run is a candidate of its own, too rare to be confirmed (``confirm_top``, as on a
    real corpus), so no window resolves it to him; the fast route still reads his name there
    and counts it for him (previously: 8 against 11)."""
    fast = names.run(store, names.Config(top_k=5, confirm_top=2))
    assert fast.figures["confirmed_candidates"] == 2  # Martin Keller, Jana Novak
    exhaustive = names.run(store, names.Config(mode="exhaustive", top_k=5))
    counted = {d["name"]: d["mentions"] for d in exhaustive.figures["top"]}
    assert counted["Martin Keller"] == 11
    keller = {d["name"]: d for d in fast.figures["top"]}["Martin Keller"]
    assert keller["ner_mentions_estimate"] == 11
    assert (keller["mentions"], keller["documents"]) == (11, 11)
    assert fast.figures["folded_openers"] == 3


def test_ner_runs_without_the_shared_tok2vec_nothing_listens_to(nlp):
    """The small model's NER embeds tokens itself; the shared tok2vec only fed the tagger
    and parser, which are not loaded. Dropping it leaves every entity as it was."""
    import spacy

    assert nlp.pipe_names == ["ner"]
    kept = spacy.load(
        names.DEFAULT_MODEL, exclude=["parser", "lemmatizer", "attribute_ruler", "tagger"]
    )
    assert "tok2vec" in kept.pipe_names
    texts = [CHANGELOG, " ".join(FILLER) + " Felix Young, the lead engineer, spoke to Jana Novak."]
    ents = [[(e.text, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
    assert ents == [[(e.text, e.label_) for e in d.ents] for d in kept.pipe(texts)]
    assert ("Jana Novak", "PERSON") in ents[1]


def _keller_memos(rng: random.Random, extra: list[str] | None = None) -> list[dict]:
    """60 memos naming Martin Keller twice each, with filler and (when ``extra`` is given)
    one of its sentences picked at random per memo."""
    records = []
    for i in range(60):
        middle = f"{rng.choice(extra)} " if extra else ""
        body = " ".join(rng.sample(FILLER, 2))
        text = (
            f"Report {i}. According to Martin Keller, the plan works. {middle}{body} "
            f"Questions go to Martin Keller at the office."
        )
        records.append({"text": text, "concept": "c", "doc_type": "memo"})
    return records


def test_a_name_with_more_mentions_than_every_mention_max_is_counted_on_a_sample(store):
    """A collapsed corpus: one name in 60 documents (120 mentions). With a cap of 30 only
    the mentions of a uniform sample of its documents are read, and its estimate is scaled
    to all of them; without the cap every mention is read. Both agree on the count."""
    store.append("documents_raw", build_documents(_keller_memos(random.Random(3))))
    every = {"top_k": 5, "every_mention_error": None, "ner_workers": 1}  # no settling
    everything = names.run(store, names.Config(every_mention_max=None, **every))
    capped = names.run(store, names.Config(every_mention_max=30, **every))
    full = {d["name"]: d for d in everything.figures["top"]}["Martin Keller"]
    part = {d["name"]: d for d in capped.figures["top"]}["Martin Keller"]
    assert everything.figures["every_mention_sampled"] == {}
    read = capped.figures["every_mention_sampled"]["Martin Keller"]
    assert read["mentions"] == 120 and 30 <= read["read"] <= 32  # whole documents
    assert full["mentions"] == part["mentions"] == 120
    assert full["ner_mentions_estimate"] > 100
    assert part["ner_mentions_estimate"] == pytest.approx(full["ner_mentions_estimate"], rel=0.1)


def test_count_error_falls_with_mentions_read_and_vanishes_when_all_are_read():
    """The settled-count bound: a name tagged in every mention read still has an error
    (pseudo-misses), which falls below ``every_mention_error`` at ``_first_read`` mentions
    and not before, and sooner where few mentions are left unread; a name tagged in half
    its documents has a far larger one; reading every mention leaves none."""
    tol = names.Config().every_mention_error
    total = 10_000
    first = names._first_read(tol, total)
    assert names.count_error([(1, 1)] * first, first, total) <= tol
    assert names.count_error([(1, 1)] * (first - 1), first - 1, total) > tol
    assert names._first_read(tol, 200) < 200 * 0.8 < first  # a quarter unread: fewer needed
    assert names._first_read(None, 200) == 200
    half = [(1, i % 2) for i in range(first)]
    assert names.count_error(half, first, total) > 10 * tol
    assert names.count_error(half, first, first) == 0.0  # every mention read
    assert names.count_error([(3, 0)] * 50, 150, total) == float("inf")  # none tagged
    need = names._mentions_needed(half, first, total, tol)
    assert first < need <= total
    more = [(1, i % 2) for i in range(need)]
    assert names.count_error(more, need, total) <= tol * 1.05  # the projection holds
    assert names._mentions_needed([(1, 1)] * first, first, total, tol) == first


def test_a_name_tagged_in_every_mention_settles_on_a_small_sample_one_tagged_in_part_not(
    store,
):
    """60 documents each name Martin Keller twice (the model tags every mention) and Felix
    Young once, as the engineer (PERSON) or as "Felix Young Inc." (ORG) at random. Martin
    Keller's count settles on a small sample of his documents; Felix Young's tagged share
    varies from document to document, so nearly all his mentions are read. Both counts
    agree with reading every mention (to the 10 % asked for)."""
    felix = [
        "Felix Young, the lead engineer, presented the new design to the board.",
        "Shares of Felix Young Inc. fell after the report.",
    ]
    store.append("documents_raw", build_documents(_keller_memos(random.Random(11), felix)))
    full_cfg = names.Config(
        top_k=5, every_mention_max=None, every_mention_error=None, ner_workers=1
    )
    everything = names.run(store, full_cfg)
    settled = names.run(store, names.Config(top_k=5, every_mention_error=0.1, ner_workers=1))
    full = {d["name"]: d for d in everything.figures["top"]}
    part = {d["name"]: d for d in settled.figures["top"]}
    assert everything.figures["every_mention_sampled"] == {}
    sampled = settled.figures["every_mention_sampled"]
    assert names._first_read(0.1, 120) <= sampled["Martin Keller"]["read"] < 120 / 3
    assert sampled["Martin Keller"]["mentions"] == 120
    assert sampled.get("Felix Young", {"read": 60})["read"] >= 0.9 * 60
    assert full["Martin Keller"]["ner_mentions_estimate"] == 120
    assert part["Martin Keller"]["ner_mentions_estimate"] == pytest.approx(120, rel=0.1)
    assert 0 < full["Felix Young"]["ner_mentions_estimate"] < 60
    assert part["Felix Young"]["ner_mentions_estimate"] == pytest.approx(
        full["Felix Young"]["ner_mentions_estimate"], rel=0.1
    )
    assert part["Martin Keller"]["mentions"] == full["Martin Keller"]["mentions"] == 120


def test_cold_audit_of_a_large_corpus_starts_the_ner_workers_before_the_candidate_stage(
    store, monkeypatch
):
    """The workers load spaCy while this process scans: a cold fast audit of at least
    ``EARLY_WORKERS_DOCS`` documents starts them before the candidate stage; a warm one
    (window verdicts cached) or the exhaustive route does not."""
    import sdfkit.engine.local as local

    records = [
        {"text": f"Memo {i}. Martin Keller signed it. {FILLER[i % 4]}", "concept": "c"}
        for i in range(12)
    ]
    store.append("documents_raw", build_documents(records))
    events: list[str] = []
    monkeypatch.setattr(names._Ner, "start", lambda self: events.append("workers"))
    stage = local.run_stage

    def run_stage(*args, **kwargs):
        events.append("stage")
        return stage(*args, **kwargs)

    monkeypatch.setattr(local, "run_stage", run_stage)
    import shutil

    monkeypatch.setattr(names, "EARLY_WORKERS_DOCS", 13)
    names.run(store, names.Config(top_k=5))
    assert events == ["stage"]  # too few documents
    shutil.rmtree(store.root / names._window_table(names.DEFAULT_MODEL))  # cold again
    events.clear()
    monkeypatch.setattr(names, "EARLY_WORKERS_DOCS", 12)
    cold = names.run(store, names.Config(top_k=5))
    assert events == ["workers", "stage"]
    assert {d["name"] for d in cold.figures["top"]} == {"Martin Keller"}
    events.clear()
    names.run(store, names.Config(top_k=5))  # warm: verdicts cached
    assert events == ["stage"]
    events.clear()
    names.run(store, names.Config(mode="exhaustive", top_k=5))
    assert events == ["stage"]


def test_ner_worker_loads_spacy_without_torch():
    """An NER worker process never imports torch (thinc would, for nothing: 1.7 s and some
    300 MB per worker), loads the compiled NER decoding without it, and its verdicts are
    those of a process that has torch."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from sdfkit.audits import names\n"
        "names._init_ner_worker(names.DEFAULT_MODEL, 64, names.STOP_WORDS, 'auto', os.getpid())\n"
        "text = 'The memo was signed by Martin Keller of Acme Corp in Berlin.'\n"
        "s = text.index('Martin')\n"
        "nlp = names._WORKER_NLP[0]\n"
        "import signal\n"
        "print(sys.modules.get('torch') is None, names._compiled_ner(nlp, 'auto') is not None,\n"
        "      names._ner_chunk([(text, s, s + 13)]),\n"
        "      signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")[0]
    # the last: Ctrl-C is the audit's to handle (a worker loading would print a traceback)
    assert out == "True True [('Martin Keller', False, False)] True"


def test_workers_prepared_ahead_are_taken_by_the_audit_and_the_rest_released(store, monkeypatch):
    """``prepare`` (which ``sdf report`` calls before its first audit) starts the NER
    workers of a cold audit of at least ``EARLY_WORKERS_DOCS`` documents; ``run`` with the
    same NER settings takes them, with the figures of a run that started its own; workers
    of other settings are left to ``release``; a warm or small corpus starts none."""
    import shutil

    records = [
        {"text": f"Memo {i}. Martin Keller signed it. {FILLER[i % 4]}", "concept": "c"}
        for i in range(12)
    ]
    store.append("documents_raw", build_documents(records))
    monkeypatch.setattr(names, "EARLY_WORKERS_DOCS", 12)
    config = names.Config(top_k=5, ner_workers=2)
    own = names.run(store, config).figures
    shutil.rmtree(store.root / names._window_table(names.DEFAULT_MODEL))  # cold again

    names.prepare(store, config)
    (ahead,) = names._PREPARED
    assert ahead.pool is not None  # started: its processes load spaCy now
    made = []
    init = names._Ner.__init__
    monkeypatch.setattr(
        names._Ner, "__init__", lambda self, *a: made.append(self) or init(self, *a)
    )
    taken = names.run(store, config).figures
    assert names._PREPARED == [] and made == [] and ahead.pool is None  # taken, then closed
    drop = ("timings", "documents_processed")  # the candidate stage was cached by then
    assert {k: v for k, v in taken.items() if k not in drop} == {
        k: v for k, v in own.items() if k not in drop
    }
    monkeypatch.undo()

    monkeypatch.setattr(names, "EARLY_WORKERS_DOCS", 12)
    names.prepare(store, config)  # warm: verdicts cached
    assert names._PREPARED == []
    shutil.rmtree(store.root / names._window_table(names.DEFAULT_MODEL))
    monkeypatch.setattr(names, "EARLY_WORKERS_DOCS", 13)
    names.prepare(store, config)  # too few documents
    assert names._PREPARED == []
    monkeypatch.setattr(names, "EARLY_WORKERS_DOCS", 12)
    few = names.Config(top_k=5, ner_workers=2, where="text LIKE 'Memo 1%'")
    names.prepare(store, few)  # the audit's `where` reads fewer documents than 12
    assert names._PREPARED == []
    names.prepare(store, names.Config(top_k=5, ner_workers=2, batch_size=16))
    (other,) = names._PREPARED
    assert names._take_prepared(config) is None  # other NER settings: not taken
    names.release()
    assert names._PREPARED == [] and other.pool is None


def test_a_missing_model_is_named_in_one_line_before_workers_start(store, tmp_path, monkeypatch):
    """The workers load spaCy themselves: a model that is not installed used to break the
    pool (``BrokenProcessPool``, a traceback naming no model). It is now the same one-line
    error as in this process, raised before any worker starts."""
    from sdfkit.errors import SdfError

    records = [
        {"text": f"Memo {i}. Martin Keller signed it. {FILLER[i % 4]}", "concept": "c"}
        for i in range(12)
    ]
    store.append("documents_raw", build_documents(records))
    monkeypatch.setattr(names, "EARLY_WORKERS_DOCS", 12)
    bad = names.Config(top_k=5, ner_workers=2, model="no_such_model")
    with pytest.raises(SdfError, match=r"spaCy model 'no_such_model' is not installed"):
        names.run(store, bad)
    with pytest.raises(SdfError, match="no_such_model"):
        names.prepare(store, bad)
    # a blank pipeline has no NER: refused before anything is read, cached verdicts included
    with pytest.raises(SdfError, match="'blank:en' finds no entities"):
        names.run(store, names.Config(top_k=5, model="blank:en"))
    assert names._PREPARED == []
    (tmp_path / "config.cfg").write_text("[nlp]\n")
    for fine in (names.DEFAULT_MODEL, str(tmp_path)):
        names._check_model(fine)  # an installed package, a folder with a config: no error
    # a folder named as the installed package (an unpacked copy, say): spaCy loads the
    # package, so the check does too
    monkeypatch.chdir(tmp_path)
    (tmp_path / names.DEFAULT_MODEL).mkdir()
    names._check_model(names.DEFAULT_MODEL)
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad, why in (
        (str(empty), "cannot be loaded: the folder has no config.cfg"),
        ("blank:zz", "cannot be loaded: spaCy has no language 'zz'"),
        ("blank:en", "finds no entities"),
    ):
        with pytest.raises(SdfError, match=rf"spaCy model '{re.escape(bad)}' {why}"):
            names._check_model(bad)


def test_a_pipeline_that_cannot_serve_is_one_line_in_workers_and_in_process(tmp_path, monkeypatch):
    """What only loading reveals (a pipeline without NER, a folder whose config is
    damaged) is the same one-line error in the NER workers as in this process. An
    initializer that raised used to break the pool (``BrokenProcessPool``), and a pipeline
    without NER used to pass every candidate as "not a person": zero names, exit 0."""
    from sdfkit.errors import SdfError

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.cfg").write_text("[nlp\nlang = en\n")
    windows = [(f"On day {i}, Jane Doe wrote it.", 11, 19) for i in range(24)]
    monkeypatch.setattr(names, "POOL_MIN_WINDOWS", 10)
    ruler = tmp_path / "ruler"  # a pipeline that loads but sets no entity
    import spacy

    blank = spacy.blank("en")
    blank.add_pipe("sentencizer")
    blank.to_disk(ruler)
    for model, why in (
        (str(ruler), r"finds no entities \(none of its components \['sentencizer'\]"),
        (str(damaged), r"cannot be loaded: "),
    ):
        for workers in (1, 2):
            config = names.Config(model=model, ner_workers=workers, batch_size=8)
            with pytest.raises(SdfError, match=rf"spaCy model '{re.escape(model)}' {why}"):
                list(names.window_hits(None, windows, config, names.STOP_WORDS))


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states in /proc")
def test_ner_workers_end_when_the_audit_process_is_killed(tmp_path):
    """kill -9 of a report leaves no NER worker behind: the workers are the forkserver's
    children, never told of the pool's end, and used to wait on their queue for good."""
    import subprocess
    import sys
    import time

    code = (
        "import os, sys\n"
        "from sdfkit.audits import names\n"
        "ner = names._Ner(names.Config(ner_workers=2), names.STOP_WORDS)\n"
        "ner.start()\n"
        "pids = {ner.pool.submit(os.getpid).result() for _ in range(8)}\n"
        "print(*sorted(ner.pool._processes), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    # Output to files, not pipes: workers that outlive the process would hold a pipe open.
    # stderr apart: the resource tracker outlives the killed process and may warn there of
    # its leaked semaphores at any moment (it once landed in the worker list).
    out, err = tmp_path / "workers.txt", tmp_path / "stderr.txt"
    with out.open("w") as f, err.open("w") as e:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=f, stderr=e)
        assert proc.wait(timeout=120) == -9, err.read_text()[-2000:]
    workers = [int(p) for p in out.read_text().split()]
    assert len(workers) == 2

    def running(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
        except OSError:
            return False

    deadline = time.monotonic() + 30 * names.OWNER_CHECK_SECONDS
    while any(running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in workers if running(p)]
    for pid in left:  # never leave them to later tests
        os.kill(pid, 9)
    assert not left, "NER workers outlived the killed audit process"
