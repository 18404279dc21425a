"""The Ray Data engine for per-document stages (``--engine ray``; ``pip install 'sdfkit[ray]'``).

The very same ``Stage`` object the local engine calls runs here through
``ray.data.read_parquet(<the store's document parts>).map_batches(...)``: plain stages as
tasks, model-loading stages (``loads_model = True``) as an actor pool so each worker loads
its model once.

The workers write the results themselves: each batch of ``batch_rows`` documents becomes one
Parquet part of the stage's table (``corpus/<stage table>/``), written to a hidden
``.tmp-<pid>@<host>@...`` file and published by an atomic rename, exactly like
``Store.part_writer``. The driver only receives a one-row summary per batch (its row count)
for the progress bar, so results (embeddings of 100k documents...) never pass through it.

Why a retried task never stores a document twice: a part's name is fixed by the run and the
batch, ``part-<run start>-<hash of the batch's doc ids>.parquet``. Ray re-runs a failed task
(a worker that died) on the same input blocks, so it forms the same batches and its rename
replaces a part the failed attempt already published instead of adding a second one. A
worker killed before its rename leaves only a ``.tmp-*`` file, which no view reads and
``Store.clean_temporaries`` removes once its writer is gone. The driver holds the table's
append lock for the whole run, so two runs of one stage on one store never both compute the
same pending documents.

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

import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from sdfkit.engine.stage import EngineError, Stage, count_pending
from sdfkit.progress import counter
from sdfkit.store.catalog import DOCUMENTS, Store, part_file

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
    from sdfkit.settings import env_float

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
            _temp_dir=_ray_tmp(),
        )
    try:
        yield ray
    finally:
        ray.shutdown()


def _ray_tmp() -> str:
    """Ray's session folder: ``SDF_RAY_TMP`` (made if missing) or a fresh temporary one."""
    tmp = os.environ.get("SDF_RAY_TMP")
    if not tmp:
        return tempfile.mkdtemp(prefix="sdf-ray-")
    path = Path(tmp)
    if path.exists() and not path.is_dir():
        raise EngineError(f"SDF_RAY_TMP={tmp!r}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineError(f"SDF_RAY_TMP={tmp!r}: cannot be created ({exc.strerror})") from None
    return str(path)


def _one_batch(tbl: pa.Table) -> pa.RecordBatch:
    tbl = tbl.combine_chunks()
    batches = tbl.to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=tbl.schema)
    return batches[0]


#: The only column the driver receives back from the workers: rows stored per batch.
SUMMARY_SCHEMA = pa.schema([("rows", pa.int64())])


def part_name(run_stamp: str, doc_ids: list[str]) -> str:
    """The name of the part holding one batch's results: the same for every attempt at the
    batch within a run (so a retry's rename replaces it), distinct between batches (80 bits
    of the doc ids' hash)."""
    digest = hashlib.sha256("\n".join(doc_ids).encode("utf-8")).hexdigest()[:20]
    return f"part-{run_stamp}-{digest}.parquet"


def write_part(
    directory: Path, name: str, batch: pa.RecordBatch, schema: pa.Schema, dictionary: bool = True
) -> int:
    """Write ``batch`` as part ``name`` of a table directory, the store's way (hidden
    temporary file, atomic rename replacing an earlier attempt's part of that name)."""
    with part_file(directory, schema, name, dictionary) as writer:
        writer.write(batch)
    return writer.rows


class _StageWriter:
    """Runs a stage on a batch and stores the results as one part, in the worker; returns
    only the row count. Built once per actor (or per task)."""

    def __init__(self, stage: Stage, directory: str, run_stamp: str) -> None:
        self.stage = stage
        self.directory = Path(directory)
        self.run_stamp = run_stamp

    def __call__(self, tbl: pa.Table) -> pa.Table:
        batch = _one_batch(tbl)
        rows = 0
        if batch.num_rows:
            out = self.stage(batch)
            name = part_name(self.run_stamp, batch.column("doc_id").to_pylist())
            rows = write_part(
                self.directory, name, out, self.stage.output_schema, self.stage.parquet_dictionary
            )
        return pa.table({"rows": [rows]}, schema=SUMMARY_SCHEMA)


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
) -> int:
    """Run ``stage`` over pending documents on Ray Data; returns the number of rows stored.

    Workers store one part per batch of ``batch_rows`` documents; the driver sums row counts.
    """
    parts = [str(p.resolve()) for p in store.parts(DOCUMENTS)]
    if not parts:
        return 0
    cpus = actor_cpus() if stage.loads_model else 0.0  # checked before Ray starts
    with ray_session(address, num_cpus) as ray, store.append_lock(stage.table):
        if address or os.environ.get("RAY_ADDRESS"):
            check_paths_visible(ray, parts)
        done = store.keys(stage.table) if stage.table in store.parquet_tables() else set()
        total = count_pending(store, stage, where)
        if total == 0:
            return 0
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # sdfkit shows its own bar
        ctx.print_on_execution_start = False
        skip = pa.array(sorted(done), pa.string()) if done else None
        only = pa.array(sorted(where), pa.string()) if where is not None else None
        directory = str(store.table_dir(stage.table).resolve())
        run_stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        ds = ray.data.read_parquet(parts).select_columns(list(stage.columns))
        ds = ds.map_batches(
            _pending_filter, batch_format="pyarrow", fn_args=(skip, only), zero_copy_batch=True
        )
        if stage.loads_model:
            size = actors or max(1, int(ray.available_resources().get("CPU", 1)))
            ds = ds.map_batches(
                _StageWriter,
                fn_constructor_args=(stage, directory, run_stamp),
                compute=ray.data.ActorPoolStrategy(size=size),
                batch_size=batch_rows,
                batch_format="pyarrow",
                num_cpus=cpus,
            )
        else:
            ds = ds.map_batches(
                _StageWriter(stage, directory, run_stamp),
                batch_size=batch_rows,
                batch_format="pyarrow",
            )
        stored = 0
        with counter(f"{stage.name} (ray)", total=total, unit="docs") as tick:
            for summary in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                rows = sum(summary.column("rows").to_pylist())
                stored += rows
                tick(rows)
        return stored
