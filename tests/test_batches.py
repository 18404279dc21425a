"""Message Batches machinery against the real anthropic SDK over an httpx2.MockTransport.

The fake API below is scripted per custom_id and attempt; it records every request it
sees, so tests assert on what would have been paid for. Strict response validation is on,
so every JSON body it sends must match the SDK's models.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from sdfkit.llm.batches import (
    BatchError,
    BatchInterrupted,
    BatchLimits,
    BatchRequest,
    PriceTable,
    custom_id_for,
    ledger,
    load_prices,
    make_client,
    run_requests,
    stage_of,
)

BASE = "https://fake-anthropic.test"
KEY = "sk-ant-test-Zq7c0ffee-NEVER-ON-DISK"


def _succeeded(cid: str, text: str) -> dict[str, Any]:
    return {
        "custom_id": cid,
        "result": {
            "type": "succeeded",
            "message": {
                "id": "msg_" + cid[-12:],
                "type": "message",
                "role": "assistant",
                "model": "claude-test-model",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 100,
                    "output_tokens": 40,
                    "cache_read_input_tokens": 900,
                    "cache_creation_input_tokens": 0,
                },
            },
        },
    }


def _errored(cid: str, kind: str) -> dict[str, Any]:
    return {
        "custom_id": cid,
        "result": {
            "type": "errored",
            "error": {"type": "error", "error": {"type": kind, "message": f"{kind} happened"}},
        },
    }


def _unknown_enums(cid: str) -> dict[str, Any]:
    """A succeeded, paid result with values newer than the installed SDK knows."""
    line = _succeeded(cid, f"answer for {cid}")
    msg = line["result"]["message"]
    msg["stop_reason"] = "a_stop_reason_from_the_future"
    msg["content"].insert(0, {"type": "a_block_from_the_future", "data": "x"})
    msg["usage"]["service_tier"] = "a_tier_from_the_future"
    return line


#: Characters ``iter_lines`` splits on besides \n, legal unescaped inside JSON strings.
LINE_BREAKERS = ["\u2028", "\u2029", "\u0085"]


class FakeAPI:
    """A scripted Message Batches API. ``script[custom_id]`` lists the result per attempt:
    "ok", "overloaded", "invalid", "expired", "canceled", "malformed", "missing",
    "unknown_enums" (stop reason, content block, service tier the SDK does not know),
    "unknown_error" (an error type it does not know), "breakers" (a text holding U+2028,
    U+2029, U+0085 and other non-ASCII).

    Results are served as the API streams them: JSON lines of UTF-8 bytes (non-ASCII not
    escaped) separated by ``\n``, in small chunks that split lines and characters. Faults:
    ``drop_results_after`` (the connection drops after that many lines), ``results_gone``
    (the results URL answers 404), ``create_failures`` (status codes answered to the next
    creates), ``list_failure`` (a status code, or "down": the list call cannot connect),
    ``poll_timeouts`` (the next retrieves get no answer in time)."""

    def __init__(self, script: dict[str, list[str]] | None = None, polls_to_end: int = 2):
        self.script = script or {}
        self.polls_to_end = polls_to_end
        self.batches: dict[str, dict[str, Any]] = {}
        self.seen: list[tuple[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.created: list[list[str]] = []  # custom_ids per created batch
        self.attempts: Counter[str] = Counter()
        self.poll_failures: list[int] = []  # status codes to answer the next retrieves with
        self.interrupt_on: str | None = None  # "retrieve" or "create": raise KeyboardInterrupt
        self.canceling_polls = 0
        self.drop_results_after: int | None = None
        self.results_gone: set[str] = set()  # batch ids whose results URL answers 404
        self.results_refused: int | None = None  # the results URL answers this status
        self.create_failures: list[int] = []
        self.list_failure: int | str | None = None
        self.poll_timeouts = 0
        self.chunk = 7  # bytes per streamed chunk

    def client(self, **kw: Any):
        import anthropic
        import httpx2

        kw.setdefault("max_retries", 3)
        return anthropic.Anthropic(
            api_key=KEY,
            base_url=BASE,
            http_client=httpx2.Client(transport=httpx2.MockTransport(self.handle)),
            _strict_response_validation=True,
            **kw,
        )

    def _view(self, b: dict[str, Any]) -> dict[str, Any]:
        ended = b["polls"] >= self.polls_to_end
        status = "ended" if ended else ("canceling" if b.get("canceling") else "in_progress")
        n = len(b["requests"])
        counts = {"processing": 0 if ended else n, "succeeded": 0, "errored": 0}
        counts |= {"canceled": 0, "expired": 0}
        if ended:
            for r in b["results"]:
                kind = r["result"]["type"] if isinstance(r, dict) else "errored"
                counts[kind] = counts.get(kind, 0) + 1
        return {
            "id": b["id"],
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": b["created_at"].isoformat(),
            "expires_at": (b["created_at"] + timedelta(hours=24)).isoformat(),
            "ended_at": datetime.now(timezone.utc).isoformat() if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{BASE}/v1/messages/batches/{b['id']}/results" if ended else None,
        }

    def handle(self, request):
        import httpx2

        path = request.url.path
        self.seen.append((request.method, path))
        self.headers.append(dict(request.headers))
        if request.method == "POST" and path == "/v1/messages/batches" and self.create_failures:
            code = self.create_failures.pop(0)
            kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(code, "api_error")
            return httpx2.Response(
                code,
                json={"type": "error", "error": {"type": kind, "message": f"{kind} (fake)"}},
                headers={"retry-after-ms": "1"},
            )
        if request.method == "POST" and path == "/v1/messages/batches":
            body = json.loads(request.content)
            bid = f"msgbatch_{len(self.batches):04d}"
            ids = [r["custom_id"] for r in body["requests"]]
            results = []
            for cid in ids:
                plan = self.script.get(cid, ["ok"])
                kind = plan[min(self.attempts[cid], len(plan) - 1)]
                self.attempts[cid] += 1
                results.append(self._result(cid, kind))
            self.batches[bid] = {
                "id": bid,
                "requests": body["requests"],
                "results": [r for r in results if r is not None],
                "polls": 0,
                "created_at": datetime.now(timezone.utc),
            }
            self.created.append(ids)
            if self.interrupt_on == "create":
                self.interrupt_on = None
                raise KeyboardInterrupt  # the batch exists, the client never hears its id
            return httpx2.Response(200, json=self._view(self.batches[bid]))
        if request.method == "GET" and path == "/v1/messages/batches":
            if self.list_failure == "down":
                raise httpx2.ConnectError("connection refused (fake)", request=request)
            if self.list_failure is not None:
                return httpx2.Response(
                    int(self.list_failure),
                    json={
                        "type": "error",
                        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
                    },
                )
            data = [
                self._view(b)
                for b in sorted(self.batches.values(), key=lambda b: b["created_at"], reverse=True)
            ]
            return httpx2.Response(
                200,
                json={
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                },
            )
        m = re.fullmatch(r"/v1/messages/batches/([^/]+)(/results)?", path)
        assert m, path
        b = self.batches[m.group(1)]
        if m.group(2):
            if self.results_refused:
                return httpx2.Response(
                    self.results_refused,
                    json={
                        "type": "error",
                        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
                    },
                )
            if b["id"] in self.results_gone:
                return httpx2.Response(
                    404,
                    json={"type": "error", "error": {"type": "not_found_error", "message": "gone"}},
                )
            lines = [
                r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in b["results"]
            ]
            return httpx2.Response(
                200,
                content=self._stream(lines, request),
                headers={"content-type": "application/binary"},
            )
        if self.poll_timeouts:
            self.poll_timeouts -= 1
            raise httpx2.ReadTimeout("no answer (fake)", request=request)
        if self.interrupt_on == "retrieve":
            self.interrupt_on = None
            raise KeyboardInterrupt  # the user presses Ctrl-C while polling
        if self.poll_failures:
            code = self.poll_failures.pop(0)
            return httpx2.Response(
                code,
                json={"type": "error", "error": {"type": "api_error", "message": "boom"}},
                headers={"retry-after-ms": "1"},
            )
        if b.get("canceling") and self.canceling_polls:
            self.canceling_polls -= 1
        else:
            b["polls"] += 1
        return httpx2.Response(200, json=self._view(b))

    def _stream(self, lines: list[str], request: Any):
        import httpx2

        data = b"".join(line.encode("utf-8") + b"\n" for line in lines)
        cut = None
        if self.drop_results_after is not None:
            cut = sum(len(line.encode("utf-8")) + 1 for line in lines[: self.drop_results_after])
            cut += 3  # a few bytes of the next line arrive before the connection drops

        def chunks():
            for i in range(0, len(data), self.chunk):
                if cut is not None and i >= cut:
                    raise httpx2.RemoteProtocolError("peer closed connection (fake)")
                yield data[i : i + self.chunk]

        return chunks()

    @staticmethod
    def _result(cid: str, kind: str) -> dict[str, Any] | str | None:
        if kind == "ok":
            return _succeeded(cid, f"answer for {cid}")
        if kind.startswith("text:"):
            return _succeeded(cid, kind[5:])
        if kind == "breakers":
            return _succeeded(cid, f"answer for {cid}: " + " and ".join(LINE_BREAKERS) + " é 文")
        if kind == "unknown_enums":
            return _unknown_enums(cid)
        if kind == "unknown_error":
            return _errored(cid, "an_error_type_from_the_future")
        if kind == "overloaded":
            return _errored(cid, "overloaded_error")
        if kind == "invalid":
            return _errored(cid, "invalid_request_error")
        if kind in ("expired", "canceled"):
            return {"custom_id": cid, "result": {"type": kind}}
        if kind == "malformed":  # cut off mid-line: not JSON, but it names its request
            return '{"custom_id": "' + cid + '", "result": {"type": "succeeded", "message": {"id'

        if kind == "garbage":
            return "{not json at all"
        if kind == "missing":
            return None
        raise AssertionError(kind)

    def creates(self) -> int:
        return sum(1 for m, p in self.seen if m == "POST" and p == "/v1/messages/batches")


def _reqs(n: int, run: str = "r1", stage: str = "documents") -> list[BatchRequest]:
    out = []
    for i in range(n):
        params = {
            "model": "claude-test-model",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": f"write document {i}"}],
        }
        out.append(
            BatchRequest(
                custom_id=custom_id_for(run, stage, params),
                params=params,
                stage=stage,
                meta={"i": i, "prompt_hash": "ph123"},
            )
        )
    return out


def _run(store, api, reqs, **kw):
    kw.setdefault("run", "r1")
    kw.setdefault("stage", "documents")
    kw.setdefault("poll_interval", 0.0)
    kw.setdefault("log", lambda m: None)
    return run_requests(store, reqs, client=kw.pop("client", None) or api.client(), **kw)


def test_custom_ids_are_stable_short_and_carry_the_stage():
    a = custom_id_for("run", "recall_questions", {"x": 1})
    assert a == custom_id_for("run", "recall_questions", {"x": 1})
    assert a != custom_id_for("run2", "recall_questions", {"x": 1})
    assert a != custom_id_for("run", "recall_questions", {"x": 2})
    assert len(a) <= 64 and re.fullmatch(r"[a-zA-Z0-9_-]+", a)
    assert stage_of(a) == "recall_questions"
    with pytest.raises(ValueError):
        custom_id_for("run", "bad stage!", 1)


def test_flow_with_succeeded_errored_expired_canceled_lines(store):
    reqs = _reqs(5)
    ids = [r.custom_id for r in reqs]
    api = FakeAPI(
        {
            ids[1]: ["overloaded", "ok"],  # retried, then fine
            ids[2]: ["expired", "ok"],  # retried, then fine
            ids[3]: ["canceled"],  # not retried by default
            ids[4]: ["invalid"],  # an invalid request is final: retrying cannot help
        }
    )
    seen_chunks: list[list[str]] = []
    seen_one: list[str] = []
    out = _run(
        store,
        api,
        reqs,
        on_chunk=lambda outs: seen_chunks.append([o.custom_id for o in outs]),
        on_outcome=lambda o: seen_one.append(o.status),
    )
    assert {cid: o.status for cid, o in out.items()} == {
        ids[0]: "succeeded",
        ids[1]: "succeeded",
        ids[2]: "succeeded",
        ids[3]: "canceled",
        ids[4]: "errored",
    }
    assert out[ids[0]].text == f"answer for {ids[0]}"
    assert out[ids[0]].usage == {
        "input_tokens": 100,
        "output_tokens": 40,
        "cache_read_tokens": 900,
        "cache_write_tokens": 0,
    }
    assert out[ids[1]].attempt == 2 and out[ids[0]].request.meta["i"] == 0
    assert "invalid_request_error happened" in out[ids[4]].error
    # first batch had all five; the retry batch only the two retryable ones
    assert [sorted(c) for c in api.created] == [sorted(ids), sorted([ids[1], ids[2]])]
    assert sum(len(c) for c in seen_chunks) == 7 and len(seen_one) == 7
    # the catalog knows both batches, ingested, with counts
    b = store.query(
        "SELECT batch_id, status, succeeded, errored, expired, canceled, attempt "
        "FROM gen_batches ORDER BY attempt"
    ).to_dicts()
    assert [x["batch_id"] for x in b] == ["msgbatch_0000", "msgbatch_0001"]
    assert all(x["status"] == "ingested" for x in b)
    assert (b[0]["succeeded"], b[0]["errored"], b[0]["expired"], b[0]["canceled"]) == (1, 2, 1, 1)
    # every request row records model, prompt hash and run
    rq = store.query("SELECT DISTINCT model, prompt_hash, run FROM gen_requests").to_dicts()
    assert rq == [{"model": "claude-test-model", "prompt_hash": "ph123", "run": "r1"}]
    # the ledger counted every answered request once, per batch
    led = ledger(store, "r1").to_dicts()
    assert led[0]["requests"] == 7 and led[0]["input_tokens"] == 300
    assert led[0]["cache_read_tokens"] == 2700


def test_rerun_after_completion_sends_nothing(store):
    reqs = _reqs(3)
    api = FakeAPI()
    first = _run(store, api, reqs)
    n_seen = len(api.seen)
    again = _run(store, api, reqs)
    assert len(api.seen) == n_seen  # not even a poll
    assert {k: v.text for k, v in again.items()} == {k: v.text for k, v in first.items()}


def test_killed_while_polling_resumes_without_resubmitting(store):
    reqs = _reqs(4)
    api = FakeAPI(polls_to_end=2)
    api.interrupt_on = "retrieve"
    landed: list[str] = []
    with pytest.raises(BatchInterrupted, match="run the same command again"):
        _run(store, api, reqs, on_chunk=lambda outs: landed.extend(o.custom_id for o in outs))
    assert api.creates() == 1 and not landed
    # the batch id was on disk before the first poll
    rows = store.query("SELECT batch_id, status FROM gen_batches").to_dicts()
    assert rows == [{"batch_id": "msgbatch_0000", "status": "in_progress"}]
    # a new process (a new client) with the same command
    out = _run(
        store,
        api,
        reqs,
        client=api.client(),
        on_chunk=lambda outs: landed.extend(o.custom_id for o in outs),
    )
    assert api.creates() == 1  # nothing submitted twice
    assert sorted(landed) == sorted(r.custom_id for r in reqs)
    assert all(o.status == "succeeded" for o in out.values())


def test_killed_between_create_and_saving_the_id_claims_the_batch(store):
    reqs = _reqs(3)
    api = FakeAPI()
    api.interrupt_on = "create"
    with pytest.raises(BatchInterrupted):
        _run(store, api, reqs)
    assert api.creates() == 1
    assert store.query("SELECT status FROM gen_batches")["status"].to_list() == ["submitting"]
    out = _run(store, api, reqs)
    assert api.creates() == 1  # found through the batch list, not paid again
    assert ("GET", "/v1/messages/batches") in api.seen
    assert all(o.status == "succeeded" for o in out.values())
    assert store.query("SELECT batch_id FROM gen_batches")["batch_id"].to_list() == [
        "msgbatch_0000"
    ]


def test_submission_that_never_reached_the_api_is_resubmitted(store):
    reqs = _reqs(2)
    api = FakeAPI()
    # a crashed submission whose create never happened: intent on disk, no batch at the API
    from sdfkit.llm.batches import _exec, ensure_store_tables

    ensure_store_tables(store)
    _exec(
        store,
        [
            (
                "INSERT INTO gen_batches (submission_id, run, stage, attempt, n_requests, "
                "status, submitted_at) VALUES ('s0', 'r1', 'documents', 1, 2, 'submitting', ?)",
                [datetime.now(timezone.utc)],
            ),
            *[
                (
                    "INSERT INTO gen_requests VALUES ('s0', ?, 'r1', 'documents', 1, 'm', "
                    "'ph', '{}')",
                    [r.custom_id],
                )
                for r in reqs
            ],
        ],
    )
    out = _run(store, api, reqs)
    assert api.creates() == 1 and all(o.status == "succeeded" for o in out.values())
    statuses = store.query("SELECT status FROM gen_batches ORDER BY submitted_at")
    assert statuses["status"].to_list() == ["abandoned", "ingested"]


def test_malformed_result_lines_are_recorded_and_retried(store):
    reqs = _reqs(3)
    ids = [r.custom_id for r in reqs]
    api = FakeAPI({ids[0]: ["malformed", "ok"], ids[1]: ["missing", "ok"]})
    out = _run(store, api, reqs)
    assert all(o.status == "succeeded" for o in out.values())
    assert api.created[1] == sorted([ids[0], ids[1]], key=ids.index)
    bad = store.query(
        "SELECT custom_id, error_type, text FROM gen_results WHERE error_type IS NOT NULL "
        "ORDER BY error_type"
    ).to_dicts()
    assert [(b["custom_id"], b["error_type"]) for b in bad] == [
        (ids[0], "malformed_result"),
        (ids[1], "missing_result"),
    ]
    raw = store.query(f"SELECT raw FROM gen_results WHERE custom_id = '{ids[0]}'")["raw"]
    assert sorted(raw.to_list(), key=len)[0].endswith('"message": {"id')  # kept as it came


def test_unparseable_line_without_custom_id_does_not_stop_the_stream(store):
    reqs = _reqs(2)
    api = FakeAPI()
    out_first = _run(store, api, reqs[:1])
    assert out_first
    # inject a garbage line into the next batch's results
    api2 = FakeAPI()
    real_handle = api2.handle

    def handle(request):
        resp = real_handle(request)
        if request.method == "POST":
            for b in api2.batches.values():
                b["results"].insert(0, "{not json at all")
        return resp

    api2.handle = handle  # type: ignore[method-assign]
    out = _run(store, api2, reqs[1:], run="r2")
    assert out[reqs[1].custom_id].status == "succeeded"
    rows = store.query(
        "SELECT result_id FROM gen_results WHERE run = 'r2' AND error_type = 'malformed_result'"
    )
    assert rows["result_id"].to_list() == ["msgbatch_0000/line-1"]


def test_poll_survives_429_and_500(store):
    reqs = _reqs(2)
    api = FakeAPI(polls_to_end=1)
    api.poll_failures = [429, 500, 503]
    out = _run(store, api, reqs)
    assert all(o.status == "succeeded" for o in out.values())
    retrieves = [p for m, p in api.seen if m == "GET" and p == "/v1/messages/batches/msgbatch_0000"]
    assert len(retrieves) >= 4  # three failures retried by the SDK, then the real answer


def test_poll_failures_beyond_sdk_retries_are_tolerated_then_reported(store):
    reqs = _reqs(1)
    api = FakeAPI(polls_to_end=1)
    api.poll_failures = [500] * 3  # the SDK gives up after 1 retry: our loop tolerates it
    out = _run(store, api, reqs, client=api.client(max_retries=1))
    assert out[reqs[0].custom_id].status == "succeeded"
    api2 = FakeAPI(polls_to_end=1)
    api2.poll_failures = [500] * 50
    with pytest.raises(BatchError, match="keep running"):
        _run(
            store,
            api2,
            _reqs(1, run="r9"),
            run="r9",
            client=api2.client(max_retries=0),
            max_poll_failures=3,
        )
    assert api2.creates() == 1


def test_retries_are_bounded_and_not_repeated_by_a_rerun(store):
    reqs = _reqs(1)
    api = FakeAPI({reqs[0].custom_id: ["overloaded"]})
    logs: list[str] = []
    out = _run(store, api, reqs, max_retries=2, log=logs.append)
    assert out[reqs[0].custom_id].status == "errored"
    assert api.creates() == 3
    assert any("given up" in m for m in logs)
    _run(store, api, reqs, max_retries=2)
    assert api.creates() == 3


def test_canceled_batch_is_followed_to_its_end_and_resubmitted_only_when_asked(store):
    reqs = _reqs(2)
    api = FakeAPI({r.custom_id: ["canceled", "ok"] for r in reqs}, polls_to_end=1)
    real = api.handle

    def handle(request):
        resp = real(request)
        if request.method == "POST":
            for b in api.batches.values():
                b["canceling"] = True
            api.canceling_polls = 2
        return resp

    api.handle = handle  # type: ignore[method-assign]
    logs: list[str] = []
    out = _run(store, api, reqs, log=logs.append)
    assert all(o.status == "canceled" for o in out.values())
    assert any("canceling" in m for m in logs)
    assert api.creates() == 1
    out = _run(store, api, reqs, retry_canceled=True)
    assert api.creates() == 2 and all(o.status == "succeeded" for o in out.values())


def test_requests_are_split_over_the_per_batch_limits(store):
    reqs = _reqs(5)
    api = FakeAPI(polls_to_end=1)
    out = _run(store, api, reqs, limits=BatchLimits(max_requests=2))
    assert [len(c) for c in api.created] == [2, 2, 1]
    assert len(out) == 5
    api2 = FakeAPI(polls_to_end=1)
    one = len(json.dumps({"custom_id": reqs[0].custom_id, "params": reqs[0].params}))
    _run(store, api2, _reqs(4, run="r3"), run="r3", limits=BatchLimits(max_bytes=2 * one + 5))
    assert [len(c) for c in api2.created] == [2, 2]
    with pytest.raises(BatchError, match="alone is"):
        _run(store, FakeAPI(), _reqs(1, run="r4"), run="r4", limits=BatchLimits(max_bytes=10))


def test_refused_batch_is_reported_and_not_left_pending(store):
    import httpx2

    api = FakeAPI()

    def handle(request):
        api.seen.append((request.method, request.url.path))
        return httpx2.Response(
            400,
            json={
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "max_tokens too large"},
            },
        )

    api.handle = handle  # type: ignore[method-assign]
    with pytest.raises(BatchError, match="max_tokens too large"):
        _run(store, api, _reqs(1))
    assert store.query("SELECT status FROM gen_batches")["status"].to_list() == ["abandoned"]


def test_prices_ledger_and_overrides(tmp_path):
    t = PriceTable()
    assert t.price_for("claude-sonnet-5-5").input == 3.0
    assert t.price_for("offline-standin/claude-opus-5").input == 0.0
    assert t.price_for("some-other-model") is None
    lst, cost = t.cost("claude-haiku-5-5", {"input_tokens": 1_000_000, "output_tokens": 1_000_000})
    assert lst == pytest.approx(6.0) and cost == pytest.approx(3.0)
    f = tmp_path / "prices.yaml"
    f.write_text("claude-sonnet-5-5: {input: 10, output: 20}\nbatch_discount: 0.25\n")
    t2 = load_prices(f)
    assert t2.price_for("claude-sonnet-5-5").input == 10.0
    assert t2.price_for("claude-sonnet-5-5").cache_read == 0.30  # inherited from the family
    assert t2.batch_discount == 0.25
    f.write_text("claude-x: {input: cheap}\n")
    with pytest.raises(Exception, match="prices.yaml: field 'claude-x'"):
        load_prices(f)


def test_make_client_auto_needs_a_key_or_offline(monkeypatch):
    with pytest.raises(BatchError, match="--backend offline"):
        make_client("auto")
    c = make_client("offline")
    assert "offline-standin" in str(c.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "https://proxy.example.test")
    real = make_client("auto")
    assert str(real.base_url).startswith("https://proxy.example.test")
    assert real.api_key == KEY


def test_interrupted_while_landing_results_resumes_without_loss_or_double_counting(store):
    reqs = _reqs(5)
    api = FakeAPI(polls_to_end=1)
    landed: list[str] = []
    calls = {"n": 0}

    def land(outs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # Ctrl-C in the middle of writing the first results
        landed.extend(o.custom_id for o in outs)

    import sdfkit.llm.batches as b

    monkey_chunk = b.RESULT_CHUNK
    b.RESULT_CHUNK = 2
    try:
        with pytest.raises(BatchInterrupted):
            _run(store, api, reqs, on_chunk=land)
        assert not landed
        out = _run(store, api, reqs, on_chunk=land)
    finally:
        b.RESULT_CHUNK = monkey_chunk
    assert api.creates() == 1
    assert sorted(landed) == sorted(r.custom_id for r in reqs)  # each landed exactly once
    assert all(o.status == "succeeded" for o in out.values())
    led = ledger(store, "r1").to_dicts()
    assert led[0]["requests"] == 5 and led[0]["output_tokens"] == 5 * 40
    n = store.query("SELECT count(*) AS n FROM gen_results")["n"][0]
    assert n == 5


# ------------------------------------------------------- the API as it really behaves
@pytest.mark.parametrize("breaker", LINE_BREAKERS, ids=["U+2028", "U+2029", "U+0085"])
def test_result_text_holding_a_unicode_line_separator_is_read_whole_and_paid_once(store, breaker):
    reqs = _reqs(3)
    text = f"Première ligne{breaker}deuxième ligne — 終わり"
    api = FakeAPI({reqs[1].custom_id: [f"text:{text}"]})
    out = _run(store, api, reqs)
    assert out[reqs[1].custom_id].text == text
    assert api.creates() == 1  # nothing paid twice
    assert store.query("SELECT count(*) AS n FROM gen_results WHERE error_type IS NOT NULL")[
        "n"
    ].to_list() == [0]
    assert ledger(store, "r1")["requests"].to_list() == [3]


def test_jsonl_lines_split_on_newline_only_across_chunks():
    from sdfkit.llm.batches import jsonl_lines

    data = "a\u2028b\u0085c\nd\u2029é\n\nlast".encode()
    chunks = [data[i : i + 3] for i in range(0, len(data), 3)]
    lines = [x.decode() for x in jsonl_lines(chunks)]
    assert lines == ["a\u2028b\u0085c", "d\u2029é", "", "last"]


def test_values_the_sdk_does_not_know_are_kept_not_paid_again(store):
    reqs = _reqs(2)
    ids = [r.custom_id for r in reqs]
    api = FakeAPI({ids[0]: ["unknown_enums"], ids[1]: ["unknown_error", "ok"]})
    out = _run(store, api, reqs)
    assert out[ids[0]].status == "succeeded"
    assert out[ids[0]].text == f"answer for {ids[0]}"
    assert out[ids[0]].stop_reason == "a_stop_reason_from_the_future"
    assert api.created[0] == ids and api.created[1:] == [[ids[1]]]  # only the errored one
    rows = store.query(
        "SELECT custom_id, status, error_type, raw FROM gen_results ORDER BY received_at"
    ).to_dicts()
    assert [r["error_type"] for r in rows if r["custom_id"] == ids[1]][0] == (
        "an_error_type_from_the_future"
    )
    assert "malformed_result" not in {r["error_type"] for r in rows}
    # the raw line of every result is kept as it came
    assert all(json.loads(r["raw"])["custom_id"] == r["custom_id"] for r in rows)
    assert "a_tier_from_the_future" in next(r["raw"] for r in rows if r["custom_id"] == ids[0])


def test_unreadable_line_of_no_request_stays_out_of_the_ledger(store):
    reqs = _reqs(1)
    api = FakeAPI(polls_to_end=1)
    real = api.handle

    def handle(request):
        resp = real(request)
        if request.method == "POST":
            for b in api.batches.values():
                b["results"].insert(0, "{not json at all")
        return resp

    api.handle = handle  # type: ignore[method-assign]
    _run(store, api, reqs)
    led = ledger(store, "r1").to_dicts()
    assert [(r["model"], r["requests"]) for r in led] == [("claude-test-model", 1)]


def test_connection_dropping_while_results_stream_is_one_line_and_loses_nothing(store):
    import sdfkit.llm.batches as b

    reqs = _reqs(5)
    api = FakeAPI(polls_to_end=1)
    api.drop_results_after = 3
    landed: list[str] = []
    old, b.RESULT_CHUNK = b.RESULT_CHUNK, 2
    try:
        with pytest.raises(BatchError, match=r"the 3 results that arrived are stored") as err:
            _run(store, api, reqs, on_chunk=lambda outs: landed.extend(o.custom_id for o in outs))
        assert "\n" not in str(err.value) and "connection failed or broke off" in str(err.value)
        assert len(landed) == 3  # flushed before the error, not dropped
        api.drop_results_after = None
        out = _run(store, api, reqs, on_chunk=lambda outs: landed.extend(o.custom_id for o in outs))
    finally:
        b.RESULT_CHUNK = old
    assert api.creates() == 1 and all(o.status == "succeeded" for o in out.values())
    assert set(landed) == {r.custom_id for r in reqs}
    assert ledger(store, "r1")["requests"].to_list() == [5]  # each result counted once


def test_results_that_no_longer_exist_are_reported_in_one_line_and_retried(store):
    reqs = _reqs(2)
    api = FakeAPI(polls_to_end=1)
    api.results_gone = {"msgbatch_0000"}
    logs: list[str] = []
    out = _run(store, api, reqs, log=logs.append)
    assert any("no longer available at the API (404)" in m for m in logs)
    assert api.creates() == 2 and all(o.status == "succeeded" for o in out.values())
    gone = store.query("SELECT error_type FROM gen_results WHERE batch_id = 'msgbatch_0000'")
    assert gone["error_type"].to_list() == ["missing_result"] * 2


@pytest.mark.parametrize("failure", ["down", 401])
def test_recovering_an_interrupted_submission_while_the_api_fails_is_one_line(store, failure):
    reqs = _reqs(3)
    api = FakeAPI()
    api.interrupt_on = "create"
    with pytest.raises(BatchInterrupted):
        _run(store, api, reqs)
    api.list_failure = failure
    hint = "ANTHROPIC_API_KEY" if failure == 401 else "when the API answers"
    with pytest.raises(BatchError, match=f"interrupted submission.*{hint}") as err:
        _run(store, api, reqs, client=api.client(max_retries=0))
    assert "\n" not in str(err.value)
    assert store.query("SELECT status FROM gen_batches")["status"].to_list() == ["submitting"]
    api.list_failure = None
    out = _run(store, api, reqs)
    assert api.creates() == 1 and all(o.status == "succeeded" for o in out.values())


def _intent(store, reqs, submitted_at):
    from sdfkit.llm.batches import _exec, ensure_store_tables

    ensure_store_tables(store)
    _exec(
        store,
        [
            (
                "INSERT INTO gen_batches (submission_id, run, stage, attempt, n_requests, "
                "status, submitted_at) VALUES ('s0', 'r1', 'documents', 1, ?, 'submitting', ?)",
                [len(reqs), submitted_at],
            ),
            *[
                (
                    "INSERT INTO gen_requests VALUES ('s0', ?, 'r1', 'documents', 1, "
                    "'claude-test-model', 'ph', '{}')",
                    [r.custom_id],
                )
                for r in reqs
            ],
        ],
    )


def test_claiming_never_takes_another_process_batch_of_the_same_size(store):
    reqs = _reqs(2)
    api = FakeAPI()
    # another process submitted a batch of two other requests at the same moment
    other = _reqs(2, run="someone-else")
    api.client().messages.batches.create(
        requests=[{"custom_id": r.custom_id, "params": r.params} for r in other]
    )
    _intent(store, reqs, datetime.now(timezone.utc))
    logs: list[str] = []
    out = _run(store, api, reqs, log=logs.append)
    assert any("msgbatch_0000 holds other requests: not claimed" in m for m in logs)
    assert api.creates() == 2 and all(o.status == "succeeded" for o in out.values())
    assert store.query("SELECT batch_id FROM gen_batches WHERE batch_id IS NOT NULL")[
        "batch_id"
    ].to_list() == ["msgbatch_0001"]


def test_claiming_is_bounded_in_time_on_both_sides(store):
    reqs = _reqs(2)
    api = FakeAPI()
    api.client().messages.batches.create(
        requests=[{"custom_id": r.custom_id, "params": r.params} for r in reqs]
    )
    # our intent, as recorded, was written an hour after that batch was created
    _intent(store, reqs, datetime.now(timezone.utc) + timedelta(hours=1))
    logs: list[str] = []
    _run(store, api, reqs, log=logs.append)
    assert not any("found batch" in m for m in logs) and api.creates() == 2
    # ... and an hour before: too early to be its batch either
    api2 = FakeAPI()
    api2.client().messages.batches.create(
        requests=[{"custom_id": r.custom_id, "params": r.params} for r in _reqs(2, run="r5")]
    )
    store2_reqs = _reqs(2, run="r5")
    from sdfkit.llm.batches import _exec

    _exec(store, [("DELETE FROM gen_batches", []), ("DELETE FROM gen_requests", [])])
    _intent(store, store2_reqs, datetime.now(timezone.utc) - timedelta(hours=1))
    _exec(
        store, [("UPDATE gen_batches SET run = 'r5'", []), ("UPDATE gen_requests SET run='r5'", [])]
    )
    logs.clear()
    _run(store, api2, store2_reqs, run="r5", log=logs.append)
    assert not any("found batch" in m for m in logs) and api2.creates() == 2


def test_rate_limited_or_overloaded_batch_creation_backs_off_and_retries(store):
    reqs = _reqs(2)
    api = FakeAPI()
    api.create_failures = [429, 529]
    logs: list[str] = []
    out = _run(store, api, reqs, log=logs.append, create_backoff=0.0)
    assert all(o.status == "succeeded" for o in out.values())
    assert api.creates() == 3 and len(api.batches) == 1  # two refusals, one batch paid
    assert sum("retry" in m and "of 5" in m for m in logs) == 2
    # beyond the bound: one line, the intent abandoned, nothing created
    api2 = FakeAPI()
    api2.create_failures = [529] * 10
    with pytest.raises(BatchError, match=r"refused the batch \(529\).*after 2 retries"):
        _run(store, api2, _reqs(1, run="r6"), run="r6", create_retries=2, create_backoff=0.0)
    assert not api2.batches and api2.creates() == 3
    st = store.query("SELECT status FROM gen_batches WHERE run = 'r6'")["status"].to_list()
    assert st == ["abandoned"]


def test_timeouts_are_ours_and_configurable(monkeypatch):
    import anthropic
    import httpx2

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    seen = []

    def handle(request):
        seen.append(request.extensions["timeout"])
        raise httpx2.ReadTimeout("no answer", request=request)

    def client():
        return make_client(
            "anthropic",
            base_url=BASE,
            max_retries=0,
            http_client=httpx2.Client(transport=httpx2.MockTransport(handle)),
        )

    with pytest.raises(anthropic.APITimeoutError):
        client().messages.batches.retrieve("msgbatch_x")
    assert seen[-1]["read"] == 120.0 and seen[-1]["connect"] == 10.0
    monkeypatch.setenv("SDF_READ_TIMEOUT", "7.5")
    monkeypatch.setenv("SDF_CONNECT_TIMEOUT", "3")
    with pytest.raises(anthropic.APITimeoutError):
        client().messages.batches.retrieve("msgbatch_x")
    assert seen[-1]["read"] == 7.5 and seen[-1]["connect"] == 3.0
    monkeypatch.setenv("SDF_READ_TIMEOUT", "soon")
    with pytest.raises(BatchError, match="SDF_READ_TIMEOUT must be a number"):
        client()


def test_a_silent_endpoint_shows_waiting_and_stops_with_one_line(store):
    reqs = _reqs(1)
    api = FakeAPI()
    api.poll_timeouts = 100
    logs: list[str] = []
    with pytest.raises(BatchError, match="did not answer a poll") as err:
        _run(store, api, reqs, client=api.client(max_retries=0, timeout=5.0), log=logs.append)
    assert "\n" not in str(err.value) and "keep running" in str(err.value)
    assert any("waiting for the API: no answer within 5 s (1 of 3)" in m for m in logs)
    api.poll_timeouts = 0
    out = _run(store, api, reqs)
    assert api.creates() == 1 and out[reqs[0].custom_id].status == "succeeded"


def test_an_endpoint_that_accepts_and_never_answers_stops_in_one_line(store, monkeypatch):
    """Over a real socket on this machine: our read timeout, not the SDK's 600 s."""
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("SDF_READ_TIMEOUT", "0.5")
    try:
        client = make_client(
            "anthropic", base_url=f"http://127.0.0.1:{silent.getsockname()[1]}", max_retries=0
        )
        t0 = time.monotonic()
        with pytest.raises(BatchError, match="no answer within the timeout") as err:
            _run(store, None, _reqs(1), client=client)
        assert time.monotonic() - t0 < 60  # generous: the SDK alone would wait 600 s
    finally:
        silent.close()
    assert "may or may not have been created" in str(err.value) and "\n" not in str(err.value)
    # the intent stays on disk: the next run looks for the batch before paying again
    assert store.query("SELECT status FROM gen_batches")["status"].to_list() == ["submitting"]


def test_a_refused_key_while_reading_results_says_so_in_one_line(store):
    reqs = _reqs(2)
    api = FakeAPI(polls_to_end=1)
    api.results_refused = 401
    with pytest.raises(BatchError, match=r"\(401: invalid x-api-key\).*check ANTHROPIC_API_KEY"):
        _run(store, api, reqs, client=api.client(max_retries=0))
    api.results_refused = None
    out = _run(store, api, reqs)
    assert api.creates() == 1 and all(o.status == "succeeded" for o in out.values())


def test_our_batch_missing_a_result_line_is_still_claimed_not_paid_again(store):
    reqs = _reqs(3)
    ids = [r.custom_id for r in reqs]
    api = FakeAPI({ids[0]: ["missing", "ok"]})
    api.interrupt_on = "create"
    with pytest.raises(BatchInterrupted):
        _run(store, api, reqs)
    logs: list[str] = []
    out = _run(store, api, reqs, log=logs.append)
    assert any("found batch msgbatch_0000" in m for m in logs)
    # only the request whose line was missing is sent again
    assert api.created == [ids, [ids[0]]]
    assert all(o.status == "succeeded" for o in out.values())


def test_claiming_compares_ended_batches_before_waiting_on_a_running_one(store):
    """Another process's batch of the same size, still running and nearer in time to our
    intent, is not waited for when our own ended batch is there to be compared."""
    reqs = _reqs(2)
    api = FakeAPI(polls_to_end=10**6)
    sdk = api.client()
    ours = sdk.messages.batches.create(
        requests=[{"custom_id": r.custom_id, "params": r.params} for r in reqs]
    )
    api.batches[ours.id]["polls"] = 10**6  # ended
    api.batches[ours.id]["created_at"] -= timedelta(minutes=5)
    other = sdk.messages.batches.create(
        requests=[{"custom_id": r.custom_id, "params": r.params} for r in _reqs(2, run="x")]
    )
    _intent(store, reqs, datetime.now(timezone.utc))
    handle = api.handle

    def strict(request):
        assert request.url.path != f"/v1/messages/batches/{other.id}", "waited on it"
        return handle(request)

    api.handle = strict
    logs: list[str] = []
    out = _run(store, api, reqs, log=logs.append)
    assert any(f"found batch {ours.id}" in m for m in logs)
    assert api.creates() == 2 and all(o.status == "succeeded" for o in out.values())


def test_a_candidate_whose_results_are_gone_does_not_block_every_rerun(store):
    reqs = _reqs(2)
    api = FakeAPI()
    sdk = api.client()
    stale = sdk.messages.batches.create(
        requests=[{"custom_id": r.custom_id, "params": r.params} for r in reqs]
    )
    api.batches[stale.id]["polls"] = 10**6
    api.results_gone.add(stale.id)  # its results expired at the API (404)
    _intent(store, reqs, datetime.now(timezone.utc))
    logs: list[str] = []
    out = _run(store, api, reqs, log=logs.append)
    assert any(f"batch {stale.id} has no results any more (404)" in m for m in logs)
    assert api.creates() == 2 and all(o.status == "succeeded" for o in out.values())
    assert "\n" not in "".join(logs)


def test_ctrl_c_while_backing_off_from_a_429_pays_once_on_the_rerun(store, monkeypatch):
    import sdfkit.llm.batches as batches

    reqs = _reqs(2)
    api = FakeAPI()
    api.create_failures = [429]

    def pressed(_seconds):
        raise KeyboardInterrupt  # Ctrl-C during the back-off

    monkeypatch.setattr(batches.time, "sleep", pressed)
    with pytest.raises(BatchInterrupted):
        _run(store, api, reqs, create_backoff=5.0)
    assert not api.batches
    monkeypatch.undo()
    logs: list[str] = []
    out = _run(store, api, reqs, log=logs.append)
    assert len(api.batches) == 1 and all(o.status == "succeeded" for o in out.values())
    assert any("never reached the API" in m for m in logs)


def test_a_second_process_on_the_same_run_and_stage_is_refused_before_paying(store):
    """Two processes of one run would both find the same requests unsubmitted and pay for
    each twice (and one would claim the other's in-flight submission as interrupted)."""
    import fcntl
    import hashlib

    reqs = _reqs(2)
    api = FakeAPI()
    key = hashlib.sha256(json.dumps(["r1", "documents"]).encode()).hexdigest()[:16]
    store.root.mkdir(parents=True, exist_ok=True)
    with open(store.root / f".batches-{key}.lock", "w") as other:  # the first process
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BatchError, match="running in another process") as err:
            _run(store, api, reqs)
        assert "\n" not in str(err.value) and api.creates() == 0 and not api.seen
        # another stage or run of the same corpus is not held up
        _run(store, api, _reqs(1, run="r2"), run="r2")
        assert api.creates() == 1
    out = _run(store, api, reqs)  # the first process is gone: its lock died with it
    assert api.creates() == 2 and all(o.status == "succeeded" for o in out.values())


def test_the_key_reaches_no_file_or_line_on_the_failure_and_recovery_paths(store, capsys):
    """Ctrl-C after create, a refused key while recovering, then recovery, a dropped results
    stream and the ledger: the key is sent as a header and written nowhere."""
    from sdfkit.llm.batches import ledger

    reqs = _reqs(3)
    api = FakeAPI()
    logs: list[str] = []
    errors: list[str] = []
    api.interrupt_on = "create"
    with pytest.raises(BatchInterrupted) as e1:
        _run(store, api, reqs, log=logs.append)
    errors.append(str(e1.value))
    api.list_failure = 401
    with pytest.raises(BatchError) as e2:
        _run(store, api, reqs, log=logs.append)
    errors.append(str(e2.value))
    api.list_failure = None
    api.drop_results_after = 1
    with pytest.raises(BatchError) as e3:
        _run(store, api, reqs, log=logs.append)
    errors.append(str(e3.value))
    api.drop_results_after = None
    _run(store, api, reqs, log=logs.append)
    table = ledger(store)
    assert any(KEY in v for h in api.headers for v in h.values())  # it was sent
    out = capsys.readouterr()
    said = "\n".join([*logs, *errors, out.out, out.err, str(table)])
    assert KEY not in said and "NEVER-ON-DISK" not in said
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    for p in files:
        assert b"NEVER-ON-DISK" not in p.read_bytes(), p
