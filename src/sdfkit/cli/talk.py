"""`sdf chat` and `sdf sample`: talk to a checkpoint (thin shell over ``sdfkit.evaluate.sampling``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdfkit.cli import CorpusOpt, app, given, open_store, opt
from sdfkit.cli.train import DEADLINE_HELP, HEALTH_TIMEOUT_HELP

# The option set `sdf chat` and `sdf sample` share, written once; each maps onto a setting of
# SampleConfig, whose defaults --help shows.
SAMPLE = "sdfkit.evaluate.sampling:SampleConfig"
RunArg = Annotated[str, typer.Argument(help="Training run whose checkpoints to talk to.")]
BaseOpt = Annotated[bool, typer.Option("--base", help="The base model (no LoRA).")]
MaxTokensOpt = Annotated[int | None, opt(SAMPLE, "max_tokens", help="Token limit of each answer.")]
TemperatureOpt = Annotated[float | None, opt(SAMPLE, "temperature", help="Sampling temperature.")]
RendererOpt = Annotated[
    str | None,
    opt(
        SAMPLE, "renderer", help="Chat format: auto (from the base model), harmony, chatml, llama3."
    ),
]
SystemOpt = Annotated[
    str | None,
    opt(SAMPLE, "system", help="A system message (for prompts that carry none).", show=False),
]
DeadlineOpt = Annotated[float | None, opt(SAMPLE, "deadline", help=DEADLINE_HELP)]
HealthTimeoutOpt = Annotated[float | None, opt(SAMPLE, "health_timeout", help=HEALTH_TIMEOUT_HELP)]


def _config(**settings: object):  # noqa: ANN202 - returns SampleConfig
    """The SampleConfig of the options given; the library's defaults fill in the rest."""
    from sdfkit.evaluate.sampling import SampleConfig

    return SampleConfig(**given(**settings))


@app.command()
def chat(
    run: RunArg,
    step: Annotated[
        int | None, typer.Option(help="Checkpoint step (default: the run's last checkpoint).")
    ] = None,
    base: BaseOpt = False,
    system: SystemOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    renderer: RendererOpt = None,
    reasoning: Annotated[
        bool, typer.Option(help="Show the reasoning channel (apart from the answer).")
    ] = True,
    save: Annotated[
        bool, typer.Option("--save", help="Store every answer in the catalog (table samples).")
    ] = False,
    deadline: DeadlineOpt = None,
    health_timeout: HealthTimeoutOpt = None,
    corpus: CorpusOpt = None,
) -> None:
    """Chat with a checkpoint (or --base) in its own chat format; /reset, /quit."""
    from sdfkit.evaluate.sampling import CHAT_HELP, chat_loop, open_chat
    from sdfkit.train.run import close_service

    cfg = _config(
        max_tokens=max_tokens,
        temperature=temperature,
        renderer=renderer,
        system=system,
        deadline=deadline,
        health_timeout=health_timeout,
    )
    session, service = open_chat(open_store(corpus), run, cfg, step=step, base=base, save=save)
    typer.echo(f"chatting with {run} {session.label} ({session.renderer.name}). {CHAT_HELP}")

    def read() -> str | None:
        try:
            return input("you> ")
        except EOFError:
            return None

    def show(kind: str, text: str) -> None:
        if kind == "reasoning":
            typer.echo(typer.style(f"[reasoning]\n{text}\n[/reasoning]", dim=True))
        elif kind == "answer":
            typer.echo(f"{session.label}> {text}")
        else:
            typer.echo(typer.style(f"[{kind}] {text}", fg="yellow"), err=kind == "note")

    try:
        chat_loop(session, read, show, show_reasoning=reasoning)
    except KeyboardInterrupt:
        typer.echo("")
    finally:
        close_service(service, "success", cfg.deadline)


@app.command()
def sample(
    run: RunArg,
    prompts: Annotated[
        Path,
        typer.Option(
            "--prompts",
            help="Prompts: a .jsonl of {prompt} or {messages} (optional id), or one per line.",
        ),
    ],
    n: Annotated[int | None, opt(SAMPLE, "n", "--n", help="Samples per prompt and model.")] = None,
    step: Annotated[
        list[int] | None,
        typer.Option(help="Checkpoint step (repeatable; default: the run's last checkpoint)."),
    ] = None,
    base: BaseOpt = False,
    system: SystemOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    renderer: RendererOpt = None,
    deadline: DeadlineOpt = None,
    health_timeout: HealthTimeoutOpt = None,
    corpus: CorpusOpt = None,
) -> None:
    """Sample a file of prompts on checkpoints (and --base); answers go to table samples."""
    from sdfkit.evaluate.sampling import sample_prompts
    from sdfkit.store.sql import to_text

    cfg = _config(
        n=n,
        max_tokens=max_tokens,
        temperature=temperature,
        renderer=renderer,
        system=system,
        deadline=deadline,
        health_timeout=health_timeout,
    )
    store = open_store(corpus)
    res = sample_prompts(
        store, run, prompts, cfg, steps=step, base=base, log=lambda m: typer.echo(m, err=True)
    )
    typer.echo(res.summary())
    if res.sample_ids:
        df = store.query(
            "SELECT model_label, prompt_key, sample_index, stop_reason, gibberish_cheap, "
            "left(regexp_replace(answer, '\\s+', ' ', 'g'), 80) AS answer FROM samples "
            "WHERE list_contains(?, sample_id) ORDER BY step, prompt_key, sample_index",
            [res.sample_ids],
        )
        typer.echo(to_text(df, "table"))
    if res.missing:
        raise typer.Exit(1)
