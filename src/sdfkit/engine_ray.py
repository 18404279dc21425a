"""The Ray Data engine for per-document stages (``--engine ray``; ``pip install 'sdfkit[ray]'``).

The very same ``Stage`` object the local engine calls runs here through
``ray.data.read_parquet(<the store's document parts>).map_batches(...)``: plain stages as
tasks, model-loading stages (``loads_model = True``) as an actor pool so each worker loads
its model once. A worker that dies mid-batch is retried by Ray (tasks are retried on worker
failure by default). Results stream back and land through the same code path as the local
engine's (one atomic Parquet part per ``flush_rows``, keyed by ``doc_id``), so the store
cannot tell the engines apart, and a retried task can never add a duplicate.

Without an address a local Ray is started with this machine's cores for the length of the
call and stopped afterwards. With ``address`` (``--ray-address`` or ``RAY_ADDRESS``) it joins
an existing cluster; the corpus must then live on storage every worker reads.

Ray settings sdfkit chooses (each overridable by setting the variable yourself):
``RAY_DATA_PARQUET_BIN_PACKING_BYTES`` 20 MiB (Ray's default packed our parts into two uneven
tasks on 2 cores), ``RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S`` 600 (Ray's is 30 min),
``RAY_AUTH_MODE=disabled`` for the local cluster only, and fractional CPUs for actors
(``SDF_RAY_ACTOR_CPUS``, default 0.5: actor pools that claim every CPU hang silently).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from .engine import EngineError, Stage, _store_results, count_pending
from .progress import counter
from .store import DOCUMENTS, Store

INSTALL_HINT = "pip install 'sdfkit[ray]'"

DEFAULT_SETTINGS = {
    "RAY_DATA_PARQUET_BIN_PACKING_BYTES": str(20 * 1024 * 1024),
    "RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S": "600",
}


def import_ray() -> Any:
    for key, value in DEFAULT_SETTINGS.items():
        os.environ.setdefault(key, value)
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise EngineError(
            f"--engine ray needs Ray Data, which is an optional extra: {INSTALL_HINT}"
        ) from None
    return ray


def actor_cpus() -> float:
    """CPUs each model-loading actor claims: ``$SDF_RAY_ACTOR_CPUS``, default 0.5. Ray takes a
    fraction up to 1 or a whole number of CPUs; anything else is a clear error here rather
    than a traceback from inside Ray."""
    from .settings import env_float

    accepted = "a number above 0: a fraction up to 1 (e.g. 0.5) or a whole number of CPUs"
    cpus = env_float(
        "SDF_RAY_ACTOR_CPUS", 0.5, low=0, low_open=True, error=EngineError, accepted=accepted
    )
    if cpus > 1 and not cpus.is_integer():
        raw = os.environ.get("SDF_RAY_ACTOR_CPUS", "").strip()
        raise EngineError(f"SDF_RAY_ACTOR_CPUS must be {accepted}, got {raw!r}")
    return cpus


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """A connected Ray: the running one, the cluster at ``address``, or a local one we own."""
    ray = import_ray()
    import logging

    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        except (ValueError, ConnectionError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineError(
                f"could not join the Ray cluster at {address!r} (--ray-address or RAY_ADDRESS; "
                f"host:port of a running cluster, or 'auto'): {first}"
            ) from None
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            logging_level="WARNING",
            log_to_driver=False,
            _temp_dir=os.environ.get("SDF_RAY_TMP") or tempfile.mkdtemp(prefix="sdf-ray-"),
        )
    try:
        yield ray
    finally:
        ray.shutdown()


def _one_batch(tbl: pa.Table) -> pa.RecordBatch:
    tbl = tbl.combine_chunks()
    batches = tbl.to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=tbl.schema)
    return batches[0]


class _StageTask:
    """Applies a stage to a pyarrow batch; built once per actor (or per task)."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage

    def __call__(self, tbl: pa.Table) -> pa.Table:
        out = self.stage(_one_batch(tbl))
        return pa.Table.from_batches([out], schema=out.schema)


def _pending_filter(tbl: pa.Table, skip: pa.Array | None, only: pa.Array | None) -> pa.Table:
    import pyarrow.compute as pc

    ids = tbl.column("doc_id")
    mask = None
    if skip is not None and len(skip):
        mask = pc.invert(pc.is_in(ids, value_set=skip))
    if only is not None:
        keep = pc.is_in(ids, value_set=only)
        mask = keep if mask is None else pc.and_(mask, keep)
    return tbl if mask is None else tbl.filter(mask)


def check_paths_visible(ray: Any, paths: list[str]) -> None:
    """Fail clearly when cluster workers cannot read the corpus files."""

    @ray.remote(num_cpus=0)
    def missing(ps: list[str]) -> list[str]:
        return [p for p in ps if not os.path.exists(p)]

    lost = ray.get(missing.remote(paths[:50]))
    if lost:
        raise EngineError(
            f"Ray workers cannot see the corpus: {lost[0]} does not exist on a worker. "
            "With --ray-address the corpus directory must be on storage every worker reads "
            "(a shared filesystem path mounted at the same place on every node)."
        )


def run_stage_ray(
    store: Store,
    stage: Stage,
    where: set[str] | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
    batch_rows: int = 512,
    flush_rows: int = 20_000,
) -> int:
    """Run ``stage`` over pending documents on Ray Data; returns the number of rows stored."""
    parts = [str(p.resolve()) for p in store.parts(DOCUMENTS)]
    if not parts:
        return 0
    done = store.keys(stage.table) if stage.table in store.parquet_tables() else set()
    cpus = actor_cpus() if stage.loads_model else 0.0  # checked before Ray starts
    with ray_session(address, num_cpus) as ray:
        if address or os.environ.get("RAY_ADDRESS"):
            check_paths_visible(ray, parts)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # sdfkit shows its own bar
        ctx.print_on_execution_start = False
        skip = pa.array(sorted(done), pa.string()) if done else None
        only = pa.array(sorted(where), pa.string()) if where is not None else None
        ds = ray.data.read_parquet(parts).select_columns(list(stage.columns))
        ds = ds.map_batches(
            _pending_filter, batch_format="pyarrow", fn_args=(skip, only), zero_copy_batch=True
        )
        if stage.loads_model:
            size = actors or max(1, int(ray.available_resources().get("CPU", 1)))
            ds = ds.map_batches(
                _StageTask,
                fn_constructor_args=(stage,),
                compute=ray.data.ActorPoolStrategy(size=size),
                batch_size=batch_rows,
                batch_format="pyarrow",
                num_cpus=cpus,
            )
        else:
            ds = ds.map_batches(_StageTask(stage), batch_size=batch_rows, batch_format="pyarrow")
        total = count_pending(store, stage, where)
        with counter(f"{stage.name} (ray)", total=total, unit="docs") as tick:
            results = (
                b
                for tbl in ds.iter_batches(batch_format="pyarrow", batch_size=None)
                for b in tbl.to_batches()
            )
            return _store_results(store, stage, results, flush_rows, tick)
