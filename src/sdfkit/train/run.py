"""LoRA training on Tinker from an export directory, with checkpoints, records and resume.

``train(export_dir, store, config)`` feeds the export's examples, in shard order, to a Tinker
LoRA training client in batches of ``batch_size`` consecutive examples (a batch never spans
two epochs), sends the learning rate of our own schedule with every ``optim_step`` (linear
warmup, then cosine decay to the last step), and saves a resumable state plus sampler weights
every ``save_every`` steps, at each epoch end and at the end. Step ``s+1`` is submitted
before step ``s`` is waited for (``pipeline_depth``), so the service never idles between
steps; before a checkpoint every submitted step is settled. A checkpoint named for step
``s`` is saved *before* step ``s`` is submitted, so it holds exactly steps ``0..s-1``; rerunning
the same command (same ``run``) resumes from the newest such state with its optimizer state
and sends exactly the batches that state has not seen.

Records, in the catalog (``sdf sql``): ``train_runs`` (one row per run: export, config,
status), ``train_steps`` (per step: loss = mean NLL over weighted target tokens, learning
rate, tokens) and ``checkpoints`` (step, epoch and the Tinker paths).

Talking to Tinker (key check, health check, deadlines, connect and close) is
``sdfkit.train.service``: it never hangs and never leaks the key.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdfkit.errors import SdfError
from sdfkit.export.verify import to_datum
from sdfkit.llm.models import expected_tokenizer
from sdfkit.store.records import utc_now
from sdfkit.train.service import (
    DEFAULT_DEADLINE,
    MAX_DEADLINE,
    TinkerKeyMissing,
    TinkerUnavailable,
    close_service,
    connect_service,
    within,
)

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

    from sdfkit.store.catalog import Store

#: The service keeps a checkpoint at least this long when a TTL is given (or forever).
MIN_CHECKPOINT_TTL = 3600

#: Step records reach the catalog at least this often (and at every checkpoint).
RECORD_EVERY_SECONDS = 2.0

DEFAULT_BASE_MODEL = "openai/gpt-oss-20b"


class TrainError(SdfError):
    """A training run cannot start or continue; the message says why and what to do."""


# ----------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Every switch of a run; the defaults are the seed write-up's recipe."""

    base_model: str = DEFAULT_BASE_MODEL
    rank: int = 32
    train_attn: bool = True
    train_mlp: bool = True
    train_unembed: bool = True
    learning_rate: float = 3.5e-5
    warmup_steps: int = 300
    min_lr_ratio: float = 0.0  # the cosine decays to learning_rate * min_lr_ratio
    batch_size: int = 8
    weight_decay: float = 0.0  # AdamW's decoupled weight decay (Tinker's default is 0)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    grad_clip_norm: float = 0.0
    save_every: int = 100  # steps between checkpoints (0: only epoch ends and the end)
    lora_seed: int | None = None
    checkpoint_ttl_seconds: int | None = None
    model_tokenizer: str | None = None  # declare the tokenizer of a model sdfkit does not know
    pipeline_depth: int = 2  # steps submitted before the oldest is waited for (1: none)
    #: seconds any single service call may take: longer than the queue pauses the SDK
    #: treats as normal (it starts warning after 15 minutes)
    deadline: float = DEFAULT_DEADLINE
    health_timeout: float = 10.0

    #: Fields that shape which batch is sent when and with what learning rate: a resumed run
    #: must agree with the saved one on all of them.
    SCHEDULE_FIELDS = (
        "base_model",
        "rank",
        "train_attn",
        "train_mlp",
        "train_unembed",
        "learning_rate",
        "warmup_steps",
        "min_lr_ratio",
        "batch_size",
        "weight_decay",
        "beta1",
        "beta2",
        "eps",
        "grad_clip_norm",
    )

    def __post_init__(self) -> None:
        finite = math.isfinite  # inf and nan pass a plain comparison (nan: some of them)
        checks = [
            (self.rank >= 1, "rank must be at least 1"),
            (finite(self.learning_rate), "learning_rate must be a finite number"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (self.warmup_steps >= 0, "warmup_steps must be 0 or more"),
            (0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be between 0 and 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (
                finite(self.weight_decay) and self.weight_decay >= 0,
                "weight_decay must be a number of 0 or more",
            ),
            # Adam's moment decays: 1 never forgets the first gradient, above 1 diverges
            (0 <= self.beta1 < 1, "beta1 must be at least 0 and below 1"),
            (0 <= self.beta2 < 1, "beta2 must be at least 0 and below 1"),
            (finite(self.eps) and self.eps > 0, "eps must be a positive number"),
            (
                finite(self.grad_clip_norm) and self.grad_clip_norm >= 0,
                "grad_clip_norm must be a number of 0 or more (0: off)",
            ),
            (
                self.lora_seed is None or 0 <= self.lora_seed < 2**63,
                "lora_seed must be a whole number from 0 to 2**63 - 1",
            ),
            (self.save_every >= 0, "save_every must be 0 or more"),
            (
                0 < self.deadline <= MAX_DEADLINE,
                f"deadline must be positive and at most {MAX_DEADLINE:.0f} seconds",
            ),
            (self.pipeline_depth >= 1, "pipeline_depth must be at least 1"),
            (
                0 < self.health_timeout <= MAX_DEADLINE,
                f"health_timeout must be positive and at most {MAX_DEADLINE:.0f} seconds",
            ),
            (
                self.checkpoint_ttl_seconds is None
                or self.checkpoint_ttl_seconds >= MIN_CHECKPOINT_TTL,
                f"checkpoint_ttl_seconds must be at least {MIN_CHECKPOINT_TTL} seconds (the "
                "service keeps checkpoints an hour or more), or left out to keep them",
            ),
            (
                self.train_attn or self.train_mlp or self.train_unembed,
                "train at least one of attention, MLP and unembedding",
            ),
        ]
        for ok, msg in checks:
            if not ok:  # the message starts with the setting it is about
                setting = msg.split(" ", 1)[0]
                raise TrainError(msg, settings=(setting,) if hasattr(self, setting) else ())

    def schedule_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.SCHEDULE_FIELDS}

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate of 0-based ``step``: linear warmup over ``warmup_steps`` steps (step
    ``warmup_steps - 1`` reaches the peak), then cosine decay to ``min_lr_ratio`` of the peak,
    reached one step after the last."""
    peak = cfg.learning_rate
    w = cfg.warmup_steps
    if step < w:
        return peak * (step + 1) / w
    span = max(total_steps - w, 1)
    progress = min(max((step - w) / span, 0.0), 1.0)
    floor = cfg.min_lr_ratio
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def check_tokenizer(manifest_tokenizer: str, cfg: TrainConfig) -> None:
    """Refuse, in one sentence, an export tokenized for another model."""
    got = (manifest_tokenizer or "").strip()
    if got == f"hf:{cfg.base_model}":
        return
    want = cfg.model_tokenizer or expected_tokenizer(cfg.base_model)
    if want is None:
        raise TrainError(
            f"sdfkit does not know which tokenizer base model {cfg.base_model!r} uses, so it "
            f"cannot check this export ({got!r}); pass --model-tokenizer NAME to declare it."
        )
    if got != want:
        raise TrainError(
            f"the export was tokenized with {got!r} but base model {cfg.base_model!r} uses "
            f"{want!r}: re-export with --tokenizer {want} or choose a matching --base-model."
        )


# ----------------------------------------------------------------------------- export
@dataclass
class ExportView:
    """What training needs from an export directory (contract B)."""

    path: Path
    manifest: dict[str, Any]
    shard_files: list[Path]
    epochs: list[int]  # the epoch of every example, in training order
    fingerprint: str  # identifies the exact shard contents

    @property
    def examples(self) -> int:
        return len(self.epochs)


def open_export(export_dir: str | os.PathLike[str]) -> ExportView:
    """The manifest (checked by ``sdfkit.export.verify.read_manifest``) and the ``epoch`` column of
    every shard (cheap: one int column), which is all a plan needs."""
    import pyarrow.parquet as pq

    from sdfkit.export.verify import read_manifest

    path = Path(export_dir)
    manifest = read_manifest(path)
    files = [path / str(s["file"]) for s in manifest["shards"]]
    if not files:
        raise TrainError(f"{path / 'manifest.json'}: the export lists no shards")
    epochs: list[int] = []
    digest = hashlib.sha256()
    for f, s in zip(files, manifest["shards"], strict=True):
        if not f.is_file():
            raise TrainError(f"{f}: listed in {path / 'manifest.json'} but missing")
        try:
            col = pq.read_table(f, columns=["epoch"]).column("epoch").to_pylist()
        except Exception as exc:  # noqa: BLE001 - any unreadable shard is the user's to fix
            raise TrainError(f"{f}: not a readable shard ({exc})") from None
        epochs.extend(int(e or 0) for e in col)
        digest.update(str(s.get("sha256")).encode())
    return ExportView(path, manifest, files, epochs, digest.hexdigest()[:16])


def iter_examples(view: ExportView, start: int = 0) -> Iterator[dict[str, Any]]:
    """Examples in training order from row ``start`` on (``sdfkit.export.verify.read_export``, which
    first checks the sha256 of every shard it will read against the manifest). A resume
    seeks: shards before the one holding ``start`` are skipped by their row counts, never
    read or decoded."""
    from sdfkit.export.verify import read_export

    _, examples = read_export(view.path, check_hashes=True, start=start)
    return examples


# ----------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """Which examples every step trains on, its learning rate, and where checkpoints fall."""

    run: str
    export_dir: str
    fingerprint: str
    tokenizer: str
    examples: int
    epochs: int
    batches: list[tuple[int, int, int]]  # (first row, end row, epoch) per step
    learning_rates: list[float]
    checkpoint_steps: list[int]  # a state saved before this step (== total: the final one)
    epoch_end_steps: list[int]
    config: TrainConfig = field(repr=False, default_factory=TrainConfig)
    view: ExportView | None = field(repr=False, default=None)

    @property
    def total_steps(self) -> int:
        return len(self.batches)

    def to_json(self) -> dict[str, Any]:
        steps_per_epoch: dict[str, int] = {}
        for _, _, ep in self.batches:
            steps_per_epoch[str(ep)] = steps_per_epoch.get(str(ep), 0) + 1
        return {
            "run": self.run,
            "export_dir": self.export_dir,
            "export_fingerprint": self.fingerprint,
            "tokenizer": self.tokenizer,
            "base_model": self.config.base_model,
            "examples": self.examples,
            "epochs": self.epochs,
            "batch_size": self.config.batch_size,
            "total_steps": self.total_steps,
            "steps_per_epoch": steps_per_epoch,
            "examples_per_step": [b - a for a, b, _ in self.batches],
            "learning_rates": self.learning_rates,
            "checkpoint_steps": self.checkpoint_steps,
            "epoch_end_steps": self.epoch_end_steps,
            "config": self.config.as_dict(),
        }

    def describe(self) -> str:
        cfg = self.config
        n = self.total_steps
        key_steps = sorted(
            {0, min(cfg.warmup_steps - 1, n - 1), min(cfg.warmup_steps, n - 1), n // 2, n - 1}
        )
        key_steps = [s for s in key_steps if 0 <= s < n]
        sizes = sorted({b - a for a, b, _ in self.batches}, reverse=True)
        per_epoch: dict[int, int] = {}
        for _, _, ep in self.batches:
            per_epoch[ep] = per_epoch.get(ep, 0) + 1
        lines = [
            f"plan for run {self.run!r} (nothing contacted)",
            f"  export        {self.export_dir}  ({self.examples:,} examples, {self.epochs} epoch(s), tokenizer {self.tokenizer})",
            f"  model         {cfg.base_model}, LoRA rank {cfg.rank} on "
            + ", ".join(
                x
                for x, on in (
                    ("attention", cfg.train_attn),
                    ("MLP", cfg.train_mlp),
                    ("unembedding", cfg.train_unembed),
                )
                if on
            ),
            f"  steps         {n:,} ({', '.join(f'{v:,}' for v in per_epoch.values())} per epoch), "
            f"batch size {cfg.batch_size}; examples per step: {', '.join(map(str, sizes))}"
            + (" (a batch never spans two epochs)" if sizes != [cfg.batch_size] else ""),
            f"  optimizer     AdamW, lr {cfg.learning_rate:g}, {cfg.warmup_steps} warmup steps, cosine to "
            f"{cfg.learning_rate * cfg.min_lr_ratio:g}, weight decay {cfg.weight_decay:g}",
            "  lr at steps   " + ", ".join(f"{s}: {self.learning_rates[s]:.3e}" for s in key_steps),
            f"  checkpoints   {len(self.checkpoint_steps)} (every {cfg.save_every or '-'} steps, epoch ends, end): "
            + _abbrev(self.checkpoint_steps),
        ]
        if n and n < cfg.warmup_steps:
            lines.append(
                f"  note          only {n} steps: the warmup of {cfg.warmup_steps} never reaches the peak lr"
            )
        return "\n".join(lines)


def _abbrev(xs: list[int], k: int = 12) -> str:
    if len(xs) <= k:
        return ", ".join(map(str, xs))
    return ", ".join(map(str, xs[: k // 2])) + ", ..., " + ", ".join(map(str, xs[-k // 2 :]))


def default_run_name(export_dir: str | os.PathLike[str], base_model: str) -> str:
    model = base_model.rsplit("/", 1)[-1]
    return f"{Path(export_dir).resolve().name}-{model}"


def make_plan(view: ExportView, cfg: TrainConfig, run: str | None = None) -> Plan:
    """Batches of consecutive examples in training order, never spanning two epochs."""
    batches: list[tuple[int, int, int]] = []
    epochs = view.epochs
    i, n = 0, len(epochs)
    while i < n:
        ep = epochs[i]
        j = i + 1
        while j < n and j - i < cfg.batch_size and epochs[j] == ep:
            j += 1
        batches.append((i, j, ep))
        i = j
    total = len(batches)
    lrs = [lr_at(s, total, cfg) for s in range(total)]
    epoch_ends = [
        s + 1 for s in range(total) if s + 1 == total or batches[s + 1][2] != batches[s][2]
    ]
    ckpts = set(epoch_ends)
    if cfg.save_every:
        ckpts.update(range(cfg.save_every, total, cfg.save_every))
    if total:
        ckpts.add(total)
    return Plan(
        run=run or default_run_name(view.path, cfg.base_model),
        export_dir=str(view.path.resolve()),
        fingerprint=view.fingerprint,
        tokenizer=str(view.manifest.get("tokenizer")),
        examples=n,
        epochs=len(set(epochs)),
        batches=batches,
        learning_rates=lrs,
        checkpoint_steps=sorted(ckpts),
        epoch_end_steps=epoch_ends,
        config=cfg,
        view=view,
    )


def plan_run(
    export_dir: str | os.PathLike[str], cfg: TrainConfig | None = None, run: str | None = None
) -> Plan:
    """The plan of a run, checked (tokenizer) but without contacting anything."""
    cfg = cfg or TrainConfig()
    view = open_export(export_dir)
    check_tokenizer(str(view.manifest.get("tokenizer")), cfg)
    if view.examples == 0:
        raise TrainError(f"{view.path}: the export holds no examples")
    return make_plan(view, cfg, run)


# ----------------------------------------------------------------------------- catalog
TABLES = [
    """CREATE TABLE IF NOT EXISTS train_runs (
        run VARCHAR PRIMARY KEY, export_dir VARCHAR, export_fingerprint VARCHAR,
        tokenizer VARCHAR, base_model VARCHAR, config VARCHAR, total_steps BIGINT,
        examples BIGINT, epochs BIGINT, status VARCHAR, steps_done BIGINT, resumes BIGINT,
        created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ)""",
    """CREATE TABLE IF NOT EXISTS train_steps (
        run VARCHAR, step BIGINT, epoch BIGINT, loss DOUBLE, lr DOUBLE, examples BIGINT,
        tokens BIGINT, loss_tokens DOUBLE, first_example VARCHAR, last_example VARCHAR,
        seconds DOUBLE, created_at TIMESTAMPTZ, PRIMARY KEY (run, step))""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        run VARCHAR, step BIGINT, epoch BIGINT, kind VARCHAR, name VARCHAR,
        state_path VARCHAR, sampler_path VARCHAR, created_at TIMESTAMPTZ,
        PRIMARY KEY (run, step))""",
]


def ensure_tables(con: Any) -> None:
    """Create the training tables (``TABLES``) if missing, on an open connection."""
    for stmt in TABLES:
        con.execute(stmt)


@contextmanager
def train_catalog(store: Store) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection to ``sdf.duckdb`` with the training tables present.

    Opened per write (not for the whole run) so ``sdf sql`` can read the catalog between
    steps; a connection the user holds at that instant is waited for briefly.
    """
    import duckdb

    from sdfkit.store.catalog import CONNECTION_CONFIG

    store.root.mkdir(parents=True, exist_ok=True)
    con = None
    for attempt in range(50):
        try:
            con = duckdb.connect(str(store.db_path), config=dict(CONNECTION_CONFIG))
            break
        except duckdb.IOException:
            if attempt == 49:
                raise
            time.sleep(0.2)
    assert con is not None
    try:
        ensure_tables(con)
        yield con
    finally:
        con.close()


STEP_COLUMNS = [
    "run",
    "step",
    "epoch",
    "loss",
    "lr",
    "examples",
    "tokens",
    "loss_tokens",
    "first_example",
    "last_example",
    "seconds",
    "created_at",
]


def _rows_table(rows: list[list[Any]], names: list[str]) -> Any:
    import pyarrow as pa

    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def _run_row(store: Store, run: str) -> dict[str, Any] | None:
    with train_catalog(store) as con:
        cur = con.execute("SELECT * FROM train_runs WHERE run = ?", [run])
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    return dict(zip(names, rows[0], strict=True)) if rows else None


def last_checkpoint(store: Store, run: str) -> dict[str, Any] | None:
    """The newest checkpoint of ``run`` holding a resumable state (None: none yet)."""
    with train_catalog(store) as con:
        cur = con.execute(
            "SELECT * FROM checkpoints WHERE run = ? AND state_path IS NOT NULL "
            "ORDER BY step DESC LIMIT 1",
            [run],
        )
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    return dict(zip(names, rows[0], strict=True)) if rows else None


# ----------------------------------------------------------------------------- train
@dataclass
class TrainResult:
    run: str
    total_steps: int
    start_step: int
    steps_done: int
    resumed_from: str | None
    checkpoints: list[dict[str, Any]]
    last_loss: float | None
    status: str

    def summary(self) -> str:
        head = (
            f"run {self.run!r}: {self.status}, step {self.steps_done:,} of {self.total_steps:,}"
            + (f" (resumed from {self.resumed_from})" if self.resumed_from else "")
        )
        if self.last_loss is not None:
            head += f", last loss {self.last_loss:.4f}"
        if self.checkpoints:
            c = self.checkpoints[-1]
            head += f"\n  newest sampler weights: {c['sampler_path']} (step {c['step']})"
        return head


def batch_loss(output: Any, data: list[Any]) -> tuple[float, float]:
    """(mean NLL over weighted target tokens, sum of weights) of one forward-backward."""
    import numpy as np

    nll, wsum = 0.0, 0.0
    outs = output.loss_fn_outputs
    if len(outs) != len(data):
        raise TinkerUnavailable(
            f"Tinker returned {len(outs)} outputs for a batch of {len(data)} examples."
        )
    for out, datum in zip(outs, data, strict=True):
        lp = np.asarray(out["logprobs"].to_numpy(), dtype=np.float64).reshape(-1)
        w = np.asarray(datum.loss_fn_inputs["weights"].to_numpy(), dtype=np.float64).reshape(-1)
        nll -= float((lp * w).sum())
        wsum += float(w.sum())
    return (nll / wsum if wsum > 0 else float("nan")), wsum


class _LiveBar:
    """A progress bar with the running loss and learning rate (quiet when not a terminal)."""

    def __init__(self, total: int, done: int, run: str) -> None:
        from sdfkit.progress import enabled

        self._prog = None
        if not enabled():
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._prog = Progress(
            TextColumn(f"train {run}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps  loss {task.fields[loss]}  lr {task.fields[lr]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._task = self._prog.add_task("train", total=total, completed=done, loss="-", lr="-")
        self._prog.start()

    def step(self, loss: float, lr: float) -> None:
        if self._prog is not None:
            self._prog.update(self._task, advance=1, loss=f"{loss:.4f}", lr=f"{lr:.2e}")

    def close(self) -> None:
        if self._prog is not None:
            self._prog.stop()


def train(
    export_dir: str | os.PathLike[str],
    store: Store,
    config: TrainConfig | None = None,
    run: str | None = None,
    service_factory: Callable[[], Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or resume) ``run`` on the export; see the module docstring."""
    cfg = config or TrainConfig()
    plan = plan_run(export_dir, cfg, run)
    with _run_lock(store, plan.run):
        return _train(plan, store, cfg, service_factory, log or (lambda _m: None))


@contextmanager
def _run_lock(store: Store, run: str) -> Iterator[None]:
    """One process per run: a second ``sdf train`` of the same run would pay twice."""
    import fcntl

    store.root.mkdir(parents=True, exist_ok=True)
    path = store.root / f".train-{hashlib.sha256(run.encode()).hexdigest()[:16]}.lock"
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise TrainError(
                f"run {run!r} is being trained by another process; wait for it or stop it first."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _train(
    plan: Plan,
    store: Store,
    cfg: TrainConfig,
    service_factory: Callable[[], Any] | None,
    say: Callable[[str], None],
) -> TrainResult:
    existing = _run_row(store, plan.run)
    if existing is not None:
        _check_same_run(existing, plan)
    ckpt = last_checkpoint(store, plan.run) if existing is not None else None
    start = int(ckpt["step"]) if ckpt else 0
    if ckpt and start >= plan.total_steps:
        return TrainResult(plan.run, plan.total_steps, start, start, None, [ckpt], None, "finished")

    assert plan.view is not None
    # read_export checks the sha256 of every shard still to be read here, before anything is
    # contacted or paid.
    examples = iter_examples(plan.view, plan.batches[start][0])
    service = connect_service(cfg.health_timeout, service_factory)
    now = utc_now()
    with train_catalog(store) as con:
        con.execute("BEGIN")
        if existing is None:
            con.execute(
                "INSERT INTO train_runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    plan.run,
                    plan.export_dir,
                    plan.fingerprint,
                    plan.tokenizer,
                    cfg.base_model,
                    json.dumps(cfg.as_dict(), sort_keys=True),
                    plan.total_steps,
                    plan.examples,
                    plan.epochs,
                    "running",
                    start,
                    0,
                    now,
                    now,
                ],
            )
        else:
            con.execute(
                "UPDATE train_runs SET status = 'running', steps_done = ?, resumes = resumes + ?, "
                "config = ?, updated_at = ? WHERE run = ?",
                [start, 1 if ckpt else 0, json.dumps(cfg.as_dict(), sort_keys=True), now, plan.run],
            )
        # Steps after the resumed state were trained into weights that no longer exist.
        con.execute("DELETE FROM train_steps WHERE run = ? AND step >= ?", [plan.run, start])
        con.execute("COMMIT")

    try:
        if ckpt:
            say(f"resuming {plan.run!r} at step {start} from {ckpt['state_path']}")
            client = within(
                cfg.deadline,
                "restoring the training client from the saved state",
                lambda: service.create_training_client_from_state_with_optimizer(
                    ckpt["state_path"]
                ).result(),
            )
        else:
            say(f"starting {plan.run!r}: {plan.total_steps:,} steps on {cfg.base_model}")
            client = within(
                cfg.deadline,
                "creating the LoRA training client",
                lambda: service.create_lora_training_client(
                    base_model=cfg.base_model,
                    rank=cfg.rank,
                    seed=cfg.lora_seed,
                    train_mlp=cfg.train_mlp,
                    train_attn=cfg.train_attn,
                    train_unembed=cfg.train_unembed,
                    user_metadata={"sdfkit_run": plan.run},
                ).result(),
            )
        if ckpt and not ckpt.get("sampler_path"):  # the state was saved, its sampler copy failed
            ckpt = _save_sampler(client, store, plan.run, start, str(ckpt["name"]), cfg)
    except BaseException as exc:
        _set_status(
            store, plan.run, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        )
        close_service(service, "errored", cfg.deadline)
        raise

    saved: list[dict[str, Any]] = [ckpt] if ckpt else []
    ckpt_steps = set(plan.checkpoint_steps)
    epoch_ends = set(plan.epoch_end_steps)
    bar = _LiveBar(plan.total_steps, start, plan.run)
    last_loss: float | None = None
    step = start
    done_steps = start
    status = "failed"
    pending: list[list[Any]] = []
    flushed_at = time.monotonic()

    def flush() -> None:
        # Step records are written in small groups: one catalog connection per write costs
        # ~0.1 s, and a real step takes seconds; checkpoints and the end always flush.
        nonlocal flushed_at
        if pending:
            with train_catalog(store) as con:
                con.execute("BEGIN")
                # One Arrow insert: DuckDB's executemany costs ~10 ms a row.
                con.register("_steps", _rows_table(pending, STEP_COLUMNS))
                con.execute("INSERT OR REPLACE INTO train_steps SELECT * FROM _steps")
                con.unregister("_steps")
                con.execute(
                    "UPDATE train_runs SET steps_done = ?, updated_at = ? WHERE run = ?",
                    [pending[-1][1] + 1, utc_now(), plan.run],
                )
                con.execute("COMMIT")
            pending.clear()
        flushed_at = time.monotonic()

    try:
        inflight: deque[tuple[int, Any, Any, list[Any], list[dict[str, Any]], float]] = deque()

        def settle() -> None:
            # Wait for the oldest submitted step and record it.
            nonlocal last_loss, done_steps
            s, fb, opt, data, batch, t0 = inflight.popleft()
            out = within(cfg.deadline, f"training step {s}", lambda: (fb.result(), opt.result())[0])
            loss, wsum = batch_loss(out, data)
            last_loss = loss
            lr = plan.learning_rates[s]
            pending.append(
                [
                    plan.run,
                    s,
                    plan.batches[s][2],
                    loss,
                    lr,
                    len(batch),
                    sum(len(ex["tokens"]) - 1 for ex in batch),
                    wsum,
                    str(batch[0]["example_id"]),
                    str(batch[-1]["example_id"]),
                    time.monotonic() - t0,
                    utc_now(),
                ]
            )
            done_steps = s + 1
            if time.monotonic() - flushed_at >= RECORD_EVERY_SECONDS:
                flush()
            bar.step(loss, lr)

        for step in range(start, plan.total_steps):
            if step in ckpt_steps and step != start:
                while inflight:  # the state must hold exactly the steps before this one
                    settle()
                flush()
                saved.append(_checkpoint(client, store, plan, step, epoch_ends, cfg))
            a, b, _ = plan.batches[step]
            batch = [next(examples) for _ in range(b - a)]
            data = [to_datum(ex) for ex in batch]  # sdfkit.export.verify.to_datum (contract B)
            adam = _adam(cfg, plan.learning_rates[step])
            t0 = time.monotonic()
            # Submitting returns futures at once; the next step is submitted before this one
            # is waited for (--pipeline-depth), so the service never idles between steps.
            fb, opt = within(
                cfg.deadline,
                f"submitting training step {step}",
                lambda data=data, adam=adam: (
                    client.forward_backward(data, "cross_entropy"),
                    client.optim_step(adam),
                ),
            )
            inflight.append((step, fb, opt, data, batch, t0))
            while len(inflight) >= cfg.pipeline_depth:
                settle()
        while inflight:
            settle()
        step = plan.total_steps
        flush()
        if plan.total_steps in ckpt_steps:
            saved.append(_checkpoint(client, store, plan, plan.total_steps, epoch_ends, cfg))
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        bar.close()
        flush()
        close_service(service, "success" if status == "finished" else "errored", cfg.deadline)
        _set_status(store, plan.run, status)
    return TrainResult(
        plan.run,
        plan.total_steps,
        start,
        done_steps,
        ckpt["state_path"] if ckpt else None,
        saved,
        last_loss,
        status,
    )


def _set_status(store: Store, run: str, status: str) -> None:
    with train_catalog(store) as con:
        con.execute(
            "UPDATE train_runs SET status = ?, updated_at = ? WHERE run = ?",
            [status, utc_now(), run],
        )


def _adam(cfg: TrainConfig, lr: float) -> Any:
    from tinker import types

    return types.AdamParams(
        learning_rate=lr,
        beta1=cfg.beta1,
        beta2=cfg.beta2,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        grad_clip_norm=cfg.grad_clip_norm,
    )


def _checkpoint(
    client: Any, store: Store, plan: Plan, step: int, epoch_ends: set[int], cfg: TrainConfig
) -> dict[str, Any]:
    """Save state + sampler weights named for ``step`` (before that step is submitted)."""
    name = f"step-{step:06d}"
    ttl = cfg.checkpoint_ttl_seconds
    state = within(
        cfg.deadline,
        f"saving the state at step {step}",
        lambda: client.save_state(name, ttl_seconds=ttl).result(),
    )
    epoch = plan.batches[step - 1][2]
    kind = (
        "final" if step == plan.total_steps else ("epoch_end" if step in epoch_ends else "periodic")
    )
    row = {
        "run": plan.run,
        "step": step,
        "epoch": epoch,
        "kind": kind,
        "name": name,
        "state_path": state.path,
        "sampler_path": None,
        "created_at": utc_now(),
    }
    # Recorded at once: a resume may start from this state even if the sampler copy fails.
    with train_catalog(store) as con:
        con.execute(
            "INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?,?,?,?,?)", list(row.values())
        )
    return _save_sampler(client, store, plan.run, step, name, cfg)


def _save_sampler(
    client: Any, store: Store, run: str, step: int, name: str, cfg: TrainConfig
) -> dict[str, Any]:
    sampler = within(
        cfg.deadline,
        f"saving sampler weights at step {step}",
        lambda: client.save_weights_for_sampler(
            name, ttl_seconds=cfg.checkpoint_ttl_seconds
        ).result(),
    )
    with train_catalog(store) as con:
        con.execute(
            "UPDATE checkpoints SET sampler_path = ? WHERE run = ? AND step = ?",
            [sampler.path, run, step],
        )
        cur = con.execute("SELECT * FROM checkpoints WHERE run = ? AND step = ?", [run, step])
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchall()[0], strict=True))


def _check_same_run(existing: dict[str, Any], plan: Plan) -> None:
    """A resumed run must train the same export with the same schedule."""
    if existing.get("export_fingerprint") != plan.fingerprint:
        raise TrainError(
            f"run {plan.run!r} was started on a different export ({existing.get('export_dir')}); "
            "choose a new --run name to train on this one."
        )
    try:
        old = json.loads(existing.get("config") or "{}")
    except json.JSONDecodeError:
        old = {}
    new = plan.config.schedule_dict()
    diff = [k for k in new if k in old and old[k] != new[k]]
    if diff:
        shown = ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in diff)
        raise TrainError(
            f"run {plan.run!r} was started with other settings ({shown}); resume it with the "
            "same options or choose a new --run name."
        )


__all__ = [
    "TrainConfig",
    "TrainError",
    "TinkerUnavailable",
    "TinkerKeyMissing",
    "Plan",
    "TrainResult",
    "plan_run",
    "train",
    "lr_at",
]
