"""`sdf train` and `sdf eval`: LoRA training on Tinker and checkpoint evaluation (thin shell)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sdfkit.cli import CorpusOpt, announce_new, app, creating_store, given, open_store, opt
from sdfkit.errors import SdfError

TRAIN = "sdfkit.train.run:TrainConfig"
EVAL = "sdfkit.evaluate.recall:EvalConfig"
DEADLINE_HELP = (
    "Seconds any single Tinker call may take before we give up (the SDK treats queueing "
    "under 15 minutes as normal)."
)
HEALTH_TIMEOUT_HELP = "Seconds the health check may take."


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
    base_model: Annotated[str | None, opt(TRAIN, "base_model", help="Tinker base model.")] = None,
    rank: Annotated[int | None, opt(TRAIN, "rank", help="LoRA rank.")] = None,
    train_attn: Annotated[
        bool | None,
        opt(TRAIN, "train_attn", "--train-attn/--no-train-attn", help="LoRA on attention."),
    ] = None,
    train_mlp: Annotated[
        bool | None, opt(TRAIN, "train_mlp", "--train-mlp/--no-train-mlp", help="LoRA on the MLP.")
    ] = None,
    train_unembed: Annotated[
        bool | None,
        opt(
            TRAIN,
            "train_unembed",
            "--train-unembed/--no-train-unembed",
            help="LoRA on the unembedding.",
        ),
    ] = None,
    lr: Annotated[float | None, opt(TRAIN, "learning_rate", help="Peak learning rate.")] = None,
    warmup_steps: Annotated[
        int | None, opt(TRAIN, "warmup_steps", help="Linear warmup steps.")
    ] = None,
    min_lr_ratio: Annotated[
        float | None, opt(TRAIN, "min_lr_ratio", help="Cosine decays to lr x this at the end.")
    ] = None,
    batch_size: Annotated[int | None, opt(TRAIN, "batch_size", help="Examples per step.")] = None,
    weight_decay: Annotated[
        float | None, opt(TRAIN, "weight_decay", help="AdamW decoupled weight decay.")
    ] = None,
    beta1: Annotated[float | None, opt(TRAIN, "beta1", help="Adam beta1.")] = None,
    beta2: Annotated[float | None, opt(TRAIN, "beta2", help="Adam beta2.")] = None,
    eps: Annotated[float | None, opt(TRAIN, "eps", help="Adam epsilon.")] = None,
    grad_clip_norm: Annotated[
        float | None, opt(TRAIN, "grad_clip_norm", help="Gradient clip norm (0: off).")
    ] = None,
    save_every: Annotated[
        int | None,
        opt(
            TRAIN,
            "save_every",
            help="Steps between checkpoints (plus every epoch end and the end).",
        ),
    ] = None,
    lora_seed: Annotated[
        int | None,
        opt(
            TRAIN,
            "lora_seed",
            help="Seed of the LoRA initialisation (default: random).",
            show=False,
        ),
    ] = None,
    checkpoint_ttl: Annotated[
        int | None,
        opt(
            TRAIN,
            "checkpoint_ttl_seconds",
            help="Seconds Tinker keeps checkpoints: 3600 or more (default: forever).",
            show=False,
        ),
    ] = None,
    model_tokenizer: Annotated[
        str | None,
        opt(
            TRAIN,
            "model_tokenizer",
            help="Tokenizer of a base model sdfkit does not know (e.g. qwen3).",
            show=False,
        ),
    ] = None,
    pipeline_depth: Annotated[
        int | None,
        opt(
            TRAIN,
            "pipeline_depth",
            help="Steps submitted before the oldest is waited for (1: none).",
        ),
    ] = None,
    deadline: Annotated[float | None, opt(TRAIN, "deadline", help=DEADLINE_HELP)] = None,
    health_timeout: Annotated[
        float | None, opt(TRAIN, "health_timeout", help=HEALTH_TIMEOUT_HELP)
    ] = None,
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
        **given(
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
        str | None, opt(EVAL, "checkpoints", help="all, last, none, or steps like 100,200.")
    ] = None,
    base: Annotated[
        bool | None,
        opt(
            EVAL, "include_base", "--base/--no-base", help="Also evaluate the base model (step 0)."
        ),
    ] = None,
    questions_per_fact: Annotated[
        int | None,
        opt(
            EVAL,
            "questions_per_fact",
            help="Recall questions per key fact (generated once per universe).",
        ),
    ] = None,
    samples: Annotated[
        int | None, opt(EVAL, "samples", help="Samples per question and model.")
    ] = None,
    max_tokens: Annotated[
        int | None, opt(EVAL, "max_tokens", help="Token limit of each sample.")
    ] = None,
    temperature: Annotated[
        float | None, opt(EVAL, "temperature", help="Sampling temperature.")
    ] = None,
    renderer: Annotated[
        str | None,
        opt(
            EVAL,
            "renderer",
            help="Chat format: auto (from the base model), harmony, chatml, llama3.",
        ),
    ] = None,
    backend: Annotated[
        str | None,
        opt(
            "sdfkit.evaluate.recall:evaluate",
            "backend",
            help="Graders: anthropic, offline (the stand-in) or auto.",
        ),
    ] = None,
    grader_model: Annotated[
        str | None,
        opt(
            EVAL,
            "grader_model",
            help="Model of the graders (default: generation's; offline: the stand-in).",
            show=False,
        ),
    ] = None,
    gibberish_grader: Annotated[
        bool | None,
        opt(
            EVAL,
            "gibberish_grader",
            "--gibberish-grader/--no-gibberish-grader",
            help="Add a model grader to the cheap gibberish signals.",
        ),
    ] = None,
    lda: Annotated[
        float | None,
        opt(
            EVAL,
            "lda_alpha",
            help="Logit difference amplification alpha for checkpoints (2 requests/token).",
            show=False,
        ),
    ] = None,
    lda_top_k: Annotated[
        int | None, opt(EVAL, "lda_top_k", help="LDA candidate set: the top k tokens.")
    ] = None,
    belief: Annotated[
        bool,
        typer.Option(
            "--belief",
            help="Also measure belief depth: multiple choice, open-ended, adversarial, pushback.",
        ),
    ] = False,
    belief_questions_per_fact: Annotated[
        int | None,
        opt(
            EVAL,
            "belief_questions_per_fact",
            help="Belief items per key fact (each: one MCQ, one open question).",
        ),
    ] = None,
    capabilities: Annotated[
        str | None,
        typer.Option(
            help="Capability regression instead: inspect-evals tasks (e.g. ifeval,mmlu_pro) "
            "or file.py@task, on the base model and the checkpoints (extra sdfkit[evals])."
        ),
    ] = None,
    limit: Annotated[
        int | None,
        opt(
            EVAL,
            "limit",
            help="With --capabilities: samples per task (default: all).",
            show=False,
        ),
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
    deadline: Annotated[float | None, opt(EVAL, "deadline", help=DEADLINE_HELP)] = None,
    health_timeout: Annotated[
        float | None, opt(EVAL, "health_timeout", help=HEALTH_TIMEOUT_HELP)
    ] = None,
    poll_interval: Annotated[
        float | None, opt(EVAL, "poll_interval", help="Seconds between batch polls.")
    ] = None,
    report: Annotated[
        Path, typer.Option(help="Curves of every evaluation (HTML; JSON beside it).")
    ] = Path("reports/eval.html"),
    corpus: CorpusOpt = None,
) -> None:
    """Sample checkpoints (and the base model) and grade recall, behaviour, reasoning, gibberish."""
    from sdfkit.evaluate.recall import EvalConfig, evaluate

    cfg = EvalConfig(
        **given(
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
            belief=belief or None,  # the switch turns it on; absent, the library decides
            belief_questions_per_fact=belief_questions_per_fact,
            limit=limit,
            deadline=deadline,
            health_timeout=health_timeout,
            poll_interval=poll_interval,
        )
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
        log=lambda m: typer.echo(m, err=True),
        **given(backend=backend),
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
