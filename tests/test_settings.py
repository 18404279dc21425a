"""Bad settings get a clear error naming where they came from, before any work starts:
audit settings in sdfkit.yaml or --set, check thresholds, and SDF_* environment variables."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sdfkit.audits import diversity, names, ngrams
from sdfkit.engine.local import EngineError, Stage, run_stage
from sdfkit.errors import ConfigError, SdfError
from sdfkit.report import build as report
from sdfkit.store.ingest import build_documents


def _saved_tables(store) -> set[str]:
    """Tables in the catalog (audit results land here)."""
    with store.connect() as con:
        return {r[0] for r in con.sql("SELECT table_name FROM duckdb_tables()").fetchall()}


def _docs(store, n=3):
    store.append(
        "documents_raw",
        build_documents(
            [{"text": f"Document {i} says the same thing again.", "concept": "c"} for i in range(n)]
        ),
    )


# ------------------------------------------------------------------ audit settings
def test_bad_ngram_share_in_the_project_file_names_file_and_key(cli, store, tmp_path):
    _docs(store)
    (tmp_path / "sdfkit.yaml").write_text("audits:\n  ngrams:\n    flag_doc_share: {5: abc}\n")
    out = cli("--corpus", store.root, "audit", "ngrams", expect=2)
    assert out.output.startswith(
        "error: sdfkit.yaml: audits.ngrams.flag_doc_share.5: must be a number, got 'abc'"
    )
    assert "Traceback" not in out.output
    assert "audit_runs" not in _saved_tables(store)  # nothing ran


def test_bad_ngram_share_through_set_names_the_command_line(cli, store):
    _docs(store)
    out = cli(
        "--corpus", store.root, "audit", "ngrams", "--set", "flag_doc_share={4: 1.5}", expect=2
    )
    assert "error: command line: audits.ngrams.flag_doc_share.4: must be between 0 and 1" in (
        out.output
    )
    bad_n = cli(
        "--corpus", store.root, "audit", "ngrams", "--set", "flag_doc_share={x: 0.2}", expect=2
    )
    assert "audits.ngrams.flag_doc_share: key 'x' must be a whole number" in bad_n.output
    unknown = cli("--corpus", store.root, "audit", "ngrams", "--set", "flag_share=0.2", expect=2)
    assert "command line: audits.ngrams.flag_share: unknown setting (known: " in unknown.output
    # a good value passes and is used: --set wins over the file, keys from YAML become ints
    ok = cli(
        "--corpus", store.root, "audit", "ngrams", "--n", "4", "--set", "flag_doc_share={4: 0.5}"
    )
    assert "flag:" in ok.output  # every document carries "says the same thing again"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "audits: {names: {flag_doc_share: -0.1}}",
            "audits.names.flag_doc_share: must be between 0 and 1, got -0.1",
        ),
        (
            "audits: {names: {accept_ratio: 0}}",
            "audits.names.accept_ratio: must be above 0 and at most 1",
        ),
        (
            "audits: {names: {windows_min: 30}}",
            "audits.names.windows_max: must be at least windows_min (30)",
        ),
        ("audits: {names: {cut_band: [1.0]}}", "audits.names.cut_band: must be a list of 2 values"),
        (
            "audits: {keywords: {min_rate: 2}}",
            "audits.keywords.min_rate: must be between 0 and 1, got 2",
        ),
        (
            "audits: {shape: {min_stratum_share: high}}",
            "audits.shape.min_stratum_share: must be a number, got 'high'",
        ),
        (
            "audits: {dedup: {keep: newest}}",
            "audits.dedup.keep: must be one of earliest, longest, got 'newest'",
        ),
        ("audits: {dedup: {workers: 0}}", "audits.dedup.workers: must be at least 1, got 0"),
        (
            "audits: {diversity: {max_seq_length: 4096}}",
            "audits.diversity.max_seq_length: must be between 3 and 512",
        ),
        (
            "audits: {diversity: {batch_size: 2.5}}",
            "audits.diversity.batch_size: must be a whole number, got 2.5",
        ),
        (
            "audits: {ngrams: {n: [2, three]}}",
            "audits.ngrams.n[1]: must be a whole number, got 'three'",
        ),
        ("audits: {ngrams: {n: 0}}", "audits.ngrams.n: must be a list of whole numbers, got 0"),
        # no size counted would pass the n-gram gate without a word
        ("audits: {ngrams: {n: []}}", "audits.ngrams.n: must list at least 1 value, got []"),
        ("audits: {ngrams: {topk: 5}}", "audits.ngrams.topk: unknown setting (known: chunk_docs, "),
        (
            "audits: {ngrams: {skip_function_words: maybe}}",
            "audits.ngrams.skip_function_words: must be true or false",
        ),
        (
            "check: {max_ngram_doc_share: {four: 0.3}}",
            "check.max_ngram_doc_share: key 'four' must be an n-gram size",
        ),
        # an empty per-n mapping would switch the gate off without a word; null does that
        (
            "check: {max_ngram_doc_share: {}}",
            "check.max_ngram_doc_share: must map at least 1 key, got {} (give one number, "
            'or {"4": 0.3}; null turns the check off)',
        ),
        (
            "check: {max_top5_ngrams_doc_share: {}}",
            "check.max_top5_ngrams_doc_share: must map at least 1 key, got {}",
        ),
        (
            "check: {max_near_duplicate_fraction: -1}",
            "check.max_near_duplicate_fraction: must be between 0 and 1",
        ),
    ],
)
def test_every_bad_setting_is_named_when_the_file_is_loaded(tmp_path, yaml_text, message):
    cfg = tmp_path / "proj" / "sdfkit.yaml"
    cfg.parent.mkdir()
    cfg.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError) as err:
        report.load_config(cfg)
    assert str(err.value).startswith(f"{cfg}: {message}"), str(err.value)


def test_a_key_given_twice_in_the_project_file_names_its_line(tmp_path):
    cfg = tmp_path / "sdfkit.yaml"
    cfg.write_text("audits:\n  ngrams: {top_k: 5}\ncheck: {}\naudits:\n  shape: {}\n")
    with pytest.raises(ConfigError) as err:
        report.load_config(cfg)
    assert str(err.value) == (
        f"{cfg}:4: invalid YAML: key 'audits' is given twice (first on line 1)"
    )


def test_load_yaml_refuses_duplicates_at_any_depth_but_keeps_merge_keys():
    import yaml

    from sdfkit.settings import load_yaml

    text = "base: &b {p: 1, q: 2}\nd:\n  <<: *b\n  p: 3\n"
    assert load_yaml(text) == {"base": {"p": 1, "q": 2}, "d": {"p": 3, "q": 2}}
    for bad, line in [("a: 1\na: 2\n", 2), ("x:\n  - {k: 1, k: 2}\n", 2), ("1: a\n1.0: b\n", 2)]:
        with pytest.raises(yaml.YAMLError) as err:
            load_yaml(bad)
        assert err.value.problem_mark.line + 1 == line and "given twice" in err.value.problem


def test_a_bad_setting_stops_the_report_before_the_first_audit(store, tmp_path):
    _docs(store)
    cfg = report.ReportConfig(
        html=tmp_path / "r.html", json=tmp_path / "r.json", audits={"diversity": {"workers": -2}}
    )
    with pytest.raises(
        ConfigError, match=r"settings: audits.diversity.workers: must be at least 1"
    ):
        report.build(store, cfg)
    # shape, ngrams, names and dedup come before diversity: none of them ran or was saved
    assert "audit_runs" not in _saved_tables(store) and not (tmp_path / "r.json").exists()


def test_configs_built_in_python_are_checked_too():
    with pytest.raises(ConfigError, match=r"audits.ngrams.flag_doc_share.5: must be a number"):
        ngrams.Config(flag_doc_share={5: "abc"})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match=r"audits.diversity.precision: must be one of auto"):
        diversity.Config(precision="fp16")
    # conversions a YAML file needs: lists to tuples, "4" keys to ints, ints to floats
    cfg = ngrams.Config(n=[3, 4], flag_doc_share={"4": 1})  # type: ignore[arg-type]
    assert cfg.n == (3, 4) and cfg.flag_doc_share == {4: 1.0} and cfg.threshold(4) == 1.0
    assert names.Config(cut_band=[1, 2]).cut_band == (1.0, 2.0)  # type: ignore[arg-type]


# ------------------------------------------------------------------ environment variables
class _ModelStage(Stage):
    name = "test_model_stage"
    loads_model = True

    @property
    def output_schema(self) -> pa.Schema:
        return pa.schema([("doc_id", pa.string())])

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:  # pragma: no cover - not reached
        return batch.select(["doc_id"])


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5", "nan"])
def test_bad_ray_actor_cpus_is_named_before_ray_starts(store, monkeypatch, value):
    _docs(store)
    monkeypatch.setenv("SDF_RAY_ACTOR_CPUS", value)
    with pytest.raises(EngineError) as err:
        run_stage(store, _ModelStage(), engine="ray")
    assert str(err.value).startswith("SDF_RAY_ACTOR_CPUS must be ")
    assert "a fraction up to 1 (e.g. 0.5) or a whole number of CPUs" in str(err.value)
    assert f"got {value!r}" in str(err.value)


def test_ray_actor_cpus_accepts_fractions_and_whole_numbers(monkeypatch):
    from sdfkit.engine.ray_data import actor_cpus

    monkeypatch.delenv("SDF_RAY_ACTOR_CPUS", raising=False)
    assert actor_cpus() == 0.5
    for value, cpus in (("0.25", 0.25), ("1", 1.0), ("2", 2.0)):
        monkeypatch.setenv("SDF_RAY_ACTOR_CPUS", value)
        assert actor_cpus() == cpus


def test_bad_workers_threads_and_engine_name_their_variable(store, monkeypatch):
    from sdfkit.llm.tokens import get_tokenizer

    _docs(store)
    monkeypatch.setenv("SDF_WORKERS", "0")
    with pytest.raises(EngineError, match=r"SDF_WORKERS must be at least 1, got '0'"):
        run_stage(store, _ModelStage())
    monkeypatch.setenv("SDF_WORKERS", "2.5")
    with pytest.raises(EngineError, match=r"SDF_WORKERS must be a whole number, got '2.5'"):
        run_stage(store, _ModelStage())
    monkeypatch.delenv("SDF_WORKERS")
    monkeypatch.setenv("SDF_ENGINE", "spark")
    with pytest.raises(EngineError, match=r"unknown engine 'spark' \(from SDF_ENGINE\)"):
        run_stage(store, _ModelStage())
    monkeypatch.setenv("SDF_THREADS", "many")
    with pytest.raises(SdfError, match=r"SDF_THREADS must be a whole number, got 'many'"):
        get_tokenizer().count_batch(["one two three"])
    monkeypatch.setenv("SDF_THREADS", "1")
    assert list(get_tokenizer().count_batch(["one two three"])) == [3]


def test_a_bad_environment_stops_the_report_before_any_audit(cli, store, monkeypatch):
    _docs(store)
    monkeypatch.setenv("SDF_WORKERS", "two")
    out = cli("--corpus", store.root, "report", "--only", "shape", "--only", "dedup", expect=2)
    assert (
        out.output.strip()
        == "error: SDF_WORKERS must be a whole number, got 'two' (accepted: at least 1)"
    )
    assert "audit_runs" not in _saved_tables(store)


def test_a_malformed_ray_address_is_one_error_line(store, tmp_path):
    """In a fresh process: a Ray session other tests started would otherwise be reused."""
    import os
    import subprocess
    import sys

    pytest.importorskip("ray", reason="Ray is the optional extra sdfkit[ray]")
    _docs(store)
    env = dict(os.environ, SDF_PROGRESS="0", RAY_ADDRESS="not-an-address")
    proc = subprocess.run(
        [sys.executable, "-c", "from sdfkit.cli import main; main()", "--corpus",
         str(store.root), "audit", "dedup", "--engine", "ray"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: could not join the Ray cluster at 'not-an-address' (--ray-address or "
        "RAY_ADDRESS; host:port of a running cluster, or 'auto'): Invalid address format: "
        "not-an-address"
    )
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ path and name variables
def _jsonl(tmp_path, n=2):
    import json

    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"doc {i} text"}) + "\n" for i in range(n)))
    return path


def _documents(store) -> int:
    return store.query("SELECT count(*) FROM documents").item()


def _one_error_line(out, expected: str) -> None:
    assert out.output.strip() == f"error: {expected}", out.output
    assert "Traceback" not in out.output


def test_bad_sdf_tokenizer_names_the_variable(cli, store, tmp_path, monkeypatch):
    from sdfkit.engine.token_counts import TokenCountStage
    from sdfkit.llm.tokens import TokenizerError, canonical_name, get_tokenizer

    docs = _jsonl(tmp_path)
    monkeypatch.setenv("SDF_TOKENIZER", "o200k_harmoni")
    out = cli("--corpus", store.root, "ingest", docs, expect=2)
    _one_error_line(
        out,
        "SDF_TOKENIZER='o200k_harmoni': unknown tokenizer 'o200k_harmoni': use one of "
        "cl100k_base, gpt-oss, harmony, llama3, o200k_base, o200k_harmony, qwen3 or hf:<model>",
    )
    assert _documents(store) == 0
    with pytest.raises(TokenizerError, match=r"^SDF_TOKENIZER='o200k_harmoni'"):
        TokenCountStage()  # checked when the recount stage is built, not in a worker
    monkeypatch.setenv("SDF_TOKENIZER", "hf:")
    with pytest.raises(TokenizerError, match=r"^SDF_TOKENIZER='hf:': hf: needs a model name"):
        canonical_name(None)
    # an HF model that cannot load offline: the load error names the variable too
    monkeypatch.setenv("SDF_TOKENIZER", "hf:some-org/not-cached-anywhere")
    with pytest.raises(TokenizerError, match=r"^SDF_TOKENIZER='hf:some-org/.*needs the network"):
        get_tokenizer()
    # an explicit name wins over the variable; a good variable is used (aliases too)
    assert get_tokenizer("cl100k_base").name == "cl100k_base"
    monkeypatch.setenv("SDF_TOKENIZER", "gpt-oss")
    assert get_tokenizer().name == "o200k_harmony"
    monkeypatch.setenv("SDF_TOKENIZER", "cl100k_base")
    assert get_tokenizer().name == "cl100k_base"  # not a stale cached default
    assert "cl100k_base" in cli("--corpus", store.root, "ingest", docs).output


@pytest.mark.parametrize("value", ["auto", "AUTO", "1", "0", ""])
def test_sdf_progress_accepts_auto_1_and_0(monkeypatch, value):
    from sdfkit import progress

    monkeypatch.setenv("SDF_PROGRESS", value)
    expected = {"1": True, "0": False}.get(value, progress.sys.stderr.isatty())
    assert progress.enabled() is expected


def test_bad_sdf_progress_is_an_error_not_silently_auto(cli, store, tmp_path, monkeypatch):
    monkeypatch.setenv("SDF_PROGRESS", "yes")
    out = cli("--corpus", store.root, "ingest", _jsonl(tmp_path), expect=2)
    _one_error_line(out, "SDF_PROGRESS must be one of auto, 1, 0, got 'yes'")
    assert _documents(store) == 0


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.yaml", r"missing.yaml \(from SDF_PRICES\): cannot read the price "
         r"file: No such file or directory"),
        (lambda d: d, r" \(from SDF_PRICES\): is a directory; the price file is one JSON/YAML"),
        (lambda d: _write(d / "bad.yaml", ": [\n"), r"bad.yaml \(from SDF_PRICES\): line 1: not "
         r"valid JSON/YAML: expected <block end>, but found ':'"),
        (lambda d: _write(d / "list.yaml", "- sonnet\n"), r"list.yaml \(from SDF_PRICES\): "
         r"expected a mapping of model -> prices"),
        (lambda d: _write(d / "bin.yaml", b"\xff\xfe"), r"bin.yaml \(from SDF_PRICES\): the "
         r"price file is not UTF-8 text"),
    ],
)  # fmt: skip
def test_bad_sdf_prices_names_the_variable(
    cli, store, tmp_path, monkeypatch, example_universe, make, expected
):
    import re

    monkeypatch.setenv("SDF_PRICES", str(make(tmp_path)))
    out = cli(
        "--corpus", store.root, "generate", example_universe, "--backend", "offline",
        "--limit", "1", expect=2,
    )  # fmt: skip
    line = out.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and re.search(expected, line), out.output
    assert "Traceback" not in out.output and _documents(store) == 0


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_bad_sdf_prompts_names_the_variable(cli, store, tmp_path, monkeypatch, example_universe):
    from sdfkit.llm.prompts import find_prompt

    args = ("--corpus", store.root, "generate", example_universe, "--backend", "offline")
    monkeypatch.setenv("SDF_PROMPTS", str(tmp_path / "my-promts"))
    out = cli(*args, "--limit", "1", expect=2)
    line = out.output.strip().splitlines()[-1]
    assert line == f"error: SDF_PROMPTS={str(tmp_path / 'my-promts')!r}: no such directory"
    assert _documents(store) == 0
    monkeypatch.setenv("SDF_PROMPTS", str(_write(tmp_path / "prompts.j2", "x")))
    with pytest.raises(SdfError, match=r"SDF_PROMPTS=.*prompts.j2': not a directory"):
        find_prompt("generate_doc")
    # an existing folder: its templates win, the packaged ones fill in the rest
    mine = tmp_path / "mine"
    mine.mkdir()
    name = "grade"  # a packaged prompt
    _write(mine / f"{name}.j2", "{% if %}")
    monkeypatch.setenv("SDF_PROMPTS", str(mine))
    assert find_prompt(name) == mine / f"{name}.j2"
    from sdfkit.llm.prompts import render_template as render

    with pytest.raises(SdfError, match=rf"{name}.j2:1: template error"):
        render(name)


def test_bad_sdf_corpus_is_one_error_line(cli, tmp_path, monkeypatch):
    afile = _write(tmp_path / "corpus.txt", "not a folder")
    monkeypatch.setenv("SDF_CORPUS", str(afile))
    out = cli("sql", "SELECT 1", expect=2)
    _one_error_line(
        out,
        f"corpus directory {str(afile)!r} (--corpus or $SDF_CORPUS): is a file, not a directory",
    )
    monkeypatch.setenv("SDF_CORPUS", str(afile / "sub"))
    out = cli("sql", "SELECT 1", expect=2)
    assert out.output.startswith(f"error: corpus directory {str(afile / 'sub')!r} (--corpus or ")
    assert "cannot be created" in out.output and "Traceback" not in out.output
    out = cli("--corpus", afile, "audit", "shape", expect=2)  # the option, the same check
    assert "is a file, not a directory" in out.output
    monkeypatch.setenv("SDF_CORPUS", str(tmp_path / "new" / "corpus"))
    out = cli("sql", "SELECT 1", expect=2)  # a missing corpus is named, never made empty
    assert "does not exist" in out.output and not (tmp_path / "new").exists()


def test_sdf_ray_tmp_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch):
    from sdfkit.engine.local import EngineError
    from sdfkit.engine.ray_data import _ray_tmp

    afile = tmp_path / "not-a-folder"
    afile.write_text("x")
    monkeypatch.setenv("SDF_RAY_TMP", str(afile))
    with pytest.raises(EngineError, match="SDF_RAY_TMP=.*is a file, not a folder"):
        _ray_tmp()
    monkeypatch.setenv("SDF_RAY_TMP", str(afile / "below"))
    with pytest.raises(EngineError, match="SDF_RAY_TMP=.*cannot be created"):
        _ray_tmp()
    monkeypatch.setenv("SDF_RAY_TMP", str(tmp_path / "ray" / "tmp"))
    assert _ray_tmp() == str(tmp_path / "ray" / "tmp") and (tmp_path / "ray" / "tmp").is_dir()


def test_a_number_in_exponent_notation_is_a_number_in_yaml_too(tmp_path):
    """YAML 1.1 reads 5e-2 as text (it wants 5.0e-2): a number field takes it as 0.05; text
    that is no number is still refused."""
    cfg = tmp_path / "proj" / "sdfkit.yaml"
    cfg.parent.mkdir()
    cfg.write_text("audits: {ngrams: {default_flag_share: 5e-2, flag_doc_share: {3: 2E-1}}}\n")
    ngrams = report.load_config(cfg).audits["ngrams"]
    assert ngrams["default_flag_share"] == 0.05 and ngrams["flag_doc_share"] == {3: 0.2}
    cfg.write_text("audits: {ngrams: {default_flag_share: 5x-2}}\n")
    with pytest.raises(ConfigError, match="must be a number, got '5x-2'"):
        report.load_config(cfg)
