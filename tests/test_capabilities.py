"""Capability regression: inspect-ai tasks served by Tinker sampling through sdfkit's chat
renderer; scores with standard errors in capability_scores, the change against the base
model in the report, `max_capability_drop` in `sdf check`. A local inspect task (sums of two
numbers) and fake models of known accuracy make the scores known."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("inspect_ai", reason="capability evals are the optional extra sdfkit[evals]")

from fake_tinker import FakeTinkerWorld  # noqa: E402
from test_sampling import TOK, harmony  # noqa: E402
from test_train import health_server, tinker_env, write_export  # noqa: E402,F401 - fixtures
from tinker import types  # noqa: E402

from sdfkit.evaluate import EvalConfig  # noqa: E402

TASK_FILE = Path(__file__).resolve().parent / "capability_task.py"
SPEC = f"{TASK_FILE}@sums"


def _pairs() -> list[tuple[int, int]]:
    import capability_task

    return capability_task.PAIRS


def arithmetic_sampler(calls: list[str]):
    """The base model adds correctly; a checkpoint gets every even sum wrong (by one). Each
    reasons first, with a wrong number in its reasoning: scorers must read only the answer."""

    def sample(model, prompt, n, params, kw):
        text = TOK.decode(prompt)
        calls.append(text)
        a, b = map(int, re.search(r"What is (\d+)\+(\d+)\?", text).groups())
        answer = a + b
        if "step" in model and answer % 2 == 0:
            answer += 1
        toks = harmony(f"Adding. It might be {answer + 50}.", str(answer))
        seq = types.SampledSequence(stop_reason="stop", sequence_id="x", tokens_np=np.asarray(toks))
        return types.SampleResponse(sequences=[seq] * n)

    return sample


def expected(limit: int | None = None) -> tuple[float, float]:
    """(accuracy, stderr) of the checkpoint on the first ``limit`` samples."""
    scores = [float((a + b) % 2 == 1) for a, b in _pairs()[:limit]]
    return statistics.mean(scores), statistics.stdev(scores) / math.sqrt(len(scores))


@pytest.fixture
def trained(tmp_path, store, request):
    from sdfkit.train import TrainConfig, train

    request.getfixturevalue("tinker_env")
    world = FakeTinkerWorld()
    export = write_export(tmp_path / "exp", [list(range(4))])
    train(export, store, TrainConfig(batch_size=2), run="t", service_factory=world.service)
    return world


def test_capability_scores_land_with_stderr_and_change_against_base(store, trained):
    from inspect_ai.log import read_eval_log

    from sdfkit.capabilities import changes, run
    from sdfkit.check import Thresholds
    from sdfkit.check import evaluate as check

    prompts: list[str] = []
    trained.sampler = arithmetic_sampler(prompts)
    res = run(store, "t", EvalConfig(checkpoints="last", max_tokens=64), SPEC,
              service_factory=trained.service)  # fmt: skip
    assert sorted(res.scored) == [("base", SPEC), ("step-000002", SPEC)] and not res.skipped
    n = len(_pairs())
    assert len(prompts) == 2 * n
    # asked in the model's own chat format, ready for the assistant
    assert all(p.startswith("<|start|>user<|message|>What is ") for p in prompts)
    assert all(p.endswith("<|end|><|start|>assistant") for p in prompts)
    rows = store.query(
        "SELECT model_label, step, task, scorer, metric, value, stderr, samples "
        "FROM capability_scores ORDER BY step"
    ).to_dicts()
    assert [(r["model_label"], r["metric"], r["samples"]) for r in rows] == [
        ("base", "accuracy", n),
        ("step-000002", "accuracy", n),
    ]
    acc, se = expected()
    assert rows[0]["value"] == 1.0 and rows[0]["stderr"] == 0.0
    assert rows[1]["value"] == pytest.approx(acc) and rows[1]["stderr"] == pytest.approx(se)
    assert rows[1]["task"] == SPEC and rows[1]["scorer"] == "match"
    # the answer was scored, the reasoning kept apart
    log_path = store.query("SELECT log_path FROM capability_scores LIMIT 1")["log_path"].item()
    sample = read_eval_log(log_path).samples[0]
    kinds = [c.type for c in sample.output.message.content]
    assert kinds == ["reasoning", "text"] and "might be" not in sample.output.completion
    # change against the base model, with the standard error of the difference
    ch = [r for r in changes(store) if r["model_label"] != "base"][0]
    assert ch["change"] == pytest.approx(acc - 1.0, abs=1e-4)
    assert ch["change_stderr"] == pytest.approx(se, abs=1e-4)
    # sdf check holds the drop to max_capability_drop
    report = {"capabilities": changes(store)}
    tight = check(report, Thresholds(max_capability_drop=0.05)).verdicts
    assert [v.status for v in tight] == ["fail"] and tight[0].figure == pytest.approx(1 - acc, 1e-3)
    assert check(report, Thresholds(max_capability_drop=0.8)).ok
    assert check({}, Thresholds(max_capability_drop=0.1)).verdicts[0].status == "not run"
    # rerunning resumes: nothing sampled again
    again = run(store, "t", EvalConfig(checkpoints="last"), SPEC, service_factory=trained.service)
    assert not again.scored and len(again.skipped) == 2 and len(prompts) == 2 * n


def test_dry_run_plans_without_tinker_then_limit_runs(tmp_path, cli, trained, monkeypatch):
    import tinker

    trained.sampler = arithmetic_sampler([])
    before = list(trained.calls)
    args = ["eval", "t", "--capabilities", SPEC, "--limit", "4", "--checkpoints", "last"]
    plan = json.loads(cli(*args, "--dry-run", "--json").output)
    assert trained.calls == before  # the plan contacts no Tinker
    assert [c["label"] for c in plan["checkpoints"]] == ["base", "step-000002"]
    assert plan["tasks"] == [
        {
            "task": SPEC,
            "samples": 4,
            "dataset_samples": len(_pairs()),
            "epochs": 1,
            "requests": 8,
            "already_scored": [],
        }
    ]
    assert plan["requests"] == 8
    monkeypatch.setattr(tinker, "ServiceClient", trained.service)  # the client-object boundary
    out = cli(*args).output
    assert "2 (model, task) run(s) scored" in out and "change_stderr" in out
    acc, _ = expected(4)
    from sdfkit.capabilities import changes
    from sdfkit.store import Store

    rows = changes(Store(tmp_path / "corpus"))
    assert [(r["model_label"], r["samples"], r["sample_limit"]) for r in rows] == [
        ("base", 4, 4),
        ("step-000002", 4, 4),
    ]
    assert rows[1]["value"] == pytest.approx(acc)
    replan = json.loads(cli(*args, "--dry-run", "--json").output)
    assert replan["requests"] == 0
    assert replan["tasks"][0]["already_scored"] == ["base", "step-000002"]


def test_report_shows_the_change_against_base():
    from sdfkit.report import render_html

    row = {
        "run": "t", "task": "inspect_evals/ifeval", "metric": "final_acc", "step": 400,
        "model_label": "step-000400", "samples": 50, "value": 0.7, "stderr": 0.06,
        "base_value": 0.8, "change": -0.1, "change_stderr": 0.085,
    }  # fmt: skip
    page = render_html({"capabilities": [row], "audits": {}})
    assert "Capability regression" in page and "final_acc" in page and "-0.1" in page
    assert 'href="#evaluation"' in page


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_eval_anywhere", "no inspect-evals task named 'no_such_eval_anywhere'"),
        ("missing.py@sums", "no such file missing.py"),
        (f"{TASK_FILE}@nope", "defines no 'nope'"),
        (str(TASK_FILE), "name the task function"),
        (" , ", "name at least one task"),
    ],
)
def test_bad_task_specs_are_one_line_errors(store, trained, spec, message):
    from sdfkit.capabilities import CapabilityError, plan

    with pytest.raises(CapabilityError) as err:
        plan(store, "t", EvalConfig(), spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def _existing_corpus() -> None:
    """./corpus, as a trained run's corpus would be (`sdf eval` names a missing one)."""
    from sdfkit.store import Store

    with Store("corpus").connect():
        pass


def test_without_the_extra_the_error_gives_the_install_command(cli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("inspect_ai", "inspect_evals") else real(name, *a),
    )
    _existing_corpus()
    res = cli("eval", "t", "--capabilities", "ifeval", expect=2)
    assert "pip install 'sdfkit[evals]'" in res.output and "Traceback" not in res.output


def test_belief_and_capabilities_are_separate_runs(cli):
    _existing_corpus()
    res = cli("eval", "t", "--capabilities", "ifeval", "--belief", expect=2)
    assert "separate runs" in res.output
    res = cli("eval", "t", "--dry-run", expect=2)
    assert "add --capabilities" in res.output
