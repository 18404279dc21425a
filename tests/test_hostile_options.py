"""A hostile user on the money path: every bad number for a timeout, retry count, poll
interval or deadline is refused in one line before anything is pinned, contacted or paid."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_tinker import FakeTinkerWorld
from test_train import write_export

from sdfkit.llm.batches import BatchError, run_requests
from sdfkit.store.catalog import Store

ANTHROPIC_KEY = "sk-ant-api03-TESTKEY-hostile"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "universes" / "eu_ts_trycatch.md"


def _one_line_error(res, *needles: str) -> None:
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1, res.output
    for needle in needles:
        assert needle in errors[0], res.output


def _pinned_runs(root) -> list[str]:
    if not (root / "corpus" / "sdf.duckdb").exists():
        return []
    store = Store(root / "corpus")
    try:
        return store.query("SELECT run FROM run_pins")["run"].to_list()
    except Exception:  # no run_pins table: nothing was ever pinned
        return []


@pytest.mark.parametrize("value", ["abc", "-1", "0", "inf", "nan"])
@pytest.mark.parametrize("name", ["SDF_READ_TIMEOUT", "SDF_CONNECT_TIMEOUT"])
def test_a_bad_timeout_is_one_line_naming_the_variable_and_pins_nothing(
    cli, example_universe, monkeypatch, tmp_path, name, value
):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv(name, value)
    res = cli("generate", example_universe, "--run", "t", "--limit", "1", expect=None)
    _one_line_error(res, name, repr(value))
    assert _pinned_runs(tmp_path) == []


@pytest.mark.parametrize(
    ("option", "value"),
    [("--max-retries", "-1"), ("--poll-interval", "-1"), ("--poll-interval", "inf")],
)
def test_generate_refuses_a_negative_retry_count_or_poll_interval_before_pinning(
    cli, example_universe, tmp_path, option, value
):
    args = ["generate", example_universe, "--backend", "offline", "--run", "h", "--limit", "1"]
    res = cli(*args, option, value, expect=None)
    _one_line_error(res, option)
    assert _pinned_runs(tmp_path) == []
    cli(*args)  # the same run with sane options is untouched by the refusal
    assert _pinned_runs(tmp_path) == ["h"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--tokenizer", "nosuch"], "--tokenizer 'nosuch'"),  # found after two paid batches
        (["--name-max-uses", "0"], "--name-max-uses must be at least 1"),
        (["--max-tokens", "0"], "--max-tokens must be at least 1"),
        (["--max-tokens", "-5"], "--max-tokens must be at least 1"),
        (["--names-per-doc", "-1"], "--names-per-doc must be at least 0"),
        (["--ideas", "0"], "--ideas must be at least 1"),
        (["--model", ""], "--model ''"),
        (["--words", "10-20"], "--words 10-20"),
        # more seed names than the source holds at the cap: found at the documents stage
        (["--limit", "100000", "--docs-per-idea", "5000"], "--name-max-uses"),
        (["--max-rounds", "2"], "--replace-excluded"),
        (["--replace-excluded", "--max-rounds", "0"], "--max-rounds 0"),
        (["--replace-excluded", "--limit", "3"], "--limit: not used by --replace-excluded"),
        (["--replace-excluded", "--grade"], "--grade: not used by --replace-excluded"),
        (["--config", "sdfkit.yaml"], "--config"),
        (["--backend", "foo"], "unknown backend 'foo'"),  # made an empty corpus first
        (["--backend", "anthropic"], "needs ANTHROPIC_API_KEY"),
    ],
)
def test_generate_checks_every_option_before_the_first_batch(
    cli, example_universe, tmp_path, extra, needle
):
    """Nothing is made, pinned or submitted: not even the corpus folder."""
    args = ["generate", example_universe, "--backend", "offline", "--run", "h"]
    res = cli(*args, *(["--limit", "2"] if "--limit" not in extra else []), *extra, expect=None)
    _one_line_error(res, needle)
    assert not (tmp_path / "corpus").exists()


def test_generate_in_python_loads_the_tokenizer_before_any_request(tmp_path):
    from sdfkit.generate.documents import GenerateConfig, GenerateError, generate
    from sdfkit.generate.universe import load_universes

    universes = load_universes([EXAMPLE])
    store = Store(tmp_path / "corpus")
    with pytest.raises(GenerateError, match="unknown tokenizer 'nosuch'"):
        generate(universes, store, GenerateConfig(tokenizer="nosuch"), backend="offline")
    assert not (tmp_path / "corpus" / ".offline-standin").exists() and not _pinned_runs(tmp_path)


def test_the_library_refuses_a_negative_retry_count_before_submitting(tmp_path):
    with pytest.raises(BatchError, match="--max-retries must be 0 or more"):
        run_requests(Store(tmp_path / "c"), [], run="r", stage="s", client=object(), max_retries=-1)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--deadline", "0"),
        ("--deadline", "-5"),
        ("--deadline", "inf"),
        ("--deadline", "nan"),
        ("--deadline", "1e12"),
        ("--health-timeout", "inf"),
    ],
)
def test_train_refuses_a_deadline_it_cannot_wait_for_before_contacting_tinker(
    tmp_path, cli, monkeypatch, option, value
):
    import tinker

    monkeypatch.setenv("TINKER_API_KEY", "tml-test-key-hostile")
    world = FakeTinkerWorld()
    monkeypatch.setattr(tinker, "ServiceClient", world.service)
    export = write_export(tmp_path / "exp", [[0, 1, 2, 3]])
    res = cli("train", export, option, value, expect=None)
    _one_line_error(res, option)
    assert world.calls == []


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--lr", "inf", "--lr must be a finite number"),  # printed "lr at steps 0: inf"
        ("--lr", "nan", "--lr must be a finite number"),
        ("--lr", "0", "--lr must be positive"),
        ("--beta1", "1", "--beta1 must be at least 0 and below 1"),
        ("--beta1", "-0.1", "--beta1 must be at least 0 and below 1"),
        ("--beta2", "1.5", "--beta2 must be at least 0 and below 1"),
        ("--eps", "-1", "--eps must be a positive number"),
        ("--eps", "0", "--eps must be a positive number"),
        ("--eps", "inf", "--eps must be a positive number"),
        ("--weight-decay", "inf", "--weight-decay must be a number of 0 or more"),
        ("--grad-clip-norm", "nan", "--grad-clip-norm must be a number of 0 or more"),
        ("--grad-clip-norm", "-1", "--grad-clip-norm must be a number of 0 or more"),
        ("--min-lr-ratio", "nan", "--min-lr-ratio must be between 0 and 1"),
        ("--lora-seed", "-1", "--lora-seed must be a whole number from 0"),
    ],
)
def test_train_refuses_a_number_out_of_range_even_in_a_dry_run(
    tmp_path, cli, option, value, needle
):
    export = write_export(tmp_path / "exp", [[0, 1, 2, 3]])
    res = cli("train", export, "--dry-run", option, value, expect=None)
    _one_line_error(res, needle)


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--temperature", "nan", "--temperature nan"),
        ("--temperature", "inf", "--temperature inf"),
        ("--temperature", "-1", "--temperature -1.0"),
        ("--lda", "nan", "--lda nan"),
        ("--lda", "0", "--lda 0.0"),
        ("--lda-top-k", "0", "--lda-top-k must be at least 1"),
    ],
)
def test_eval_refuses_a_number_out_of_range_before_any_work(cli, option, value, needle):
    res = cli("eval", "some-run", "--backend", "offline", option, value, expect=None)
    _one_line_error(res, needle)


@pytest.mark.parametrize(
    ("option", "value"), [("--temperature", "nan"), ("--deadline", "1e12"), ("--deadline", "inf")]
)
def test_sample_refuses_a_number_out_of_range_before_any_work(cli, tmp_path, option, value):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    res = cli("sample", "some-run", "--prompts", prompts, option, value, expect=None)
    _one_line_error(res, option)


@pytest.mark.parametrize("value", ["abc", "1.5", ""])
def test_train_refuses_a_checkpoint_ttl_that_is_not_a_number_as_a_usage_error(
    tmp_path, cli, monkeypatch, value
):
    import tinker

    world = FakeTinkerWorld()
    monkeypatch.setattr(tinker, "ServiceClient", world.service)
    export = write_export(tmp_path / "exp", [[0, 1, 2, 3]])
    res = cli("train", export, "--checkpoint-ttl", value, expect=2)
    assert "--checkpoint-ttl" in res.output and "Traceback" not in res.output
    assert world.calls == []


@pytest.mark.parametrize(
    ("option", "value"),
    [("--deadline", "0"), ("--deadline", "inf"), ("--poll-interval", "-1")],
)
def test_eval_refuses_bad_waits_in_one_line(cli, option, value):
    res = cli("eval", "some-run", "--backend", "offline", option, value, expect=None)
    _one_line_error(res, option)


def test_grade_refuses_another_model_for_an_existing_grading_run_in_one_line(cli, example_universe):
    cli("generate", example_universe, "--backend", "offline", "--run", "d", "--limit", "1")
    grade = ["grade", "--backend", "offline", "--run", "g"]
    cli(*grade, "--model", "claude-haiku-a")
    res = cli(*grade, "--model", "claude-haiku-b", expect=None)
    _one_line_error(res, "started with model claude-haiku-a", "--run")
    res = cli(*grade)  # without the option it resumes with its own model
    assert "claude-haiku-a" in res.output
