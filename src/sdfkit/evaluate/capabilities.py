"""Capability regression: what did SDF cost the model on standard benchmarks?

``sdf eval RUN --capabilities ifeval,mmlu_pro [--limit N]`` runs inspect-ai tasks (any
inspect-evals task name, or ``file.py@task`` for your own) against the base model and the
chosen checkpoints, each served by a Tinker ``SamplingClient`` through sdfkit's chat renderer
(``sdfkit.evaluate.inspect_tinker``). Every metric a task's scorers report lands in the catalog table
``capability_scores`` (run, step, task, metric, value, stderr, samples, ...);
``queries/capability_changes.sql`` gives each checkpoint's change against the base model, which
``sdf report`` shows in its evaluation section and ``sdf check`` holds to
``max_capability_drop``.

inspect-ai and inspect-evals are the optional extra ``sdfkit[evals]`` (about 0.7 GB); without
them the command says what to install. Datasets download from the Hugging Face hub when a task
is first loaded (``--dry-run`` loads them too, to count samples; it contacts no Tinker).
A (model, task, limit) already scored is not run again, and every completion Tinker
returned is kept (``capability_samples``), so a task interrupted part-way is rerun
without paying again for what was already answered.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdfkit.errors import SdfError
from sdfkit.store.records import utc_now

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.evaluate.recall import EvalConfig, Target
    from sdfkit.store.catalog import Store

INSTALL = "pip install 'sdfkit[evals]'  (or: pip install inspect-ai inspect-evals)"

CAPABILITY_TABLE = """CREATE TABLE IF NOT EXISTS capability_scores (
    run VARCHAR, step BIGINT, model_label VARCHAR, model_path VARCHAR, task VARCHAR,
    scorer VARCHAR, metric VARCHAR, value DOUBLE, stderr DOUBLE, samples BIGINT,
    sample_limit BIGINT, log_path VARCHAR, created_at TIMESTAMPTZ)"""


SAMPLE_CACHE_TABLE = """CREATE TABLE IF NOT EXISTS capability_samples (
    cache_key VARCHAR, occurrence BIGINT, model VARCHAR, prompt_tokens BIGINT,
    tokens INTEGER[], stop_reason VARCHAR, created_at TIMESTAMPTZ,
    PRIMARY KEY (cache_key, occurrence))"""


class CapabilityError(SdfError):
    """A capability evaluation cannot start or continue; the message says why."""


def require_inspect() -> None:
    """inspect-ai and inspect-evals importable, else one sentence with the install command."""
    missing = [m for m in ("inspect_ai", "inspect_evals") if importlib.util.find_spec(m) is None]
    if missing:
        raise CapabilityError(
            f"--capabilities needs {' and '.join(m.replace('_', '-') for m in missing)}, "
            f"which are not installed: {INSTALL}"
        )


def parse_specs(spec: str | list[Any]) -> list[Any]:
    """Task specs from ``--capabilities a,b`` (or a list of specs / inspect ``Task``s)."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [s for s in items if not (isinstance(s, str) and not s)]
    if not items:
        raise CapabilityError("--capabilities: name at least one task, e.g. ifeval,mmlu_pro")
    return items


def resolve_task(spec: Any) -> tuple[str, Any]:
    """(catalog name, inspect ``Task``) of one spec: a ``Task``; ``file.py@fn``; an
    inspect-evals task name (``mmlu_pro`` or ``inspect_evals/mmlu_pro``)."""
    name, where, factory = find_task(spec)
    return name, _build(where, factory)


def find_task(spec: Any) -> tuple[str, str, Any]:
    """(catalog name, where, task factory or ``Task``) of one spec, without building the task
    (building loads its dataset: a download for inspect-evals tasks)."""
    from inspect_ai import Task

    if isinstance(spec, Task):
        return spec.name, spec.name, spec
    s = str(spec).strip()
    where = f"--capabilities {s}"
    if "@" in s or s.endswith(".py"):
        path, _, fn = s.partition("@")
        p = Path(path)
        if not p.is_file():
            raise CapabilityError(f"{where}: no such file {path}")
        mod_name = f"_sdf_capability_{abs(hash(str(p.resolve())))}"
        mod_spec = importlib.util.spec_from_file_location(mod_name, p)
        assert mod_spec is not None and mod_spec.loader is not None
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - a user's file: one line, not a traceback
            raise CapabilityError(f"{where}: could not load {path}: {_first_line(exc)}") from None
        if not fn:
            raise CapabilityError(f"{where}: name the task function: {path}@TASK")
        factory = getattr(module, fn, None)
        if factory is None:
            raise CapabilityError(f"{where}: {path} defines no {fn!r}")
        return s, where, factory
    name = s.removeprefix("inspect_evals/")
    factory = None
    if name.isidentifier():
        try:
            factory = getattr(importlib.import_module(f"inspect_evals.{name}"), name, None)
        except ImportError:
            factory = None
        if factory is None:
            registry = importlib.import_module("inspect_evals._registry")
            factory = getattr(registry, name, None)
    if factory is None:
        raise CapabilityError(
            f"{where}: no inspect-evals task named {name!r} (see the inspect-evals list, or "
            "give your own as file.py@task)"
        )
    return f"inspect_evals/{name}", where, factory


def _build(where: str, factory: Any) -> Any:
    from inspect_ai import Task

    if isinstance(factory, Task):
        return factory
    try:
        task = factory()
    except Exception as exc:  # noqa: BLE001 - dataset downloads fail offline: say so in one line
        raise CapabilityError(f"{where}: could not load the task: {_first_line(exc)}") from None
    if not isinstance(task, Task):
        raise CapabilityError(f"{where}: did not return an inspect Task")
    return task


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


# ----------------------------------------------------------------------------- catalog
def ensure_tables(con: Any) -> None:
    """Create the capability tables on an open catalog connection (if missing)."""
    con.execute(CAPABILITY_TABLE)
    con.execute(SAMPLE_CACHE_TABLE)


def _catalog(store: Store) -> Any:
    from contextlib import contextmanager

    from sdfkit.train.run import train_catalog

    @contextmanager
    def ctx() -> Any:
        with train_catalog(store) as con:
            ensure_tables(con)
            yield con

    return ctx()


class SampleCache:
    """Completions already paid for, per model: an interrupted task (Ctrl-C, a failure, a
    deadline) is run again from its first sample by inspect, and this hands back what Tinker
    already answered instead of asking again.

    A completion is keyed by the model, the prompt tokens and the sampling settings, and by
    its occurrence: the k-th identical request of a run (epochs, repeated prompts) reuses the
    k-th stored completion. Completions are written in batches of ``flush_every`` and by
    ``flush()`` (``run`` calls it however the task ends), each batch in one transaction.
    """

    def __init__(self, store: Store, model: str, flush_every: int = 32) -> None:
        import threading
        from collections import defaultdict

        self.store, self.model, self.flush_every = store, model, flush_every
        self.lock = threading.Lock()
        self.counts: dict[str, int] = defaultdict(int)
        self.pending: list[dict[str, Any]] = []
        self.reused = self.added = 0
        with _catalog(store) as con:
            rows = con.execute(
                "SELECT cache_key, occurrence, tokens, stop_reason FROM capability_samples "
                "WHERE model = ?",
                [model],
            ).fetchall()
        self.stored: dict[tuple[str, int], tuple[list[int], str]] = {
            (r[0], int(r[1])): (list(r[2]), r[3]) for r in rows
        }

    def key(self, tokens: list[int], params: Any) -> str:
        import hashlib
        import json

        settings = [params.max_tokens, params.temperature, params.seed, params.stop]
        settings += [params.top_p, params.top_k]
        payload = json.dumps([self.model, tokens, settings], default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def claim(self, key: str) -> tuple[int, tuple[list[int], str] | None]:
        """(occurrence of this request in the run, the completion stored for it or None)."""
        with self.lock:
            k = self.counts[key]
            self.counts[key] += 1
            hit = self.stored.get((key, k))
            self.reused += hit is not None
            return k, hit

    def add(self, key: str, occurrence: int, n_prompt: int, tokens: list[int], stop: str) -> None:
        row = {
            "cache_key": key,
            "occurrence": occurrence,
            "model": self.model,
            "prompt_tokens": n_prompt,
            "tokens": tokens,
            "stop_reason": stop,
            "created_at": utc_now(),
        }
        with self.lock:
            self.stored[(key, occurrence)] = (tokens, stop)
            self.pending.append(row)
            self.added += 1
            full = len(self.pending) >= self.flush_every
        if full:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        with self.lock:
            rows, self.pending = self.pending, []
            if not rows:
                return
            tbl = pa.table(
                {n: [r[n] for r in rows] for n in rows[0]}
                | {"tokens": pa.array([r["tokens"] for r in rows], pa.list_(pa.int32()))}
            )
            with _catalog(self.store) as con:
                con.register("_incoming_cap_samples", tbl)
                con.execute("BEGIN")
                con.execute(
                    "INSERT OR REPLACE INTO capability_samples BY NAME "
                    "SELECT * FROM _incoming_cap_samples"
                )
                con.execute("COMMIT")
                con.unregister("_incoming_cap_samples")


def _scored(store: Store, run: str) -> set[tuple[str, str, int]]:
    """(model label, task, limit) already scored; creates nothing (``--dry-run`` only reads)."""
    from sdfkit.train.run import train_catalog

    with train_catalog(store) as con:
        exists = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'capability_scores'"
        ).fetchall()[0][0]
        if not exists:
            return set()
        rows = con.execute(
            "SELECT DISTINCT model_label, task, sample_limit FROM capability_scores WHERE run = ?",
            [run],
        ).fetchall()
    return {(r[0], r[1], int(r[2])) for r in rows}


def _store_scores(store: Store, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    import pyarrow as pa

    tbl = pa.table({n: [r[n] for r in rows] for n in rows[0]})
    keys = {(r["run"], r["model_label"], r["task"], r["sample_limit"]) for r in rows}
    with _catalog(store) as con:
        con.register("_incoming_scores", tbl)
        con.execute("BEGIN")
        for k in keys:  # a task scored again replaces its earlier scores
            con.execute(
                "DELETE FROM capability_scores WHERE run = ? AND model_label = ? AND task = ? "
                "AND sample_limit = ?",
                list(k),
            )
        con.execute("INSERT INTO capability_scores BY NAME SELECT * FROM _incoming_scores")
        con.execute("COMMIT")
        con.unregister("_incoming_scores")


def score_rows(log: Any) -> list[dict[str, Any]]:
    """(scorer, metric, value, stderr, samples) of an inspect ``EvalLog``: every metric
    except standard errors, each with its standard error: ``<m>_stderr`` or
    ``<m without _acc>_stderr`` when the scorer reports one, else the scorer's ``stderr``
    when it has a single other metric."""
    res = log.results
    if res is None:
        return []
    out = []
    for score in res.scores:
        metrics = {name: m.value for name, m in score.metrics.items()}
        values = {n: v for n, v in metrics.items() if n != "stderr" and not n.endswith("_stderr")}
        for name, value in values.items():
            se = metrics.get(f"{name}_stderr")
            if se is None and name.endswith("_acc"):
                se = metrics.get(name[: -len("_acc")] + "_stderr")
            if se is None and len(values) == 1:
                se = metrics.get("stderr")
            out.append(
                {
                    "scorer": score.name,
                    "metric": name,
                    "value": _finite(value),
                    "stderr": _finite(se),
                    "samples": int(score.scored_samples or res.completed_samples or 0),
                }
            )
    return out


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ----------------------------------------------------------------------------- plan
@dataclass
class CapabilityPlan:
    run: str
    base_model: str
    targets: list[Target]
    tasks: list[dict[str, Any]]  # {task, samples, epochs, requests, already_scored}
    limit: int | None
    task_objects: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def requests(self) -> int:
        return sum(t["requests"] for t in self.tasks)

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "base_model": self.base_model,
            "checkpoints": [
                {"label": t.label, "step": t.step, "model_path": t.model_path} for t in self.targets
            ],
            "limit": self.limit,
            "tasks": self.tasks,
            "requests": self.requests,
            "note": "requests: one per sample, epoch and model still to score (single-turn "
            "tasks; multi-turn tasks make more)",
        }

    def describe(self) -> str:
        lines = [
            f"capability run {self.run!r} on {self.base_model}: "
            + ", ".join(t.label for t in self.targets)
        ]
        for t in self.tasks:
            done = (
                f", already scored for {', '.join(t['already_scored'])}"
                if t["already_scored"]
                else ""
            )
            lines.append(
                f"  {t['task']}: {t['samples']} samples x {t['epochs']} epoch(s) -> "
                f"{t['requests']} requests{done}"
            )
        lines.append(f"total: {self.requests} sampling requests")
        return "\n".join(lines)


def plan(store: Store, train_run: str, cfg: EvalConfig, specs: str | list[Any]) -> CapabilityPlan:
    """Tasks (loaded: their datasets download on first use), sample counts, checkpoints and
    requests; contacts no Tinker."""
    from sdfkit.evaluate.recall import choose_targets, renderer_for

    require_inspect()
    items = parse_specs(specs)
    base_model, targets = choose_targets(store, train_run, cfg)
    renderer_for(base_model, cfg.renderer)
    limit = cfg.limit
    scored = _scored(store, train_run)
    tasks, objects = [], {}
    found = [find_task(spec) for spec in items]  # every name checked before any download
    for name, where, factory in found:
        if name in objects:
            continue
        task = objects[name] = _build(where, factory)
        n = len(task.dataset)
        samples = min(n, limit) if limit else n
        epochs = int(task.epochs or 1)
        done = [t.label for t in targets if (t.label, name, limit or 0) in scored]
        tasks.append(
            {
                "task": name,
                "samples": samples,
                "dataset_samples": n,
                "epochs": epochs,
                "requests": samples * epochs * (len(targets) - len(done)),
                "already_scored": done,
            }
        )
    return CapabilityPlan(train_run, base_model, targets, tasks, limit, objects)


# ----------------------------------------------------------------------------- run
@dataclass
class CapabilityResult:
    run: str
    scored: list[tuple[str, str]]  # (model label, task) run now
    skipped: list[tuple[str, str]]  # already in the catalog
    rows: int

    def summary(self) -> str:
        return (
            f"capabilities of {self.run!r}: {len(self.scored)} (model, task) run(s) scored, "
            f"{len(self.skipped)} already in capability_scores; {self.rows} score row(s) stored"
        )


def run(
    store: Store,
    train_run: str,
    cfg: EvalConfig,
    specs: str | list[Any],
    *,
    service_factory: Callable[[], Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> CapabilityResult:
    """Run every task on every chosen model not yet scored; scores land in
    ``capability_scores`` after each model (a crash keeps what was scored)."""
    import inspect_ai

    from sdfkit.evaluate.inspect_tinker import tinker_model
    from sdfkit.evaluate.recall import renderer_for
    from sdfkit.train.service import close_service, connect_service, within

    say = log or (lambda _m: None)
    p = plan(store, train_run, cfg, specs)
    renderer = renderer_for(p.base_model, cfg.renderer)
    scored = _scored(store, train_run)
    limit_key = p.limit or 0
    result = CapabilityResult(train_run, [], [], 0)
    log_dir = store.root / "inspect_logs"
    todo: list[tuple[Target, list[str]]] = []
    for target in p.targets:
        names = [t["task"] for t in p.tasks if (target.label, t["task"], limit_key) not in scored]
        result.skipped += [(target.label, t["task"]) for t in p.tasks if t["task"] not in names]
        if names:
            todo.append((target, names))
    if not todo:
        return result
    service = connect_service(cfg.health_timeout, service_factory)
    try:
        for target, names in todo:
            client = within(
                cfg.deadline,
                f"creating a sampling client for {target.label}",
                lambda t=target: service.create_sampling_client(
                    model_path=t.model_path, base_model=None if t.model_path else p.base_model
                ).result(),
            )
            cache = SampleCache(store, target.model_path or f"base:{p.base_model}")
            model = tinker_model(
                f"{p.base_model}@{target.label}",
                client,
                renderer,
                max_tokens=cfg.max_tokens,
                temperature=cfg.temperature,
                deadline=cfg.deadline,
                cache=cache,
            )
            say(f"{target.label}: running {', '.join(names)}")
            try:
                logs = inspect_ai.eval(
                    [p.task_objects[n] for n in names],
                    model=model,
                    limit=p.limit,
                    log_dir=str(log_dir),
                    display="none",
                    log_level="warning",
                    score_display=False,
                )
            except SdfError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. a task needing a sandbox: one line
                raise CapabilityError(
                    f"inspect could not run {', '.join(names)} on {target.label}: "
                    f"{_first_line(exc)}"
                ) from None
            finally:  # however the tasks end, what Tinker answered is kept
                cache.flush()
            if cache.reused:
                say(f"{target.label}: {cache.reused} completion(s) reused from an earlier run")
            rows = []
            failed = None
            for name, elog in zip(names, logs, strict=True):
                if elog.status != "success":
                    err = str(elog.error.message if elog.error else elog.status).strip()
                    failed = failed or CapabilityError(
                        f"{name} on {target.label} did not finish "
                        f"({(err.splitlines() or ['?'])[0]}); its log: {elog.location}; rerun "
                        "to resume (tasks already scored are kept)"
                    )
                    continue
                for r in score_rows(elog):
                    rows.append(
                        {
                            "run": train_run,
                            "step": target.step,
                            "model_label": target.label,
                            "model_path": target.model_path,
                            "task": name,
                            **r,
                            "sample_limit": limit_key,
                            "log_path": str(elog.location),
                            "created_at": utc_now(),
                        }
                    )
                result.scored.append((target.label, name))
            _store_scores(store, rows)
            result.rows += len(rows)
            if failed is not None:
                raise failed
    finally:
        close_service(service, "success", cfg.deadline)
    return result


def changes(store: Store) -> list[dict[str, Any]] | None:
    """Rows of ``queries/capability_changes.sql`` (``None`` before the first capability run;
    creates nothing)."""
    from sdfkit.store.sql import QueryError, named

    try:
        df = named("capability_changes", store)
    except QueryError as exc:
        if "does not exist yet" in str(exc):
            return None
        raise
    return df.to_dicts() if df.height else None
