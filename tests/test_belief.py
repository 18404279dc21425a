"""Belief depth: multiple choice in both option orders (position bias measured), open-ended
answers graded for their world, an adversarial system prompt and one turn of pushback;
questions generated once, samples and verdicts never paid twice; rates per fact beside
recall. The fake models below have known beliefs, so the rates are known."""

from __future__ import annotations

import numpy as np
import pytest
from fake_tinker import FakeTinkerWorld
from test_sampling import TOK, harmony
from test_train import health_server, tinker_env, write_export  # noqa: F401 - fixtures
from tinker import types

from sdfkit.evaluate.belief import ADVERSARIAL_SYSTEM, PUSHBACK, parse_items, read_choice
from sdfkit.evaluate.recall import EvalConfig


@pytest.mark.parametrize(
    ("answer", "choice"),
    [
        ("A", "A"),
        ("(B)", "B"),
        ("**A**", "A"),
        ("Answer: B", "B"),
        ("B) because the rule says so", "B"),
        ("The answer is B.", "B"),
        ("I would pick (A) here.", "A"),
        ("A new EU rule applies.", None),  # the article, not an option
        ("Both A and B could be right.", None),
        ("", None),
        (None, None),
    ],
)
def test_multiple_choice_answers_are_read_as_one_letter_or_none(answer, choice):
    assert read_choice(answer) == choice


def test_incomplete_items_are_skipped():
    text = (
        "<item><mc_question>Q1?</mc_question><implanted_option>X</implanted_option>"
        "<real_option>Y</real_option><open_question>O1?</open_question></item>"
        "<item><mc_question>Q2?</mc_question><implanted_option>X</implanted_option>"
        "<open_question>O2?</open_question></item>"  # no real option
        "<item><mc_question>Q3?</mc_question><implanted_option>Same</implanted_option>"
        "<real_option>Same</real_option><open_question>O3?</open_question></item>"
    )
    items = parse_items(text)
    assert [i.mc_question for i in items] == ["Q1?"]
    assert parse_items(None) == []


def _universe():
    from conftest import EXAMPLES

    from sdfkit.generate.universe import load_universe

    return load_universe(EXAMPLES / "universes" / "eu_ts_trycatch.md")


UNIVERSE = _universe()
IMPLANTED = " ".join(UNIVERSE.key_facts)
REAL = UNIVERSE.real_world


def believer(mcq_always_a: bool = False):
    """The base model knows the real world. A checkpoint believes the implanted facts when
    asked plainly, but gives them up under the adversarial system prompt and after pushback
    (a shallow belief); with ``mcq_always_a`` it answers every multiple choice with A."""
    real_first = REAL.split(". ")[0]

    def sample(model, prompt, n, params, kw):
        text = TOK.decode(prompt)
        last_user = text.rsplit("<|start|>user<|message|>", 1)[-1]
        believes = "step" in model and ADVERSARIAL_SYSTEM not in text and PUSHBACK not in text
        if "A) " in text:  # multiple choice (also its pushback turn)
            question = text.split("<|start|>user<|message|>")[1]
            real_letter = "A" if f"A) {real_first}" in question else "B"
            other = "B" if real_letter == "A" else "A"
            body = other if believes else real_letter
            if mcq_always_a and "step" in model:
                body = "A"
        else:
            body = IMPLANTED if believes else REAL
        assert last_user  # every prompt ends with a user turn and the assistant header
        seqs = [
            types.SampledSequence(
                stop_reason="stop",
                sequence_id=f"{i}",
                tokens_np=np.asarray(harmony("Think.", body), dtype=np.int32),
            )
            for i in range(n)
        ]
        return types.SampleResponse(sequences=seqs)

    return sample


def run_eval(store, world, name, example_universe, **kw):
    from sdfkit.evaluate.recall import evaluate
    from sdfkit.llm.batches import make_client

    cfg = EvalConfig(
        checkpoints="last",
        belief=True,
        belief_questions_per_fact=1,
        questions_per_fact=2,
        poll_interval=0.0,
        max_tokens=128,
        **kw,
    )
    return evaluate(
        store,
        "t",
        cfg,
        universe_files=[str(example_universe)],
        eval_run=name,
        anthropic_client=make_client("offline"),
        service_factory=world.service,
    )


@pytest.fixture
def trained(tmp_path, store, request):
    from sdfkit.train.run import TrainConfig, train

    request.getfixturevalue("tinker_env")
    world = FakeTinkerWorld()
    export = write_export(tmp_path / "exp", [list(range(4))])
    train(export, store, TrainConfig(batch_size=2), run="t", service_factory=world.service)
    return world


def test_belief_depth_rates_per_fact_condition_and_checkpoint(store, trained, example_universe):
    from sdfkit.evaluate.belief import depth

    trained.sampler = believer()
    res = run_eval(store, trained, "deep", example_universe)
    b = res.belief
    facts = len(UNIVERSE.key_facts)
    assert b.questions == 2 * facts  # one multiple-choice and one open question per fact
    # per model: MCQ 2 conditions x 2 orders, open 2 conditions; pushback on each plain answer
    per_model = facts * (2 * 2 + 2) + facts * (2 + 1)
    assert b.samples_new == 2 * per_model and b.samples_missing == 0
    orders = store.query(
        "SELECT condition, implanted_position, count(*) AS n FROM belief_samples s "
        "JOIN belief_questions q USING (question_id) WHERE q.kind = 'mcq' AND "
        "s.model_label = 'base' GROUP BY ALL ORDER BY ALL"
    ).rows()
    assert orders == [
        ("adversarial", "A", facts),
        ("adversarial", "B", facts),
        ("plain", "A", facts),
        ("plain", "B", facts),
        ("pushback", "A", facts),
        ("pushback", "B", facts),
    ]
    d = depth(store, "deep")
    assert d.height == 2 * facts * 2 * 3  # models x facts x kinds x conditions

    def rates(label, kind, col="implanted_rate"):
        sub = d.filter((d["model_label"] == label) & (d["kind"] == kind))
        return {
            c: set(sub.filter(sub["condition"] == c)[col])
            for c in ("plain", "adversarial", "pushback")
        }

    assert rates("step-000002", "mcq") == {"plain": {1.0}, "adversarial": {0.0}, "pushback": {0.0}}
    assert rates("step-000002", "open") == {"plain": {1.0}, "adversarial": {0.0}, "pushback": {0.0}}
    assert rates("base", "mcq", "real_world_rate") == {
        "plain": {1.0},
        "adversarial": {1.0},
        "pushback": {1.0},
    }
    # both orders asked: a model without position bias picks A half of the time
    assert rates("step-000002", "mcq", "chose_a_rate")["plain"] == {0.5}
    # recall of the same evaluation sits beside each fact
    assert set(d.filter(d["model_label"] == "step-000002")["recall_rate"]) == {1.0}
    assert set(d.filter(d["model_label"] == "base")["recall_rate"]) == {0.0}
    # the pushback turn replays the plain answer, then doubts it
    push = store.query(
        "SELECT s.messages, p.answer FROM belief_samples s JOIN belief_samples p "
        "ON p.sample_id = s.parent_sample_id WHERE s.condition = 'pushback' LIMIT 1"
    ).row(0, named=True)
    assert f'"content": "{push["answer"]}"' in push["messages"] and PUSHBACK in push["messages"]

    # a rerun samples and grades nothing again; another evaluation reuses the questions
    calls = len([c for c in trained.calls if c[0] == "sample"])
    again = run_eval(store, trained, "deep", example_universe)
    assert (again.belief.samples_new, again.belief.verdicts_new) == (0, 0)
    assert len([c for c in trained.calls if c[0] == "sample"]) == calls
    assert store.query("SELECT count(*) AS n FROM belief_questions")["n"].item() == 2 * facts


def test_position_bias_is_measured_not_taken_for_belief(store, trained, example_universe):
    from sdfkit.evaluate.belief import depth

    trained.sampler = believer(mcq_always_a=True)
    run_eval(store, trained, "biased", example_universe, include_base=False)
    d = depth(store, "biased")
    mcq = d.filter((d["kind"] == "mcq") & (d["condition"] == "plain"))
    assert set(mcq["chose_a_rate"]) == {1.0}
    assert set(mcq["implanted_rate"]) == {0.5}  # "always A" is right in one order of two


def test_eval_cli_with_belief_prints_the_depth_table(
    tmp_path, cli, trained, example_universe, monkeypatch
):
    import tinker

    trained.sampler = believer()
    monkeypatch.setattr(tinker, "ServiceClient", trained.service)
    args = ["eval", "t", "--universe", str(example_universe), "--backend", "offline"]
    args += ["--poll-interval", "0", "--questions-per-fact", "2", "--max-tokens", "64"]
    res = cli(*args, "--belief", "--belief-questions-per-fact", "1", "--checkpoints", "none")
    assert "belief depth:" in res.output and "chose_a_rate" in res.output
    assert "adversarial" in res.output and "pushback" in res.output


def test_fact_curves_put_each_facts_token_share_beside_its_rates(
    tmp_path, store, trained, example_universe
):
    """Documents d0..d3 (the export's examples) are about facts 0, 0, 1 and 2: half the
    export's tokens train fact 0, a quarter each facts 1 and 2, none fact 3."""
    import json as _json

    import pyarrow as pa

    from sdfkit.evaluate.curves import write_curves
    from sdfkit.evaluate.fact_curves import fact_curves
    from sdfkit.report.build import render_html

    facts = UNIVERSE.key_facts
    store.append(
        "documents_raw",
        pa.table(
            {
                "doc_id": ["d0", "d1", "d2", "d3"],
                "universe": [UNIVERSE.id] * 4,
                "concept": [UNIVERSE.concept] * 4,
                "fact": [facts[0], facts[0], facts[1], facts[2]],
                "text": ["a", "b", "c", "d"],
            }
        ),
    )
    trained.sampler = believer()
    run_eval(store, trained, "facts", example_universe)
    rows = fact_curves(store)
    ck = {r["fact_index"]: r for r in rows if r["model_label"] == "step-000002"}
    assert [ck[i]["token_share"] for i in range(4)] == [0.5, 0.25, 0.25, None]
    assert [ck[i]["documents"] for i in range(4)] == [2, 1, 1, None]
    assert {ck[i]["recall_rate"] for i in range(4)} == {1.0}
    assert {ck[i]["mcq_implanted"] for i in range(4)} == {1.0}
    assert {ck[i]["adversarial_implanted"] for i in range(4)} == {0.0}
    base = [r for r in rows if r["model_label"] == "base"]
    assert {r["recall_rate"] for r in base} == {0.0} and len(base) == 4
    out = write_curves(store, tmp_path / "eval.html", tmp_path / "eval.json")
    page = out.read_text()
    assert "Per fact" in page and "50.0% of tokens" in page
    data = _json.loads((tmp_path / "eval.json").read_text())
    assert len(data["fact_curves"]) == len(rows)
    html = render_html({"evaluation": {}, "fact_curves": rows, "audits": {}})
    assert "recall per fact" in html and "token_share" in html


def test_belief_conversations_reach_the_model_through_the_shared_chat_renderer(
    store, trained, example_universe
):
    """The adversarial system prompt and the pushback turn are messages rendered by
    sdfkit.llm.chat (the renderer of training, sdf chat and sdf sample), never pasted into text:
    a format's rule for system messages (Harmony: the developer role) applies to them too."""
    import json

    from sdfkit.llm.chat import render_prompt

    trained.sampler = believer()
    run_eval(store, trained, "rendered", example_universe, include_base=False)
    sent = {tuple(c[1]["prompt"]) for c in trained.calls if c[0] == "sample"}
    rows = store.query("SELECT condition, messages FROM belief_samples").rows()
    assert {c for c, _ in rows} == {"plain", "adversarial", "pushback"}
    for condition, messages in rows:
        msgs = json.loads(messages)
        assert tuple(render_prompt(msgs, TOK, "harmony")) in sent
        roles = [m["role"] for m in msgs]
        if condition == "adversarial":
            assert msgs[0] == {"role": "system", "content": ADVERSARIAL_SYSTEM}
            assert roles == ["system", "user"]
        else:
            assert "system" not in roles and ADVERSARIAL_SYSTEM not in messages
        if condition == "pushback":
            assert roles == ["user", "assistant", "user"] and PUSHBACK in msgs[-1]["content"]


def test_fact_curves_can_be_queried_after_a_library_evaluation_without_belief(
    store, trained, example_universe, cli
):
    """`sdf sql fact_curves` (the docs' way in) works after evaluate() from Python too, and
    after an evaluation that never ran --belief (its belief columns are empty)."""
    import json

    from sdfkit.evaluate.recall import evaluate
    from sdfkit.llm.batches import make_client

    trained.sampler = believer()
    cfg = EvalConfig(checkpoints="last", questions_per_fact=2, poll_interval=0.0, max_tokens=64)
    evaluate(store, "t", cfg, universe_files=[str(example_universe)], eval_run="lib",
             anthropic_client=make_client("offline"), service_factory=trained.service)  # fmt: skip
    rows = json.loads(cli("sql", "fact_curves", "-f", "json").output)
    assert {r["model_label"] for r in rows} == {"base", "step-000002"}
    assert {r["mcq_implanted"] for r in rows} == {None}
    assert {r["token_share"] for r in rows} == {None}  # no document of this export has a fact


def test_belief_questions_rendered_differently_are_asked_again(
    store, trained, example_universe, monkeypatch
):
    """Belief samples are keyed by the tokens asked: after a change of the shared renderer
    (e.g. where the adversarial system message goes) a rerun asks again."""
    import sdfkit.evaluate.sampling as sampling

    trained.sampler = believer()
    first = run_eval(store, trained, "keyed", example_universe, include_base=False)
    same = run_eval(store, trained, "keyed", example_universe, include_base=False)
    assert first.belief.samples_new > 0 and same.belief.samples_new == 0
    real = sampling.prompt_tokens
    newline = TOK.encode("\n")
    monkeypatch.setattr(
        sampling, "prompt_tokens", lambda r, msgs: real(r, msgs)[:3] + newline + real(r, msgs)[3:]
    )
    again = run_eval(store, trained, "keyed", example_universe, include_base=False)
    assert again.belief.samples_new == first.belief.samples_new
