"""A fake Tinker at the client-object boundary: a ``ServiceClient`` look-alike whose futures
are the SDK's own ``AwaitableConcurrentFuture`` holding real ``tinker.types`` objects.

It records every call (what a real service would receive) so tests can check the learning
rate sent at each step, which examples each batch held, and where checkpoints were saved.
Saved states persist in a ``FakeTinkerWorld`` shared across service clients, as the real
service's storage outlives a crashed client.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tinker import types
from tinker.lib.public_interfaces.api_future import AwaitableConcurrentFuture


def done(value: Any) -> AwaitableConcurrentFuture:
    f: Future = Future()
    f.set_result(value)
    return AwaitableConcurrentFuture(f)


def failed(exc: BaseException) -> AwaitableConcurrentFuture:
    f: Future = Future()
    f.set_exception(exc)
    return AwaitableConcurrentFuture(f)


class FakeServiceError(RuntimeError):
    pass


@dataclass
class FakeTinkerWorld:
    """State that outlives one client: saved checkpoints and the log of calls."""

    states: dict[str, int] = field(default_factory=dict)  # state path -> steps trained
    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail_at_step: int | None = None  # forward_backward at this many trained steps raises
    hang_at_step: int | None = None  # forward_backward at this many trained steps never returns
    release: threading.Event = field(default_factory=threading.Event)
    fail_create: bool = False  # creating a training client fails
    fail_sampler: set[str] = field(default_factory=set)  # sampler saves of these names fail
    run_counter: int = 0
    # sampling: fn(model, prompt tokens, num_samples, SamplingParams, kwargs) -> SampleResponse
    sampler: Any = None
    # short responses, as a busy service may send: the n-th sample call returns
    # short_by[n] fewer sequences than asked, later calls short_by_default fewer
    short_by: list[int] = field(default_factory=list)
    short_by_default: int = 0
    fail_sample_calls: set[int] = field(default_factory=set)  # these sample calls fail
    sample_calls: int = 0

    def service(self) -> FakeServiceClient:
        return FakeServiceClient(self)

    def sent_batches(self) -> list[list[list[int]]]:
        """Full token lists of every example of every forward_backward, in order."""
        return [c[1]["tokens"] for c in self.calls if c[0] == "forward_backward"]

    def sent_lrs(self) -> list[float]:
        return [c[1].learning_rate for c in self.calls if c[0] == "optim_step"]

    def names(self, kind: str = "save_state") -> list[str]:
        return [c[1] for c in self.calls if c[0] == kind]


class FakeServiceClient:
    def __init__(self, world: FakeTinkerWorld) -> None:
        self.world = world

    def create_lora_training_client(self, base_model: str, rank: int = 32, **kw: Any):
        self.world.calls.append(
            ("create_lora_training_client", {"base_model": base_model, "rank": rank, **kw})
        )
        if self.world.fail_create:
            return failed(FakeServiceError("no capacity for this model"))
        return done(FakeTrainingClient(self.world, steps=0))

    def create_training_client_from_state_with_optimizer(self, path: str, **kw: Any):
        self.world.calls.append(("create_training_client_from_state_with_optimizer", path))
        if path not in self.world.states:
            return failed(FakeServiceError(f"no such checkpoint {path}"))
        return done(FakeTrainingClient(self.world, steps=self.world.states[path]))

    def close(self, status: str, detail: str | None = None):
        self.world.calls.append(("close", status))
        return done(None)

    def create_sampling_client(
        self, model_path: str | None = None, base_model: str | None = None, **kw: Any
    ):
        self.world.calls.append(("create_sampling_client", model_path or base_model))
        return done(FakeSamplingClient(self.world, model_path or base_model or ""))


class FakeTrainingClient:
    def __init__(self, world: FakeTinkerWorld, steps: int) -> None:
        self.world = world
        self.steps = steps  # optimizer steps these weights hold
        world.run_counter += 1
        self.run_id = f"fake-run-{world.run_counter}"

    def forward_backward(self, data: list[types.Datum], loss_fn: str, loss_fn_config: Any = None):
        step = self.steps
        tokens = [
            d.model_input.to_ints() + [int(d.loss_fn_inputs["target_tokens"].to_numpy()[-1])]
            for d in data
        ]
        self.world.calls.append(
            ("forward_backward", {"step": step, "tokens": tokens, "loss_fn": loss_fn})
        )
        if self.world.fail_at_step is not None and step == self.world.fail_at_step:
            return failed(FakeServiceError(f"injected failure at step {step}"))
        if self.world.hang_at_step is not None and step == self.world.hang_at_step:
            f: Future = Future()  # resolved only when the test releases it
            threading.Thread(
                target=lambda: (self.world.release.wait(), f.cancel()), daemon=True
            ).start()
            return AwaitableConcurrentFuture(f)
        outs = []
        for d in data:
            n = d.model_input.length
            lp = np.full(n, -(1.0 + step / 1000.0), dtype=np.float32)  # known log-probabilities
            outs.append({"logprobs": types.TensorData.from_numpy(lp)})
        return done(
            types.ForwardBackwardOutput(
                loss_fn_output_type="ArrayRecord", loss_fn_outputs=outs, metrics={}
            )
        )

    def optim_step(self, params: Any = None, **kw: Any):
        params = params or kw.get("adam_params")
        assert isinstance(params, types.AdamParams)
        self.world.calls.append(("optim_step", params))
        self.steps += 1
        return done(types.OptimStepResponse(metrics={}))

    def save_state(self, name: str, ttl_seconds: int | None = None, **kw: Any):
        path = f"tinker://{self.run_id}/weights/{name}"
        self.world.calls.append(("save_state", name))
        self.world.states[path] = self.steps
        return done(types.SaveWeightsResponse(path=path))

    def save_weights_for_sampler(self, name: str, ttl_seconds: int | None = None, **kw: Any):
        path = f"tinker://{self.run_id}/sampler_weights/{name}"
        self.world.calls.append(("save_weights_for_sampler", name))
        if name in self.world.fail_sampler:
            return failed(FakeServiceError("sampler export failed"))
        return done(types.SaveWeightsForSamplerResponse(path=path))


class FakeSamplingClient:
    def __init__(self, world: FakeTinkerWorld, model: str) -> None:
        self.world = world
        self.model = model

    def sample(
        self,
        prompt: types.ModelInput,
        num_samples: int,
        sampling_params: types.SamplingParams,
        **kw: Any,
    ):
        toks = prompt.to_ints()
        w = self.world
        w.calls.append(
            ("sample", {"model": self.model, "prompt": toks, "num_samples": num_samples, **kw})
        )
        if w.sampler is None:
            return failed(FakeServiceError("no sampler configured in the fake"))
        resp = w.sampler(self.model, toks, num_samples, sampling_params, kw)
        n = w.sample_calls
        w.sample_calls += 1
        if n in w.fail_sample_calls:
            return failed(FakeServiceError(f"injected failure of sample call {n}"))
        short = w.short_by[n] if n < len(w.short_by) else w.short_by_default
        if short:
            keep = max(len(resp.sequences) - short, 0)
            resp = dataclasses.replace(resp, sequences=list(resp.sequences[:keep]))
        return done(resp)
