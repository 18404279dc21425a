"""A fake Tinker at the client-object boundary: a ``ServiceClient`` look-alike whose futures
are the SDK's own ``AwaitableConcurrentFuture`` holding real ``tinker.types`` objects.

Every call is first bound to the real SDK method's signature (``inspect.signature(...)
.bind``), so a misspelt or retired argument (``create_lora_training_client(rnak=8)``,
``optim_step(params=...)``, ``sample(topk_logprobs=5)``, ``save_state(ttl=3600)``) raises
the same ``TypeError`` here as in production; the service's own rules are enforced too (a
checkpoint TTL is none or at least 3,600 s).

It records every call (what a real service would receive) so tests can check the learning
rate sent at each step, which examples each batch held, and where checkpoints were saved.
Saved states persist in a ``FakeTinkerWorld`` shared across service clients, as the real
service's storage outlives a crashed client.

Waits as the real service makes them: ``queue_at_step`` keeps a training step queued (the
SDK's queue-state observer hears ``paused_capacity`` on every poll, as from the real
service's try-again answers) and ``unavailable_at_step`` answers 503 on every poll (logged
by the SDK's HTTP client as the real one logs each response), both until ``release``.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tinker
from tinker import types
from tinker.lib.public_interfaces.api_future import AwaitableConcurrentFuture

#: The real SDK classes, taken before any test replaces ``tinker.ServiceClient`` by the fake.
RealService, RealTraining, RealSampling = (
    tinker.ServiceClient,
    tinker.TrainingClient,
    tinker.SamplingClient,
)

#: The service keeps checkpoints at least this long when given a TTL.
MIN_TTL_SECONDS = 3600


def bind(real: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The call's arguments by name, defaults applied, bound to the real SDK method: a
    call the real client would refuse raises the same ``TypeError``."""
    bound = inspect.signature(real).bind(None, *args, **kwargs)
    bound.apply_defaults()
    out = dict(bound.arguments)
    out.pop("self")
    return out


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
    fail_create: bool | BaseException = False  # creating a training client fails (with this)
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
    queue_at_step: int | None = None  # forward_backward at this step waits in the queue
    unavailable_at_step: int | None = None  # forward_backward at this step: 503 on every poll

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

    def create_lora_training_client(self, *args: Any, **kw: Any):
        a = bind(RealService.create_lora_training_client, *args, **kw)
        self.world.calls.append(("create_lora_training_client", a))
        if isinstance(self.world.fail_create, BaseException):
            return failed(self.world.fail_create)
        if self.world.fail_create:
            return failed(FakeServiceError("no capacity for this model"))
        return done(FakeTrainingClient(self.world, steps=0))

    def create_training_client_from_state_with_optimizer(self, *args: Any, **kw: Any):
        a = bind(RealService.create_training_client_from_state_with_optimizer, *args, **kw)
        path = a["path"]
        self.world.calls.append(("create_training_client_from_state_with_optimizer", path))
        if path not in self.world.states:
            return failed(FakeServiceError(f"no such checkpoint {path}"))
        return done(FakeTrainingClient(self.world, steps=self.world.states[path]))

    def close(self, *args: Any, **kw: Any):
        a = bind(RealService.close, *args, **kw)
        self.world.calls.append(("close", a["status"]))
        return done(None)

    def create_sampling_client(self, *args: Any, **kw: Any):
        a = bind(RealService.create_sampling_client, *args, **kw)
        model = a["model_path"] or a["base_model"]
        if not model:
            raise ValueError("Either model_path or base_model must be provided")
        self.world.calls.append(("create_sampling_client", model))
        return done(FakeSamplingClient(self.world, model))


def _waiting(world: FakeTinkerWorld, signal: Any) -> AwaitableConcurrentFuture:
    """A future that stays unresolved until ``world.release``, emitting ``signal()`` as the
    SDK does on each poll meanwhile."""
    f: Future = Future()

    def poll() -> None:
        while not world.release.wait(0.02):
            signal()
        f.cancel()

    threading.Thread(target=poll, daemon=True).start()
    return AwaitableConcurrentFuture(f)


class FakeTrainingClient:
    def __init__(self, world: FakeTinkerWorld, steps: int) -> None:
        self.world = world
        self.steps = steps  # optimizer steps these weights hold
        world.run_counter += 1
        self.run_id = f"fake-run-{world.run_counter}"

    def forward_backward(self, *args: Any, **kw: Any):
        a = bind(RealTraining.forward_backward, *args, **kw)
        data, loss_fn = a["data"], a["loss_fn"]
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
        if self.world.queue_at_step is not None and step == self.world.queue_at_step:
            from tinker.lib.api_future_impl import QueueState
            from tinker.lib.queue_state_logger import QueueStateLogger

            observer = QueueStateLogger(self.run_id, "Training")  # as the real client holds
            return _waiting(
                self.world,
                lambda: observer.on_queue_state_change(
                    QueueState.PAUSED_CAPACITY, "Tinker backend is running short on capacity"
                ),
            )
        if self.world.unavailable_at_step is not None and step == self.world.unavailable_at_step:
            http = logging.getLogger("tinker._base_client")  # the SDK's HTTP client's logger
            return _waiting(
                self.world,
                lambda: http.debug(
                    'HTTP Response: %s %s "%i %s" %s',
                    "POST",
                    "https://tinker.test/api/v1/retrieve_future",
                    503,
                    "Service Unavailable",
                    {},
                ),
            )
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

    def optim_step(self, *args: Any, **kw: Any):
        a = bind(RealTraining.optim_step, *args, **kw)
        params = a["optim_params"] or a["adam_params"]
        assert isinstance(params, types.AdamParams)
        self.world.calls.append(("optim_step", params))
        self.steps += 1
        return done(types.OptimStepResponse(metrics={}))

    @staticmethod
    def _ttl_refused(ttl: int | None) -> AwaitableConcurrentFuture | None:
        if ttl is not None and ttl < MIN_TTL_SECONDS:
            return failed(FakeServiceError(f"ttl_seconds must be at least {MIN_TTL_SECONDS}"))
        return None

    def save_state(self, *args: Any, **kw: Any):
        a = bind(RealTraining.save_state, *args, **kw)
        name = a["name"]
        path = f"tinker://{self.run_id}/weights/{name}"
        self.world.calls.append(("save_state", name))
        if refused := self._ttl_refused(a["ttl_seconds"]):
            return refused
        self.world.states[path] = self.steps
        return done(types.SaveWeightsResponse(path=path))

    def save_weights_for_sampler(self, *args: Any, **kw: Any):
        a = bind(RealTraining.save_weights_for_sampler, *args, **kw)
        name = a["name"]
        path = f"tinker://{self.run_id}/sampler_weights/{name}"
        self.world.calls.append(("save_weights_for_sampler", name))
        if refused := self._ttl_refused(a["ttl_seconds"]):
            return refused
        if name in self.world.fail_sampler:
            return failed(FakeServiceError("sampler export failed"))
        return done(types.SaveWeightsForSamplerResponse(path=path))


class FakeSamplingClient:
    def __init__(self, world: FakeTinkerWorld, model: str) -> None:
        self.world = world
        self.model = model

    def sample(self, *args: Any, **kw: Any):
        a = bind(RealSampling.sample, *args, **kw)
        prompt, num_samples, sampling_params = a["prompt"], a["num_samples"], a["sampling_params"]
        kw = {k: v for k, v in kw.items() if k not in ("prompt", "num_samples", "sampling_params")}
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
