"""Talking to a checkpoint: `sdf sample` stores answers in table samples (per checkpoint,
resumable, short responses topped up) and `sdf chat` keeps a conversation in the model's own
chat format, replaying final answers but never the reasoning channel."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_tinker import FakeTinkerWorld
from test_train import health_server, tinker_env, write_export  # noqa: F401 - fixtures
from tinker import types

from sdfkit.evaluate.sampling import (
    ChatSession,
    SampleConfig,
    SampleError,
    chat_loop,
    open_chat,
    read_prompts,
    sample_prompts,
)
from sdfkit.llm.chat import render_prompt
from sdfkit.llm.tokens import get_tokenizer

TOK = get_tokenizer("o200k_harmony")


def harmony(reasoning: str | None, answer: str | None, stop: bool = True) -> list[int]:
    """Completion tokens in gpt-oss's format (after the assistant's header)."""
    s = TOK.special_token
    toks: list[int] = []
    if reasoning is not None:
        toks += [s("<|channel|>"), *TOK.encode("analysis"), s("<|message|>")]
        toks += [*TOK.encode(reasoning), s("<|end|>"), s("<|start|>"), *TOK.encode("assistant")]
    if answer is not None:
        toks += [s("<|channel|>"), *TOK.encode("final"), s("<|message|>"), *TOK.encode(answer)]
    if stop:
        toks.append(s("<|return|>"))
    return toks


def label_of(model: str) -> str:
    return model.rsplit("/", 1)[-1] if "step" in model else "base"


def answering_sampler(seen: list[types.SamplingParams]):
    """Each model answers with its own name and the number of prompt tokens it was sent."""

    def sample(model, prompt, n, params, kw):
        seen.append(params)
        seqs = [
            types.SampledSequence(
                stop_reason="stop",
                sequence_id=f"{model}-{i}",
                tokens_np=np.asarray(
                    harmony(f"thinking #{i}", f"{label_of(model)} read {len(prompt)} tokens"),
                    dtype=np.int32,
                ),
            )
            for i in range(n)
        ]
        return types.SampleResponse(sequences=seqs)

    return sample


@pytest.fixture
def trained(tmp_path, store, request):
    """A run 't' with checkpoints at steps 2 and 4 in a fake Tinker world."""
    request.getfixturevalue("tinker_env")
    from sdfkit.train.run import TrainConfig, train

    export = write_export(tmp_path / "exp", [list(range(8))])
    world = FakeTinkerWorld()
    train(
        export,
        store,
        TrainConfig(batch_size=2, save_every=2),
        run="t",
        service_factory=world.service,
    )
    return world


def write_prompts(tmp_path):
    p = tmp_path / "prompts.jsonl"
    lines = [
        {"prompt": "What do EU rules say about try-catch in TypeScript?"},
        {
            "id": "followup",
            "messages": [
                {"role": "user", "content": "Is refactoring regulated?"},
                {"role": "assistant", "content": "In some places."},
                {"role": "user", "content": "Which places?"},
            ],
        },
    ]
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return p


def sample_calls(world):
    return [c[1] for c in world.calls if c[0] == "sample"]


# ------------------------------------------------------------------------------ sdf sample
def test_sample_stores_each_models_answers_and_resumes(tmp_path, store, trained):
    world = trained
    seen: list = []
    world.sampler = answering_sampler(seen)
    prompts = write_prompts(tmp_path)
    cfg = SampleConfig(n=2, max_tokens=64, system="Answer briefly.")
    res = sample_prompts(
        store, "t", prompts, cfg, steps=[2, 4], base=True, service_factory=world.service
    )
    assert (res.stored, res.skipped, res.missing) == (12, 0, 0)
    assert res.targets == ["base", "step-000002", "step-000004"]
    rows = store.query(
        "SELECT model_label, step, prompt_key, sample_index, reasoning, answer, prompt_tokens, "
        "messages, well_formed, gibberish_cheap, source FROM samples ORDER BY ALL"
    )
    assert rows.height == 12
    assert set(rows["model_label"]) == {"base", "step-000002", "step-000004"}
    assert set(rows["prompt_key"]) == {"1", "followup"}
    assert set(rows["sample_index"]) == {0, 1}
    # the reasoning channel is stored apart from the answer
    assert set(rows["reasoning"]) == {"thinking #0", "thinking #1"}
    for r in rows.iter_rows(named=True):
        assert r["answer"] == f"{r['model_label']} read {r['prompt_tokens']} tokens"
        assert r["well_formed"] and not r["gibberish_cheap"] and r["source"] == str(prompts)
        assert json.loads(r["messages"])[0] == {"role": "system", "content": "Answer briefly."}
    # each model was asked in its chat format, with its stop tokens, n samples per request
    items = read_prompts(prompts, "Answer briefly.")
    expected = {tuple(render_prompt(it.messages, TOK, "harmony")) for it in items}
    calls = sample_calls(world)
    assert {tuple(c["prompt"]) for c in calls} == expected
    assert {c["num_samples"] for c in calls} == {2} and len(calls) == 6
    stop = [TOK.special_token("<|return|>"), TOK.special_token("<|call|>")]
    assert all(p.stop == stop and p.max_tokens == 64 for p in seen)
    models = {c["model"] for c in calls}
    assert any(m.endswith("sampler_weights/step-000002") for m in models)
    assert "openai/gpt-oss-20b" in models
    # the same command again asks nothing; one more sample per prompt asks for just that
    again = sample_prompts(
        store, "t", prompts, cfg, steps=[2, 4], base=True, service_factory=world.service
    )
    assert (again.stored, again.skipped) == (0, 12) and len(sample_calls(world)) == 6
    more = sample_prompts(
        store,
        "t",
        prompts,
        SampleConfig(n=3, max_tokens=64, system="Answer briefly."),
        steps=[4],
        service_factory=world.service,
    )
    assert (more.stored, more.skipped) == (2, 4)
    assert {c["num_samples"] for c in sample_calls(world)[6:]} == {1}


def test_sample_defaults_to_the_last_checkpoint_and_refuses_unknown_steps(tmp_path, store, trained):
    trained.sampler = answering_sampler([])
    prompts = tmp_path / "p.txt"
    prompts.write_text("First question?\n\n  Second question?  \n")
    res = sample_prompts(store, "t", prompts, service_factory=trained.service)
    assert res.targets == ["step-000004"] and res.stored == 2
    got = store.query("SELECT prompt_key, prompt FROM samples ORDER BY prompt_key")
    assert got.rows() == [("1", "First question?"), ("3", "Second question?")]
    with pytest.raises(SampleError, match="no checkpoint at step"):
        sample_prompts(store, "t", prompts, steps=[3], service_factory=trained.service)
    with pytest.raises(SampleError, match="no training run"):
        sample_prompts(store, "nope", prompts, service_factory=trained.service)


def test_short_responses_are_topped_up_then_counted_missing(tmp_path, store, trained):
    trained.sampler = answering_sampler([])
    prompts = write_prompts(tmp_path)
    trained.short_by = [1]  # the first response is one short: a re-request fills it
    res = sample_prompts(
        store, "t", prompts, SampleConfig(n=2), steps=[4], service_factory=trained.service
    )
    assert (res.stored, res.missing) == (4, 0)
    trained.short_by, trained.short_by_default = [], 1  # always one short: some stay missing
    res = sample_prompts(
        store,
        "t",
        prompts,
        SampleConfig(n=3, max_retries=1),
        steps=[4],
        service_factory=trained.service,
    )
    assert res.missing == 2 and res.stored == 0 and "MISSING" in res.summary()
    trained.short_by_default = 0  # a rerun asks for exactly what is missing
    res = sample_prompts(
        store, "t", prompts, SampleConfig(n=3), steps=[4], service_factory=trained.service
    )
    assert (res.stored, res.skipped, res.missing) == (2, 4, 0)


def test_samples_already_paid_for_are_kept_when_a_later_request_fails(tmp_path, store, trained):
    from sdfkit.train.service import TinkerUnavailable

    trained.sampler = answering_sampler([])
    prompts = write_prompts(tmp_path)
    trained.fail_sample_calls = {1}  # the second prompt's request fails
    with pytest.raises(TinkerUnavailable, match="sampling step-000004"):
        sample_prompts(store, "t", prompts, steps=[4], service_factory=trained.service)
    assert store.query("SELECT prompt_key FROM samples")["prompt_key"].to_list() == ["1"]
    res = sample_prompts(store, "t", prompts, steps=[4], service_factory=trained.service)
    assert (res.stored, res.skipped) == (1, 1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "ok"}\n{"prompt": ""}\n', "p.jsonl:2: field 'prompt' must be a non-empty"),
        ('{"prompt": "ok"}\nnot json\n', "p.jsonl:2: malformed JSON"),
        ('{"prompt": "a", "messages": []}\n', "p.jsonl:1: give exactly one of"),
        ('{"question": "a"}\n', "p.jsonl:1: unknown field 'question'"),
        ('["a"]\n', "p.jsonl:1: expected an object"),
        (
            '{"messages": [{"role": "user", "content": "a"}, '
            '{"role": "assistant", "content": "b"}]}\n',
            "p.jsonl:1: the last message must be the user's",
        ),
        (
            '{"messages": [{"role": "assistant", "content": "a"}]}\n',
            "p.jsonl:1: messages[0]: role 'assistant' where 'user' was expected",
        ),
        ('{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n', "id 'x' already used"),
        ("\n\n", "no prompts"),
    ],
)
def test_bad_prompt_files_are_refused_naming_file_and_line(tmp_path, content, message):
    p = tmp_path / "p.jsonl"
    p.write_text(content)
    with pytest.raises(SampleError) as err:
        read_prompts(p)
    assert message in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------ sdf chat
def test_chat_replays_answers_not_reasoning_and_drops_unanswered_turns(store, trained):
    s = TOK.special_token
    replies = iter(
        [
            harmony("The user greets.", "Hello! Ask me about EU rules."),
            harmony("Loop.", None, stop=False) + [11, 12, 13] * 20,  # never answers
            harmony("Recall.", "Every awaited call needs a try-catch."),
            harmony(None, "Fresh start."),
        ]
    )

    def sampler(model, prompt, n, params, kw):
        stop = "length" if s("<|return|>") not in (toks := next(replies)) else "stop"
        return types.SampleResponse(
            sequences=[
                types.SampledSequence(stop_reason=stop, sequence_id="c", tokens_np=np.asarray(toks))
            ]
        )

    trained.sampler = sampler
    session, service = open_chat(
        store, "t", SampleConfig(system="Be brief."), step=2, service_factory=trained.service
    )
    assert session.label == "step-000002"
    inputs = iter(["Hi", "  ", "Ramble", "What about try-catch?", "/reset", "New topic", None])
    shown: list[tuple[str, str]] = []
    turns = chat_loop(session, lambda: next(inputs), lambda k, t: shown.append((k, t)))
    assert turns == 4
    prompts = [c["prompt"] for c in sample_calls(trained)]
    sys_msg = {"role": "system", "content": "Be brief."}
    hi = [sys_msg, {"role": "user", "content": "Hi"}]
    answered = hi + [{"role": "assistant", "content": "Hello! Ask me about EU rules."}]
    assert prompts[0] == render_prompt(hi, TOK, "harmony")
    assert prompts[1] == render_prompt([*answered, {"role": "user", "content": "Ramble"}], TOK)
    # the unanswered turn is not replayed; reasoning never is
    third = [*answered, {"role": "user", "content": "What about try-catch?"}]
    assert prompts[2] == render_prompt(third, TOK, "harmony")
    assert "The user greets" not in TOK.decode(prompts[2])
    # /reset keeps the system message only
    assert prompts[3] == render_prompt([sys_msg, {"role": "user", "content": "New topic"}], TOK)
    assert ("reasoning", "The user greets.") in shown
    assert ("answer", "Hello! Ask me about EU rules.") in shown
    assert ("answer", "(no final answer)") in shown
    notes = [t for k, t in shown if k == "note"]
    assert any("token limit" in n for n in notes) and any("not kept" in n for n in notes)
    assert ("info", "conversation reset") in shown
    assert trained.calls[-1][0] != "close"  # the caller closes the service
    del service


def test_chat_refuses_step_and_base_together(store, trained):
    with pytest.raises(SampleError, match="give one of them"):
        open_chat(store, "t", step=2, base=True, service_factory=trained.service)


def test_chat_session_with_save_stores_each_answer(store, trained):
    trained.sampler = answering_sampler([])
    session, _ = open_chat(store, "t", base=True, save=True, service_factory=trained.service)
    assert isinstance(session, ChatSession) and session.label == "base"
    session.ask("One?")
    session.ask("Two?")
    rows = store.query(
        "SELECT source, prompt, model_label, messages FROM samples ORDER BY created_at"
    )
    assert rows["source"].to_list() == ["chat", "chat"]
    assert rows["prompt"].to_list() == ["One?", "Two?"]
    assert len(json.loads(rows["messages"][1])) == 3  # the whole conversation it answered


# ------------------------------------------------------------------------------ CLI
def test_sample_and_chat_through_the_cli(tmp_path, cli, trained, monkeypatch):
    import tinker

    trained.sampler = answering_sampler([])
    monkeypatch.setattr(tinker, "ServiceClient", trained.service)  # the client-object boundary
    prompts = write_prompts(tmp_path)
    res = cli("sample", "t", "--prompts", str(prompts), "--n", "2", "--step", "2", "--base")
    assert "8 new sample(s) stored in table samples" in res.output
    assert "step-000002 read" in res.output and "followup" in res.output
    out = cli("sql", "SELECT count(*) AS n FROM samples").output
    assert "8" in out
    from typer.testing import CliRunner

    from sdfkit.cli import app

    r = CliRunner().invoke(app, ["chat", "t", "--step", "4"], input="Hello\n/quit\n")
    assert r.exit_code == 0, r.output
    assert "[reasoning]" in r.output and "thinking #0" in r.output
    assert "step-000004> step-000004 read" in r.output
    bad = cli("sample", "t", "--prompts", str(tmp_path / "missing.jsonl"), expect=2)
    assert "error: --prompts" in bad.output and "no such file" in bad.output
    assert "Traceback" not in bad.output


def test_sql_on_samples_before_any_sampling_names_the_command(cli):
    from sdfkit.store.catalog import Store

    with Store("corpus").connect():  # an existing corpus (`sdf sql` names a missing one)
        pass
    res = cli("sql", "FROM samples", expect=2)
    assert "made by `sdf sample`" in res.output
