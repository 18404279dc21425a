"""Bad input, one kind per case: the exit code, ONE `error:` line naming the file, line or
option, no traceback, and a corpus left exactly as it was (the files of every table folder,
and the row count and checksum of `documents` and of every catalog table)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from corpus_state import fingerprint, one_error

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A corpus with documents, an exclusion and a selection, made once through sdf."""
    from typer.testing import CliRunner

    from sdfkit.cli import app

    base = tmp_path_factory.mktemp("template")
    src = base / "docs.jsonl"
    src.write_text(
        "".join(
            json.dumps({"text": f"template document {i} " + "word " * (15 + i)}) + "\n"
            for i in range(16)
        )
    )
    runner = CliRunner()
    for args in (
        ["--corpus", base / "corpus", "ingest", src, "--set", "concept=alpha"],
        ["--corpus", base / "corpus", "exclude", "--where", "n_tokens > 30", "--reason", "long"],
        ["--corpus", base / "corpus", "select", "--name", "n", "--docs", "4"],
    ):
        res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    return base / "corpus"


def _write(path: Path, data: str | bytes) -> None:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")


DEEP = "---\nid: deep\nconcept: c\nkey_facts: " + "[" * 500 + "]" * 500 + "\n---\nbody\n"


def _parquet() -> bytes:
    """A whole Parquet file of two documents (as a user's own folder of parts holds)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"doc_id": ["a", "b"], "text": ["one", "two"]}), buf)
    return buf.getvalue()


#: In ``files``: make a folder here (replacing what the corpus has at that path).
FOLDER = object()


def _damaged_parquet() -> bytes:
    """A Parquet file whose frame is whole but whose first page's first value claims 2 GB."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    texts = [f"document number {i} " + "w " * 20 for i in range(10)]
    pq.write_table(
        pa.table({"text": texts}), buf, compression="none", row_group_size=5, use_dictionary=False
    )
    data = bytearray(buf.getvalue())
    at = data.index(b"document number 0 ")
    data[at - 4 : at] = b"\xff\xff\xff\x7f"
    return bytes(data)


#: id -> (command line, files to create in the working directory, environment, what the one
#: error line must contain). Every case exits 2.
CASES: dict[str, tuple[list[str], dict[str, str | bytes], dict[str, str], list[str]]] = {
    # sdf sql: it only reads, one statement, named options
    "sql-drop": (["sql", "DROP TABLE grades"], {}, {}, ["sdf sql only reads", "DROP"]),
    "sql-delete-cte": (["sql", "WITH x AS (SELECT 1) DELETE FROM exclusions"], {}, {}, ["DELETE"]),
    "sql-copy-into-record": (
        ["sql", "COPY (SELECT 1 AS doc_id) TO 'corpus/documents/part-x.parquet'"],
        {},
        {},
        ["COPY"],
    ),
    # EXPLAIN ANALYZE runs what it wraps: it wrote over the corpus's own parts
    "sql-explain-analyze-copy": (
        ["sql", "EXPLAIN ANALYZE COPY (SELECT 1 AS doc_id) TO 'corpus/documents/part-x.parquet'"],
        {},
        {},
        ["sdf sql only reads", "COPY (explained)"],
    ),
    "sql-explain-install": (
        ["sql", "/* */ explain analyse -- x\n INSTALL httpfs"],
        {},
        {},
        ["sdf sql", "EXPLAIN must wrap one query"],
    ),
    "sql-out-folder": (
        ["sql", "SELECT 1", "--out", "out.csv"],
        {"out.csv/keep": "x"},
        {},
        [
            "out.csv",
            "is a folder",
        ],
    ),
    "report-json-folder": (
        ["report", "--only", "shape", "--json", "rep.json"],
        {"rep.json/keep": "x"},
        {},
        ["rep.json", "is a folder"],
    ),
    "report-html-under-a-file": (
        ["report", "--only", "shape", "--html", "afile/report.html"],
        {"afile": "x"},
        {},
        ["afile"],
    ),
    "report-html-over-the-catalog": (
        ["report", "--only", "shape", "--html", "corpus/sdf.duckdb"],
        {},
        {},
        ["--html corpus/sdf.duckdb", "inside the corpus folder"],
    ),
    "report-only-and-skip": (
        ["report", "--only", "shape", "--skip", "shape"],
        {},
        {},
        ["nothing to run", "shape"],
    ),
    "audit-set-unclosed-list": (
        ["audit", "ngrams", "--set", "n=["],
        {},
        {},
        ["--set 'n=['", "not a value"],
    ),
    "sql-empty": (["sql", ""], {}, {}, ["sdf sql", "empty"]),
    "sql-two-statements": (["sql", "SELECT 1; SELECT 2"], {}, {}, ["2 statements"]),
    "sql-syntax": (["sql", "SELEC count(*) FROM documents"], {}, {}, ["syntax error"]),
    "sql-unknown-table": (["sql", "SELECT * FROM gen_nothing"], {}, {}, ["gen_nothing"]),
    "sql-format": (["sql", "SELECT 1", "--format", "xml"], {}, {}, ["--format", "xml"]),
    "sql-out-in-corpus": (
        ["sql", "SELECT * FROM documents_raw", "--out", "corpus/documents/part-y.parquet"],
        {},
        {},
        ["--out", "corpus"],
    ),
    "sql-out-type": (["sql", "SELECT 1", "--out", "result.txt"], {}, {}, ["result.txt", ".csv"]),
    # --out is checked before the query runs, and never replaces a file unasked
    "sql-out-proc": (
        ["sql", "SELECT 1", "--out", "/proc/x.csv"],
        {},
        {},
        ["--out /proc/x.csv", "cannot write in /proc"],
    ),
    "sql-out-under-a-file": (
        ["sql", "SELECT 1", "--out", "in/a.jsonl/x.csv"],
        {"in/a.jsonl": '{"text": "mine"}\n'},
        {},
        ["--out in/a.jsonl/x.csv", "is a file, not a folder"],
    ),
    "sql-out-over-the-input": (
        ["sql", "SELECT 1 AS x", "--out", "in/a.jsonl"],
        {"in/a.jsonl": '{"text": "mine"}\n'},
        {},
        ["--out in/a.jsonl", "exists", "--overwrite"],
    ),
    "queries-not-utf8": (
        ["queries"],
        {"queries/latin.sql": b"-- caf\xe9\nSELECT 1\n"},
        {},
        ["queries/latin.sql", "not UTF-8"],
    ),
    # show: a count of at least 1, an id that is not empty
    "show-negative-limit": (["show", "--limit", "-1"], {}, {}, ["--limit must be at least 1"]),
    "show-empty-id": (["show", "--id", ""], {}, {}, ["--id is empty"]),
    # exclude --lift says which exclusions, and checks its --where
    "exclude-lift-no-reason": (["exclude", "--lift"], {}, {}, ["--reason", "'long' ("]),
    "exclude-lift-bad-where": (
        ["exclude", "--lift", "--reason", "long", "--where", "nope > 1"],
        {},
        {},
        ["--where 'nope > 1'"],
    ),
    "tokens-negative-workers": (
        ["tokens", "--tokenizer", "o200k_harmony", "--workers", "-1"],
        {},
        {},
        ["--workers must be at least 1, got -1"],
    ),
    # a SQL fragment is one expression
    "select-where-injection": (
        ["select", "--name", "x", "--docs", "2", "--where", "1=1) ; DROP TABLE grades; --"],
        {},
        {},
        ["--where", "DROP TABLE grades"],
    ),
    "exclude-where-two-statements": (
        ["exclude", "--reason", "x", "--where", "true; DELETE FROM exclusions"],
        {},
        {},
        ["--where", "2 SQL statements"],
    ),
    "grade-where-not-boolean": (
        ["grade", "--backend", "offline", "--where", "n_tokens"],
        {},
        {},
        ["--where", "not a condition"],
    ),
    # --limit 0 used to grade (and pay for) every document; -1 blamed --where
    "grade-limit-zero": (
        ["grade", "--backend", "offline", "--limit", "0"],
        {},
        {},
        ["--limit 0", "at least 1"],
    ),
    "grade-limit-negative": (
        ["grade", "--backend", "offline", "--limit", "-1"],
        {},
        {},
        ["--limit -1", "at least 1"],
    ),
    "audit-where-unknown-column": (
        ["audit", "ngrams", "--where", "no_such_column > 1"],
        {},
        {},
        ["where 'no_such_column > 1'", "not a valid condition"],
    ),
    "exclude-no-reason": (["exclude", "--where", "true"], {}, {}, ["--reason"]),
    # an audit's where: checked before any audit runs, never empty, never the network
    "report-where-in-config": (
        ["report", "--config", "w.yaml"],
        {
            "w.yaml": 'audits: {ngrams: {where: "1=1) ; DROP TABLE grades; --"}, '
            'names: {where: "no_such_column = 1"}}\n'
        },
        {},
        ["w.yaml: audits.ngrams.where '1=1) ; DROP TABLE grades; --'", "not one SQL expression"],
    ),
    "check-run-where-in-config": (
        ["check", "--run", "--config", "w.yaml"],
        {"w.yaml": 'audits: {names: {where: "no_such_column = 1"}}\n'},
        {},
        ["w.yaml: audits.names.where 'no_such_column = 1'", "no_such_column"],
    ),
    "audit-where-empty-in-config": (
        ["audit", "names", "--config", "w.yaml"],
        {"w.yaml": 'audits: {names: {where: "  "}}\n'},
        {},
        ["w.yaml: audits.names.where", "empty"],
    ),
    "audit-set-where-nothing": (
        ["audit", "dedup", "--set", "where="],
        {},
        {},
        ["--set 'where='", "no value"],
    ),
    "audit-where-blank": (["audit", "ngrams", "--where", " "], {}, {}, ["where", "empty"]),
    "audit-where-url": (
        [
            "audit",
            "ngrams",
            "--where",
            "(SELECT count(*) FROM read_text('https://x.invalid/a')) > 0",
        ],
        {},
        {},
        ["--where", "requires the extension httpfs", "neither installs nor loads"],
    ),
    "audit-where-selects-nothing": (
        ["audit", "ngrams", "--where", "concept = 'nope'"],
        {},
        {},
        ["--where \"concept = 'nope'\": selects no documents"],
    ),
    "sql-url": (
        ["sql", "SELECT count(*) FROM read_text('https://x.invalid/a')"],
        {},
        {},
        ["requires the extension httpfs", "neither installs nor loads"],
    ),
    # selection and export options
    "select-docs": (["select", "--name", "x", "--docs", "many"], {}, {}, ["--docs", "many"]),
    # a part of the request that used to be dropped silently (or misread)
    "select-docs-zero": (["select", "--name", "x", "--docs", "0"], {}, {}, ["--docs '0'"]),
    "select-tokens-zero": (
        ["select", "--name", "x", "--docs", "2", "--tokens", "0"],
        {},
        {},
        ["--tokens '0'", "at least 1"],
    ),
    "select-tokens-decimal-comma": (
        ["select", "--name", "x", "--docs", "2", "--tokens", "5,1M"],
        {},
        {},
        ["--tokens '5,1M'", "expected a number"],
    ),
    "select-concept-target-tokens-zero": (
        ["select", "--name", "x", "--concept-target", "alpha=2:0"],
        {},
        {},
        ["--concept-target 'alpha=2:0'", "at least 1"],
    ),
    "select-concept-target-twice": (
        ["select", "--name", "x", "--concept-target", "alpha=2", "--concept-target", "alpha=3"],
        {},
        {},
        ["--concept-target 'alpha=3'", "has a target already"],
    ),
    "select-concept-target-outside-concept": (
        ["select", "--name", "x", "--docs", "2", "--concept", "alpha"]
        + ["--concept-target", "beta=1"],
        {},
        {},
        ["--concept-target 'beta'", "not among --concept (alpha)"],
    ),
    "select-seed-past-32-bits": (
        ["select", "--name", "x", "--docs", "2", "--seed", "4294967296"],
        {},
        {},
        ["--seed 4294967296", "0 to 4294967295"],
    ),
    "export-seed-negative": (
        ["export", "--out", "s", "--selection", "n", "--seed", "-1"],
        {},
        {},
        ["--seed -1", "0 to 4294967295"],
    ),
    "select-exists": (["select", "--name", "n", "--docs", "2"], {}, {}, ["'n'", "--replace"]),
    "export-out-under-file": (
        ["export", "--out", "afile/shards", "--selection", "n"],
        {"afile": "x"},
        {},
        ["--out afile/shards", "afile"],
    ),
    "export-out-empty": (
        ["export", "--out", "", "--selection", "n"],
        {},
        {},
        ["--out", "the path is empty"],
    ),
    "export-overwrite-foreign": (
        ["export", "--out", "mine", "--selection", "n", "--overwrite"],
        {"mine/notes.txt": "keep me"},
        {},
        ["--out mine", "not an sdf export"],
    ),
    "export-compression": (
        ["export", "--out", "s", "--selection", "n", "--compression", "rar"],
        {},
        {},
        ["compression", "rar"],
    ),
    "export-engine": (
        ["export", "--out", "s", "--selection", "n", "--engine", "spark"],
        {},
        {},
        ["unknown engine 'spark'"],
    ),
    # an export's size is bounded before any work (one ran 10 minutes into 39 GB)
    "export-epochs-unbounded": (
        ["export", "--out", "s", "--selection", "n", "--epochs", "99999999999999999999"],
        {},
        {},
        ["--epochs 99999999999999999999", "between 1 and 100"],
    ),
    "export-webtext-ratio-unbounded": (
        ["export", "--out", "s", "--selection", "n", "--webtext-ratio", "1e6"],
        {},
        {},
        ["--webtext-ratio 1000000.0", "at most 10"],
    ),
    "export-chat-ratio-over-one": (
        ["export", "--out", "s", "--selection", "n", "--chat-ratio", "1.5"],
        {},
        {},
        ["--chat-ratio 1.5", "at most 1"],
    ),
    "export-shard-too-large": (
        ["export", "--out", "s", "--selection", "n", "--shard-size", "100000"]
        + ["--max-seq-len", "65536"],
        {},
        {},
        ["--shard-size 100,000 x --max-seq-len 65,536", "2**31 - 1 tokens"],
    ),
    # --eos-token: only the tokenizer's special tokens (an unknown one was a KeyError
    # traceback; a word such as hello ended every document with the word's id)
    "export-eos-token-unknown": (
        ["export", "--out", "s", "--selection", "n", "--eos-token", "<|nosuch|>"],
        {},
        {},
        ["--eos-token '<|nosuch|>' is not a special token of o200k_harmony", "<|endoftext|>"],
    ),
    "export-eos-token-word": (
        ["export", "--out", "s", "--selection", "n", "--eos-token", "hello"],
        {},
        {},
        ["--eos-token 'hello' is not a special token", "<|return|>", "reserved tokens"],
    ),
    "export-unknown-selection": (
        ["export", "--out", "s", "--selection", "nope"],
        {},
        {},
        ["nope"],
    ),
    # ingest: files, lines, options
    "ingest-directory": (["ingest", "adir"], {"adir/a.jsonl": "{}\n"}, {}, ["adir", "directory"]),
    "ingest-missing": (["ingest", "nothere.jsonl"], {}, {}, ["nothere.jsonl", "no such file"]),
    "ingest-empty-file": (["ingest", "empty.jsonl"], {"empty.jsonl": ""}, {}, ["empty.jsonl"]),
    "ingest-negative-max-bytes": (
        ["ingest", "ok.jsonl", "--max-bytes", "-5"],
        {"ok.jsonl": '{"text": "fine"}\n'},
        {},
        ["--max-bytes -5"],
    ),
    "ingest-oversized": (
        ["ingest", "big.jsonl", "--max-bytes", "100"],
        {"big.jsonl": json.dumps({"text": "w " * 200}) + "\n"},
        {},
        ["big.jsonl:1", "--max-bytes", "--skip-bad"],
    ),
    "ingest-malformed-json": (
        ["ingest", "bad.jsonl"],
        {"bad.jsonl": '{"text": "fine"}\n{"text": oops}\n'},
        {},
        ["bad.jsonl:2", "malformed JSON"],
    ),
    "ingest-invalid-utf8": (
        ["ingest", "latin.jsonl"],
        {"latin.jsonl": b'{"text": "caf\xe9"}\n'},
        {},
        ["latin.jsonl:1", "UTF-8"],
    ),
    "ingest-no-text": (
        ["ingest", "notext.jsonl"],
        {"notext.jsonl": '{"body": "x"}\n'},
        {},
        ["notext.jsonl:1", "--map text="],
    ),
    "ingest-map-syntax": (
        ["ingest", "ok.jsonl", "--map", "text"],
        {"ok.jsonl": '{"text": "fine"}\n'},
        {},
        ["--map", "COLUMN=VALUE"],
    ),
    "ingest-json-nested-too-deep": (
        ["ingest", "deep.jsonl"],
        {
            "deep.jsonl": '{"text": "fine"}\n{"text": "x", "y": '
            + "[" * 100_000
            + "]" * 100_000
            + "}\n"
        },
        {},
        ["deep.jsonl:2", "nested too deeply"],
    ),
    "ingest-integer-of-5000-digits": (
        ["ingest", "long.jsonl"],
        {"long.jsonl": '{"text": "x", "n": ' + "7" * 5000 + "}\n"},
        {},
        ["long.jsonl:1", "number too long", "4300 digits"],
    ),
    "ingest-parquet-page-damaged": (
        ["ingest", "broken.parquet"],
        {"broken.parquet": _damaged_parquet()},
        {},
        ["broken.parquet: row 1", "rows 1-5 (row group 1) cannot be read"],
    ),
    "ingest-file-type": (
        ["ingest", "notes.txt"],
        {"notes.txt": "hello"},
        {},
        ["notes.txt", "unsupported file type"],
    ),
    # universes, config, environment
    "universe-deep-yaml": (["universe", "check", "deep.md"], {"deep.md": DEEP}, {}, ["deep.md"]),
    "universe-bad-yaml": (
        ["universe", "check", "broken.md"],
        {"broken.md": "---\nid: [unclosed\n---\nbody\n"},
        {},
        ["broken.md", "line"],
    ),
    "universe-key-twice": (
        ["universe", "check", "twice.md"],
        {"twice.md": "---\nid: a\nconcept: c\nid: b\n---\nbody\n"},
        {},
        ["twice.md: line 4", "key 'id' is given twice (first on line 2)"],
    ),
    "report-key-twice": (
        ["report", "--config", "twice.yaml"],
        {"twice.yaml": "html: a.html\njson: a.json\nhtml: b.html\n"},
        {},
        ["twice.yaml:3", "key 'html' is given twice"],
    ),
    "prices-key-twice": (
        ["generate", str(ROOT / "examples/universes/eu_ts_trycatch.md"), "--backend", "offline"]
        + ["--limit", "1", "--prices", "p.json"],
        {"p.json": '{"m": {"input": 1, "output": 2},\n "m": {"input": 3, "output": 4}}'},
        {},
        ["p.json: line 2", "key 'm' is given twice"],
    ),
    "report-deep-yaml": (
        ["report", "--config", "deep.yaml"],
        {"deep.yaml": "audits: " + "[" * 500 + "]" * 500 + "\n"},
        {},
        ["deep.yaml", "nested too deeply"],
    ),
    "anthropic-base-url": (
        ["generate", str(ROOT / "examples/universes/eu_ts_trycatch.md"), "--backend", "anthropic"],
        {},
        {"ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": "http://[::1"},
        ["ANTHROPIC_BASE_URL"],
    ),
    "lock-timeout-variable": (
        ["sql", "SELECT 1"],
        {},
        {"SDF_LOCK_TIMEOUT": "soon"},
        ["SDF_LOCK_TIMEOUT"],
    ),
    # generate: every option before the first (paid) batch
    "generate-tokenizer": (
        ["generate", str(ROOT / "examples/universes/eu_ts_trycatch.md"), "--backend", "offline"]
        + ["--limit", "2", "--tokenizer", "nosuch"],
        {},
        {},
        ["unknown --tokenizer 'nosuch'"],
    ),
    "generate-max-tokens-zero": (
        ["generate", str(ROOT / "examples/universes/eu_ts_trycatch.md"), "--backend", "offline"]
        + ["--max-tokens", "0"],
        {},
        {},
        ["--max-tokens must be at least 1"],
    ),
    "ledger-unknown-run": (["ledger", "--run", "UNKNOWN"], {}, {}, ["--run 'UNKNOWN'"]),
    "check-missing-report": (
        ["check", "--report", "nothing.json"],
        {},
        {},
        ["nothing.json", "sdf report"],
    ),
    # the corpus folder holds something sdf does not keep there
    "corpus-tmp-is-a-file": (
        ["ingest", "ok.jsonl"],
        {"ok.jsonl": '{"text": "fine"}\n', "corpus/.tmp": "mine"},
        {},
        ["corpus/.tmp: a file where sdf keeps a folder", "move it out"],
    ),
    "corpus-append-lock-is-a-folder": (
        ["ingest", "ok.jsonl"],
        {"ok.jsonl": '{"text": "fine"}\n', "corpus/documents/.append.lock": FOLDER},
        {},
        ["corpus/documents/.append.lock: a folder where sdf keeps the append lock file"],
    ),
    "doctor-quarantine-table-is-a-file": (
        ["doctor"],
        {
            "corpus/quarantine/documents": "mine",
            "corpus/documents/part-20990101T000000-000000000000.parquet": b"not parquet",
        },
        {},
        ["corpus/quarantine/documents: a file where sdf keeps a folder"],
    ),
    "corpus-user-folder-named-grades": (
        ["sql", "SELECT count(*) FROM documents"],
        {"corpus/grades/part-1.parquet": _parquet()},
        {},
        ["corpus/grades: a folder of Parquet parts", "(grades)", "move it out"],
    ),
    "corpus-user-folder-named-like-a-stage-table": (
        ["show"],
        {"corpus/selections/part-1.parquet": _parquet()},
        {},
        ["corpus/selections: a folder of Parquet parts", "(selections)"],
    ),
    "corpus-user-folder-no-table-name": (
        ["select", "list"],
        {"corpus/my-data/part-1.parquet": _parquet()},
        {},
        ["corpus/my-data: a folder of Parquet parts", "a name no table can have"],
    ),
    # the corpus itself
    "corpus-missing": (["--corpus", "corpsu", "sql", "SELECT 1"], {}, {}, ["corpsu", "--corpus"]),
    # an empty corpus path is an error, never the current folder (nor a guess)
    "corpus-empty-option": (
        ["--corpus", "", "ingest", "docs.jsonl"],
        {"docs.jsonl": '{"text": "one"}\n'},
        {},
        ["corpus directory ''", "empty"],
    ),
    "corpus-empty-command-option": (
        ["ingest", "docs.jsonl", "--corpus", ""],
        {"docs.jsonl": '{"text": "one"}\n'},
        {},
        ["corpus directory ''", "empty"],
    ),
    "corpus-empty-variable": (
        ["ingest", "docs.jsonl"],
        {"docs.jsonl": '{"text": "one"}\n'},
        {"SDF_CORPUS": ""},
        ["corpus directory '' ($SDF_CORPUS)", "empty"],
    ),
    "corpus-is-a-file": (
        ["--corpus", "afile", "show"],
        {"afile": "x"},
        {},
        ["afile", "--corpus", "is a file"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_changes_nothing(case, template, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sdfkit.cli import app

    args, files, env, wanted = CASES[case]
    corpus = tmp_path / "corpus"
    shutil.copytree(template, corpus, symlinks=True)  # a copy reads itself (portable corpus)
    for name, data in files.items():
        target = tmp_path / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        if data is FOLDER:
            target.mkdir()
        else:
            _write(target, data)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    before = fingerprint(corpus)
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 2, res.output
    line = one_error(res)
    for part in wanted:
        assert part in line, (part, line)
    monkeypatch.delenv("SDF_LOCK_TIMEOUT", raising=False)
    monkeypatch.delenv("SDF_CORPUS", raising=False)
    assert fingerprint(corpus) == before
    assert not (tmp_path / "sdf.duckdb").exists() and not (tmp_path / "documents").exists()
    for name, data in files.items():  # the user's own files are untouched too
        if isinstance(data, str):
            assert (tmp_path / name).read_text(encoding="utf-8") == data


def test_the_suite_covers_at_least_thirty_kinds():
    assert len(CASES) >= 30
