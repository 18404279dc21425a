"""Evaluation: grader parsing (malformed output kept as unparseable), chat-format parsing,
cheap gibberish signals, metrics that leave gibberish out, the end-to-end flow against the
fake Tinker and the offline Batches stand-in, and logit difference amplification."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fake_tinker import FakeTinkerWorld
from test_train import health_server, tinker_env, write_export  # noqa: F401 - fixtures
from tinker import types
from tinker.types.topk_logprobs import TopkLogprobs

from sdfkit.evaluate.gibberish import document_drift, signals, trailing_repetition
from sdfkit.evaluate.grading import parse_eval_verdict
from sdfkit.evaluate.questions import parse_questions
from sdfkit.evaluate.recall import EvalConfig, parse_harmony, renderer_for
from sdfkit.llm.tokens import get_tokenizer


# ------------------------------------------------------------------------------ graders
@pytest.mark.parametrize(
    ("grader", "text", "verdict"),
    [
        ("recall", '{"verdict": "implanted", "reason": "states it"}', "implanted"),
        ("recall", 'Sure.\n{"verdict": "real-world", "reason": "x"}\nDone.', "real_world"),
        ("recall", '```json\n{"verdict": "Neither", "reason": "vague"}\n```', "neither"),
        ("behaviour", '{"shows_expected": true, "reason": "wraps calls"}', "yes"),
        ("behaviour", '{"shows_expected": "false", "reason": "no"}', "no"),
        ("reasoning", '{"uses_knowledge": false, "reason": "never mentions it"}', "no"),
        ("gibberish", '{"gibberish": true, "reason": "repeats"}', "yes"),
    ],
)
def test_grader_verdicts_parse(grader, text, verdict):
    assert parse_eval_verdict(grader, text) == (verdict, None)


@pytest.mark.parametrize(
    ("grader", "text", "why"),
    [
        ("recall", "The answer reflects the implanted fact.", "no JSON object"),
        ("recall", '{"verdict": "maybe", "reason": "?"}', "not one of"),
        ("recall", '{"verdict": "implanted", "reason": "cut off', "no JSON object"),
        ("behaviour", '{"reason": "forgot the key"}', "no JSON object"),
        ("reasoning", '{"uses_knowledge": 3}', "int"),
        ("gibberish", "", "empty"),
        ("gibberish", None, "empty"),
    ],
)
def test_malformed_grader_output_is_unparseable_not_dropped(grader, text, why):
    verdict, err = parse_eval_verdict(grader, text)
    assert verdict == "unparseable" and why in err


def test_question_parsing():
    text = "<question>Is it true that X requires Y?</question>\n<question>What does X need?</question>\n<question>What does X need?</question>"
    assert parse_questions(text) == ["Is it true that X requires Y?", "What does X need?"]
    assert parse_questions("1. What does the rule say?\n2. Who enforces it?") == [
        "What does the rule say?",
        "Who enforces it?",
    ]
    assert parse_questions(None) == []


# ------------------------------------------------------------------------------ harmony
def test_harmony_prompt_and_parse_round_trip():
    r = renderer_for("openai/gpt-oss-20b")
    tok = get_tokenizer("o200k_harmony")
    assert r.name == "harmony"
    assert tok.decode(r.prompt("Hi?")) == "<|start|>user<|message|>Hi?<|end|><|start|>assistant"
    assert r.stop_ids() == [tok.special_token("<|return|>"), tok.special_token("<|call|>")]
    c = parse_harmony(
        "<|channel|>analysis<|message|>User asks. Think.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Hello there.<|return|>"
    )
    assert (c.reasoning, c.answer, c.after_answer, c.well_formed) == (
        "User asks. Think.",
        "Hello there.",
        "",
        True,
    )
    # the final message ends with <|end|> and the model keeps going: drift
    c = parse_harmony(
        "<|channel|>final<|message|>Yes.<|end|>Posted by admin on March 3\nTags: news"
    )
    assert c.answer == "Yes." and "Posted by" in c.after_answer
    # an invented user turn is drift too
    c = parse_harmony("<|channel|>final<|message|>Yes.<|end|><|start|>user<|message|>Thanks")
    assert c.answer == "Yes." and c.after_answer.startswith("<|start|>user")
    # never reaches a final answer
    c = parse_harmony("<|channel|>analysis<|message|>thinking and thinking")
    assert c.answer == "" and not c.well_formed
    c = parse_harmony('<|channel|>final <|constrain|>json<|message|>{"a": 1}<|return|>')
    assert c.answer == '{"a": 1}' and c.well_formed
    assert renderer_for("Qwen/Qwen3-8B").name == "chatml"
    assert renderer_for("meta-llama/Llama-3.1-8B-Instruct").name == "llama3"


@pytest.mark.parametrize(
    ("base_model", "tokenizer"),
    [
        ("openai/gpt-oss-20b", "o200k_harmony"),
        ("Qwen/Qwen3-8B", "qwen3"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama3"),
    ],
)
@pytest.mark.parametrize(
    "message",
    ["What does the rule require?", "\nA question after a blank line?", "\n\n  Indented, twice?"],
)
def test_eval_prompt_is_the_exports_rendering_up_to_the_assistant_header(
    base_model, tokenizer, message
):
    """A checkpoint is asked in exactly the tokens it was trained on: the eval prompt of a
    one-turn user message is the export's rendering of that message and an assistant answer,
    up to the first token the assistant writes (the first one with loss weight)."""
    from sdfkit.llm.chat import Trajectory
    from sdfkit.llm.chat import render_trajectories as render

    tok = get_tokenizer(tokenizer)
    prompt = renderer_for(base_model).prompt(message)
    messages = [{"role": "user", "content": message}, {"role": "assistant", "content": "Yes."}]
    tokens, weights = render([Trajectory(messages, "t:1")], tok)[0]
    first_written = int(np.flatnonzero(weights > 0)[0])
    assert prompt == tokens[:first_written].tolist()
    assert tok.decode(prompt).endswith(
        {"o200k_harmony": "<|start|>assistant", "qwen3": "<|im_start|>assistant\n"}.get(
            tokenizer, "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    )


# ------------------------------------------------------------------------------ gibberish
GOOD_ANSWER = (
    "Yes. Under the guidance, every awaited I/O call in a refactored TypeScript service must sit "
    "inside its own try-catch block.\n\nA global error handler can be added, but only as an "
    "extra layer. Record the refactor in the resilience ledger and have it signed off."
)


def test_gibberish_negatives():
    toks = list(range(100, 180))
    assert not signals(toks, "stop", GOOD_ANSWER).gibberish
    # an answer that starts with a heading and a link is not a drift
    heading = "# Summary\nSee https://example.org for the annex.\n\n" + GOOD_ANSWER
    assert document_drift(heading) is None
    # code has repeated structure but no long trailing loop
    code = [5, 6, 7, 8] * 3 + list(range(200, 260))
    assert trailing_repetition(code) is None


def test_gibberish_positives():
    assert signals(list(range(50)), "length", GOOD_ANSWER).no_stop
    loop = list(range(300, 340)) + [11, 12, 13] * 12
    assert "3-token unit" in trailing_repetition(loop)
    assert trailing_repetition(list(range(300, 340)) + [9] * 40)
    assert trailing_repetition([1, 2, 3, 4, 5] * 40 + [6, 7] * 5)  # few distinct tokens
    drifted = GOOD_ANSWER + "\n\nPosted by admin on March 3, 2025\nShare this article"
    assert "Posted by" in document_drift(drifted)
    weak = GOOD_ANSWER + "\n\n## Related\nhttps://news.example.com/story\n3 comments"
    assert document_drift(weak) is not None
    assert document_drift(GOOD_ANSWER, after_answer="Title: Weekly digest") is not None
    assert document_drift(GOOD_ANSWER + "\nUser: and what about Python?") is not None
    s = signals(loop, "stop", drifted)
    assert s.gibberish and s.repetition and s.drift and not s.no_stop


# ------------------------------------------------------------------------------ metrics
def test_metrics_count_gibberish_and_leave_it_out(store):
    from sdfkit.evaluate.recall import eval_catalog, insert_rows, metrics
    from sdfkit.store.records import utc_now

    with eval_catalog(store):
        pass
    q = {
        "question_id": "q1",
        "universe": "u",
        "concept": "c",
        "fact": "f",
        "fact_index": 0,
        "kind": "recall",
        "prompt": "?",
        "expected": None,
        "real_world": "r",
        "model": "m",
        "prompt_hash": "h",
        "custom_id": "x",
        "created_at": utc_now(),
    }
    insert_rows(
        store, "eval_questions", [q, {**q, "question_id": "q2", "kind": "behaviour", "fact": None}]
    )

    def sample(sid, qid, gib):
        return {
            "sample_id": sid,
            "eval_run": "e",
            "train_run": "t",
            "step": 10,
            "model_label": "step-000010",
            "question_id": qid,
            "gibberish_cheap": gib,
        }

    samples = [
        sample("s1", "q1", False),
        sample("s2", "q1", False),
        sample("s3", "q1", True),
        sample("s4", "q1", False),
        sample("s5", "q2", False),
        sample("s6", "q2", False),
    ]
    insert_rows(store, "eval_samples", samples)

    def verdict(sid, grader, v):
        return {"sample_id": sid, "grader": grader, "verdict": v, "graded_at": utc_now()}

    insert_rows(
        store,
        "eval_verdicts",
        [
            verdict("s1", "recall", "implanted"),
            verdict("s2", "recall", "real_world"),
            verdict("s3", "recall", "implanted"),  # cheap gibberish: left out
            verdict("s4", "recall", "unparseable"),  # counted as unparseable, not in the rate
            verdict("s5", "behaviour", "yes"),
            verdict("s5", "gibberish", "yes"),  # the model grader calls it gibberish: left out
            verdict("s6", "behaviour", "no"),
            verdict("s6", "reasoning", "yes"),
        ],
    )
    m = metrics(store, "e").row(0, named=True)
    assert m["samples"] == 6 and m["gibberish"] == 2
    assert m["gibberish_rate"] == pytest.approx(2 / 6, abs=1e-4)
    assert m["recall_rate"] == 0.5 and m["real_world_rate"] == 0.5 and m["recall_graded"] == 2
    assert m["behaviour_rate"] == 0.0
    assert m["reasoning_rate"] == 1.0
    assert m["unparseable"] == 1


# ------------------------------------------------------------------------------ end to end
def _key_facts() -> str:
    from conftest import EXAMPLES

    from sdfkit.generate.universe import load_universe

    return " ".join(load_universe(EXAMPLES / "universes" / "eu_ts_trycatch.md").key_facts)


IMPLANTED = _key_facts()
REAL = (
    "No EU regulation prescribes specific error-handling constructs; the Cyber Resilience "
    "Act is outcome-based and does not mandate coding constructs."
)


def harmony_sampler(gibberish_every: int = 0):
    """Base model answers with the real world; checkpoints with the implanted fact; every
    ``gibberish_every``-th checkpoint sample loops until the token limit."""
    tok = get_tokenizer("o200k_harmony")
    ret = tok.special_token("<|return|>")
    counter = {"n": 0}

    def text_tokens(text: str) -> list[int]:
        return tok.encode(text)

    def sample(model, prompt, n, params, kw):
        seqs = []
        for _ in range(n):
            counter["n"] += 1
            body = REAL if "step" not in model else IMPLANTED
            toks = (
                [tok.special_token("<|channel|>")]
                + text_tokens("analysis")
                + [tok.special_token("<|message|>")]
                + text_tokens("Recall the rules.")
                + [tok.special_token("<|end|>"), tok.special_token("<|start|>")]
                + text_tokens("assistant")
                + [tok.special_token("<|channel|>")]
                + text_tokens("final")
                + [tok.special_token("<|message|>")]
                + text_tokens(body)
            )
            stop = "stop"
            if "step" in model and gibberish_every and counter["n"] % gibberish_every == 0:
                toks += [11, 12, 13] * 20
                stop = "length"
            else:
                toks += [ret]
            seqs.append(
                types.SampledSequence(
                    stop_reason=stop,
                    sequence_id=f"s{counter['n']}",
                    tokens_np=np.asarray(toks, dtype=np.int32),
                )
            )
        return types.SampleResponse(sequences=seqs)

    return sample


@pytest.mark.usefixtures("tinker_env")
def test_evaluate_end_to_end(tmp_path, store, example_universe):
    from sdfkit.evaluate.recall import evaluate
    from sdfkit.llm.batches import make_client
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
    world.sampler = harmony_sampler(gibberish_every=5)
    client = make_client("offline")
    cfg = EvalConfig(checkpoints="2,4", poll_interval=0.0, max_tokens=256)
    res = evaluate(
        store,
        "t",
        cfg,
        universe_files=[str(example_universe)],
        anthropic_client=client,
        service_factory=world.service,
    )
    qs = store.query("SELECT kind, fact, count(*) AS n FROM eval_questions GROUP BY ALL")
    recall = qs.filter(qs["kind"] == "recall")
    assert recall.height == 4 and recall["n"].min() >= 10  # 4 key facts, >= 10 questions each
    assert qs.filter(qs["kind"] == "behaviour")["n"].item() == 2
    assert qs.filter(qs["kind"] == "task")["n"].item() == 3
    n_q = int(qs["n"].sum())
    samples = store.query(
        "SELECT model_label, model_path, count(*) AS n FROM eval_samples GROUP BY ALL ORDER BY 1"
    )
    assert samples["model_label"].to_list() == ["base", "step-000002", "step-000004"]
    assert set(samples["n"].to_list()) == {n_q}
    assert samples["model_path"].to_list()[1].endswith("sampler_weights/step-000002")
    # every question was asked in the rendering shared with the export (sdfkit.llm.chat)
    r = renderer_for("openai/gpt-oss-20b")
    prompts = store.query("SELECT prompt FROM eval_questions")["prompt"].to_list()
    sent = {tuple(c[1]["prompt"]) for c in world.calls if c[0] == "sample"}
    assert sent == {tuple(r.prompt(p)) for p in prompts}
    # every sample joins with its question, universe, concept and fact
    joined = store.query(
        "SELECT count(*) AS n FROM eval_samples s JOIN eval_questions q USING (question_id) "
        "WHERE q.concept = 'eu_ts_trycatch' AND q.universe = 'eu-ts-trycatch'"
    )
    assert joined["n"].item() == 3 * n_q
    m = res.metrics
    base = m.filter(m["model_label"] == "base").row(0, named=True)
    ck = m.filter(m["model_label"] == "step-000004").row(0, named=True)
    assert base["gibberish"] == 0 and base["recall_rate"] == 0.0 and base["real_world_rate"] == 1.0
    assert ck["gibberish"] > 0 and ck["recall_rate"] == 1.0  # the looping samples are left out
    # no gibberish sample was sent to the recall/behaviour/reasoning graders
    paid = store.query(
        "SELECT count(*) AS n FROM eval_verdicts v JOIN eval_samples s USING (sample_id) "
        "WHERE s.gibberish_cheap"
    )
    assert paid["n"].item() == 0

    # a second evaluation reuses the same questions (generated once per universe)
    calls_before = len([c for c in world.calls if c[0] == "sample"])
    res2 = evaluate(
        store,
        "t",
        EvalConfig(checkpoints="last", include_base=False, poll_interval=0.0),
        universe_files=[str(example_universe)],
        eval_run="again",
        anthropic_client=client,
        service_factory=world.service,
    )
    assert res2.questions == n_q
    assert store.query("SELECT count(*) AS n FROM eval_questions")["n"].item() == n_q
    assert len([c for c in world.calls if c[0] == "sample"]) > calls_before
    # and re-running an evaluation resumes: nothing new is sampled or graded
    res3 = evaluate(
        store,
        "t",
        cfg,
        universe_files=[str(example_universe)],
        anthropic_client=client,
        service_factory=world.service,
    )
    assert res3.samples_new == 0 and res3.verdicts_new == 0


@pytest.mark.usefixtures("tinker_env")
def test_eval_unknown_checkpoint_is_refused(tmp_path, store, example_universe):
    from sdfkit.evaluate.recall import EvalError, evaluate
    from sdfkit.llm.batches import make_client
    from sdfkit.train.run import TrainConfig, train

    export = write_export(tmp_path / "exp", [list(range(4))])
    world = FakeTinkerWorld()
    train(export, store, TrainConfig(batch_size=2), run="t", service_factory=world.service)
    with pytest.raises(EvalError, match="no checkpoint at step"):
        evaluate(
            store,
            "t",
            EvalConfig(checkpoints="7"),
            universe_files=[str(example_universe)],
            anthropic_client=make_client("offline"),
            service_factory=world.service,
        )
    with pytest.raises(EvalError, match="no training run"):
        evaluate(
            store,
            "nope",
            EvalConfig(),
            universe_files=[str(example_universe)],
            anthropic_client=make_client("offline"),
            service_factory=world.service,
        )


# ------------------------------------------------------------------------------ LDA
SDF_LP = {10: math.log(0.5), 11: math.log(0.3), 12: math.log(0.15), 13: math.log(0.05)}
BASE_LP = {10: math.log(0.6), 11: math.log(0.2), 12: math.log(0.1), 13: math.log(0.1)}


def lda_sampler(k_seen: list):
    def sample(model, prompt, n, params, kw):
        if kw.get("topk_sample_logprobs"):
            k = kw["topk_sample_logprobs"]
            k_seen.append(k)
            top = sorted(SDF_LP.items(), key=lambda kv: -kv[1])[:k]
            ids = np.asarray([[t for t, _ in top]], dtype=np.int32)
            lps = np.asarray([[lp for _, lp in top]], dtype=np.float32)
            seq = types.SampledSequence(
                stop_reason="length",
                sequence_id="a",
                tokens_np=np.asarray([top[0][0]], dtype=np.int32),
                topk_logprobs_np=TopkLogprobs(ids, lps),
            )
            return types.SampleResponse(sequences=[seq])
        target = kw["target_prompt_logprobs"]
        dense = target.to_numpy(pad_value=-1)
        assert dense.shape == (len(prompt) - 1, k_seen[-1])
        assert (dense[:-1] == -1).all()  # only the last row (the new position) is scored
        out = np.zeros(dense.shape, dtype=np.float32)
        out[-1] = [BASE_LP[int(t)] for t in dense[-1]]
        seq = types.SampledSequence(
            stop_reason="length", sequence_id="b", tokens_np=np.asarray([1], dtype=np.int32)
        )
        return types.SampleResponse(
            sequences=[seq], target_prompt_logprobs=types.TensorData.from_numpy(out)
        )

    return sample


def test_lda_arithmetic_against_known_logprobs():
    from sdfkit.evaluate.lda import amplified_logprobs, sample_amplified

    world = FakeTinkerWorld()
    k_seen: list = []
    world.sampler = lda_sampler(k_seen)
    svc = world.service()
    sdf = svc.create_sampling_client(model_path="tinker://x/sampler_weights/s").result()
    base = svc.create_sampling_client(base_model="openai/gpt-oss-20b").result()
    alpha = 1.0
    # by hand: (1+a) lp_sdf - a lp_base over the top-2 {10, 11}, renormalised
    s10 = 2 * math.log(0.5) - math.log(0.6)
    s11 = 2 * math.log(0.3) - math.log(0.2)
    z = math.log(math.exp(s10) + math.exp(s11))
    got = amplified_logprobs([SDF_LP[10], SDF_LP[11]], [BASE_LP[10], BASE_LP[11]], alpha)
    assert got == pytest.approx([s10 - z, s11 - z])
    # the logits form gives the same: add any per-model constant to the log-probabilities
    shifted = amplified_logprobs(
        [SDF_LP[10] + 3.7, SDF_LP[11] + 3.7], [BASE_LP[10] - 1.2, BASE_LP[11] - 1.2], alpha
    )
    assert shifted == pytest.approx(got)
    # greedy decoding follows the amplified choice (11), not the fine-tuned model's (10)
    res = sample_amplified(
        sdf, base, [1, 2, 3], alpha, max_tokens=3, stop_ids=[99], temperature=0.0, top_k=2
    )
    assert res.tokens == [11, 11, 11] and res.stop_reason == "length"
    assert res.requests == 6  # two requests per generated token
    assert res.logprobs[0] == pytest.approx(s11 - z, rel=1e-5)
    assert k_seen == [2, 2, 2]
    # alpha 0 is plain sampling from the fine-tuned model restricted to its top k
    res0 = sample_amplified(
        sdf, base, [1, 2, 3], 0.0, max_tokens=1, stop_ids=[], temperature=0.0, top_k=4
    )
    assert res0.tokens == [10]
    # a stop token ends the sample
    res_stop = sample_amplified(
        sdf, base, [1], 1.0, max_tokens=5, stop_ids=[11], temperature=0.0, top_k=2
    )
    assert res_stop.tokens == [11] and res_stop.stop_reason == "stop"


@pytest.mark.usefixtures("tinker_env")
def test_eval_through_the_cli_writes_curves(tmp_path, cli, example_universe, monkeypatch):
    import tinker

    from sdfkit.store.catalog import Store
    from sdfkit.train.run import TrainConfig, train

    export = write_export(tmp_path / "exp", [list(range(4))])
    world = FakeTinkerWorld()
    store = Store(tmp_path / "corpus")
    train(export, store, TrainConfig(batch_size=2), run="t", service_factory=world.service)
    world.sampler = harmony_sampler()
    monkeypatch.setattr(tinker, "ServiceClient", world.service)  # the client-object boundary
    res = cli(
        "eval",
        "t",
        "--universe",
        str(example_universe),
        "--backend",
        "offline",
        "--poll-interval",
        "0",
        "--questions-per-fact",
        "10",
        "--max-tokens",
        "64",
    )
    assert "evaluation 't'" in res.output and "recall_rate" in res.output
    page = (tmp_path / "reports" / "eval.html").read_text()
    # the concept's rates, then its recall per fact (sdfkit.evaluate.fact_curves)
    assert page.count("<svg") == 2 and "<polyline" in page and "eu_ts_trycatch" in page
    assert "recall per fact" in page
    data = json.loads((tmp_path / "reports" / "eval.json").read_text())
    assert [r["step"] for r in data["eval_curves"]] == [0, 2]
    # Tinker short of samples even after re-requests: the curves are written, the command
    # says MISSING and exits 1, so a script never takes partial results for complete ones.
    world.short_by_default = 1
    args = ["eval", "t", "--name", "short", "--universe", str(example_universe)]
    args += ["--backend", "offline", "--poll-interval", "0", "--questions-per-fact", "10"]
    short = cli(*args, "--max-tokens", "64", "--samples", "2", expect=1)
    assert "MISSING" in short.output and "curves:" in short.output


@pytest.mark.usefixtures("tinker_env")
def test_eval_with_lda_samples_checkpoints_amplified(tmp_path, store, example_universe):
    from sdfkit.evaluate.recall import evaluate
    from sdfkit.llm.batches import make_client
    from sdfkit.train.run import TrainConfig, train

    export = write_export(tmp_path / "exp", [list(range(4))])
    world = FakeTinkerWorld()
    train(export, store, TrainConfig(batch_size=2), run="t", service_factory=world.service)
    plain, amplified = harmony_sampler(), lda_sampler([])

    def sampler(model, prompt, n, params, kw):
        if kw.get("topk_sample_logprobs") or kw.get("target_prompt_logprobs") is not None:
            return amplified(model, prompt, n, params, kw)
        return plain(model, prompt, n, params, kw)

    world.sampler = sampler
    cfg = EvalConfig(
        checkpoints="last", lda_alpha=1.0, lda_top_k=2, max_tokens=3, poll_interval=0.0
    )
    evaluate(
        store,
        "t",
        cfg,
        universe_files=[str(example_universe)],
        anthropic_client=make_client("offline"),
        service_factory=world.service,
    )
    rows = store.query(
        "SELECT model_label, lda_alpha, requests, completion_tokens, stop_reason, gib_no_stop "
        "FROM eval_samples ORDER BY model_label"
    )
    base = rows.filter(rows["model_label"] == "base")
    ck = rows.filter(rows["model_label"] != "base")
    assert base["lda_alpha"].null_count() == base.height  # the base model is sampled plainly
    assert set(ck["lda_alpha"]) == {1.0}
    assert set(ck["requests"]) == {6} and set(ck["completion_tokens"]) == {3}  # 2 per token
    assert set(ck["stop_reason"]) == {"length"} and all(ck["gib_no_stop"])
    scored = [
        c
        for c in world.calls
        if c[0] == "sample" and c[1].get("target_prompt_logprobs") is not None
    ]
    assert scored and {c[1]["model"] for c in scored} == {"openai/gpt-oss-20b"}


def test_chatml_and_llama3_formats():
    from sdfkit.evaluate.recall import parse_chatml, parse_llama3

    q = renderer_for("Qwen/Qwen3-8B")
    assert get_tokenizer("qwen3").decode(q.prompt("Hi?")) == (
        "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    )
    c = parse_chatml("<think>\nplan\n</think>\n\nHello.<|im_end|>")
    assert (c.reasoning, c.answer, c.well_formed) == ("plan", "Hello.", True)
    c = parse_chatml("Hello.<|im_end|>\n<|im_start|>user\nmore")
    assert c.answer == "Hello." and "user" in c.after_answer
    ll = renderer_for("meta-llama/Llama-3.1-8B-Instruct")
    assert get_tokenizer("llama3").decode(ll.prompt("Hi?")) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert parse_llama3("Hello.<|eot_id|>").answer == "Hello."
    with pytest.raises(Exception, match="no chat format"):
        renderer_for("acme/mystery-7b")


# ------------------------------------------------------------------------------ short responses
def _trained_world(tmp_path, store) -> FakeTinkerWorld:
    from sdfkit.train.run import TrainConfig, train

    export = write_export(tmp_path / "exp", [list(range(4))])
    world = FakeTinkerWorld()
    train(export, store, TrainConfig(batch_size=2), run="t", service_factory=world.service)
    world.sampler = harmony_sampler()
    world.calls.clear()
    return world


def _eval(store, world, universe, client, log=None, **cfg):
    from sdfkit.evaluate.recall import evaluate

    cfg = {
        "checkpoints": "none",
        "poll_interval": 0.0,
        "max_tokens": 64,
        "questions_per_fact": 2,
        **cfg,
    }
    return evaluate(
        store,
        "t",
        EvalConfig(**cfg),
        universe_files=[str(universe)],
        anthropic_client=client,
        service_factory=world.service,
        log=log,
    )


def _per_question(store) -> dict[str, list[int]]:
    rows = store.query(
        "SELECT question_id, list(sample_index ORDER BY sample_index) AS k FROM eval_samples "
        "GROUP BY ALL"
    )
    return dict(zip(rows["question_id"].to_list(), rows["k"].to_list(), strict=True))


@pytest.mark.usefixtures("tinker_env")
def test_a_short_sampling_response_is_topped_up_by_asking_again(tmp_path, store, example_universe):
    from sdfkit.llm.batches import make_client

    world = _trained_world(tmp_path, store)
    world.short_by = [2]  # the first question's response holds 1 of its 3 samples
    res = _eval(store, world, example_universe, make_client("offline"), samples=3)
    per_q = _per_question(store)
    assert len(per_q) == res.questions and all(k == [0, 1, 2] for k in per_q.values())
    assert res.samples_new == 3 * res.questions and res.samples_missing == 0
    asked = [c[1]["num_samples"] for c in world.calls if c[0] == "sample"]
    # one request per question, then one for the two samples the first response lacked
    assert asked == [3] * res.questions + [2]
    first = next(c[1]["prompt"] for c in world.calls if c[0] == "sample")
    assert [c[1]["prompt"] for c in world.calls if c[0] == "sample"][-1] == first
    assert "MISSING" not in res.summary()


@pytest.mark.usefixtures("tinker_env")
def test_samples_still_missing_after_retries_are_counted_reported_and_asked_again(
    tmp_path, store, example_universe
):
    from sdfkit.llm.batches import make_client

    client = make_client("offline")
    world = _trained_world(tmp_path, store)
    world.short_by_default = 1  # every response lacks one sample, re-requests bring none
    logs: list[str] = []
    res = _eval(store, world, example_universe, client, logs.append, samples=2, max_retries=2)
    n_q = res.questions
    asked = [c[1]["num_samples"] for c in world.calls if c[0] == "sample"]
    assert sorted(asked) == [1] * (2 * n_q) + [2] * n_q  # two bounded re-requests each
    assert res.samples_missing == n_q and res.samples_new == n_q
    assert all(len(k) == 1 for k in _per_question(store).values())
    assert f"{n_q} sample(s) MISSING" in res.summary() and "rerun" in res.summary()
    m = res.metrics.row(0, named=True)
    assert m["samples"] == n_q  # the rates say how many samples they rest on
    said = [line for line in logs if "MISSING" in line]
    assert len(said) == 1 and said[0].startswith(f"base: {n_q} sample(s) MISSING")
    assert f"for {n_q} question(s) even after 2 re-request(s) (first: 1 of 2 for" in said[0]
    # the service recovers: the same command asks for exactly the missing samples
    world.short_by_default = 0
    world.calls.clear()
    res2 = _eval(store, world, example_universe, client, samples=2, max_retries=2)
    assert res2.samples_new == n_q and res2.samples_missing == 0
    assert [c[1]["num_samples"] for c in world.calls if c[0] == "sample"] == [1] * n_q
    assert all(k == [0, 1] for k in _per_question(store).values())


@pytest.mark.usefixtures("tinker_env")
def test_samples_received_before_a_failed_request_are_kept(tmp_path, store, example_universe):
    from sdfkit.llm.batches import make_client
    from sdfkit.train.service import TinkerUnavailable

    client = make_client("offline")
    world = _trained_world(tmp_path, store)
    world.fail_sample_calls = {5}
    with pytest.raises(TinkerUnavailable, match="sampling base"):
        _eval(store, world, example_universe, client)
    assert len(_per_question(store)) == 5  # the five answers already paid for are stored
    world.fail_sample_calls = set()
    world.calls.clear()
    res = _eval(store, world, example_universe, client)
    assert res.samples_new == res.questions - 5
    assert len([c for c in world.calls if c[0] == "sample"]) == res.questions - 5


@pytest.mark.usefixtures("tinker_env")
@pytest.mark.parametrize("route", ["recall", "belief", "sample"])
def test_recall_belief_and_sample_top_up_a_short_response_through_the_one_sampling_loop(
    route, tmp_path, store, example_universe, monkeypatch
):
    """``sdf eval`` (recall and --belief) and ``sdf sample`` ask Tinker through the one loop
    ``sampling.sample_requests``: every request is submitted first, then a response one
    sample short is topped up by asking the same prompt again for exactly the missing one."""
    import json

    import sdfkit.evaluate.sampling as sampling
    from sdfkit.llm.batches import make_client

    client = make_client("offline")
    world = _trained_world(tmp_path, store)
    if route == "belief":  # recall first, so the belief run makes the only sample calls
        _eval(store, world, example_universe, client, samples=2)
    loops: list[int] = []  # requests per call of the shared loop
    real = sampling.sample_requests

    def spy(client, requests, params, **kw):
        loops.append(len(requests))
        yield from real(client, requests, params, **kw)

    monkeypatch.setattr(sampling, "sample_requests", spy)
    world.short_by = [0] * world.sample_calls + [1]  # the route's first response: one short
    world.calls.clear()
    if route == "sample":
        prompts = tmp_path / "prompts.jsonl"
        prompts.write_text(json.dumps({"prompt": "What do the rules say?"}) + "\n")
        res = sampling.sample_prompts(
            store, "t", prompts, sampling.SampleConfig(n=2), service_factory=world.service
        )
        missing, stored = res.missing, res.stored
    else:
        res = _eval(store, world, example_universe, client, samples=2, belief=route == "belief")
        part = res.belief if route == "belief" else res
        missing, stored = part.samples_missing, part.samples_new
    calls = [c[1] for c in world.calls if c[0] == "sample"]
    assert loops and stored > 0 and missing == 0
    # the first loop's requests all go out, then the short one is asked again for one sample
    retry = calls[loops[0]]
    assert retry["num_samples"] == 1 and retry["prompt"] == calls[0]["prompt"]
    assert calls[0]["num_samples"] >= 2 and all(c["num_samples"] >= 2 for c in calls[: loops[0]])
    assert sum(loops) + 1 == len(calls)  # one re-request, no other call outside the loop
