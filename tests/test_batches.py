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

from sdfkit.batches import (
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


class FakeAPI:
    """A scripted Message Batches API. ``script[custom_id]`` lists the result per attempt:
    "ok", "overloaded", "invalid", "expired", "canceled", "malformed", "missing"."""

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
            lines = [r if isinstance(r, str) else json.dumps(r) for r in b["results"]]
            return httpx2.Response(
                200,
                content=("\n".join(lines) + "\n").encode(),
                headers={"content-type": "application/binary"},
            )
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

    @staticmethod
    def _result(cid: str, kind: str) -> dict[str, Any] | str | None:
        if kind == "ok":
            return _succeeded(cid, f"answer for {cid}")
        if kind == "overloaded":
            return _errored(cid, "overloaded_error")
        if kind == "invalid":
            return _errored(cid, "invalid_request_error")
        if kind in ("expired", "canceled"):
            return {"custom_id": cid, "result": {"type": kind}}
        if kind == "malformed":
            return '{"custom_id": "' + cid + '", "result": {"type": "succeeded", "message": 42}}'
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
    from sdfkit.batches import _exec, ensure_tables

    ensure_tables(store)
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
    assert '"message": 42' in bad[0]["text"]  # the raw line is kept for inspection


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

    import sdfkit.batches as b

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
