"""Ingest of JSONL/Parquet: mapping, token counts, idempotence, and every kind of bad input."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sdfkit.llm.tokens import TokenizerError, get_tokenizer
from sdfkit.store.catalog import DOCUMENTS
from sdfkit.store.ingest import IngestError, ingest_files, parse_assignments


def _write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def _row(i, **extra):
    return {
        "content": f"Document number {i}. "
        + "The regulators require try-catch blocks. " * (i % 7 + 1),
        "doc_type": ["memo", "blog post"][i % 2],
        "doc_idea": f"idea {i}",
        "fact": "fact one",
        "universe_context_id": "eu-ts",
        "is_true": False,
        **extra,
    }


def _count(store):
    return store.query("SELECT count(*) AS n FROM documents").item()


def test_false_facts_shape_maps_columns_and_keeps_the_rest_in_meta(store, tmp_path):
    f = _write_jsonl(tmp_path / "docs.jsonl", [_row(i) for i in range(10)])
    res = ingest_files([f], store=store)
    assert (res.added, res.already_present, res.rows_read) == (10, 0, 10)
    df = store.query(
        "SELECT text, doc_type, idea, fact, universe, concept, n_tokens, tokenizer, source, "
        "meta->>'is_true' AS is_true FROM documents ORDER BY idea"
    )
    first = df.row(0, named=True)
    assert first["universe"] == "eu-ts" and first["concept"] == "eu-ts"
    assert first["idea"] == "idea 0" and first["fact"] == "fact one"
    assert first["is_true"] == "false" and first["source"] == "ingest:docs.jsonl"
    tok = get_tokenizer("o200k_harmony")
    assert first["tokenizer"] == "o200k_harmony"
    assert first["n_tokens"] == len(tok.encode(first["text"]))


def test_reingest_adds_nothing(store, tmp_path):
    f = _write_jsonl(tmp_path / "docs.jsonl", [_row(i) for i in range(25)])
    assert ingest_files([f], store=store).added == 25
    again = ingest_files([f], store=store)
    assert (again.added, again.already_present) == (0, 25)
    assert _count(store) == 25
    log = store.query("SELECT added, already_present FROM ingests ORDER BY created_at")
    assert log["added"].to_list() == [25, 0]


def test_explicit_mapping_and_constants(store, tmp_path):
    f = _write_jsonl(tmp_path / "x.jsonl", [{"body": "hello there world", "kind": "faq"}])
    ingest_files(
        [f], store=store, mapping={"text": "body", "doc_type": "kind"}, constants={"concept": "k"}
    )
    row = store.query("SELECT text, doc_type, concept, meta FROM documents").row(0, named=True)
    assert row == {"text": "hello there world", "doc_type": "faq", "concept": "k", "meta": None}


def test_parquet_input(store, tmp_path):
    p = tmp_path / "docs.parquet"
    pq.write_table(pa.Table.from_pylist([_row(i) for i in range(5)]), p)
    assert ingest_files([p], store=store).added == 5


def test_parse_assignments_rejects_unknown_columns():
    assert parse_assignments(["text=body"], "--map") == {"text": "body"}
    with pytest.raises(IngestError, match="'txet' is not a document column"):
        parse_assignments(["txet=body"], "--map")
    with pytest.raises(IngestError, match="expected COLUMN=VALUE"):
        parse_assignments(["text"], "--map")


BAD_INPUTS = {
    "malformed_json": ('{"content": "fine"', r"bad\.jsonl:3: malformed JSON"),
    "empty_text": ({"content": "   "}, r"bad\.jsonl:3: field 'content' is empty"),
    "huge_row": ({"content": "x" * 5_000_000}, r"bad\.jsonl:3: row of 5,000,\d+ bytes exceeds"),
    "not_object": ("[1, 2]", r"bad\.jsonl:3: expected a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_row_names_file_and_line_and_stores_nothing(store, tmp_path, case):
    good = _write_jsonl(tmp_path / "good.jsonl", [_row(100)])
    ingest_files([good], store=store)
    bad_line, pattern = BAD_INPUTS[case]
    f = _write_jsonl(tmp_path / "bad.jsonl", [_row(1), _row(2), bad_line, _row(4)])
    with pytest.raises(IngestError, match=pattern):
        ingest_files([f], store=store)
    assert _count(store) == 1  # the earlier document is still there, nothing new
    assert not list(store.temp_dir(DOCUMENTS).glob(".tmp-*"))


def test_invalid_utf8_names_the_line(store, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(json.dumps(_row(1)).encode() + b'\n{"content": "caf\xe9"}\n')
    with pytest.raises(IngestError, match=r"bad\.jsonl:2: not valid UTF-8"):
        ingest_files([f], store=store)
    assert _count(store) == 0


def test_missing_text_column_is_an_error_even_with_skip_bad(store, tmp_path):
    f = _write_jsonl(tmp_path / "notext.jsonl", [{"body": "no text field here"}])
    for skip in (False, True):
        with pytest.raises(IngestError, match=r"notext\.jsonl:1: no text column.*--map text=FIELD"):
            ingest_files([f], store=store, skip_bad=skip)
    assert _count(store) == 0


def test_skip_bad_counts_each_reason(store, tmp_path):
    f = tmp_path / "mixed.jsonl"
    lines = [json.dumps(_row(i)).encode() for i in range(3)]
    lines += [b"{broken", b'{"content": ""}', b'{"content": "\xff\xfe"}']
    lines += [json.dumps({"content": "y" * 2_000_000}).encode()]
    f.write_bytes(b"\n".join(lines) + b"\n")
    res = ingest_files([f], store=store, skip_bad=True)
    assert res.added == 3 and res.skipped == 4
    assert dict(res.skip_reasons) == {
        "malformed_json": 1,
        "empty_text": 1,
        "invalid_utf8": 1,
        "too_large": 1,
    }
    assert any("mixed.jsonl:4" in e for e in res.skip_examples)
    assert store.query("SELECT skipped FROM ingests").item() == 4


def test_interrupted_ingest_keeps_the_old_contents(store, tmp_path, monkeypatch):
    import sdfkit.store.ingest as ingest_mod

    first = _write_jsonl(tmp_path / "first.jsonl", [_row(i) for i in range(5)])
    ingest_files([first], store=store)
    big = _write_jsonl(tmp_path / "big.jsonl", [_row(i) for i in range(5, 5000)])
    calls = {"n": 0}
    real_flush = ingest_mod._flush

    def crash_on_second_chunk(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_flush(*a, **k)

    monkeypatch.setattr(ingest_mod, "_flush", crash_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        ingest_files([big], store=store)
    assert calls["n"] == 2  # the first chunk had been written to the temporary part
    assert _count(store) == 5
    monkeypatch.setattr(ingest_mod, "_flush", real_flush)
    assert ingest_files([big], store=store).added == 4995


def test_hf_tokenizer_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    get_tokenizer.cache_clear()
    with pytest.raises(TokenizerError, match="needs the network"):
        get_tokenizer("hf:some-org/some-model-that-is-not-cached")


def test_unknown_tokenizer():
    with pytest.raises(TokenizerError, match="unknown tokenizer 'nope'"):
        get_tokenizer("nope")


def test_cli_ingest_and_errors(cli, tmp_path):
    f = _write_jsonl(tmp_path / "d.jsonl", [_row(i) for i in range(3)])
    out = cli("ingest", f, "--set", "concept=c1").output
    assert "added 3 documents" in out
    assert "added 0 documents" in cli("ingest", f).output
    bad = _write_jsonl(tmp_path / "b.jsonl", ["{nope"])
    res = cli("ingest", bad, expect=2)
    assert "b.jsonl:1: malformed JSON" in res.output


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_ingest_stopped_around_publishing_its_part_leaves_nothing(
    store, tmp_path, monkeypatch, when
):
    """The part is published inside the catalog transaction that logs the ingest: stopped
    just before or just after the rename, neither the part nor its log row remains."""
    from sdfkit.store.catalog import PartWriter

    first = _write_jsonl(tmp_path / "first.jsonl", [_row(i) for i in range(3)])
    ingest_files([first], store=store)
    parts = store.parts(DOCUMENTS)
    more = _write_jsonl(tmp_path / "more.jsonl", [_row(i) for i in range(3, 8)])
    real = PartWriter.publish

    def interrupted(self):
        if when == "after":
            real(self)
            assert self.final.exists()  # it was in place...
        raise KeyboardInterrupt

    monkeypatch.setattr(PartWriter, "publish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ingest_files([more], store=store)
    monkeypatch.setattr(PartWriter, "publish", real)
    assert store.parts(DOCUMENTS) == parts  # ...and is taken back
    assert store.query("SELECT count(*) FROM ingests").item() == 1
    assert ingest_files([more], store=store).added == 5


def test_skip_bad_passes_over_rows_python_cannot_read(store, tmp_path):
    """Nested past the recursion limit, an integer past 4,300 digits, a Parquet row group
    whose pages do not decode: named by file and line (or row), skipped with --skip-bad."""
    from test_bad_input import _damaged_parquet

    f = tmp_path / "hostile.jsonl"
    deep = '{"content": "x", "y": ' + "[" * 100_000 + "]" * 100_000 + "}"
    f.write_text(
        "\n".join([json.dumps(_row(1)), deep, '{"content": "y", "n": ' + "9" * 5000 + "}"])
    )
    p = tmp_path / "broken.parquet"
    p.write_bytes(_damaged_parquet())
    with pytest.raises(IngestError, match=r"hostile\.jsonl:2: JSON nested too deeply"):
        ingest_files([f], store=store)
    with pytest.raises(IngestError, match=r"broken\.parquet: row 1: rows 1-5 \(row group 1\)"):
        ingest_files([p], store=store)
    res = ingest_files([f, p], store=store, skip_bad=True)
    assert (res.rows_read, res.added, res.skipped) == (13, 6, 7)
    assert dict(res.skip_reasons) == {"too_deep": 1, "number_too_long": 1, "unreadable_parquet": 5}


def test_nan_and_infinity_are_stored_as_null(store, tmp_path):
    """JSON has no NaN nor Infinity: Python's reader takes them, a strict one does not; meta
    stays standard JSON (and a column given one is empty)."""
    f = tmp_path / "floats.jsonl"
    f.write_text(
        '{"text": "a", "score": NaN, "hi": Infinity, "ends": [-Infinity, 1.5], "concept": NaN}\n'
    )
    p = tmp_path / "floats.parquet"
    pq.write_table(pa.table({"text": ["b"], "score": [float("nan")], "w": [float("inf")]}), p)
    ingest_files([f, p], store=store)
    rows = store.query("SELECT text, concept, meta FROM documents ORDER BY text").to_dicts()

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in {text}"))

    assert [strict(r["meta"]) for r in rows] == [
        {"score": None, "hi": None, "ends": [None, 1.5]},
        {"score": None, "w": None},
    ]
    assert rows[0]["concept"] is None
