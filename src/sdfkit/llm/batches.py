"""Message Batches that never lose money or documents: submit, persist, poll, stream, retry.

``run_requests`` is generic: generation stages and evaluation graders alike hand it
``BatchRequest``s with stable ``custom_id``s and get ``BatchOutcome``s back. What it
guarantees, in the order things happen:

1. Requests already answered in this run (a row in ``gen_results``) are not sent again; their
   stored outcomes are returned. Requests sitting in a batch submitted earlier (a killed run)
   are waited for, not re-sent.
2. Before ``create`` is called, the submission (its requests, their custom_ids) is written to
   the catalog as ``submitting``; right after, the batch id. A crash in between is recovered
   on the next run by listing the account's recent batches and claiming the matching one, so
   the requests are not paid twice. ``create`` itself is never blindly retried.
3. Batches are split over the API's per-batch limits (100,000 requests, 256 MB).
4. Open batches are polled (the SDK retries 429/5xx; persistent failures are tolerated up to
   a bound), with a progress bar of requests and a status line of batch states and counts.
5. Results are streamed line by line; outcomes are handed to the caller's callbacks in chunks
   (the caller lands them idempotently) and then recorded in the Parquet table
   ``gen_results``. A malformed line is recorded as such. Token usage goes to ``ledger``.
6. Errored (except invalid requests), expired, malformed and missing results are retried up
   to ``max_retries`` times per run; canceled requests only when asked.

Catalog tables: ``gen_batches`` (one row per submission), ``gen_requests`` (one row per
request per submission), ``ledger`` (tokens and cost per batch); Parquet: ``gen_results``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sdfkit.errors import SdfError
from sdfkit.store.catalog import Store
from sdfkit.store.records import utc_now

if TYPE_CHECKING:  # pragma: no cover
    import anthropic

RESULTS = "gen_results"
API_MAX_REQUESTS = 100_000
# The API's limit is 256 MB per batch; keep a margin for the JSON envelope we do not measure.
API_MAX_BYTES = 250_000_000
RESULT_CHUNK = 1000
#: Seconds to open a connection / to wait for any bytes of an answer (``$SDF_CONNECT_TIMEOUT``,
#: ``$SDF_READ_TIMEOUT``). A 256 MB batch upload streams bytes all along, so the read timeout
#: bounds silence, not the length of a call.
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 120.0
#: Polls that time out in a row before the command stops (each waits the read timeout, times
#: the SDK's own retries): a silent endpoint ends the command in minutes, not hours.
MAX_POLL_TIMEOUTS = 3
#: Batch creation answered 429 (rate limit) or 529 (overloaded) was refused, not created: it
#: is retried up to this many times, waiting the API's retry-after or a doubling delay from
#: ``CREATE_BACKOFF`` s, at most ``CREATE_BACKOFF_MAX`` s each (about 4 minutes in all).
CREATE_RETRIES = 5
CREATE_BACKOFF = 8.0
CREATE_BACKOFF_MAX = 120.0
#: An interrupted submission is claimed only by a batch created within this window around
#: the moment its intent was written (the clocks of this machine and the API's may differ a
#: little; ``create`` of a large batch may take minutes).
CLAIM_BEFORE = timedelta(minutes=10)
CLAIM_AFTER = timedelta(minutes=20)
DEFAULT_POLL_INTERVAL = 30.0
RETRYABLE_ERRORS_EXCLUDED = {"invalid_request_error"}
CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
STAGE_RE = re.compile(r"^[a-zA-Z0-9_]{1,32}$")


class BatchError(SdfError):
    """A batch could not be submitted, polled or read; the message says how to resume."""


class BatchInterrupted(BatchError):
    """Ctrl-C while batches run: nothing is lost, the same command resumes."""

    exit_code = 130


@dataclass
class BatchRequest:
    custom_id: str  # stable: derived from run, stage and content (<=64 chars, [a-zA-Z0-9_-])
    params: dict  # Messages API params: model, max_tokens, system, messages, ...
    stage: str  # "facts" | "doc_types" | "ideas" | "documents" | "grade" | other stages
    meta: dict = field(default_factory=dict)  # provenance carried to the outcome (not sent)


@dataclass
class BatchOutcome:
    custom_id: str
    status: str  # "succeeded" | "errored" | "expired" | "canceled"
    text: str | None  # concatenated text content when succeeded
    usage: dict | None  # input/output/cache tokens
    error: str | None
    request: BatchRequest
    batch_id: str | None = None
    model: str | None = None  # the model that answered (as the API reports it)
    attempt: int = 1
    stop_reason: str | None = None


@dataclass
class BatchLimits:
    """Per-batch limits of the Message Batches API (lower them to test splitting)."""

    max_requests: int = API_MAX_REQUESTS
    max_bytes: int = API_MAX_BYTES


def custom_id_for(run: str, stage: str, *content: Any) -> str:
    """A stable custom_id: ``<stage>-<hash of run, stage and content>``.

    The stage is recoverable from the id (everything before the last ``-``), which the
    offline stand-in uses to pick its answer: it sees only what the real API would see.
    """
    if not STAGE_RE.match(stage):
        raise ValueError(f"stage {stage!r}: use 1-32 letters, digits or underscores")
    payload = json.dumps([run, stage, *content], sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(payload.encode()).hexdigest()
    return f"{stage}-{digest[: 63 - len(stage)]}"[:64]


def stage_of(custom_id: str) -> str:
    """The stage a custom_id made by ``custom_id_for`` belongs to."""
    return custom_id.rsplit("-", 1)[0]


# --------------------------------------------------------------------------- prices
@dataclass(frozen=True)
class Price:
    """USD per million tokens at list (non-batch) prices; cache_write is the 5-minute TTL."""

    input: float
    output: float
    cache_write: float
    cache_read: float


#: Defaults by model family (matched as a substring of the model name) or exact model name.
#: List prices as published when written; check the current ones and override with
#: ``--prices FILE`` / ``$SDF_PRICES`` (JSON or YAML: {model: {input, output, cache_write,
#: cache_read}, batch_discount: 0.5}).
DEFAULT_PRICES: dict[str, Price] = {
    "offline-standin": Price(0.0, 0.0, 0.0, 0.0),
    "opus": Price(5.0, 25.0, 6.25, 0.50),
    "sonnet": Price(3.0, 15.0, 3.75, 0.30),
    "haiku": Price(1.0, 5.0, 1.25, 0.10),
}
DEFAULT_BATCH_DISCOUNT = 0.5


@dataclass
class PriceTable:
    prices: dict[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    batch_discount: float = DEFAULT_BATCH_DISCOUNT

    def price_for(self, model: str | None) -> Price | None:
        """Exact model name first, then the longest key contained in the name."""
        if not model:
            return None
        if model in self.prices:
            return self.prices[model]
        hits = [k for k in self.prices if k in model]
        return self.prices[max(hits, key=len)] if hits else None

    def cost(self, model: str | None, usage: dict[str, int]) -> tuple[float | None, float | None]:
        """(list cost, cost after the batch discount) in USD; None when the model has no price."""
        p = self.price_for(model)
        if p is None:
            return None, None
        list_cost = (
            usage.get("input_tokens", 0) * p.input
            + usage.get("output_tokens", 0) * p.output
            + usage.get("cache_write_tokens", 0) * p.cache_write
            + usage.get("cache_read_tokens", 0) * p.cache_read
        ) / 1e6
        return list_cost, list_cost * (1.0 - self.batch_discount)


def load_prices(path: str | Path | None = None) -> PriceTable:
    """Default prices, overridden by ``path`` (or ``$SDF_PRICES``) when given."""
    import os

    table = PriceTable()
    env = os.environ.get("SDF_PRICES", "").strip()
    path = path or env or None
    if not path:
        return table
    p = Path(path)
    # The CLI's --prices reads $SDF_PRICES too: name the variable when the path is its value.
    where = f"{p} (from SDF_PRICES)" if env and str(path) == env else str(p)
    if p.is_dir():
        raise SdfError(f"{where}: is a directory; the price file is one JSON/YAML file")
    try:
        raw = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SdfError(f"{where}: cannot read the price file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SdfError(f"{where}: the price file is not UTF-8 text") from None
    import yaml

    from sdfkit.settings import load_yaml

    try:
        data = load_yaml(raw) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SdfError(f"{where}:{line} not valid JSON/YAML: {problem}") from None
    if not isinstance(data, dict):
        raise SdfError(f"{where}: expected a mapping of model -> prices")
    for key, val in data.items():
        if key == "batch_discount":
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0 <= val < 1:
                raise SdfError(f"{where}: field 'batch_discount': expected a number in [0, 1)")
            table.batch_discount = float(val)
            continue
        if not isinstance(val, dict):
            raise SdfError(f"{where}: field '{key}': expected {{input, output, ...}} per MTok")
        base = table.price_for(key) or Price(0.0, 0.0, 0.0, 0.0)
        try:
            fields = {f: float(val.get(f, getattr(base, f))) for f in Price.__annotations__}
        except (TypeError, ValueError):
            raise SdfError(
                f"{where}: field '{key}': prices must be numbers (USD per MTok)"
            ) from None
        unknown = set(val) - set(Price.__annotations__)
        if unknown:
            raise SdfError(f"{where}: field '{key}.{sorted(unknown)[0]}': unknown price field")
        table.prices[key] = Price(**fields)
    return table


# --------------------------------------------------------------------------- catalog
TABLES = [
    """CREATE TABLE IF NOT EXISTS gen_batches (
        submission_id VARCHAR, batch_id VARCHAR, run VARCHAR, stage VARCHAR, attempt INTEGER,
        n_requests INTEGER, bytes BIGINT, status VARCHAR, backend VARCHAR,
        submitted_at TIMESTAMPTZ, ended_at TIMESTAMPTZ, ingested_at TIMESTAMPTZ,
        succeeded INTEGER, errored INTEGER, expired INTEGER, canceled INTEGER,
        malformed INTEGER)""",
    """CREATE TABLE IF NOT EXISTS gen_requests (
        submission_id VARCHAR, custom_id VARCHAR, run VARCHAR, stage VARCHAR,
        attempt INTEGER, model VARCHAR, prompt_hash VARCHAR, meta VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS ledger (
        run VARCHAR, stage VARCHAR, batch_id VARCHAR, model VARCHAR, requests INTEGER,
        input_tokens BIGINT, output_tokens BIGINT, cache_read_tokens BIGINT,
        cache_write_tokens BIGINT, list_cost_usd DOUBLE, batch_discount DOUBLE,
        cost_usd DOUBLE, recorded_at TIMESTAMPTZ)""",
]

RESULT_SCHEMA = pa.schema(
    [
        ("result_id", pa.string()),  # batch_id/custom_id (or batch_id/line-N when unparseable)
        ("run", pa.string()),
        ("stage", pa.string()),
        ("custom_id", pa.string()),
        ("batch_id", pa.string()),
        ("submission_id", pa.string()),
        ("attempt", pa.int32()),
        ("status", pa.string()),  # succeeded | errored | expired | canceled
        ("error_type", pa.string()),  # API error type, or malformed_result / missing_result
        ("error", pa.string()),
        ("text", pa.large_string()),
        ("model", pa.string()),
        ("prompt_hash", pa.string()),
        ("stop_reason", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cache_read_tokens", pa.int64()),
        ("cache_write_tokens", pa.int64()),
        ("received_at", pa.timestamp("us", tz="UTC")),
        ("raw", pa.large_string()),  # the result line as the API sent it
    ]
)


_ENSURED: set[Path] = set()


def ensure_tables(con: Any) -> None:
    """Create the batch tables (``TABLES``) if missing, on an open connection."""
    for stmt in TABLES:
        con.execute(stmt)


def ensure_store_tables(store: Store) -> None:
    """``ensure_tables`` on ``store``'s catalog, once per catalog file and process."""
    if store.db_path.resolve() in _ENSURED and store.db_path.exists():
        return
    with store.connect() as con:
        ensure_tables(con)
    _ENSURED.add(store.db_path.resolve())


def _rows(store: Store, sql: str, params: list[Any] | None = None) -> list[tuple]:
    with store.connect() as con:
        return con.execute(sql, params or []).fetchall()


def _exec(
    store: Store, statements: list[tuple[str, list[Any]]], tables: dict[str, Any] | None = None
) -> None:
    """Run statements in one transaction (``tables``: Arrow tables they may read by name)."""
    with store.connect() as con:
        for name, tbl in (tables or {}).items():
            con.register(name, tbl)
        con.execute("BEGIN")
        try:
            for sql, params in statements:
                con.execute(sql, params)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


# --------------------------------------------------------------------------- client
def resolve_backend(backend: str, have_key: bool = False) -> str:
    """ "anthropic" or "offline" for ``backend``, or a ``BatchError`` saying why it cannot be
    used (an unknown name, no key): a command asks this before it makes a corpus."""
    import os

    key = have_key or bool(os.environ.get("ANTHROPIC_API_KEY"))
    if backend == "auto":
        if not key:
            raise BatchError(
                "no ANTHROPIC_API_KEY in the environment: set it to use the Anthropic API, "
                "or pass --backend offline to use the offline stand-in (no key, no cost)"
            )
        return "anthropic"
    if backend not in ("anthropic", "offline"):
        raise BatchError(f"unknown backend {backend!r}: use anthropic, offline or auto")
    if backend == "anthropic" and not key:
        raise BatchError("backend anthropic needs ANTHROPIC_API_KEY in the environment")
    return backend


def make_client(backend: str = "auto", **kw: Any) -> anthropic.Anthropic:
    """The official SDK client: "anthropic" (real; ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL as
    the SDK reads them), "offline" (the same client over the local stand-in transport), or
    "auto" (anthropic when ANTHROPIC_API_KEY is set)."""
    backend = resolve_backend(backend, have_key=bool(kw.get("api_key")))
    if backend == "offline":
        from sdfkit.llm.offline import offline_client

        return offline_client(**kw)
    import anthropic

    kw.setdefault("timeout", api_timeout())
    try:
        return anthropic.Anthropic(**kw)
    except anthropic.AnthropicError as exc:
        raise BatchError(f"cannot create the Anthropic client: {exc}") from None


def api_timeout() -> Any:
    """Our connect/read timeouts for every API call (``$SDF_CONNECT_TIMEOUT``,
    ``$SDF_READ_TIMEOUT``), not the SDK's 600 s: an endpoint that accepts the connection and
    never answers is given up on after the read timeout (times the SDK's retries)."""
    import httpx2

    from sdfkit.settings import env_float

    connect = env_float(
        "SDF_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT, 0, 600, low_open=True, error=BatchError
    )
    read = env_float(
        "SDF_READ_TIMEOUT", DEFAULT_READ_TIMEOUT, 0, 3600, low_open=True, error=BatchError
    )
    return httpx2.Timeout(read, connect=connect)


def client_for_store(store: Store, backend: str = "auto") -> anthropic.Anthropic:
    """``make_client`` for work on ``store``: the offline stand-in keeps its batches under
    the corpus (``.offline-standin/``), so a killed offline run resumes like a real one."""
    kw = {"state_dir": store.root / ".offline-standin"} if backend == "offline" else {}
    return make_client(backend, **kw)


def backend_name(client: Any) -> str:
    from sdfkit.llm.offline import is_offline

    return "offline-standin" if is_offline(client) else "anthropic"


# --------------------------------------------------------------------------- runner
def run_requests(
    store: Store,
    requests: Iterable[BatchRequest],
    *,
    run: str,
    stage: str,
    client: anthropic.Anthropic,
    max_retries: int = 2,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    on_outcome: Callable[[BatchOutcome], None] | None = None,
    on_chunk: Callable[[list[BatchOutcome]], None] | None = None,
    limits: BatchLimits | None = None,
    retry_canceled: bool = False,
    load_text: bool = True,
    prices: PriceTable | None = None,
    log: Callable[[str], None] | None = None,
    max_poll_failures: int = 20,
    create_retries: int = CREATE_RETRIES,
    create_backoff: float = CREATE_BACKOFF,
) -> dict[str, BatchOutcome]:
    """Submit (splitting over API limits), persist batch ids BEFORE polling, poll with a
    progress bar, stream results; resumable: requests already submitted/paid in this run are
    never sent again; errored/expired retried up to max_retries; cost ledger updated.

    Callbacks see every outcome as it is read (also failures that will be retried):
    ``on_outcome(outcome)`` one at a time, ``on_chunk(outcomes)`` a list at a time (land
    results there: one write per chunk). Both must be idempotent: a crash after a callback
    and before the outcome is recorded hands the same outcome over again on resume.
    Returns the latest outcome per requested custom_id (``load_text=False`` leaves their
    ``text`` None: for stages whose callbacks already consumed it, e.g. documents).
    """
    problem = batch_option_problem(max_retries, poll_interval)
    if problem or create_retries < 0:
        raise BatchError(problem or f"create_retries must be 0 or more, got {create_retries}")
    runner = _Runner(
        store=store,
        run=run,
        stage=stage,
        client=client,
        max_retries=max_retries,
        poll_interval=poll_interval,
        on_outcome=on_outcome,
        on_chunk=on_chunk,
        limits=limits or BatchLimits(),
        retry_canceled=retry_canceled,
        prices=prices or load_prices(),
        log=log or _stderr,
        max_poll_failures=max_poll_failures,
        create_retries=create_retries,
        create_backoff=create_backoff,
    )
    return runner.execute(list(requests), load_text)


def batch_option_problem(max_retries: int, poll_interval: float) -> str | None:
    """What is wrong with ``--max-retries``/``--poll-interval`` (None: nothing); checked
    before a run pins or pays anything."""
    if max_retries < 0:
        return f"--max-retries must be 0 or more, got {max_retries}"
    if not poll_interval >= 0 or poll_interval == float("inf"):
        return f"--poll-interval must be 0 or more seconds, got {poll_interval:g}"
    return None


@contextmanager
def _stage_lock(store: Store, run: str, stage: str) -> Iterator[None]:
    """One process per run and stage. Two would both see the same requests unsubmitted and
    pay for each twice, and one would take the other's in-flight submission for an
    interrupted one. The lock is the kernel's (flock), so it dies with its process."""
    import fcntl

    store.root.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps([run, stage]).encode()).hexdigest()[:16]
    with open(store.root / f".batches-{key}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BatchError(
                f"stage {stage!r} of run {run!r} is running in another process on this corpus: "
                "wait for it (or stop it), then run the same command again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class _Runner:
    store: Store
    run: str
    stage: str
    client: Any
    max_retries: int
    poll_interval: float
    on_outcome: Callable[[BatchOutcome], None] | None
    on_chunk: Callable[[list[BatchOutcome]], None] | None
    limits: BatchLimits
    retry_canceled: bool
    prices: PriceTable
    log: Callable[[str], None]
    max_poll_failures: int
    create_retries: int = CREATE_RETRIES
    create_backoff: float = CREATE_BACKOFF

    def execute(
        self, requests: list[BatchRequest], load_text: bool = True
    ) -> dict[str, BatchOutcome]:
        if not STAGE_RE.match(self.stage):
            raise BatchError(f"stage {self.stage!r}: use 1-32 letters, digits or underscores")
        by_id: dict[str, BatchRequest] = {}
        for r in requests:
            if not CUSTOM_ID_RE.match(r.custom_id):
                raise BatchError(
                    f"custom_id {r.custom_id!r}: 1-64 characters of letters, digits, _ or -"
                )
            if r.custom_id in by_id and by_id[r.custom_id].params != r.params:
                raise BatchError(f"custom_id {r.custom_id!r} is used by two different requests")
            by_id[r.custom_id] = r
        with _stage_lock(self.store, self.run, self.stage):
            return self._execute(by_id, load_text)

    def _execute(self, by_id: dict[str, BatchRequest], load_text: bool) -> dict[str, BatchOutcome]:
        self.store.clean_temporaries()
        self.requests = by_id
        self.backend = backend_name(self.client)
        self.submitted: dict[str, list[tuple[str, int]]] = {}
        try:
            if self._load_state():
                self._recover_submitting()
                self._load_state()
            self._drain_open()
            while True:
                pending = self._pending()
                if not pending:
                    break
                self._submit(pending)
                self._drain_open()
        except KeyboardInterrupt:
            raise BatchInterrupted(
                f"interrupted during stage {self.stage!r} of run {self.run!r}: every submitted "
                "batch id is saved and the batches keep running at Anthropic; run the same "
                "command again to resume (nothing is submitted twice)"
            ) from None
        return self._latest_outcomes(set(by_id), load_text)

    # ------------------------------------------------------------------ state
    def _load_state(self) -> bool:
        """Read this run and stage's submissions and results once; kept current in memory
        (a catalog connection per question would dominate small runs). Returns whether a
        submission was interrupted between its intent and its batch id."""
        with self.store.connect() as con:
            ensure_tables(con)
            _ENSURED.add(self.store.db_path.resolve())
            submitting = con.execute(
                "SELECT count(*) FROM gen_batches WHERE run = ? AND stage = ? "
                "AND status = 'submitting'",
                [self.run, self.stage],
            ).fetchall()[0][0]
            rows = con.execute(
                "SELECT r.custom_id, b.status FROM gen_requests r JOIN gen_batches b "
                "USING (submission_id) WHERE r.run = ? AND r.stage = ? "
                "AND b.status <> 'abandoned'",
                [self.run, self.stage],
            ).fetchall()
            self.open_batches = con.execute(
                "SELECT batch_id, submission_id, status, n_requests, attempt FROM gen_batches "
                "WHERE run = ? AND stage = ? AND batch_id IS NOT NULL "
                "AND status IN ('in_progress', 'canceling', 'ended') ORDER BY submitted_at",
                [self.run, self.stage],
            ).fetchall()
        self.attempts: Counter[str] = Counter()
        self.open_ids: set[str] = set()
        for cid, status in rows:
            self.attempts[cid] += 1
            if status != "ingested":
                self.open_ids.add(cid)
        self.latest: dict[str, tuple[str, str | None]] = {}
        for r in self._results(["custom_id", "status", "error_type", "attempt"]):
            self._note(r["custom_id"], r["status"], r["error_type"])
        return bool(submitting)

    def _note(self, cid: str | None, status: str, error_type: str | None) -> None:
        if cid is None:
            return
        prev = self.latest.get(cid)
        if prev is not None and prev[0] == "succeeded":
            return  # a success is final, whatever arrives after it
        self.latest[cid] = (status, error_type)

    def _results(self, columns: list[str], custom_ids: set[str] | None = None) -> list[dict]:
        """This run and stage's rows of ``gen_results`` (Parquet, read without the catalog)."""
        import pyarrow.compute as pc

        if not self.store.parts(RESULTS):
            return []
        cols = list(dict.fromkeys([*columns, "run", "stage", "attempt", "received_at"]))
        tbl = self.store.read(RESULTS, columns=cols)
        mask = pc.and_(pc.equal(tbl["run"], self.run), pc.equal(tbl["stage"], self.stage))
        tbl = tbl.filter(mask)
        if custom_ids is not None:
            tbl = tbl.filter(pc.is_in(tbl["custom_id"], pa.array(sorted(custom_ids), pa.string())))
        tbl = tbl.sort_by([("attempt", "ascending"), ("received_at", "ascending")])
        return tbl.to_pylist()

    def _pending(self) -> list[BatchRequest]:
        """Requested custom_ids that have no final outcome and may be (re)submitted."""
        pending, exhausted = [], 0
        for cid, req in self.requests.items():
            if cid in self.open_ids:
                continue
            got = self.latest.get(cid)
            n = self.attempts.get(cid, 0)
            if got is None:
                if n == 0:
                    pending.append(req)
                continue
            status, err_type = got
            if status == "succeeded":
                continue
            if status == "canceled" and not self.retry_canceled:
                continue
            if status == "errored" and err_type in RETRYABLE_ERRORS_EXCLUDED:
                continue
            allowed = 1 + self.max_retries + (1 if status == "canceled" else 0)
            if n < allowed:
                pending.append(req)
            else:
                exhausted += 1
        if exhausted and not getattr(self, "_told_exhausted", False):
            self._told_exhausted = True
            self.log(
                f"{self.stage}: {exhausted} request(s) failed {1 + self.max_retries} times and "
                "are given up (see gen_results)"
            )
        return pending

    def _latest_outcomes(self, custom_ids: set[str], load_text: bool) -> dict[str, BatchOutcome]:
        out: dict[str, BatchOutcome] = {}
        cols = [
            f.name for f in RESULT_SCHEMA if f.name != "raw" and (load_text or f.name != "text")
        ]
        for r in self._results(cols, custom_ids):
            r.setdefault("text", None)
            prev = out.get(r["custom_id"])
            if prev is not None and prev.status == "succeeded":
                continue
            out[r["custom_id"]] = self._outcome_from_row(r, self.requests[r["custom_id"]])
        return out

    @staticmethod
    def _outcome_from_row(r: dict[str, Any], req: BatchRequest) -> BatchOutcome:
        usage = {
            "input_tokens": r["input_tokens"] or 0,
            "output_tokens": r["output_tokens"] or 0,
            "cache_read_tokens": r["cache_read_tokens"] or 0,
            "cache_write_tokens": r["cache_write_tokens"] or 0,
        }
        return BatchOutcome(
            custom_id=r["custom_id"],
            status=r["status"],
            text=r["text"],
            usage=usage if r["status"] == "succeeded" else None,
            error=r["error"],
            request=req,
            batch_id=r["batch_id"],
            model=r["model"],
            attempt=r["attempt"] or 1,
            stop_reason=r.get("stop_reason"),
        )

    # ------------------------------------------------------------ submitting
    def _submit(self, pending: list[BatchRequest]) -> None:
        attempts = self.attempts
        chunks: list[list[tuple[BatchRequest, int]]] = [[]]
        size = 0
        for req in pending:
            body = {"custom_id": req.custom_id, "params": req.params}
            n = len(json.dumps(body, ensure_ascii=False).encode())
            if n > self.limits.max_bytes:
                raise BatchError(
                    f"{self.stage}: request {req.custom_id} alone is {n:,} bytes, over the "
                    f"per-batch limit of {self.limits.max_bytes:,}"
                )
            cur = chunks[-1]
            if cur and (len(cur) >= self.limits.max_requests or size + n > self.limits.max_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append((req, n))
            size += n
        for chunk in chunks:
            self._submit_one([r for r, _ in chunk], sum(n for _, n in chunk), attempts)

    def _submit_one(self, reqs: list[BatchRequest], nbytes: int, attempts: dict[str, int]) -> None:
        import anthropic

        sid = uuid.uuid4().hex
        attempt = 1 + max(attempts.get(r.custom_id, 0) for r in reqs)
        now = utc_now()
        stmts: list[tuple[str, list[Any]]] = [
            (
                "INSERT INTO gen_batches (submission_id, run, stage, attempt, n_requests, "
                "bytes, status, backend, submitted_at) VALUES (?, ?, ?, ?, ?, ?, "
                "'submitting', ?, ?)",
                [sid, self.run, self.stage, attempt, len(reqs), nbytes, self.backend, now],
            )
        ]
        rows = pa.table(
            {
                "submission_id": pa.array([sid] * len(reqs), pa.string()),
                "custom_id": pa.array([r.custom_id for r in reqs], pa.string()),
                "run": pa.array([self.run] * len(reqs), pa.string()),
                "stage": pa.array([self.stage] * len(reqs), pa.string()),
                "attempt": pa.array([attempts.get(r.custom_id, 0) + 1 for r in reqs], pa.int32()),
                "model": pa.array([r.params.get("model") for r in reqs], pa.string()),
                "prompt_hash": pa.array([r.meta.get("prompt_hash") for r in reqs], pa.string()),
                "meta": pa.array(
                    [json.dumps(r.meta, ensure_ascii=False, default=str) for r in reqs],
                    pa.string(),
                ),
            }
        )
        stmts.append(("INSERT INTO gen_requests BY NAME SELECT * FROM _new_requests", []))
        # the intent is on disk before anything is paid
        _exec(self.store, stmts, tables={"_new_requests": rows})
        body = [{"custom_id": r.custom_id, "params": r.params} for r in reqs]
        refused = 0
        while True:
            try:
                # never retried blindly: a retried create after a lost response pays twice
                batch = self.client.with_options(max_retries=0).messages.batches.create(
                    requests=body
                )
                break
            except anthropic.APIStatusError as exc:
                if exc.status_code in (429, 529) and refused < self.create_retries:
                    # rate-limited or overloaded: refused, so nothing was created; wait, retry
                    refused += 1
                    wait = _retry_after(exc, self.create_backoff * 2 ** (refused - 1))
                    self.log(
                        f"{self.stage}: the API answered {exc.status_code} to the batch "
                        f"({_api_message(exc)}); retry {refused} of {self.create_retries} "
                        f"in {wait:.0f} s"
                    )
                    time.sleep(wait)
                    continue
                if exc.status_code in (429, 529) or (
                    exc.status_code < 500 and exc.status_code != 408
                ):
                    self._abandon(sid)
                    more = (
                        f" after {refused} retries; run the same command again later"
                        if exc.status_code in (429, 529)
                        else ""
                    )
                    raise BatchError(
                        f"{self.stage}: the API refused the batch ({exc.status_code}): "
                        f"{_api_message(exc)}{more}"
                    ) from None
                raise BatchError(
                    f"{self.stage}: submitting a batch failed ({exc.status_code}); it may or "
                    "may not have been created. Run the same command again: sdfkit looks for "
                    "the batch before submitting anything again"
                ) from None
            except anthropic.APIConnectionError as exc:
                raise BatchError(
                    f"{self.stage}: could not reach the API while submitting a batch "
                    f"({_failure(exc)}); it may or may not have been created. Run the same "
                    "command again: sdfkit looks for the batch before submitting anything again"
                ) from None
        _exec(
            self.store,
            [
                (
                    "UPDATE gen_batches SET batch_id = ?, status = ? WHERE submission_id = ?",
                    [batch.id, batch.processing_status, sid],
                )
            ],
        )
        for r in reqs:
            self.attempts[r.custom_id] += 1
            self.open_ids.add(r.custom_id)
        self.submitted[sid] = [(r.custom_id, attempts[r.custom_id]) for r in reqs]
        self.open_batches.append((batch.id, sid, batch.processing_status, len(reqs), attempt))
        self.log(
            f"{self.stage}: submitted batch {batch.id} ({len(reqs)} requests, attempt {attempt})"
        )

    def _abandon(self, sid: str) -> None:
        _exec(
            self.store,
            [("UPDATE gen_batches SET status = 'abandoned' WHERE submission_id = ?", [sid])],
        )

    def _recover_submitting(self) -> None:
        """Claim batches created by a run that died between ``create`` and saving the id.

        A candidate must be a batch no submission of this catalog owns, created within
        ``CLAIM_BEFORE``/``CLAIM_AFTER`` of the moment the intent was written, with the same
        number of requests, and whose result lines name only the submission's custom_ids.
        Those are hashes of this run's requests, so no one else's batch holds them; a subset
        (not equality) so that a batch missing a result line is still recognised as ours
        rather than paid for again. A candidate still running is waited for, as its results
        are the only proof; ended candidates are compared first. Failing to ask the API leaves
        the submission as it was, to be recovered by the next run.

        What this cannot tell apart: a batch holding exactly the same requests (same run
        name, stage and parameters, so the same custom_ids) sent by another catalog, e.g.
        a copy of this corpus or a colleague running the same recipe and run name in the
        same workspace. Such a batch answers the same requests, so claiming it pays nothing
        twice, but the other batch of the pair is then paid and never read."""
        import anthropic
        import httpx2

        rows = _rows(
            self.store,
            "SELECT submission_id, n_requests, submitted_at FROM gen_batches "
            "WHERE run = ? AND stage = ? AND status = 'submitting' ORDER BY submitted_at",
            [self.run, self.stage],
        )
        if not rows:
            return
        known = {r[0] for r in _rows(self.store, "SELECT batch_id FROM gen_batches") if r[0]}
        for sid, n, submitted_at in rows:
            ids = [
                r[0]
                for r in _rows(
                    self.store,
                    "SELECT custom_id FROM gen_requests WHERE submission_id = ?",
                    [sid],
                )
            ]
            want = set(ids)
            try:
                match = self._find_claim(submitted_at, n, want, known)
            except (anthropic.AnthropicError, httpx2.TransportError) as exc:
                hint = (
                    "check ANTHROPIC_API_KEY"
                    if isinstance(
                        exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError
                    )
                    else "run the same command again when the API answers"
                )
                raise BatchError(
                    f"{self.stage}: could not look for the batch of an interrupted submission "
                    f"({_failure(exc)}); nothing was submitted and nothing is lost: {hint}"
                ) from None
            if match is not None:
                known.add(match.id)
                _exec(
                    self.store,
                    [
                        (
                            "UPDATE gen_batches SET batch_id = ?, status = ? "
                            "WHERE submission_id = ?",
                            [match.id, match.processing_status, sid],
                        )
                    ],
                )
                self.log(f"{self.stage}: found batch {match.id} of an interrupted submission")
            else:
                self._abandon(sid)
                self.log(
                    f"{self.stage}: an interrupted submission never reached the API; its "
                    f"{n} request(s) will be submitted"
                )

    def _find_claim(self, submitted_at: datetime, n: int, want: set[str], known: set[str]) -> Any:
        """The batch of the API whose results hold only custom_ids of ``want``, or None."""
        import anthropic

        earliest, latest = submitted_at - CLAIM_BEFORE, submitted_at + CLAIM_AFTER
        candidates = []
        for b in self.client.messages.batches.list(limit=100):
            if b.created_at < earliest:
                break  # newest first: the rest are older still
            rc = b.request_counts
            total = rc.processing + rc.succeeded + rc.errored + rc.canceled + rc.expired
            if b.id not in known and total == n and b.created_at <= latest:
                candidates.append(b)
        # ended candidates first (their results answer at once), nearest in time first: a
        # still-running batch is waited for only when no ended one is ours, as another
        # process's batch of the same size may run for up to a day
        candidates.sort(
            key=lambda b: (b.processing_status != "ended", abs(b.created_at - submitted_at))
        )
        for b in candidates:
            if b.processing_status != "ended":
                self.log(
                    f"{self.stage}: batch {b.id} may be an interrupted submission's; waiting "
                    "for it to end to compare its custom_ids (Ctrl-C is safe)"
                )
            while b.processing_status != "ended":
                time.sleep(self.poll_interval)
                b = self.client.messages.batches.retrieve(b.id)
            got = []
            try:
                with self.client.messages.batches.with_streaming_response.results(b.id) as resp:
                    for raw in jsonl_lines(resp.iter_bytes()):
                        cid = _line_custom_id(raw)
                        if cid:
                            got.append(cid)
            except anthropic.NotFoundError:
                # results kept 29 days: gone, they prove nothing and nothing could read them
                # (raising instead would fail every rerun the same way, forever)
                self.log(f"{self.stage}: batch {b.id} has no results any more (404): not claimed")
                continue
            if got and set(got) <= want:
                return b
            self.log(f"{self.stage}: batch {b.id} holds other requests: not claimed")
        return None

    # --------------------------------------------------------------- polling
    def _drain_open(self) -> None:
        """Poll every open batch of this run and stage until all are ended and ingested."""
        import anthropic

        from sdfkit.progress import counter

        open_batches, self.open_batches = list(self.open_batches), []
        if not open_batches:
            return
        total = sum(b[3] for b in open_batches)
        failures = timeouts = 0
        last_line = ""
        with counter(f"{self.stage} batches", total=total, unit="requests") as tick:
            while open_batches:
                states: Counter[str] = Counter()
                counts: Counter[str] = Counter()
                waiting = ""
                still_open = []
                for batch_id, sid, status, n, attempt in open_batches:
                    if status != "ended":
                        try:
                            b = self.client.messages.batches.retrieve(batch_id)
                            failures = timeouts = 0
                        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
                            if (
                                isinstance(exc, anthropic.APIStatusError)
                                and exc.status_code < 500
                                and exc.status_code != 429
                            ):
                                raise BatchError(
                                    f"{self.stage}: polling batch {batch_id} failed "
                                    f"({exc.status_code}): {_api_message(exc)}"
                                ) from None
                            failures += 1
                            if isinstance(exc, anthropic.APITimeoutError):
                                timeouts += 1
                                if timeouts >= MAX_POLL_TIMEOUTS:
                                    raise BatchError(
                                        f"{self.stage}: the API did not answer a poll of "
                                        f"batch {batch_id} within {_read_timeout(self.client)} "
                                        f"({timeouts} times in a row; $SDF_READ_TIMEOUT); the "
                                        "batches keep running: run the same command again "
                                        "later to resume"
                                    ) from None
                                waiting = (
                                    f" | waiting for the API: no answer within "
                                    f"{_read_timeout(self.client)} ({timeouts} of "
                                    f"{MAX_POLL_TIMEOUTS})"
                                )
                            else:
                                timeouts = 0
                            if failures > self.max_poll_failures:
                                raise BatchError(
                                    f"{self.stage}: polling failed {failures} times in a row "
                                    f"({_failure(exc)}); the batches keep running: run "
                                    "the same command again later to resume"
                                ) from None
                            states["unreachable"] += 1
                            still_open.append((batch_id, sid, status, n, attempt))
                            continue
                        rc = b.request_counts
                        for k in ("processing", "succeeded", "errored", "expired", "canceled"):
                            counts[k] += getattr(rc, k)
                        if b.processing_status != "ended":
                            if b.processing_status != status:
                                _exec(
                                    self.store,
                                    [
                                        (
                                            "UPDATE gen_batches SET status = ? "
                                            "WHERE submission_id = ?",
                                            [b.processing_status, sid],
                                        )
                                    ],
                                )
                            status = b.processing_status
                            states[status] += 1
                            still_open.append((batch_id, sid, status, n, attempt))
                            continue
                        ended_at = b.ended_at
                    else:
                        ended_at = None
                    states["ended"] += 1
                    self._ingest(batch_id, sid, attempt, ended_at)
                    tick(n)
                line = (
                    f"{self.stage}: batches "
                    + ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
                    + (
                        " | requests " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                        if counts
                        else ""
                    )
                    + waiting
                )
                if line != last_line:
                    tick.status(line.split(": ", 1)[-1])
                    self.log(line)
                    last_line = line
                open_batches = still_open
                if open_batches:
                    time.sleep(self.poll_interval)

    # ------------------------------------------------------------- ingesting
    def _meta_for(self, sid: str) -> dict[str, tuple[BatchRequest, int]]:
        """Requests of a submission, rebuilt from the catalog when not in memory."""
        if sid in self.submitted:
            return {cid: (self.requests[cid], att) for cid, att in self.submitted[sid]}
        rows = _rows(
            self.store,
            "SELECT custom_id, attempt, model, meta FROM gen_requests WHERE submission_id = ?",
            [sid],
        )
        out = {}
        for cid, attempt, model, meta in rows:
            req = self.requests.get(cid) or BatchRequest(
                custom_id=cid,
                params={"model": model},
                stage=self.stage,
                meta=json.loads(meta) if meta else {},
            )
            out[cid] = (req, attempt)
        return out

    def _ingest(self, batch_id: str, sid: str, attempt: int, ended_at: Any = None) -> None:
        """Stream a finished batch's results into callbacks and ``gen_results``."""
        import anthropic
        import httpx2

        reqs = self._meta_for(sid)
        seen: set[str] = set()
        buffer: list[tuple[BatchOutcome, dict[str, Any]]] = []
        tally: Counter[str] = Counter()
        usage: dict[str | None, Counter[str]] = {}

        def flush() -> None:
            if not buffer:
                return
            outcomes = [o for o, _ in buffer]
            for _, row in buffer:
                self._note(row["custom_id"], row["status"], row["error_type"])
            if self.on_outcome:
                for o in outcomes:
                    self.on_outcome(o)
            if self.on_chunk:
                self.on_chunk(outcomes)
            self.store.append(
                RESULTS,
                pa.Table.from_pylist([row for _, row in buffer], schema=RESULT_SCHEMA),
                key="result_id",
                schema=RESULT_SCHEMA,
            )
            buffer.clear()

        def take(lineno: int, raw: bytes) -> None:
            outcome, row = self._parse_line(raw, lineno, batch_id, sid, reqs)
            if row["custom_id"] in seen:
                return
            if row["custom_id"] is not None:
                seen.add(row["custom_id"])
            tally[row["error_type"] or row["status"]] += 1
            if row["model"] is not None or row["error_type"] != "malformed_result":
                # an unreadable line of no known request was not a paid request of model None
                u = usage.setdefault(row["model"], Counter())
                u["requests"] += 1
                for k in _TOKEN_COLUMNS:
                    u[k] += row[k] or 0
            if outcome is not None:
                buffer.append((outcome, row))
            else:  # a line of no known request: recorded, no callback
                self.store.append(
                    RESULTS,
                    pa.Table.from_pylist([row], schema=RESULT_SCHEMA),
                    key="result_id",
                    schema=RESULT_SCHEMA,
                )
            if len(buffer) >= RESULT_CHUNK:
                flush()

        gone = False
        try:
            with self.client.messages.batches.with_streaming_response.results(batch_id) as resp:
                for lineno, raw in enumerate(jsonl_lines(resp.iter_bytes()), start=1):
                    if raw.strip():
                        take(lineno, raw)
        except anthropic.NotFoundError:
            # The results are gone at the API (kept 29 days): nothing rerunning could read.
            flush()
            gone = True
            # what an earlier, broken-off read of this batch stored still counts (and was paid)
            for r in self._results([f.name for f in RESULT_SCHEMA if f.name != "raw"]):
                if r["batch_id"] == batch_id and r["custom_id"] not in seen:
                    seen.add(r["custom_id"])
                    tally[r["error_type"] or r["status"]] += 1
                    u = usage.setdefault(r["model"], Counter())
                    u["requests"] += 1
                    for k in _TOKEN_COLUMNS:
                        u[k] += r[k] or 0
        except (anthropic.AnthropicError, httpx2.TransportError) as exc:
            # AnthropicError covers status and connection errors; the body of a streamed
            # answer breaks off as a transport error (RemoteProtocolError, ReadError, ...).
            flush()
            auth = isinstance(exc, (anthropic.AuthenticationError, anthropic.PermissionDeniedError))
            raise BatchError(
                f"{self.stage}: reading the results of batch {batch_id} failed "
                f"({_failure(exc)}); the {len(seen)} results that arrived are stored: "
                + ("check ANTHROPIC_API_KEY, then run" if auth else "run")
                + " the same command again to read the rest"
            ) from None
        # requests of the batch with no result line at all
        for cid, (req, att) in reqs.items():
            if cid in seen:
                continue
            tally["missing_result"] += 1
            row = self._row(batch_id, sid, cid, att, "errored", req)
            row["error_type"] = "missing_result"
            row["error"] = (
                "the batch's results are no longer available at the API (404)"
                if gone
                else "no result line for this request in the batch results"
            )
            buffer.append((self._outcome_from_row(row, req), row))
            usage.setdefault(row["model"], Counter())["requests"] += 1
        flush()
        self.open_ids.difference_update(reqs)
        # the ledger rows and the batch's end are one transaction: a batch counted once
        _exec(
            self.store,
            self._ledger_statements(batch_id, usage)
            + [
                (
                    "UPDATE gen_batches SET status = 'ingested', ended_at = ?, ingested_at = ?, "
                    "succeeded = ?, errored = ?, expired = ?, canceled = ?, malformed = ? "
                    "WHERE submission_id = ?",
                    [
                        ended_at or utc_now(),
                        utc_now(),
                        tally["succeeded"],
                        sum(
                            v
                            for k, v in tally.items()
                            if k not in {"succeeded", "expired", "canceled", "malformed_result"}
                        ),
                        tally["expired"],
                        tally["canceled"],
                        tally["malformed_result"],
                        sid,
                    ],
                )
            ],
        )
        if gone:
            self.log(
                f"{self.stage}: batch {batch_id}: its results are no longer available at the API "
                f"(404); {len(seen)} had been stored, the {len(reqs) - len(seen)} others count "
                "as missing and are retried within --max-retries"
            )
        bad = {k: v for k, v in tally.items() if k != "succeeded"}
        self.log(
            f"{self.stage}: batch {batch_id}: {tally['succeeded']} succeeded"
            + "".join(f", {v} {k}" for k, v in sorted(bad.items()))
        )

    def _row(
        self, batch_id: str, sid: str, cid: str | None, attempt: int, status: str, req: Any
    ) -> dict[str, Any]:
        return {
            "result_id": f"{batch_id}/{cid}",
            "run": self.run,
            "stage": self.stage,
            "custom_id": cid,
            "batch_id": batch_id,
            "submission_id": sid,
            "attempt": attempt,
            "status": status,
            "error_type": None,
            "error": None,
            "text": None,
            "model": req.params.get("model") if req is not None else None,
            "prompt_hash": req.meta.get("prompt_hash") if req is not None else None,
            "stop_reason": None,
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "received_at": utc_now(),
            "raw": None,
        }

    def _parse_line(
        self,
        raw: bytes,
        lineno: int,
        batch_id: str,
        sid: str,
        reqs: dict[str, tuple[BatchRequest, int]],
    ) -> tuple[BatchOutcome | None, dict[str, Any]]:
        """One result line, read as leniently as the SDK's own decoder: a line is malformed
        only when it is not a JSON object with ``custom_id`` and ``result.type`` (or a
        succeeded result without a message object). Values the installed SDK does not know
        (a new stop reason, content block, service tier or error type) are kept as they came:
        the result was paid for, and is used."""
        line = raw.decode("utf-8", errors="replace")
        obj: Any = None
        problem = None
        try:
            obj = json.loads(line)
        except ValueError as exc:
            problem = f"not JSON: {exc}"
        result = obj.get("result") if isinstance(obj, dict) else None
        cid = obj.get("custom_id") if isinstance(obj, dict) else None
        rtype = result.get("type") if isinstance(result, dict) else None
        if problem is None:
            if not isinstance(obj, dict):
                problem = "not a JSON object"
            elif not isinstance(cid, str):
                problem = "no custom_id"
            elif not isinstance(rtype, str):
                problem = "no result.type"
            elif rtype == "succeeded" and not isinstance(result.get("message"), dict):
                problem = "a succeeded result without a message object"
        if problem is not None:
            if not isinstance(cid, str):  # a broken line may still name its request
                m = _CUSTOM_ID_IN_LINE.search(line)
                cid = m.group(1) if m else None
            if cid not in reqs:
                cid = None
            req, att = reqs[cid] if cid else (None, 1)
            row = self._row(batch_id, sid, cid, att, "errored", req)
            if cid is None:
                row["result_id"] = f"{batch_id}/line-{lineno}"
            row["error_type"] = "malformed_result"
            row["error"] = f"result line {lineno}: {problem}"[:400]
            row["raw"] = line
            outcome = self._outcome_from_row(row, req) if req is not None else None
            return outcome, row
        req, att = reqs.get(cid, (None, 1))
        status = rtype if rtype in KNOWN_RESULT_TYPES else "errored"
        row = self._row(batch_id, sid, cid, att, status, req)
        row["raw"] = line
        if rtype == "succeeded":
            msg = result["message"]
            content = msg.get("content")
            row["text"] = "".join(
                str(block.get("text") or "")
                for block in (content if isinstance(content, list) else [])
                if isinstance(block, dict) and block.get("type") == "text"
            )
            if isinstance(msg.get("model"), str):
                row["model"] = msg["model"]
            row["stop_reason"] = _str_or_none(msg.get("stop_reason"))
            u = msg.get("usage") if isinstance(msg.get("usage"), dict) else {}
            row["input_tokens"] = _int(u.get("input_tokens"))
            row["output_tokens"] = _int(u.get("output_tokens"))
            row["cache_read_tokens"] = _int(u.get("cache_read_input_tokens"))
            row["cache_write_tokens"] = _int(u.get("cache_creation_input_tokens"))
        elif rtype == "errored":
            err = result.get("error")
            inner = err.get("error") if isinstance(err, dict) else None
            if not isinstance(inner, dict):  # a flatter shape than documented
                inner = err if isinstance(err, dict) else {}
            row["error_type"] = _str_or_none(inner.get("type")) or "unknown_error"
            row["error"] = _str_or_none(inner.get("message")) or json.dumps(err)[:400]
        elif status == "errored":
            # a result type the installed SDK does not know: kept (its raw line too); it holds
            # no answer, so like an error it is retried within --max-retries
            row["error_type"] = f"result_type:{rtype}"[:64]
            row["error"] = f"a result of type {rtype!r} that sdfkit does not know"
        else:
            row["error"] = f"request {rtype}"
        if req is None:  # a line for a request this batch never had: record, do not deliver
            row["error_type"] = row["error_type"] or "unknown_custom_id"
            return None, row
        return self._outcome_from_row(row, req), row

    def _ledger_statements(
        self, batch_id: str, usage: dict[str | None, Counter[str]]
    ) -> list[tuple[str, list[Any]]]:
        stmts: list[tuple[str, list[Any]]] = [("DELETE FROM ledger WHERE batch_id = ?", [batch_id])]
        for model, u in usage.items():
            tokens = {k: int(u[k]) for k in _TOKEN_COLUMNS}
            list_cost, cost = self.prices.cost(model, tokens)
            stmts.append(
                (
                    "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        self.run,
                        self.stage,
                        batch_id,
                        model,
                        int(u["requests"]),
                        *[tokens[k] for k in _TOKEN_COLUMNS],
                        list_cost,
                        self.prices.batch_discount,
                        cost,
                        utc_now(),
                    ],
                )
            )
        return stmts


def _retry_after(exc: Any, fallback: float) -> float:
    """Seconds the API asked us to wait (``retry-after-ms`` / ``retry-after``), else
    ``fallback``; at most ``CREATE_BACKOFF_MAX``."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    wait = fallback
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            wait = float(headers.get(name)) / scale
            break
        except (TypeError, ValueError):
            continue
    return max(0.0, min(wait, CREATE_BACKOFF_MAX))


_TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
KNOWN_RESULT_TYPES = {"succeeded", "errored", "expired", "canceled"}
_CUSTOM_ID_IN_LINE = re.compile(r'"custom_id"\s*:\s*"([a-zA-Z0-9_-]{1,64})"')


def jsonl_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a JSONL byte stream, split on ``\\n`` only. (``iter_lines`` of the HTTP
    response also splits on U+2028, U+2029 and U+0085, which JSON allows unescaped inside a
    string: a result holding one would come apart into two malformed lines.)"""
    pending: list[bytes] = []  # the pieces of a line that spans chunks (joined once)
    for chunk in chunks:
        if b"\n" not in chunk:
            if chunk:
                pending.append(chunk)
            continue
        parts = chunk.split(b"\n")
        pending.append(parts[0])
        yield b"".join(pending)
        yield from parts[1:-1]
        pending = [parts[-1]] if parts[-1] else []
    if pending:
        yield b"".join(pending)


def _line_custom_id(raw: bytes) -> str | None:
    line = raw.decode("utf-8", errors="replace")
    try:
        obj = json.loads(line)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        cid = obj.get("custom_id")
        return cid if isinstance(cid, str) else None
    m = _CUSTOM_ID_IN_LINE.search(line)
    return m.group(1) if m else None


def _read_timeout(client: Any) -> str:
    t = getattr(client, "timeout", None)
    read = getattr(t, "read", t)
    return f"{read:g} s" if isinstance(read, (int, float)) else "the read timeout"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _failure(exc: BaseException) -> str:
    """A short name for an API or transport failure, for one-line messages."""
    code = getattr(exc, "status_code", None)
    if code is not None:
        return f"{code}: {_api_message(exc)}"
    import httpx2

    if isinstance(exc, httpx2.TimeoutException) or type(exc).__name__ == "APITimeoutError":
        return "no answer within the timeout ($SDF_READ_TIMEOUT)"
    if isinstance(exc, httpx2.TransportError) or type(exc).__name__ == "APIConnectionError":
        return f"the connection failed or broke off: {type(exc).__name__}"
    return type(exc).__name__


def _api_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(getattr(exc, "message", exc))[:300]


# --------------------------------------------------------------------------- ledger
def ledger(store: Store, run: str | None = None, prices: PriceTable | None = None) -> Any:
    """Tokens and cost per run, stage and model (polars); cost recomputed with ``prices``
    when given (e.g. after a price change), else as recorded."""
    import polars as pl

    ensure_store_tables(store)
    where, params = ("WHERE run = ?", [run]) if run else ("", [])
    df = store.query(
        "SELECT run, stage, model, count(DISTINCT batch_id) AS batches, "
        "sum(requests)::BIGINT AS requests, sum(input_tokens)::BIGINT AS input_tokens, "
        "sum(output_tokens)::BIGINT AS output_tokens, "
        "sum(cache_read_tokens)::BIGINT AS cache_read_tokens, "
        "sum(cache_write_tokens)::BIGINT AS cache_write_tokens, "
        "sum(list_cost_usd) AS list_cost_usd, sum(cost_usd) AS cost_usd "
        f"FROM ledger {where} GROUP BY ALL ORDER BY run, min(recorded_at), stage",
        params,
    )
    if prices is not None and df.height:
        costs = [
            prices.cost(
                r["model"],
                {k: r[k] for k in df.columns if k.endswith("_tokens")},
            )
            for r in df.to_dicts()
        ]
        df = df.with_columns(
            pl.Series("list_cost_usd", [c[0] for c in costs], dtype=pl.Float64),
            pl.Series("cost_usd", [c[1] for c in costs], dtype=pl.Float64),
        )
    return df
