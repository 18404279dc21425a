"""Run per-document stages over the store's Parquet: one stage shape, several engines.

A *stage* turns a batch of documents (an Arrow record batch with the columns it asks for)
into exactly one result row per document, keyed by ``doc_id``: MinHash signatures, name
candidates, embeddings, keyword hits, token counts. Results are appended to a Parquet table
of the store named by the stage's ``table`` (which encodes its configuration), so they are a
cache by content hash: a second run only processes documents it has not seen.

Engines:
- ``local`` (default): in this process, or a process pool of ``workers`` processes; each
  worker builds the stage once (models load once per worker).
- ``ray``: the same stage object through Ray Data (see ``sdfkit.engine.ray_data``, optional extra).

The ``Stage`` base and the pending/results helpers both engines share are
``sdfkit.engine.stage``.

Results are flushed as atomic parts every ``flush_rows`` rows, so an interrupted run keeps
what it finished and never leaves a partial part.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa

from sdfkit.engine.stage import (  # noqa: F401 - Stage and EngineError: where callers find them
    EngineError,
    Stage,
    count_pending,
    pending_documents,
    read_results,
)
from sdfkit.progress import counter
from sdfkit.settings import env_int
from sdfkit.store.catalog import Store

ENGINES = ("local", "ray")
T = TypeVar("T")


# Worker-side state of the local process pool: the stage is built once per process.
_WORKER_STAGE: Stage | None = None


def _init_worker(stage: Stage) -> None:
    import signal

    global _WORKER_STAGE
    # Ctrl-C reaches the whole process group: the command's process cancels what is queued
    # and shuts the pool down; a worker interrupted on its own printed a traceback each
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_STAGE = stage


def _run_in_worker(batch: pa.RecordBatch) -> pa.RecordBatch:
    assert _WORKER_STAGE is not None
    return _WORKER_STAGE(batch)


def env_workers() -> int:
    """Worker processes from ``$SDF_WORKERS`` (default 1), with a clear error when it is not
    a whole number of at least 1."""
    return env_int("SDF_WORKERS", 1, low=1, error=EngineError)


def resolve_engine(engine: str | None = None) -> str:
    """``engine``, else ``$SDF_ENGINE``, else "local"; an unknown name is a clear error."""
    source = "" if engine else " (from SDF_ENGINE)"
    name = (engine or os.environ.get("SDF_ENGINE") or "local").strip().lower()
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}{source}: use one of {', '.join(ENGINES)}")
    return name


def check_environment(engine: str | None = None) -> str:
    """Check the engine's environment variables (``SDF_ENGINE``, ``SDF_WORKERS``, and for Ray
    ``SDF_RAY_ACTOR_CPUS``) before long work starts, so a typo stops a report at once
    rather than failing each audit in turn. Returns the engine's name."""
    name = resolve_engine(engine)
    env_workers()
    if name == "ray":
        from sdfkit.engine.ray_data import actor_cpus

        actor_cpus()
    return name


@dataclass
class RunResult:
    stage: str
    table: str
    processed: int
    engine: str


def run_stage(
    store: Store,
    stage: Stage,
    engine: str | None = None,
    workers: int | None = None,
    batch_rows: int = 512,
    flush_rows: int = 20_000,
    where: set[str] | None = None,
    **engine_options: Any,
) -> RunResult:
    """Compute ``stage`` for every stored document that has no result yet; store results.

    ``workers`` (else ``$SDF_WORKERS``, else 1) must be a whole number of at least 1, as the
    variable and the audits' ``workers`` must: ``sdf tokens --workers -1`` ran in-process
    without a word while ``SDF_WORKERS=-1`` was refused. Both are checked before any work,
    even when no document is pending."""
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise EngineError(f"workers must be at least 1, got {workers}", settings=("workers",))
    engine = resolve_engine(engine)
    if engine == "ray":
        from sdfkit.engine.ray_data import run_stage_ray

        processed = run_stage_ray(
            store, stage, where=where, batch_rows=batch_rows, **engine_options
        )
        return RunResult(stage.name, stage.table, processed, "ray")

    workers = workers or env_workers()
    total = count_pending(store, stage, where)
    if total == 0:
        return RunResult(stage.name, stage.table, 0, "local")
    batches = pending_documents(store, stage, batch_rows, where)
    processed = 0
    with counter(f"{stage.name}", total=total, unit="docs") as tick:
        if workers <= 1:
            results: Iterator[pa.RecordBatch] = (stage(b) for b in prefetched(batches))
            processed = _store_results(store, stage, results, flush_rows, tick)
        else:
            # Workers start from a fresh server process, never forked from this one: a fork
            # taken after polars, DuckDB or a tokenizer started their thread pools can inherit
            # a held lock and hang at 0 % CPU.
            import multiprocessing

            with ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context(_START_METHOD),
                initializer=_init_worker,
                initargs=(stage,),
            ) as pool:
                results = pool.map(_run_in_worker, batches)
                processed = _store_results(store, stage, results, flush_rows, tick)
    return RunResult(stage.name, stage.table, processed, "local")


_START_METHOD = "forkserver"  # see run_stage


_DONE = object()


def prefetched(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """``items``, produced up to ``depth`` ahead on a background thread: reading and decoding
    the next Parquet batch (which releases the GIL) overlaps the work on this one. An error
    in ``items`` is raised here; leaving early (an error, Ctrl-C) stops the thread."""
    import queue
    import threading

    box: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put((_DONE, exc))
            return
        put((_DONE, None))

    thread = threading.Thread(target=produce, name="sdf-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = box.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _store_results(
    store: Store,
    stage: Stage,
    results: Iterator[pa.RecordBatch],
    flush_rows: int,
    tick: Any,
) -> int:
    """Append result batches as atomic parts of at most ``flush_rows`` rows."""
    total = 0
    pending: list[pa.RecordBatch] = []
    size = 0

    def flush() -> int:
        return store.append(
            stage.table,
            pending,
            key="doc_id",
            schema=stage.output_schema,
            dictionary=stage.parquet_dictionary,
        )

    for out in results:
        pending.append(out)
        size += out.num_rows
        tick(out.num_rows)
        if size >= flush_rows:
            total += flush()
            pending, size = [], 0
    if pending:
        total += flush()
    return total
