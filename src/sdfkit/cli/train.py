"""`sdf train` and `sdf eval`: LoRA training on Tinker and checkpoint evaluation (thin shell)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sdfkit.cli import CorpusOpt, announce_new, app, creating_store, open_store
from sdfkit.errors import SdfError

# Shared by `sdf train` and `sdf eval`: every Tinker call runs under this deadline.
DeadlineOpt = Annotated[
    float,
    typer.Option(
        help="Seconds any single Tinker call may take before we give up (the SDK treats "
        "queueing under 15 minutes as normal)."
    ),
]
HealthTimeoutOpt = Annotated[float, typer.Option(help="Seconds the health check may take.")]


@app.command()
def train(
    export_dir: Annotated[Path, typer.Argument(help="Export directory (shards + manifest.json).")],
    run: Annotated[
        str | None,
        typer.Option(
            help="Run name; rerunning with the same name resumes it. "
            "Default: <export dir name>-<model>."
        ),
    ] = None,
    base_model: Annotated[str, typer.Option(help="Tinker base model.")] = "openai/gpt-oss-20b",
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 32,
    train_attn: Annotated[bool, typer.Option(help="LoRA on attention.")] = True,
    train_mlp: Annotated[bool, typer.Option(help="LoRA on the MLP.")] = True,
    train_unembed: Annotated[bool, typer.Option(help="LoRA on the unembedding.")] = True,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 3.5e-5,
    warmup_steps: Annotated[int, typer.Option(help="Linear warmup steps.")] = 300,
    min_lr_ratio: Annotated[
        float, typer.Option(help="Cosine decays to lr x this at the end.")
    ] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 8,
    weight_decay: Annotated[float, typer.Option(help="AdamW decoupled weight decay.")] = 0.0,
    beta1: Annotated[float, typer.Option(help="Adam beta1.")] = 0.9,
    beta2: Annotated[float, typer.Option(help="Adam beta2.")] = 0.95,
    eps: Annotated[float, typer.Option(help="Adam epsilon.")] = 1e-12,
    grad_clip_norm: Annotated[float, typer.Option(help="Gradient clip norm (0: off).")] = 0.0,
    save_every: Annotated[
        int, typer.Option(help="Steps between checkpoints (plus every epoch end and the end).")
    ] = 100,
    lora_seed: Annotated[int | None, typer.Option(help="Seed of the LoRA initialisation.")] = None,
    checkpoint_ttl: Annotated[
        int | None,
        typer.Option(help="Seconds Tinker keeps checkpoints: 3600 or more (default: forever)."),
    ] = None,
    model_tokenizer: Annotated[
        str | None,
        typer.Option(help="Tokenizer of a base model sdfkit does not know (e.g. qwen3)."),
    ] = None,
    pipeline_depth: Annotated[
        int, typer.Option(help="Steps submitted before the oldest is waited for (1: none).")
    ] = 2,
    deadline: DeadlineOpt = 1800.0,
    health_timeout: HealthTimeoutOpt = 10.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; contact nothing.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --dry-run: the plan as JSON.")
    ] = False,
    corpus: CorpusOpt = None,
) -> None:
    """Train a LoRA on Tinker from an export (defaults: the seed recipe); resumable."""
    from sdfkit.train.run import TrainConfig, plan_run
    from sdfkit.train.run import train as run_training

    cfg = TrainConfig(
        base_model=base_model,
        rank=rank,
        train_attn=train_attn,
        train_mlp=train_mlp,
        train_unembed=train_unembed,
        learning_rate=lr,
        warmup_steps=warmup_steps,
        min_lr_ratio=min_lr_ratio,
        batch_size=batch_size,
        weight_decay=weight_decay,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        grad_clip_norm=grad_clip_norm,
        save_every=save_every,
        lora_seed=lora_seed,
        checkpoint_ttl_seconds=checkpoint_ttl,
        model_tokenizer=model_tokenizer,
        pipeline_depth=pipeline_depth,
        deadline=deadline,
        health_timeout=health_timeout,
    )
    if dry_run:
        plan = plan_run(export_dir, cfg, run)
        typer.echo(json.dumps(plan.to_json(), indent=1) if as_json else plan.describe())
        return
    store, fresh = creating_store(corpus)  # training records its runs in the catalog
    result = run_training(export_dir, store, cfg, run, log=lambda m: typer.echo(m, err=True))
    typer.echo(result.summary())
    announce_new(store, fresh)


@app.command("eval")
def eval_(
    train_run: Annotated[str, typer.Argument(help="Training run whose checkpoints to evaluate.")],
    universe: Annotated[
        list[Path] | None,
        typer.Option(help="Universe file(s) (default: those generation stored in the corpus)."),
    ] = None,
    checkpoints: Annotated[
        str, typer.Option(help="all, last, none, or steps like 100,200.")
    ] = "all",
    base: Annotated[bool, typer.Option(help="Also evaluate the base model (step 0).")] = True,
    questions_per_fact: Annotated[
        int, typer.Option(help="Recall questions per key fact (generated once per universe).")
    ] = 10,
    samples: Annotated[int, typer.Option(help="Samples per question and model.")] = 1,
    max_tokens: Annotated[int, typer.Option(help="Token limit of each sample.")] = 2048,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    renderer: Annotated[
        str, typer.Option(help="Chat format: auto (from the base model), harmony, chatml, llama3.")
    ] = "auto",
    backend: Annotated[
        str, typer.Option(help="Graders: anthropic, offline (the stand-in) or auto.")
    ] = "auto",
    grader_model: Annotated[str | None, typer.Option(help="Model of the graders.")] = None,
    gibberish_grader: Annotated[
        bool, typer.Option(help="Add a model grader to the cheap gibberish signals.")
    ] = False,
    lda: Annotated[
        float | None,
        typer.Option(
            help="Logit difference amplification alpha for checkpoints (2 requests/token)."
        ),
    ] = None,
    lda_top_k: Annotated[int, typer.Option(help="LDA candidate set: the top k tokens.")] = 20,
    belief: Annotated[
        bool,
        typer.Option(
            "--belief",
            help="Also measure belief depth: multiple choice, open-ended, adversarial, pushback.",
        ),
    ] = False,
    belief_questions_per_fact: Annotated[
        int, typer.Option(help="Belief items per key fact (each: one MCQ, one open question).")
    ] = 4,
    capabilities: Annotated[
        str | None,
        typer.Option(
            help="Capability regression instead: inspect-evals tasks (e.g. ifeval,mmlu_pro) "
            "or file.py@task, on the base model and the checkpoints (extra sdfkit[evals])."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="With --capabilities: samples per task (default: all).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="With --capabilities: print the plan; contact no Tinker."),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --dry-run: the plan as JSON.")
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="Evaluation name (default: the run name).")
    ] = None,
    deadline: DeadlineOpt = 1800.0,
    health_timeout: HealthTimeoutOpt = 10.0,
    poll_interval: Annotated[float, typer.Option(help="Seconds between batch polls.")] = 30.0,
    report: Annotated[
        Path, typer.Option(help="Curves of every evaluation (HTML; JSON beside it).")
    ] = Path("reports/eval.html"),
    corpus: CorpusOpt = None,
) -> None:
    """Sample checkpoints (and the base model) and grade recall, behaviour, reasoning, gibberish."""
    from sdfkit.evaluate.recall import EvalConfig, evaluate

    cfg = EvalConfig(
        checkpoints=checkpoints,
        include_base=base,
        questions_per_fact=questions_per_fact,
        samples=samples,
        max_tokens=max_tokens,
        temperature=temperature,
        renderer=renderer,
        grader_model=grader_model,
        gibberish_grader=gibberish_grader,
        lda_alpha=lda,
        lda_top_k=lda_top_k,
        belief=belief,
        belief_questions_per_fact=belief_questions_per_fact,
        limit=limit,
        deadline=deadline,
        health_timeout=health_timeout,
        poll_interval=poll_interval,
    )
    if capabilities is None and limit is not None:
        raise SdfError("--limit applies to --capabilities (samples per task): add --capabilities")
    if as_json and not dry_run:
        raise SdfError("--json prints the plan of --dry-run: add --dry-run --capabilities TASKS")
    if capabilities is not None and lda is not None:
        raise SdfError("--lda applies to sdf eval's own questions, not to --capabilities")
    store = open_store(corpus)
    if capabilities is not None or dry_run:
        _capability_eval(store, train_run, cfg, capabilities, dry_run, as_json)
        return
    res = evaluate(
        store,
        train_run,
        cfg,
        universe_files=[str(u) for u in universe] if universe else None,
        eval_run=name,
        backend=backend,
        log=lambda m: typer.echo(m, err=True),
    )
    typer.echo(res.summary())
    if res.metrics is not None and res.metrics.height:
        from sdfkit.store.sql import to_text

        typer.echo(to_text(res.metrics, "table"))
    if res.belief is not None:
        from sdfkit.evaluate.belief import depth
        from sdfkit.store.sql import to_text

        typer.echo(to_text(depth(store, res.eval_run).drop("fact"), "table"))
    from sdfkit.evaluate.curves import write_curves

    out = write_curves(store, report, report.with_suffix(".json"))
    typer.echo(f"curves: {out}")
    if res.samples_missing:  # partial results: a script must not take them for complete
        raise typer.Exit(1)


def _capability_eval(store, train_run, cfg, specs, dry_run, as_json) -> None:  # noqa: ANN001
    """``sdf eval --capabilities``: plan (``--dry-run``) or run, then the changes table."""
    from sdfkit.evaluate import capabilities as caps

    if specs is None:
        raise SdfError("--dry-run plans a capability run: add --capabilities TASKS")
    if cfg.belief:
        raise SdfError("--belief and --capabilities are separate runs of sdf eval: give one")
    if dry_run:
        plan = caps.plan(store, train_run, cfg, specs)
        typer.echo(json.dumps(plan.to_json(), indent=1) if as_json else plan.describe())
        return
    res = caps.run(store, train_run, cfg, specs, log=lambda m: typer.echo(m, err=True))
    typer.echo(res.summary())
    rows = [r for r in caps.changes(store) or [] if r["run"] == train_run]
    if rows:
        import polars as pl

        from sdfkit.store.sql import to_text

        cols = ["task", "metric", "step", "model_label", "samples", "value", "stderr"]
        cols += ["change", "change_stderr"]
        typer.echo(to_text(pl.DataFrame(rows).select(cols), "table"))
