"""Training on Tinker against a fake at the client-object boundary (tests/fake_tinker.py):
learning rates sent, batch contents and order, checkpoints, resume, deadlines, keys."""

from __future__ import annotations

import hashlib
import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_tinker import FakeTinkerWorld

from sdfkit.errors import SdfError
from sdfkit.export.shards import SHARD_SCHEMA
from sdfkit.train.run import TrainConfig, TrainError, lr_at, plan_run, train
from sdfkit.train.service import TinkerKeyMissing, TinkerUnavailable, check_health

KEY = "tml-test-key-never-on-disk-1234"


def write_export(
    root: Path,
    epochs: list[list[int]],
    shard_sizes: list[int] | None = None,
    tokenizer: str = "o200k_harmony",
) -> Path:
    """An export per contract B. Example ``i`` has tokens ``[1000+i, 7, 8, 9]`` and loss
    weights ``[0, 1, 1, 0.5]``; ``epochs`` lists the example ids of every epoch in order."""
    rows = []
    for ep, ids in enumerate(epochs):
        for i in ids:
            rows.append(
                {
                    "tokens": [1000 + i, 7, 8, 9],
                    "weights": [0.0, 1.0, 1.0, 0.5],
                    "doc_id": f"d{i}",
                    "source": "sdf",
                    "concept": "c",
                    "doc_type": "t",
                    "epoch": ep,
                    "piece": 0,
                    "example_id": f"d{i}:0",
                }
            )
    sizes = shard_sizes or [len(rows)]
    assert sum(sizes) == len(rows)
    root.mkdir(parents=True, exist_ok=True)
    shards, at = [], 0
    for k, n in enumerate(sizes):
        name = f"shard-{k:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows[at : at + n], schema=SHARD_SCHEMA), root / name)
        sha = hashlib.sha256((root / name).read_bytes()).hexdigest()
        shards.append({"file": name, "sha256": sha, "rows": n, "tokens": 4 * n})
        at += n
    manifest = {
        "version": 1,
        "tokenizer": tokenizer,
        "eos_id": 199999,
        "max_seq_len": 8192,
        "epochs": len(epochs),
        "examples": len(rows),
        "shards": shards,
        "counts": [],
        "selection": "test",
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def first_tokens(batches: list[list[list[int]]]) -> list[list[int]]:
    """Example ids of each sent batch (the first token encodes the id)."""
    return [[toks[0] - 1000 for toks in batch] for batch in batches]


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        ok = self.path == "/api/v1/healthz"
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b'{"status":"ok"}' if ok else b"")

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture(scope="module")
def health_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture
def tinker_env(monkeypatch: pytest.MonkeyPatch, health_server: str) -> str:
    monkeypatch.setenv("TINKER_API_KEY", KEY)
    monkeypatch.setenv("TINKER_BASE_URL", health_server)
    return health_server


def expected_lr(step: int, total: int, peak: float = 3.5e-5, warmup: int = 300) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


# ------------------------------------------------------------------------------ schedule
def test_learning_rate_sent_follows_the_schedule(tmp_path, store, tinker_env):
    n = 340  # batch size 1: 340 steps, past the 300 warmup steps
    export = write_export(tmp_path / "exp", [list(range(n))])
    world = FakeTinkerWorld()
    cfg = TrainConfig(batch_size=1, save_every=0)
    res = train(export, store, cfg, run="lr", service_factory=world.service)
    assert res.status == "finished" and res.steps_done == n
    lrs = world.sent_lrs()
    assert len(lrs) == n
    for s in (0, 299, 300, n - 1):
        assert lrs[s] == pytest.approx(expected_lr(s, n), rel=1e-12), s
    assert lrs[0] == pytest.approx(3.5e-5 / 300)
    assert lrs[299] == pytest.approx(3.5e-5) and lrs[300] == pytest.approx(3.5e-5)
    assert 0 < lrs[-1] < 3.5e-5 * 0.01
    # the records agree with what was sent
    rec = store.query("SELECT step, lr FROM train_steps WHERE run = 'lr' ORDER BY step")
    assert rec["lr"].to_list() == pytest.approx(lrs)
    # the plan (dry run) says the same
    assert plan_run(export, cfg).learning_rates == pytest.approx(lrs)


def test_lr_schedule_function_edges():
    cfg = TrainConfig(warmup_steps=10, min_lr_ratio=0.1, learning_rate=1.0)
    assert lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(10, 100, cfg) == pytest.approx(1.0)
    assert lr_at(55, 100, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(99, 100, cfg) > 0.1


def test_without_pipelining_the_same_batches_and_rates_are_sent(tmp_path, store, tinker_env):
    export = write_export(tmp_path / "exp", [list(range(9)), list(range(9))])
    sent = []
    for depth in (1, 2, 4):
        world = FakeTinkerWorld()
        cfg = TrainConfig(batch_size=2, save_every=3, pipeline_depth=depth)
        train(export, store, cfg, run=f"p{depth}", service_factory=world.service)
        # every checkpoint is saved after exactly the steps before it
        assert sorted(world.states.values()) == [3, 5, 6, 9, 10]
        sent.append((first_tokens(world.sent_batches()), world.sent_lrs()))
    assert sent[0] == sent[1] == sent[2]


def test_weight_decay_and_adam_options_are_sent(tmp_path, store, tinker_env):
    export = write_export(tmp_path / "exp", [list(range(4))])
    world = FakeTinkerWorld()
    cfg = TrainConfig(batch_size=2, weight_decay=0.01, beta2=0.999, save_every=0, rank=16)
    train(export, store, cfg, run="wd", service_factory=world.service)
    sent = [c[1] for c in world.calls if c[0] == "optim_step"]
    assert all(p.weight_decay == 0.01 and p.beta2 == 0.999 for p in sent)
    create = [c[1] for c in world.calls if c[0] == "create_lora_training_client"][0]
    assert create["rank"] == 16 and create["base_model"] == "openai/gpt-oss-20b"
    assert create["train_mlp"] and create["train_attn"] and create["train_unembed"]


# ------------------------------------------------------------------------------ batches
def test_batches_hold_consecutive_examples_in_order_across_epochs(tmp_path, store, tinker_env):
    ep0 = [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]
    ep1 = [7, 2, 9, 4, 0, 1, 8, 3, 6, 5]
    export = write_export(tmp_path / "exp", [ep0, ep1], shard_sizes=[7, 7, 6])
    world = FakeTinkerWorld()
    train(export, store, TrainConfig(batch_size=4), run="b", service_factory=world.service)
    got = first_tokens(world.sent_batches())
    # a batch never spans two epochs: 4, 4, 2 per epoch
    assert got == [ep0[0:4], ep0[4:8], ep0[8:10], ep1[0:4], ep1[4:8], ep1[8:10]]
    # every example arrives whole: input + last target reconstruct the shard's tokens
    for batch in world.sent_batches():
        for toks in batch:
            assert toks[1:] == [7, 8, 9]
    steps = store.query(
        "SELECT step, epoch, examples, tokens, first_example, last_example FROM train_steps "
        "WHERE run = 'b' ORDER BY step"
    )
    assert steps["epoch"].to_list() == [0, 0, 0, 1, 1, 1]
    assert steps["examples"].to_list() == [4, 4, 2, 4, 4, 2]
    assert steps["tokens"].to_list() == [12, 12, 6, 12, 12, 6]
    assert steps["first_example"].to_list()[3] == f"d{ep1[0]}:0"


def test_loss_is_mean_nll_over_weighted_target_tokens(tmp_path, store, tinker_env):
    export = write_export(tmp_path / "exp", [list(range(6))])
    world = FakeTinkerWorld()
    train(export, store, TrainConfig(batch_size=3), run="loss", service_factory=world.service)
    rec = store.query(
        "SELECT step, loss, loss_tokens FROM train_steps WHERE run='loss' ORDER BY step"
    )
    # the fake's log-probability is -(1 + step/1000) at every position: the weighted mean too
    assert rec["loss"].to_list() == pytest.approx([1.0, 1.001])
    assert rec["loss_tokens"].to_list() == pytest.approx([3 * 2.5, 3 * 2.5])


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoints_land_on_schedule(tmp_path, store, tinker_env):
    export = write_export(tmp_path / "exp", [list(range(10)), list(range(10))])
    world = FakeTinkerWorld()
    cfg = TrainConfig(batch_size=4, save_every=2)
    plan = plan_run(export, cfg, "ck")
    assert plan.total_steps == 6 and plan.epoch_end_steps == [3, 6]
    assert plan.checkpoint_steps == [2, 3, 4, 6]
    train(export, store, cfg, run="ck", service_factory=world.service)
    assert world.names("save_state") == [f"step-{s:06d}" for s in (2, 3, 4, 6)]
    assert world.names("save_weights_for_sampler") == world.names("save_state")
    # a state named for step s holds exactly s trained steps (saved before step s is sent)
    assert sorted(world.states.values()) == [2, 3, 4, 6]
    for path, steps in world.states.items():
        assert path.endswith(f"step-{steps:06d}")
    ck = store.query(
        "SELECT step, epoch, kind, state_path, sampler_path FROM checkpoints ORDER BY step"
    )
    assert ck["step"].to_list() == [2, 3, 4, 6]
    assert ck["kind"].to_list() == ["periodic", "epoch_end", "periodic", "final"]
    assert ck["epoch"].to_list() == [0, 0, 1, 1]
    assert all(p.startswith("tinker://") for p in ck["sampler_path"].to_list())


# ------------------------------------------------------------------------------ resume
def test_failed_run_resumes_with_exactly_the_remaining_batches(tmp_path, store, tinker_env):
    ids = list(range(20))
    export = write_export(tmp_path / "exp", [ids], shard_sizes=[9, 11])
    cfg = TrainConfig(batch_size=2, save_every=3)  # 10 steps; checkpoints 3, 6, 9, 10
    plan_batches = [ids[i : i + 2] for i in range(0, 20, 2)]
    world = FakeTinkerWorld(fail_at_step=6)  # fails on the first step after checkpoint 6
    with pytest.raises(TinkerUnavailable, match="training step 6"):
        train(export, store, cfg, run="r", service_factory=world.service)
    first_run = first_tokens(world.sent_batches())
    # steps 0..5 trained, step 6 failed; step 7 was already submitted (pipeline depth 2)
    assert first_run == plan_batches[:8]
    status = store.query("SELECT status, steps_done FROM train_runs WHERE run='r'")
    assert status.row(0) == ("failed", 6)
    assert world.calls[-1] == ("close", "errored")  # the session is finished, not left open

    world.calls.clear()
    world.fail_at_step = None
    res = train(export, store, cfg, run="r", service_factory=world.service)
    assert res.status == "finished" and res.start_step == 6
    resumed = [c for c in world.calls if c[0] == "create_training_client_from_state_with_optimizer"]
    assert len(resumed) == 1 and resumed[0][1].endswith("step-000006")
    assert not [c for c in world.calls if c[0] == "create_lora_training_client"]
    assert first_tokens(world.sent_batches()) == plan_batches[6:]
    # the resumed steps carry the learning rates of the same schedule
    assert world.sent_lrs() == pytest.approx(plan_run(export, cfg).learning_rates[6:])
    steps = store.query("SELECT step FROM train_steps WHERE run='r' ORDER BY step")
    assert steps["step"].to_list() == list(range(10))
    assert world.calls[-1] == ("close", "success")


def _spy_shard_reads(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """(names of the shards decoded, names of the shards hashed) by ``read_export``."""
    import sdfkit.export.verify as export_mod

    decoded: list[str] = []
    hashed: list[str] = []
    real_read, real_hash = export_mod._read_shard, export_mod.file_sha256

    def read(path):
        decoded.append(Path(path).name)
        return real_read(path)

    def sha(path):
        hashed.append(Path(path).name)
        return real_hash(path)

    monkeypatch.setattr(export_mod, "_read_shard", read)
    monkeypatch.setattr(export_mod, "file_sha256", sha)
    return decoded, hashed


def test_resume_seeks_to_its_shard_without_reading_the_earlier_ones(tmp_path, monkeypatch):
    from sdfkit.export.verify import VerifyError, read_export
    from sdfkit.train.run import iter_examples, open_export

    export = write_export(tmp_path / "exp", [list(range(10)), list(range(10))], [6, 5, 4, 5])
    full = list(read_export(export)[1])
    assert len(full) == 20
    decoded, hashed = _spy_shard_reads(monkeypatch)
    start = 13  # the 3rd example of the 3rd shard (rows 11..14)
    tail = list(iter_examples(open_export(export), start))
    assert len(tail) == len(full) - start
    for got, want in zip(tail, full[start:], strict=True):
        assert got.keys() == want.keys()
        assert got["tokens"].tolist() == want["tokens"].tolist()
        assert got["weights"].tolist() == want["weights"].tolist()
        assert {k: v for k, v in got.items() if k not in ("tokens", "weights")} == {
            k: v for k, v in want.items() if k not in ("tokens", "weights")
        }
    # only the shard holding row 13 and the ones after it were decoded, and hash-checked
    assert decoded == ["shard-00002.parquet", "shard-00003.parquet"]
    assert hashed == ["shard-00002.parquet", "shard-00003.parquet"]
    # at a shard boundary and at the very end
    assert [e["example_id"] for e in read_export(export, start=11)[1]] == [
        e["example_id"] for e in full[11:]
    ]
    assert list(read_export(export, start=20)[1]) == []
    with pytest.raises(VerifyError, match="beyond the export's 20 examples"):
        read_export(export, start=21)
    # the shards it reads are still checked against the manifest before anything is yielded
    data = bytearray((export / "shard-00003.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (export / "shard-00003.parquet").write_bytes(bytes(data))
    with pytest.raises(VerifyError, match="shard-00003.parquet: sha256 differs"):
        read_export(export, start=start)


def test_resumed_training_reads_only_the_shards_it_still_needs(
    tmp_path, store, tinker_env, monkeypatch
):
    ids = list(range(24))
    export = write_export(tmp_path / "exp", [ids], shard_sizes=[8, 8, 8])
    cfg = TrainConfig(batch_size=2, save_every=9)  # 12 steps; checkpoints 9, 12
    world = FakeTinkerWorld(fail_at_step=10)
    with pytest.raises(TinkerUnavailable):
        train(export, store, cfg, run="seek", service_factory=world.service)
    world.calls.clear()
    world.fail_at_step = None
    decoded, _ = _spy_shard_reads(monkeypatch)
    res = train(export, store, cfg, run="seek", service_factory=world.service)
    assert res.status == "finished" and res.start_step == 9
    # step 9 starts at row 18, in the 3rd shard: exactly rows 18.. are sent
    assert first_tokens(world.sent_batches()) == [ids[i : i + 2] for i in range(18, 24, 2)]
    assert decoded == ["shard-00002.parquet"]


def test_failure_between_checkpoints_resends_only_what_the_state_lacks(tmp_path, store, tinker_env):
    ids = list(range(20))
    export = write_export(tmp_path / "exp", [ids])
    cfg = TrainConfig(batch_size=2, save_every=4)  # checkpoints 4, 8, 10
    world = FakeTinkerWorld(fail_at_step=7)
    with pytest.raises(TinkerUnavailable):
        train(export, store, cfg, run="r2", service_factory=world.service)
    world.calls.clear()
    world.fail_at_step = None
    train(export, store, cfg, run="r2", service_factory=world.service)
    # state step-4 holds steps 0..3: steps 4.. are sent again, nothing before
    assert first_tokens(world.sent_batches()) == [ids[i : i + 2] for i in range(8, 20, 2)]
    steps = store.query("SELECT step, count(*) AS n FROM train_steps WHERE run='r2' GROUP BY step")
    assert sorted(steps["step"].to_list()) == list(range(10)) and set(steps["n"]) == {1}


def test_finished_run_is_not_sent_again(tmp_path, store, tinker_env):
    export = write_export(tmp_path / "exp", [list(range(4))])
    world = FakeTinkerWorld()
    cfg = TrainConfig(batch_size=2)
    train(export, store, cfg, run="f", service_factory=world.service)
    world.calls.clear()
    res = train(export, store, cfg, run="f", service_factory=world.service)
    assert res.status == "finished" and world.calls == []


def test_resume_with_other_settings_is_refused(tmp_path, store, tinker_env):
    export = write_export(tmp_path / "exp", [list(range(8))])
    world = FakeTinkerWorld(fail_at_step=2)
    with pytest.raises(TinkerUnavailable):
        train(export, store, TrainConfig(batch_size=2), run="s", service_factory=world.service)
    with pytest.raises(TrainError, match="batch_size 2 -> 4"):
        train(export, store, TrainConfig(batch_size=4), run="s", service_factory=world.service)


# ------------------------------------------------------------------------------ refusals
def test_tokenizer_mismatch_is_refused_in_one_sentence(tmp_path):
    export = write_export(tmp_path / "exp", [[0, 1]], tokenizer="qwen3")
    with pytest.raises(TrainError) as ei:
        plan_run(export, TrainConfig())
    msg = str(ei.value)
    assert "'qwen3'" in msg and "o200k_harmony" in msg and msg.count(". ") == 0
    # Qwen3 matches; an unknown model says so
    plan_run(export, TrainConfig(base_model="Qwen/Qwen3-8B"))
    with pytest.raises(TrainError, match="does not know which tokenizer"):
        plan_run(export, TrainConfig(base_model="acme/mystery-7b"))
    plan_run(export, TrainConfig(base_model="acme/mystery-7b", model_tokenizer="qwen3"))


def test_missing_key_is_one_sentence_and_contacts_nothing(tmp_path, store, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no key stored by `tinker auth login`
    export = write_export(tmp_path / "exp", [[0, 1]])
    world = FakeTinkerWorld()
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    monkeypatch.delenv("TINKER_CREDENTIAL_CMD", raising=False)
    with pytest.raises(TinkerKeyMissing, match="TINKER_API_KEY is not set"):
        train(export, store, TrainConfig(batch_size=2), service_factory=world.service)
    assert world.calls == []


def test_missing_key_through_the_cli(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no key stored by `tinker auth login`
    export = write_export(tmp_path / "exp", [[0, 1]])
    res = cli("train", str(export), expect=2)
    assert "error: TINKER_API_KEY is not set" in res.output
    assert res.output.strip().count("\n") == 0


def test_unreachable_service_ends_with_a_sentence_not_a_hang(monkeypatch):
    # a port nobody listens on: refused at once
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    with pytest.raises(TinkerUnavailable, match="could not be reached"):
        check_health(f"http://127.0.0.1:{port}", timeout=1.0)
    assert time.monotonic() - t0 < 3
    # a port that accepts connections and never answers: the timeout sentence, on time
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        t0 = time.monotonic()
        with pytest.raises(TinkerUnavailable, match="did not answer its health check within 1 s"):
            check_health(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=1.0)
        assert time.monotonic() - t0 < 3
    finally:
        silent.close()


def test_silent_service_through_train_cli(tmp_path, cli, monkeypatch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setenv("TINKER_API_KEY", KEY)
    monkeypatch.setenv("TINKER_BASE_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
    export = write_export(tmp_path / "exp", [[0, 1]])
    try:
        t0 = time.monotonic()
        res = cli("train", str(export), "--health-timeout", "1", expect=2)
        assert time.monotonic() - t0 < 4
    finally:
        silent.close()
    assert "did not answer its health check within 1 s" in res.output
    assert KEY not in res.output


def test_a_call_that_never_returns_ends_at_the_deadline(tmp_path, store, tinker_env):
    export = write_export(tmp_path / "exp", [list(range(6))])
    world = FakeTinkerWorld(hang_at_step=1)
    t0 = time.monotonic()
    try:
        with pytest.raises(TinkerUnavailable, match=r"did not finish training step 1 within 1 s"):
            train(
                export,
                store,
                TrainConfig(batch_size=2, deadline=1.0),
                run="h",
                service_factory=world.service,
            )
        assert time.monotonic() - t0 < 4
    finally:
        world.release.set()
    assert store.query("SELECT status FROM train_runs WHERE run='h'").item() == "failed"


def test_key_never_reaches_disk(tmp_path, store, tinker_env):
    export = write_export(tmp_path / "exp", [list(range(4))])
    world = FakeTinkerWorld(fail_at_step=1)
    with pytest.raises(TinkerUnavailable) as ei:
        train(export, store, TrainConfig(batch_size=2), run="k", service_factory=world.service)
    assert KEY not in str(ei.value)
    for f in store.root.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f


# ------------------------------------------------------------------------------ dry run
def test_dry_run_json_through_the_cli(tmp_path, cli):
    export = write_export(tmp_path / "exp", [list(range(20)), list(range(20))])
    res = cli("train", str(export), "--dry-run", "--json", "--save-every", "2")
    plan = json.loads(res.output)
    assert plan["total_steps"] == 6
    assert len(plan["learning_rates"]) == 6
    assert plan["checkpoint_steps"] == [2, 3, 4, 6]
    assert plan["examples_per_step"] == [8, 8, 4, 8, 8, 4]
    assert plan["config"]["learning_rate"] == 3.5e-5 and plan["config"]["rank"] == 32
    text = cli("train", str(export), "--dry-run").output
    assert "nothing contacted" in text and "6 (3, 3 per epoch), batch size 8" in text
    assert "examples per step: 8, 4" in text
    assert not (tmp_path / "corpus").exists()  # a dry run writes nothing


def test_bad_export_names_the_file(tmp_path, store, tinker_env):
    export = write_export(tmp_path / "exp", [[0, 1, 2]])
    (export / "manifest.json").write_text("{not json")
    with pytest.raises(SdfError, match=r"manifest.json: not valid JSON"):
        plan_run(export)
    # a shard changed after the export is refused before anything is sent
    export = write_export(tmp_path / "exp2", [[0, 1, 2]])
    tbl = pq.read_table(export / "shard-00000.parquet")
    pq.write_table(tbl.slice(0, 2), export / "shard-00000.parquet")
    world = FakeTinkerWorld()
    with pytest.raises(SdfError, match=r"shard-00000.parquet: sha256 differs"):
        train(export, store, TrainConfig(batch_size=3), service_factory=world.service)
    assert world.calls == []


def test_a_run_trains_in_one_process_at_a_time(tmp_path, store, tinker_env):
    export = write_export(tmp_path / "exp", [list(range(6))])
    world = FakeTinkerWorld(hang_at_step=1)
    errors: list[BaseException] = []

    def first() -> None:
        try:
            train(
                export,
                store,
                TrainConfig(batch_size=2, deadline=3.0),
                run="one",
                service_factory=world.service,
            )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=first)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not world.sent_batches() and time.monotonic() < deadline:
            time.sleep(0.05)
        other = FakeTinkerWorld()
        with pytest.raises(TrainError, match="being trained by another process"):
            train(
                export, store, TrainConfig(batch_size=2), run="one", service_factory=other.service
            )
        assert other.calls == []
    finally:
        world.release.set()
        t.join(15)
    assert errors and isinstance(errors[0], TinkerUnavailable)


def test_failed_client_creation_is_recorded_and_the_session_closed(tmp_path, store, tinker_env):
    export = write_export(tmp_path / "exp", [list(range(4))])
    world = FakeTinkerWorld(fail_create=True)
    with pytest.raises(TinkerUnavailable, match="creating the LoRA training client.*no capacity"):
        train(export, store, TrainConfig(batch_size=2), run="c", service_factory=world.service)
    assert store.query("SELECT status FROM train_runs WHERE run='c'").item() == "failed"
    assert world.calls[-1] == ("close", "errored")


def test_state_saved_but_sampler_copy_failed_is_completed_on_resume(tmp_path, store, tinker_env):
    export = write_export(tmp_path / "exp", [list(range(8))])
    cfg = TrainConfig(batch_size=2, save_every=2)  # checkpoints 2, 4
    world = FakeTinkerWorld(fail_sampler={"step-000002"})
    with pytest.raises(TinkerUnavailable, match="saving sampler weights at step 2"):
        train(export, store, cfg, run="sp", service_factory=world.service)
    row = store.query("SELECT state_path, sampler_path FROM checkpoints WHERE run='sp'")
    assert row["state_path"].item().endswith("step-000002") and row["sampler_path"].item() is None
    world.fail_sampler.clear()
    world.calls.clear()
    train(export, store, cfg, run="sp", service_factory=world.service)
    assert world.names("save_weights_for_sampler") == ["step-000002", "step-000004"]
    assert first_tokens(world.sent_batches()) == [[4, 5], [6, 7]]
    ck = store.query("SELECT step, sampler_path FROM checkpoints WHERE run='sp' ORDER BY step")
    assert ck["step"].to_list() == [2, 4] and ck["sampler_path"].null_count() == 0


def test_train_through_the_cli_then_sql(tmp_path, cli, tinker_env, monkeypatch):
    import tinker

    export = write_export(tmp_path / "exp", [list(range(6))])
    world = FakeTinkerWorld()
    monkeypatch.setattr(tinker, "ServiceClient", world.service)  # the client-object boundary
    res = cli(
        "train", str(export), "--batch-size", "2", "--save-every", "2", "--weight-decay", "0.1"
    )
    assert "run 'exp-gpt-oss-20b': finished, step 3 of 3" in res.output
    assert all(p.weight_decay == 0.1 for p in (c[1] for c in world.calls if c[0] == "optim_step"))
    out = cli(
        "sql", "SELECT count(*) AS n, round(sum(loss), 3) AS s FROM train_steps", "--format", "csv"
    )
    assert out.output.strip().splitlines()[-1] == "3,3.003"


# ------------------------------------------------------------- the service as it behaves
@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.create_lora_training_client(base_model="m", rnak=8),
        lambda s: s.create_lora_training_client(base_model="m").result().optim_step(params=None),
        lambda s: (
            s.create_sampling_client(base_model="m")
            .result()
            .sample(prompt=None, num_samples=1, sampling_params=None, topk_logprobs=5)
        ),
        lambda s: s.create_lora_training_client(base_model="m").result().save_state("x", ttl=3600),
    ],
    ids=["rnak", "optim_step-params", "sample-topk_logprobs", "save_state-ttl"],
)
def test_the_fake_refuses_what_the_real_sdk_refuses(call):
    with pytest.raises(TypeError):
        call(FakeTinkerWorld().service())


def test_the_fake_refuses_a_checkpoint_ttl_the_service_refuses():
    client = FakeTinkerWorld().service().create_lora_training_client(base_model="m").result()
    with pytest.raises(Exception, match="at least 3600"):
        client.save_state("x", ttl_seconds=60).result()
    assert client.save_state("x", ttl_seconds=3600).result().path.endswith("/x")


def test_checkpoint_ttl_is_range_checked_before_anything_is_paid(tmp_path, cli, monkeypatch):
    import tinker

    with pytest.raises(TrainError, match="checkpoint_ttl_seconds must be at least 3600"):
        TrainConfig(checkpoint_ttl_seconds=600)
    TrainConfig(checkpoint_ttl_seconds=3600)
    monkeypatch.setenv("TINKER_API_KEY", KEY)
    world = FakeTinkerWorld()
    monkeypatch.setattr(tinker, "ServiceClient", world.service)
    export = write_export(tmp_path / "exp", [[0, 1, 2, 3]])
    res = cli("train", str(export), "--checkpoint-ttl", "60", expect=2)
    assert "--checkpoint-ttl must be at least 3600" in res.output
    assert res.output.strip().count("\n") == 0 and world.calls == []


def test_the_default_deadline_outlasts_the_queue_pauses_the_sdk_treats_as_normal():
    from tinker.lib.queue_state_logger import PAUSE_GRACE_PERIOD

    from sdfkit.evaluate.recall import EvalConfig

    assert TrainConfig().deadline >= max(30 * 60, PAUSE_GRACE_PERIOD)
    assert EvalConfig().deadline >= max(30 * 60, PAUSE_GRACE_PERIOD)


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("queue_at_step", r"kept the request queued \(paused_capacity: Tinker backend is running"),
        ("unavailable_at_step", r"kept answering HTTP 503"),
        ("hang_at_step", r"the service sent no answer"),
    ],
)
def test_a_deadline_says_whether_the_service_queued_failed_or_was_silent(
    tmp_path, store, tinker_env, caplog, fault, said
):
    import logging

    # caplog's handler takes every level; the loggers keep theirs (root: WARNING)
    export = write_export(tmp_path / "exp", [list(range(6))])
    world = FakeTinkerWorld(**{fault: 1})
    try:
        with pytest.raises(TinkerUnavailable, match=said) as err:
            train(
                export,
                store,
                TrainConfig(batch_size=2, deadline=1.0),
                run="q",
                service_factory=world.service,
            )
    finally:
        world.release.set()
    assert "within 1 s (--deadline)" in str(err.value) and "rerun" in str(err.value)
    # what we read of the SDK's debug log stayed with us: the user's handlers saw none of it
    assert not [r for r in caplog.records if r.name == "tinker._base_client"]
    assert logging.getLogger("tinker._base_client").level == logging.NOTSET


def test_an_sdk_record_made_in_a_watch_but_handled_after_it_stays_with_us(caplog):
    # The SDK's poll thread can make a DEBUG record while we watch (the logger at DEBUG) and
    # hand it to the logger's handlers only after the watch ended: it must not reach the
    # user's handlers then either (it did, now and then, in the deadline test above).
    import logging

    from sdfkit.train.tinker_watch import HTTP_LOGGER, watch

    logger = logging.getLogger(HTTP_LOGGER)
    with watch() as seen:
        assert logger.isEnabledFor(logging.DEBUG)
        late = logger.makeRecord(
            HTTP_LOGGER,
            logging.DEBUG,
            __file__,
            1,
            'HTTP Response: %s %s "%i %s" %s',
            ("POST", "https://t", 503, "No", {}),
            None,
        )
        logger.debug('HTTP Response: %s %s "%i %s" %s', "POST", "https://t", 503, "No", {})
    assert seen.last_status == 503 and seen.server_errors == 1
    logger.handle(late)  # the SDK's thread loses the race
    assert not [r for r in caplog.records if r.name == HTTP_LOGGER]
    logger.warning("the user's level lets this through")
    assert [r.getMessage() for r in caplog.records if r.name == HTTP_LOGGER] == [
        "the user's level lets this through"
    ]
    assert logger.level == logging.NOTSET


def _store_login_key(home: Path, key: str) -> None:
    """What `tinker auth login` leaves behind, written by the SDK's own credential store."""
    from tinker.lib import credentials

    path = home / ".tinker" / "credentials.json"
    store = credentials.JsonCredentialStore(path)
    store.add_key("default", credentials.ManualKey(key=key, name="default"))
    store.set_default("default")


def test_credentials_stored_by_tinker_auth_login_are_accepted(
    tmp_path, store, monkeypatch, health_server
):
    from sdfkit.train.service import require_key, scrub

    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    monkeypatch.delenv("TINKER_CREDENTIAL_CMD", raising=False)
    monkeypatch.setenv("TINKER_BASE_URL", health_server)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(TinkerKeyMissing, match="tinker auth login"):
        require_key()
    stored = "tml-stored-by-login-5678"
    _store_login_key(home, stored)
    require_key()
    assert stored not in scrub(f"failed with key {stored}")
    export = write_export(tmp_path / "exp", [list(range(4))])
    world = FakeTinkerWorld()
    res = train(export, store, TrainConfig(batch_size=2), run="cred", service_factory=world.service)
    assert res.status == "finished"
    (home / ".tinker" / "credentials.json").write_text("{not json")
    with pytest.raises(TinkerKeyMissing, match=r"credentials.json: the Tinker credentials file"):
        require_key()


def test_refused_credentials_do_not_advise_a_rerun(tmp_path, store, tinker_env):
    import httpx
    import tinker

    request = httpx.Request("POST", "https://tinker.test/api/v1/create_model")
    refused = tinker.AuthenticationError(
        "invalid API key", response=httpx.Response(401, request=request), body=None
    )
    export = write_export(tmp_path / "exp", [list(range(4))])
    for exc in (refused, ValueError("Error retrieving result: denied with status 401 for x")):
        world = FakeTinkerWorld(fail_create=exc)
        with pytest.raises(TinkerKeyMissing, match="refused the credentials") as err:
            train(export, store, TrainConfig(batch_size=2), run="a", service_factory=world.service)
        assert "rerun" not in str(err.value) and "TINKER_API_KEY" in str(err.value)


def test_the_watch_hears_sampling_queue_pauses_and_leaves_the_sdk_as_it_was():
    from types import SimpleNamespace

    from tinker.lib.api_future_impl import QueueState
    from tinker.lib.public_interfaces.sampling_client import SamplingClient

    from sdfkit.train.tinker_watch import watch

    original = SamplingClient.__dict__["on_queue_state_change"]
    sampler = SimpleNamespace(_last_queue_state_logged=0.0, _sampling_session_id="s-1")
    with watch() as seen:
        SamplingClient.on_queue_state_change(sampler, QueueState.PAUSED_RATE_LIMIT, None)
        assert "queued (paused_rate_limit)" in seen.describe()
        SamplingClient.on_queue_state_change(sampler, QueueState.ACTIVE, None)
        assert seen.describe() == "the service sent no answer"
    assert SamplingClient.__dict__["on_queue_state_change"] is original
