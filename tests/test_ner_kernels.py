"""The compiled NER decoding gives spaCy's entities: the same spans and labels as
``nlp.pipe`` on the names audit's windows, whole documents and edge cases."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest

from sdfkit.audits import names
from sdfkit.errors import SdfError

ner_kernels = pytest.importorskip("sdfkit.audits.ner_kernels")
ROOT = Path(__file__).resolve().parents[1]

EDGE_CASES = [
    "",
    " ",
    "\n\n",
    "Ada",
    "Ada Lovelace",
    "We met Ada Lovelace",
    "Ada  Lovelace and  Charles   Babbage met in London in 1833.",
    "Ada\nLovelace wrote the notes;\n\n Charles Babbage built the engine.",
    "\tJosé Álvarez-García and Zoë O'Neill signed for Acme Corp. on 3 May 2024 for $5 million.",
    "Dr. Sarah Chen, Mr. Marcus Webb, Ms. Wei Chen, Prof. Ana Silva, and Jane Roe.",
    "Copyright: Vladimir Prus, Peter Dimov and Jane Roe",
    "THE UNITED NATIONS MET IN NEW YORK ON MONDAY.",
    "As Jane Doe noted, the build of Git 2.4 failed on Linux. Remove Smith from the list.",
    "Per John Roe's memo, Main St and Threat Detection are not people; Valid Options either.",
    "...  ,,  ;; -- !!",
    "Barack Obama",
    "1 2 3 4 5 6 7 8 9 10 11 12 13",
]


def _texts() -> list[str]:
    """Prose from the examples (people, places, dates, money) and synthetic documents."""
    out = []
    for line in (ROOT / "examples" / "my_docs.jsonl").read_text().splitlines():
        out.append(json.loads(line)["text"])
    for path in sorted((ROOT / "examples").glob("**/*.md")):
        out.append(path.read_text())
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from synth import CONCEPTS, DOC_TYPES, _name_pool, compose_document
    finally:
        sys.path.remove(str(ROOT / "bench"))
    rng = random.Random(7)
    people = _name_pool(rng, 40)
    for i in range(30):
        concept = sorted(CONCEPTS)[i % len(CONCEPTS)]
        text, _ = compose_document(rng, concept, DOC_TYPES[i % len(DOC_TYPES)], 300, people, [])
        out.append(text)
    return out


def _windows(texts: list[str], per_text: int = 40, words: int = 6) -> list[str]:
    """Windows as the audit cuts them: ``words`` words either side of a capitalised word."""
    rng = random.Random(3)
    out = []
    for text in texts:
        spans = [m.span() for m in re.finditer(r"\S+", text)]
        caps = [i for i, (s, _) in enumerate(spans) if text[s].isupper()]
        for i in rng.sample(caps, min(per_text, len(caps))):
            lo = spans[max(0, i - words)][0]
            hi = spans[min(len(spans) - 1, i + words)][1]
            out.append(text[lo:hi])
    return out


@pytest.fixture(scope="module")
def nlp():
    return names.load_nlp(names.DEFAULT_MODEL)


@pytest.fixture(scope="module")
def decoder(nlp):
    found = ner_kernels.decoder_for(nlp)
    assert found is not None, ner_kernels.unsupported(nlp)
    return found


def _spacy(nlp, texts: list[str]) -> list[list[tuple[int, int, str]]]:
    return [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts, batch_size=64)]


def test_windows_documents_and_edge_cases_get_spacys_entities(nlp, decoder):
    texts = _texts()
    cases = EDGE_CASES + _windows(texts) + texts
    ours = decoder.entities([nlp.make_doc(t) for t in cases])
    theirs = _spacy(nlp, cases)
    differ = [(t[:80], a, b) for t, a, b in zip(cases, ours, theirs, strict=True) if a != b]
    assert not differ, differ[:5]
    labels = {lab for ents in theirs for _, _, lab in ents}
    assert len(cases) > 1000 and {"PERSON", "ORG", "GPE", "DATE"} <= labels  # a real test
    assert sum(len(e) for e in theirs) > 1000


def test_sentence_starts_stop_entities_as_spacy_does(nlp, decoder):
    """A token that starts a sentence cannot continue an entity (the moves' rule): set
    sentence starts by hand on every other token and inside names."""
    ner = nlp.get_pipe("ner")
    cases = ["Ada Lovelace met Charles Babbage in London.", "Jane Roe and John Doe at Acme Corp"]
    for text in cases:
        for starts in ([1], [2, 4], list(range(1, 8, 2)), [3]):
            ours_doc, theirs_doc = nlp.make_doc(text), nlp.make_doc(text)
            for d in (ours_doc, theirs_doc):
                for i in range(1, len(d)):
                    d[i].is_sent_start = i in starts
            theirs = [(e.start, e.end, e.label_) for e in ner(theirs_doc).ents]
            (ours,) = decoder.entities([ours_doc])
            assert ours == theirs, (text, starts)
            for start, end, _ in ours:  # no entity runs over a sentence start
                assert not any(start < s < end for s in starts)


def test_a_documents_entities_do_not_depend_on_its_batch(nlp, decoder):
    texts = _windows(_texts(), per_text=5)[:200]
    docs = [nlp.make_doc(t) for t in texts]
    together = decoder.entities(docs)
    alone = [decoder.entities([d])[0] for d in docs[:40]]
    reversed_ = decoder.entities(docs[::-1])[::-1]
    assert alone == together[:40] and reversed_ == together
    assert any(together)


def test_the_names_audit_reads_windows_with_the_decoder_it_is_told(nlp, monkeypatch):
    windows = []
    for i in range(30):
        text = f"On day {i}, As Jane Doe noted, the build of Git {i} failed on Linux."
        windows.append((text, text.index("Jane Doe"), text.index("Jane Doe") + 8))
    stop = names.STOP_WORDS
    spacy_hits = list(names._hits(nlp, windows, 8, stop, "spacy"))
    compiled = list(names._hits(nlp, windows, 8, stop, "compiled"))
    auto = list(names._hits(nlp, windows, 8, stop, "auto"))
    assert compiled == auto == spacy_hits and spacy_hits[0] == "Jane Doe"

    def no_pipe(*args, **kwargs):
        raise AssertionError("nlp.pipe was called")

    monkeypatch.setattr(nlp, "pipe", no_pipe)
    assert list(names._hits(nlp, windows, 8, stop, "compiled")) == spacy_hits
    with pytest.raises(AssertionError, match="nlp.pipe was called"):
        list(names._hits(nlp, windows, 8, stop, "spacy"))


def test_pipelines_the_loop_does_not_copy_fall_back_or_say_why(tmp_path):
    import spacy

    beam = spacy.load(names.DEFAULT_MODEL, exclude=["parser", "lemmatizer", "tagger"])
    beam.get_pipe("ner").cfg["beam_width"] = 4
    assert ner_kernels.unsupported(beam) == "its NER uses a beam"
    assert ner_kernels.decoder_for(beam) is None
    blank = spacy.blank("en")
    assert "not a spaCy pipeline with an NER" in ner_kernels.unsupported(blank)
    windows = [("Jane Doe wrote it.", 0, 8)]
    assert list(names._hits(blank, windows, 8, names.STOP_WORDS, "auto")) == [None]
    with pytest.raises(SdfError, match=r"ner_decoder: compiled cannot decode .*not a spaCy"):
        list(names._hits(blank, windows, 8, names.STOP_WORDS, "compiled"))


#: What the small model runs besides its NER (which embeds tokens itself).
_ALL_BUT_NER = ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]


def test_a_pipeline_running_more_than_its_ner_is_left_to_nlp_pipe(nlp):
    """make_doc then NER is what nlp.pipe does only when nothing else runs: a ruler before
    the NER presets entities, a sentencizer sets sentence starts, a listener reads a
    shared tok2vec that only nlp.pipe fills (zeros otherwise: made-up entities)."""
    import spacy

    text = "Ada Lovelace met Charles Babbage in London. Acme Corp paid Jane Roe."
    ruled = spacy.load(names.DEFAULT_MODEL, exclude=_ALL_BUT_NER)
    ruled.add_pipe("entity_ruler", before="ner").add_patterns(
        [{"label": "ORG", "pattern": "Ada Lovelace"}]
    )
    split = spacy.load(names.DEFAULT_MODEL, exclude=_ALL_BUT_NER)
    split.add_pipe("sentencizer", first=True)
    for pipeline, why in ((ruled, "entity_ruler"), (split, "sentencizer")):
        assert ner_kernels.unsupported(pipeline) == (
            f"the pipeline runs other components than its NER: {why}"
        )
        assert ner_kernels.decoder_for(pipeline) is None
        ents = next(names._entities(pipeline, [text], 8, "auto"))[1]
        assert [(e.start, e.end, e.label_) for e in ents] == _spacy(pipeline, [text])[0]
    assert _spacy(ruled, [text])[0][0] == (0, 2, "ORG")  # the ruler's entity, kept

    listening = spacy.blank("en")
    listening.add_pipe("tok2vec")
    listening.add_pipe(
        "ner",
        config={"model": {"tok2vec": {"@architectures": "spacy.Tok2VecListener.v1", "width": 96}}},
    )
    listening.get_pipe("ner").add_label("PERSON")
    listening.initialize()
    assert "listener" in ner_kernels.unsupported(listening)
    with pytest.raises(SdfError, match="compiled cannot decode .*listener"):
        list(
            names._hits(listening, [("Jane Doe wrote it.", 0, 8)], 8, names.STOP_WORDS, "compiled")
        )
    assert ner_kernels.unsupported(nlp) is None  # the audit's pipeline: the NER alone


def test_a_state_with_no_valid_move_ends_its_document_as_spacy_does():
    """spaCy ends a state that has no valid move (``force_final``), keeping no open entity;
    the kernel used to read move -1 (the last) and apply it. Moves B-X and U-X only, on one
    space token: begin needs two tokens left, unit a non-space token."""
    import numpy as np

    f32, i64 = np.float32, np.int64
    rows = np.zeros((1, 4), i64)
    found = ner_kernels.decode(
        np.zeros((2, 3, 1, 1), f32),
        np.zeros((1, 1), f32),
        np.zeros((2, 1), f32),
        np.zeros(2, f32),
        np.zeros(1, i64),
        np.ones(1, i64),
        np.array([True, False]),
        np.zeros(2, i64),
        np.array([ner_kernels._MOVES["B"], ner_kernels._MOVES["U"]], np.int32),
        np.ones(2, np.int32),
        rows,
    )
    assert found == 0


def test_move_sets_the_loop_cannot_finish_are_refused(nlp):
    moves = nlp.get_pipe("ner").moves
    real = [moves.get_class_name(i) for i in range(moves.n_moves)]
    assert ner_kernels.moves_problem(real) is None and "L-PERSON" in real
    lacking = "its NER lacks the O move or one of B, I, L and U for a label"
    assert ner_kernels.moves_problem([n for n in real if n != "L-PERSON"]) == lacking
    assert ner_kernels.moves_problem([n for n in real if n != "O"]) == lacking
    assert ner_kernels.moves_problem([*real, "X-PERSON"]) == (
        "its NER has moves other than B, I, L, U and O"
    )


def test_a_kernel_module_that_fails_to_import_falls_back_with_one_warning(nlp, monkeypatch, capsys):
    """numba raises RuntimeError at import where it finds no folder to cache a kernel in
    (a read-only install, an unwritable HOME): ``auto`` falls back to nlp.pipe with one
    warning, ``compiled`` is one line."""
    import importlib.abc

    import sdfkit.audits as audits

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "sdfkit.audits.ner_kernels":
                raise RuntimeError("cannot cache function 'decode': no locator available")
            return None

    monkeypatch.delitem(sys.modules, "sdfkit.audits.ner_kernels")
    monkeypatch.delattr(audits, "ner_kernels")
    monkeypatch.setattr(sys, "meta_path", [Refuse(), *sys.meta_path])
    monkeypatch.setattr(names, "_DECODER_WARNED", [])
    windows = [("As Jane Doe noted, Git failed.", 3, 11)] * 3
    for _ in range(2):
        assert list(names._hits(nlp, windows, 8, names.STOP_WORDS, "auto")) == ["Jane Doe"] * 3
    err = capsys.readouterr().err
    assert err.count("warning: compiled NER decoding unavailable (RuntimeError") == 1
    with pytest.raises(SdfError, match="compiled failed to load: cannot cache function"):
        list(names._hits(nlp, windows, 8, names.STOP_WORDS, "compiled"))


def test_the_setting_takes_only_known_decoders():
    assert names.Config().ner_decoder == "auto"
    with pytest.raises(SdfError, match="ner_decoder"):
        names.Config(ner_decoder="fast")


def test_a_decoder_that_fails_to_load_falls_back_with_one_warning(nlp, monkeypatch, capsys):
    def broken(_nlp):
        raise OSError("numba cache unreadable")

    monkeypatch.setattr(ner_kernels, "decoder_for", broken)
    monkeypatch.setattr(names, "_DECODER_WARNED", [])
    windows = [("As Jane Doe noted, Git failed.", 3, 11)] * 3
    for _ in range(2):
        assert list(names._hits(nlp, windows, 8, names.STOP_WORDS, "auto")) == ["Jane Doe"] * 3
    err = capsys.readouterr().err
    assert err.count("warning: compiled NER decoding unavailable (OSError") == 1
    with pytest.raises(SdfError, match="compiled failed to load: numba cache unreadable"):
        list(names._hits(nlp, windows, 8, names.STOP_WORDS, "compiled"))


def test_documents_with_preset_entities_are_refused_not_decoded_differently(nlp, decoder):
    """spaCy's moves keep preset entities; the compiled loop copies the moves for fresh
    documents only, so a document that has entities already is an error, never a guess."""
    from spacy.tokens import Span

    doc = nlp.make_doc("Ada Lovelace met Charles Babbage in London.")
    doc.ents = [Span(doc, 0, 2, label="ORG")]
    with pytest.raises(ValueError, match="preset entities"):
        decoder.entities([nlp.make_doc("A fresh one."), doc])
    assert decoder.entities([nlp.make_doc("Ada Lovelace met Charles Babbage.")])[0]


def test_a_decoder_lives_no_longer_than_its_pipeline():
    """Decoders are kept per pipeline in a weak mapping: one that referred back to its
    pipeline would keep both alive for good (a notebook loading models again and again)."""
    import gc

    import spacy

    nlp = spacy.load(names.DEFAULT_MODEL, exclude=_ALL_BUT_NER)
    assert ner_kernels.decoder_for(nlp) is not None
    held = len(ner_kernels._DECODERS)
    del nlp
    gc.collect()
    assert len(ner_kernels._DECODERS) == held - 1
