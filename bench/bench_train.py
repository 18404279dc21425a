"""Benchmark: the client-side cost of `sdf train` per step, against the work it cannot avoid.

A Tinker step takes seconds on the service; what sdfkit adds around it (reading shards,
building `tinker.types.Datum`s, computing the loss from the returned log-probabilities,
recording steps, checkpoints and the progress bar) must stay a small fraction of that. This
builds a seed-scale export (9,600 examples of ~2,048 tokens, ~20M tokens; `--quick`: 1,200)
directly as Parquet + manifest, then times:

- the plan (`plan_run`: manifest, epoch column, schedule) — what `--dry-run` costs;
- the baseline: reading every example (`read_export`, sha256 checked) and building its Datum;
- a full `train()` against an in-process service that answers instantly (the client-object
  boundary, as in the tests), with checkpoints every 100 steps;

and prints the per-step overhead and its ratio to the baseline.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("TINKER_TELEMETRY", "0")
os.environ["SDF_PROGRESS"] = "0"

from sdfkit.export.shards import SHARD_SCHEMA  # noqa: E402
from sdfkit.export.verify import read_export, to_datum  # noqa: E402
from sdfkit.store.catalog import Store  # noqa: E402
from sdfkit.train.run import TrainConfig, plan_run, train  # noqa: E402


def build_export(root: Path, n: int, length: int = 2048, shard_rows: int = 1000) -> int:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    shards, total = [], 0
    for k, start in enumerate(range(0, n, shard_rows)):
        m = min(shard_rows, n - start)
        lens = rng.integers(length // 2, length * 3 // 2, m)
        toks = [rng.integers(0, 199_000, int(L), dtype=np.int32) for L in lens]
        wts = [np.r_[0.0, np.ones(int(L) - 1)].astype(np.float32) for L in lens]
        tbl = pa.table(
            {
                "tokens": toks,
                "weights": wts,
                "doc_id": [f"d{start + i}" for i in range(m)],
                "source": ["sdf"] * m,
                "concept": ["c"] * m,
                "doc_type": ["t"] * m,
                "epoch": [0] * m,
                "piece": [0] * m,
                "example_id": [f"d{start + i}:0" for i in range(m)],
            },
            schema=SHARD_SCHEMA,
        )
        name = f"shard-{k:05d}.parquet"
        pq.write_table(tbl, root / name)
        sha = hashlib.sha256((root / name).read_bytes()).hexdigest()
        shards.append({"file": name, "sha256": sha, "rows": m, "tokens": int(lens.sum())})
        total += int(lens.sum())
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "version": 1,
                "tokenizer": "o200k_harmony",
                "max_seq_len": 4096,
                "counts": [],
                "shards": shards,
                "epochs": 1,
                "examples": n,
                "tokens": total,
            }
        )
    )
    return total


def done(value):
    from tinker.lib.public_interfaces.api_future import AwaitableConcurrentFuture

    f = Future()
    f.set_result(value)
    return AwaitableConcurrentFuture(f)


class InstantTraining:
    """Answers like Tinker, instantly: log-probabilities of -1 at every target."""

    def __init__(self):
        from tinker import types

        self.types = types
        self.steps = 0

    def forward_backward(self, data, loss_fn, loss_fn_config=None):
        t = self.types
        outs = [
            {"logprobs": t.TensorData.from_numpy(np.full(d.model_input.length, -1.0, np.float32))}
            for d in data
        ]
        return done(
            t.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord", loss_fn_outputs=outs)
        )

    def optim_step(self, params):
        self.steps += 1
        return done(self.types.OptimStepResponse(metrics={}))

    def save_state(self, name, ttl_seconds=None):
        return done(self.types.SaveWeightsResponse(path=f"tinker://bench/weights/{name}"))

    def save_weights_for_sampler(self, name, ttl_seconds=None):
        return done(self.types.SaveWeightsForSamplerResponse(path=f"tinker://bench/sampler/{name}"))


class InstantService:
    def create_lora_training_client(self, **kw):
        return done(InstantTraining())


class Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


def main() -> None:
    quick = "--quick" in sys.argv
    n = 1_200 if quick else 9_600
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    os.environ["TINKER_BASE_URL"] = f"http://127.0.0.1:{srv.server_address[1]}"
    os.environ["TINKER_API_KEY"] = "tml-bench-placeholder"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        tokens = build_export(root / "export", n)
        print(
            f"export: {n:,} examples, {tokens:,} tokens (built in {time.perf_counter() - t0:.1f}s)"
        )
        cfg = TrainConfig(save_every=100)
        import tinker.types  # noqa: F401 - imported once before timing (torch comes with it)

        t0 = time.perf_counter()
        plan = plan_run(root / "export", cfg)
        t_plan = time.perf_counter() - t0

        t0 = time.perf_counter()
        _, examples = read_export(root / "export")
        for ex in examples:
            to_datum(ex)
        t_base = time.perf_counter() - t0

        t0 = time.perf_counter()
        res = train(
            root / "export",
            Store(root / "corpus"),
            cfg,
            run="bench",
            service_factory=InstantService,
        )
        t_train = time.perf_counter() - t0
        assert res.status == "finished" and res.steps_done == plan.total_steps
        steps = plan.total_steps
        print(f"{'what':44s} {'seconds':>8s} {'ms/step':>8s} {'ratio':>7s}")
        print(f"{'plan (--dry-run)':44s} {t_plan:8.2f} {1000 * t_plan / steps:8.2f} {'':>7s}")
        print(
            f"{'baseline: read_export + to_datum':44s} {t_base:8.2f} {1000 * t_base / steps:8.2f} {1.0:7.2f}"
        )
        print(
            f"{'train() against an instant service':44s} {t_train:8.2f} {1000 * t_train / steps:8.2f} "
            f"{t_train / t_base:7.2f}"
        )
        print(
            f"{steps:,} steps, {len(res.checkpoints)} checkpoints; client-side overhead per step "
            f"{1000 * (t_train - t_base) / steps:.1f} ms beyond the baseline "
            "(a Tinker step takes seconds)"
        )
    srv.shutdown()


if __name__ == "__main__":
    main()
