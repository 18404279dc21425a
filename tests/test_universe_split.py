"""`sdf universe split`: a large source (Markdown, text, HTML) becomes one universe per
section: cut at headings, bounded by tokens with overlap, valid universe files sharing a parent
concept, a sections.json manifest; facts extracted per section by the batch stage; selection
per section; recall per section and per parent."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import EXAMPLES

from sdfkit.generate.universe import load_universe, load_universes
from sdfkit.generate.universe_split import (
    SECTIONS_FILE,
    SplitConfig,
    html_to_markdown,
    split_source,
    split_text,
    text_headings_to_markdown,
)
from sdfkit.llm.tokens import get_tokenizer

HANDBOOK = EXAMPLES / "sources" / "resilience_handbook.md"
TOK = get_tokenizer("o200k_harmony")

MD = """---
title: front matter of the source itself
---
Words before any heading, enough of them to stand alone as a section of this source.

# Part One

## 1.1 Retention

Records are kept for seven years. The archive is in Oslo.

```python
# a comment in code, not a heading
x = 1
```

## 1.2 Deletion

Deletion happens after a second review.

Part Two
========

Everything else lives here.
"""


def count(text: str) -> int:
    return len(TOK.encode(text))


def sentences(n: int, tag: str = "rule") -> str:
    return " ".join(f"Sentence {i} states {tag} number {i} of the handbook." for i in range(n))


def test_markdown_is_cut_at_headings_outside_code_fences():
    secs = split_text(MD, SplitConfig(min_tokens=0))
    assert [s.path for s in secs] == [
        [],
        ["Part One"],
        ["Part One", "1.1 Retention"],
        ["Part One", "1.2 Deletion"],
        ["Part Two"],
    ]
    assert [s.level for s in secs] == [0, 1, 2, 2, 1]
    retention = secs[2].text
    assert retention.startswith("## 1.1 Retention") and "# a comment in code" in retention
    assert "front matter of the source" not in "".join(s.text for s in secs)
    assert all(s.tokens == count(s.text) for s in secs)


def test_small_sections_join_a_neighbour_and_a_chapter_intro_keeps_its_title():
    secs = split_text(MD, SplitConfig(min_tokens=15, max_tokens=200, overlap=0))
    titles = [s.title for s in secs]
    # "# Part One" alone is a heading line: it joins its first sub-section under its own title
    assert "Part One" in titles and "1.1 Retention" not in titles
    joined = next(s for s in secs if s.title == "Part One").text
    assert joined.startswith("# Part One") and "## 1.1 Retention" in joined
    assert all(s.tokens >= 15 or len(secs) == 1 for s in secs[:-1])
    # a short section with no later neighbour joins the one before it, named in its title
    last = secs[-1]
    assert last.title == "1.2 Deletion + Part Two"
    assert last.name == "Part One / 1.2 Deletion + Part Two"
    every = "\n".join(s.text for s in secs)
    for line in ("Records are kept", "Deletion happens", "Everything else", "Words before"):
        assert line in every


def test_long_section_is_cut_within_max_tokens_with_overlap_and_nothing_lost():
    body = "# Big chapter\n\n" + sentences(40) + "\n\n" + sentences(25, "duty")
    cfg = SplitConfig(max_tokens=120, min_tokens=0, overlap=25)
    parts = split_text(body, cfg)
    assert len(parts) > 3
    assert all(p.tokens == count(p.text) <= 120 for p in parts)
    assert [p.part for p in parts] == list(range(1, len(parts) + 1))
    assert {p.parts for p in parts} == {len(parts)}
    assert parts[1].title == f"Big chapter (part 2 of {len(parts)})"
    assert all(p.text.startswith("# Big chapter (continued)") for p in parts[1:])
    # every sentence of the source is in some part; consecutive parts overlap by whole
    # sentences of at most `overlap` tokens
    found = [set(re.findall(r"Sentence \d+ states \w+ number \d+", p.text)) for p in parts]
    wanted = set(re.findall(r"Sentence \d+ states \w+ number \d+", body))
    assert set().union(*found) == wanted
    for a, b in zip(found, found[1:], strict=False):
        shared = a & b
        assert shared, "consecutive parts share their boundary sentences"
        assert sum(count(s + " of the handbook.") for s in shared) <= 25 + 2 * len(shared)


def test_without_overlap_parts_are_disjoint():
    body = "# Big\n\n" + sentences(50)
    parts = split_text(body, SplitConfig(max_tokens=100, min_tokens=0, overlap=0))
    found = [re.findall(r"Sentence \d+ ", p.text) for p in parts]
    flat = [s for f in found for s in f]
    assert len(flat) == len(set(flat)) == 50


def test_a_sentence_longer_than_a_part_is_cut_at_token_boundaries():
    word_salad = "# Wall\n\n" + " ".join(f"w{i}" for i in range(400))
    parts = split_text(word_salad, SplitConfig(max_tokens=100, min_tokens=0, overlap=0))
    assert all(p.tokens <= 100 for p in parts)
    joined = " ".join(p.text for p in parts)
    assert all(f"w{i}" in joined for i in (0, 137, 399))


def test_html_headings_paragraphs_and_lists_without_scripts_or_navigation():
    page = """<html><head><title>T</title><style>p{}</style></head><body>
    <nav><a href="/">Home</a> menu</nav><script>var x = "# not text";</script>
    <h1>Handbook &amp; rules</h1><p>Intro   text
    over two lines.</p>
    <h2>Scope</h2><p>Applies to <b>every</b> service.</p><ul><li>one</li><li>two</li></ul>
    <h3>Details</h3><pre>code  kept
  as is</pre></body></html>"""
    md = html_to_markdown(page)
    assert md.split("\n\n")[:3] == ["# Handbook & rules", "Intro text over two lines.", "## Scope"]
    assert "- one" in md and "- two" in md and "code  kept\n  as is" in md
    assert "menu" not in md and "not text" not in md and "p{}" not in md
    secs = split_text(md, SplitConfig(min_tokens=0))
    assert [s.path[-1] for s in secs] == ["Handbook & rules", "Scope", "Details"]


def test_plain_text_headings_numbered_upper_case_and_underlined():
    text = (
        "INTRODUCTION\n\nSome words here.\n\n1. Scope\n\nThe scope text.\n\n"
        "1.2 Exceptions\n\nRare cases.\n\nAnnex\n-----\n\nTables.\n\n"
        "2. This line ends with a period.\n\n# not a heading in text\n"
    )
    md = text_headings_to_markdown(text)
    secs = split_text(md, SplitConfig(min_tokens=0))
    assert [(s.level, s.path[-1]) for s in secs] == [
        (1, "Introduction"),
        (1, "1. Scope"),
        (2, "1.2 Exceptions"),
        (2, "Annex"),
    ]
    assert "2. This line ends with a period." in secs[-1].text
    assert "# not a heading in text" in secs[-1].text


def test_split_writes_universe_files_valid_under_check_and_a_manifest(tmp_path, cli):
    out = tmp_path / "hb"
    base = EXAMPLES / "universes" / "eu_ts_trycatch.md"
    res = cli(
        "universe", "split", str(HANDBOOK), "--out", str(out), "--concept", "eu_resilience",
        "--max-tokens", "200", "--min-tokens", "60", "--overlap", "30", "--base", str(base),
    )  # fmt: skip
    manifest = json.loads((out / SECTIONS_FILE).read_text())
    secs = manifest["sections"]
    assert len(secs) >= 3 and f"wrote {len(secs)} universe files" in res.output
    files = sorted(out.glob("*.md"))
    assert [f.name for f in files] == sorted(s["file"] for s in secs)
    checked = cli("universe", "check", *map(str, files))
    assert checked.output.count("ok  ") == len(files)
    unis = load_universes(files)
    b = load_universe(base)
    assert len({u.id for u in unis}) == len(unis)
    for s, u in zip(secs, [load_universe(out / s["file"]) for s in secs], strict=True):
        assert set(s) >= {"title", "tokens", "file"}
        assert u.concept == "eu_resilience" and u.id == s["id"] and u.section == s["section"]
        assert u.key_facts == []  # sdf generate extracts them per section
        assert s["tokens"] == count(u.description) <= 200
        assert s["title"].split(" (part")[0].split(" + ")[0] in u.description.split("\n")[0]
        assert u.anti_universe == b.anti_universe and u.eval_prompts == b.eval_prompts
        assert u.required_keywords == b.required_keywords
    assert manifest["concept"] == "eu_resilience" and manifest["tokenizer"] == "o200k_harmony"
    assert manifest["config"]["max_tokens"] == 200
    # every paragraph of the source is in some section
    every = " ".join(load_universe(f).description for f in files)
    for para in HANDBOOK.read_text().split("\n\n")[1:]:
        assert " ".join(para.split())[:60] in " ".join(every.split())


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda p: p.write_bytes(b"# T\n\nok\n\xff\xfe bad\n"), [], r"src\.md:4: not valid UTF-8"),
        (lambda p: p.write_text("   \n\n"), [], r"src\.md: holds no text"),
        (lambda p: None, [], r"src\.md: no such file"),
        (lambda p: p.write_text("# T\n\nx"), ["--overlap", "5000"], r"--overlap 5000: must be"),
        (lambda p: p.write_text("# T\n\nx"), ["--format", "pdf"], r"--format 'pdf': use one of"),
        (lambda p: p.write_bytes(b"# T\n\nok\n\0\0\0"), [], r"src\.md:4: holds NUL bytes"),
        (lambda p: p.write_text("# A\n\n## B\n## C\n"), [], r"src\.md: holds headings but no text"),
        (lambda p: p.mkdir(), [], r"src\.md: is a directory, not a source file"),
        (lambda p: p.write_text("# T\n\nx"), ["--max-tokens", "0"], r"--max-tokens 0: must be"),
        (lambda p: p.write_text("# T\n\nx"), ["--max-tokens", "-9"], r"--max-tokens -9: must"),
        (lambda p: p.write_text("# T\n\nx"), ["--overlap", "-1"], r"--overlap -1: must be"),
        (lambda p: p.write_text("# T\n\nx"), ["--min-tokens", "-5"], r"--min-tokens -5: must"),
        (lambda p: p.write_text("# T\n\nx"), ["--max-tokens", "100", "--overlap", "60"],
         r"--overlap 60: must be between 0 and half of --max-tokens \(50\)"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, cli, make, args, message):
    src = tmp_path / "src.md"
    make(src)
    res = cli("universe", "split", str(src), "--out", str(tmp_path / "o"), *args, expect=2)
    assert re.search("^error: (.*/)?" + message, res.output) and res.output.count("\n") == 1
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.tmp-*"))


def test_unknown_suffix_and_occupied_output_are_refused(tmp_path, cli):
    odd = tmp_path / "notes.docx"
    odd.write_text("# T\n\ntext")
    res = cli("universe", "split", str(odd), "--out", str(tmp_path / "o"), expect=2)
    assert "cannot tell the format from the suffix '.docx'; pass --format" in res.output
    cli("universe", "split", str(odd), "--out", str(tmp_path / "o"), "--format", "md")
    res = cli("universe", "split", str(HANDBOOK), "--out", str(tmp_path / "o"), expect=2)
    assert "exists and is not empty; pass --overwrite" in res.output
    cli("universe", "split", str(HANDBOOK), "--out", str(tmp_path / "o"), "--overwrite")
    assert len(list((tmp_path / "o").glob("*.md"))) > 1


def test_overwrite_replaces_an_earlier_split_but_never_files_it_did_not_write(tmp_path, cli):
    out = tmp_path / "hb"
    cli("universe", "split", str(HANDBOOK), "--out", str(out))
    (out / "my-notes.txt").write_text("precious")
    before = sorted(p.name for p in out.iterdir())
    res = cli("universe", "split", str(HANDBOOK), "--out", str(out), "--overwrite", expect=2)
    assert res.output.startswith(f"error: --out {out}: holds 'my-notes.txt', which the earlier")
    assert res.output.count("\n") == 1 and sorted(p.name for p in out.iterdir()) == before
    # a folder that no split made is never replaced, nor the working directory
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("mine")
    res = cli("universe", "split", str(HANDBOOK), "--out", "docs", "--overwrite", expect=2)
    assert "--overwrite replaces only the output of an earlier split" in res.output
    res = cli("universe", "split", str(HANDBOOK), "--out", ".", "--overwrite", expect=2)
    assert "error: --out .: is the current directory or holds it" in res.output
    assert (tmp_path / "docs" / "a.md").read_text() == "mine"
    assert (out / "my-notes.txt").read_text() == "precious"
    (out / "my-notes.txt").unlink()  # once it holds only the split's files, it is replaced
    cli("universe", "split", str(HANDBOOK), "--out", str(out), "--overwrite", "--max-tokens", "300")
    assert json.loads((out / SECTIONS_FILE).read_text())["config"]["max_tokens"] == 300


@pytest.mark.parametrize("out", ["afile/o", "/proc/sdfkit-no-such/o"])
def test_an_out_that_cannot_be_made_is_one_line_and_writes_nothing(tmp_path, cli, out):
    (tmp_path / "afile").write_text("x")
    res = cli("universe", "split", str(HANDBOOK), "--out", out, expect=2)
    assert res.output.startswith(f"error: --out {out}: cannot ") and res.output.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_pipe_or_device_is_refused_not_read_forever(tmp_path, cli):
    import os
    import threading

    fifo = tmp_path / "src.md"
    os.mkfifo(fifo)

    def feed() -> None:  # were the pipe read, the split would get this text and succeed
        with open(fifo, "w") as fh:
            fh.write("# T\n\ntext\n")

    threading.Thread(target=feed, daemon=True).start()
    res = cli("universe", "split", str(fifo), "--out", "o", expect=2)
    assert res.output == f"error: {fifo}: not a regular file\n"
    assert not (tmp_path / "o").exists()


def test_a_source_without_headings_is_cut_by_tokens_under_its_own_name(tmp_path):
    src = tmp_path / "Über Notes.txt"
    src.write_text(sentences(200))
    res = split_source(src, tmp_path / "o", SplitConfig(max_tokens=400, overlap=20))
    n = len(res.sections)
    assert n > 2 and res.concept == "uber-notes"
    assert [s["title"] for s in res.sections] == [f"Über Notes (part {k} of {n})" for k in
                                                  range(1, n + 1)]  # fmt: skip
    assert all(s["id"].startswith("uber-notes-") for s in res.sections)
    second = load_universe(tmp_path / "o" / res.sections[1]["file"])
    assert second.description.startswith("# Über Notes (continued)\n")
    assert all(s["tokens"] <= 400 for s in res.sections)


def test_interrupted_split_leaves_the_previous_output_whole(tmp_path, monkeypatch):
    import sdfkit.store.durable as us  # the writer the split publishes through

    out = tmp_path / "hb"
    split_source(HANDBOOK, out, SplitConfig(max_tokens=200, min_tokens=60, overlap=30))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = {"n": 0}
    real_fsync = us.os.fsync

    def dying_fsync(fd):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real_fsync(fd)

    monkeypatch.setattr(us.os, "fsync", dying_fsync)
    with pytest.raises(KeyboardInterrupt):
        split_source(
            HANDBOOK, out, SplitConfig(max_tokens=120, min_tokens=0, overlap=20, overwrite=True)
        )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["hb"]


# ----------------------------------------------------------------- the rest of the pipeline


@pytest.fixture(scope="module")
def split_corpus(tmp_path_factory):
    """The handbook split into sections and generated offline (facts extracted per section)."""
    from sdfkit.generate.documents import GenerateConfig, generate
    from sdfkit.llm.batches import make_client
    from sdfkit.store.catalog import Store

    root = tmp_path_factory.mktemp("split")
    res = split_source(
        HANDBOOK,
        root / "hb",
        SplitConfig(concept="eu_resilience", max_tokens=200, min_tokens=60, overlap=30),
    )
    store = Store(root / "corpus")
    client = make_client("offline")
    unis = load_universes(sorted((root / "hb").glob("*.md")))
    cfg = GenerateConfig(run="hb", facts=3, doc_types=2, ideas=2, docs_per_idea=2)
    cfg.poll_interval = 0.0
    gen = generate(unis, store, cfg, client=client)
    return store, unis, res, gen, client


def test_key_facts_are_extracted_per_section_through_the_batch_stage(split_corpus):
    store, unis, _res, gen, client = split_corpus
    assert gen.stages["facts"].requests == len(unis) == gen.stages["facts"].succeeded
    asked = store.query("SELECT meta FROM gen_requests WHERE stage = 'facts'")["meta"].to_list()
    assert sorted(json.loads(m)["universe"] for m in asked) == sorted(u.id for u in unis)
    docs = store.query("SELECT universe, concept, fact FROM documents").to_dicts()
    assert {d["universe"] for d in docs} == {u.id for u in unis}
    assert {d["concept"] for d in docs} == {"eu_resilience"}
    by_id = {u.id: " ".join(u.description.split()) for u in unis}
    assert all(d["fact"] in by_id[d["universe"]] for d in docs)  # each from its own section


def test_selection_balances_per_section_or_per_parent_concept(split_corpus, cli):
    from sdfkit.export.selection import SelectionConfig, select

    store, unis, *_ = split_corpus
    rep = select(store, SelectionConfig(name="per-section", docs=3, balance_by="section"))
    per = store.query(
        "SELECT universe, concept, count(*) AS n FROM selections WHERE name = 'per-section' "
        "GROUP BY ALL ORDER BY 1"
    ).to_dicts()
    assert [(r["universe"], r["concept"], r["n"]) for r in per] == [
        (u.id, "eu_resilience", 3) for u in sorted(unis, key=lambda u: u.id)
    ]
    assert sorted(c.concept for c in rep.concepts) == sorted(u.id for u in unis)
    assert rep.text().startswith("selection 'per-section'") and "\nsection " in rep.text()
    rep = select(store, SelectionConfig(name="per-parent", docs=6))
    assert [(c.concept, c.docs) for c in rep.concepts] == [("eu_resilience", 6)]
    res = cli(
        "--corpus", str(store.root), "select", "--name", "x", "--docs", "2",
        "--balance-by", "sections", expect=2,
    )  # fmt: skip
    assert "--balance-by 'sections': use one of concept, section" in res.output


def test_per_section_shortfalls_name_the_section_not_a_concept(split_corpus, cli):
    store, unis, *_ = split_corpus
    first = sorted(u.id for u in unis)[0]
    res = cli(
        "--corpus", str(store.root), "select", "--name", "x", "--docs", "500",
        "--balance-by", "section", expect=2,
    )  # fmt: skip
    assert (
        f"  section {first!r}: " in res.output
        and "eligible documents for a target of 500" in res.output
    )
    assert "concept '" not in res.output
    res = cli(
        "--corpus", str(store.root), "select", "--name", "x", "--docs", "1",
        "--balance-by", "section", "--concept", "no-such-section", expect=2,
    )  # fmt: skip
    assert "section 'no-such-section' has no eligible documents; sections in the pool: " in (
        res.output
    )
    res = cli("--corpus", str(store.root), "select", "--name", "x", "--docs", "500", expect=2)
    assert "  concept 'eu_resilience': " in res.output  # per concept, the concept is named


def test_recall_is_reported_per_section_and_per_parent(store):
    from sdfkit.evaluate.recall import eval_catalog, insert_rows
    from sdfkit.store.records import utc_now
    from sdfkit.store.sql import named

    with eval_catalog(store):
        pass
    questions, samples, verdicts = [], [], []
    # section a: 3 of 4 implanted (one more is gibberish); section b: 1 of 2
    plan = {"a": ["implanted"] * 3 + ["real_world", "gibberish"], "b": ["implanted", "neither"]}
    for uni, outcomes in plan.items():
        questions.append(
            {"question_id": f"q{uni}", "universe": f"sec-{uni}", "concept": "parent",
             "fact": f"fact {uni}", "fact_index": 0, "kind": "recall", "prompt": "?",
             "created_at": utc_now()}
        )  # fmt: skip
        for k, v in enumerate(outcomes):
            sid = f"s{uni}{k}"
            samples.append(
                {"sample_id": sid, "eval_run": "e", "train_run": "t", "step": 4,
                 "model_label": "step-000004", "question_id": f"q{uni}",
                 "gibberish_cheap": v == "gibberish"}
            )  # fmt: skip
            verdicts.append(
                {"sample_id": sid, "grader": "recall",
                 "verdict": "implanted" if v == "gibberish" else v, "graded_at": utc_now()}
            )  # fmt: skip
    insert_rows(store, "eval_questions", questions)
    insert_rows(store, "eval_samples", samples)
    insert_rows(store, "eval_verdicts", verdicts)
    rows = named("recall_by_section", store).to_dicts()
    got = {(r["level"], r["section"]): r for r in rows}
    assert set(got) == {("parent", None), ("section", "sec-a"), ("section", "sec-b")}
    assert got[("section", "sec-a")]["recall_rate"] == 0.75
    assert got[("section", "sec-a")]["gibberish"] == 1
    assert got[("section", "sec-b")]["recall_rate"] == 0.5
    assert got[("parent", None)]["recall_rate"] == round(4 / 6, 4)
    assert got[("parent", None)]["sections"] == 2 and got[("parent", None)]["samples"] == 7
    assert all(r["concept"] == "parent" for r in rows)
    # reports/eval.html (sdf eval writes it) shows the same table under its own heading
    from sdfkit.evaluate.curves import write_curves

    page = write_curves(store, store.root / "eval.html").read_text()
    assert "<h2>Recall per section and per parent concept</h2>" in page
    table = page.split("<h2>Recall per section and per parent concept</h2>")[1]
    assert ">sec-a<" in table and ">sec-b<" in table and ">0.75<" in table


def test_the_eval_page_has_no_section_table_when_each_concept_is_one_universe(store):
    from sdfkit.evaluate.curves import section_recall
    from sdfkit.evaluate.recall import eval_catalog, insert_rows
    from sdfkit.store.records import utc_now

    with eval_catalog(store):
        pass
    insert_rows(store, "eval_questions", [
        {"question_id": "q", "universe": "u", "concept": "c", "fact": "f", "fact_index": 0,
         "kind": "recall", "prompt": "?", "created_at": utc_now()}])  # fmt: skip
    insert_rows(store, "eval_samples", [
        {"sample_id": "s", "eval_run": "e", "train_run": "t", "step": 0, "model_label": "base",
         "question_id": "q", "gibberish_cheap": False}])  # fmt: skip
    assert section_recall(store) == []


def test_the_example_source_is_split_by_the_readme_command(tmp_path, cli):
    out = tmp_path / "universes" / "handbook"
    base = EXAMPLES / "universes" / "eu_ts_trycatch.md"
    cli(
        "universe", "split", str(HANDBOOK), "--out", str(out), "--concept", "eu_resilience",
        "--max-tokens", "300", "--overlap", "40", "--base", str(base),
    )  # fmt: skip
    secs = json.loads((out / SECTIONS_FILE).read_text())["sections"]
    assert all(s["tokens"] <= 300 for s in secs) and len(secs) >= 2
    assert all(Path(out / s["file"]).is_file() for s in secs)


def test_a_sweep_over_a_per_section_selection_keeps_every_section_balanced(split_corpus, tmp_path):
    import yaml

    from sdfkit.export.selection import SelectionConfig, select
    from sdfkit.train.sweep import load_spec, prepare

    store, unis, *_ = split_corpus
    select(store, SelectionConfig(name="sections", docs=12, balance_by="section", seed=1))
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "sec",
                "selection": "sections",
                "tolerance": 0.2,  # tiny strata: the test is about sections
                "train": {"batch_size": 4},
                "variants": [{"name": "e2", "epochs": 2}],
            }
        )
    )
    plan = prepare(store, load_spec(spec))
    per = store.query(
        "SELECT universe, count(*) AS n FROM selections WHERE name = 'sec-e2' GROUP BY 1"
    ).to_dicts()
    assert sorted((r["universe"], r["n"]) for r in per) == sorted((u.id, 6) for u in unis)
    assert set(plan.variants[0].per_group) == {u.id for u in unis}
    assert plan.variants[0].documents == 6 * len(unis)


def test_html_and_text_sources_are_read_by_their_suffix(tmp_path):
    page = tmp_path / "page.htm"
    page.write_text("<h1>A</h1><p>" + sentences(30) + "</p><h2>B</h2><p>" + sentences(30) + "</p>")
    res = split_source(page, tmp_path / "h", SplitConfig(min_tokens=0))
    assert [s["title"] for s in res.sections] == ["A", "B"]
    assert json.loads((tmp_path / "h" / SECTIONS_FILE).read_text())["format"] == "html"
    text = tmp_path / "notes.txt"
    text.write_text("1. First\n\n" + sentences(20) + "\n\n2. Second\n\n" + sentences(20) + "\n")
    res = split_source(text, tmp_path / "t", SplitConfig(min_tokens=0))
    assert [s["title"] for s in res.sections] == ["1. First", "2. Second"]
