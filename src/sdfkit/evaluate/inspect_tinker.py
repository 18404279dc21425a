"""An inspect-ai model provider over a Tinker ``SamplingClient``, with sdfkit's chat renderer.

inspect-ai tasks (IFEval, MMLU-Pro, any inspect-evals task, or your own) talk to a model
through a ``ModelAPI``. This one renders inspect's chat messages with ``sdfkit.llm.chat`` (the
format the checkpoint was trained and is evaluated in), samples with the format's stop tokens,
and hands back the final answer as the completion and the reasoning channel as inspect
``ContentReasoning`` (so scorers read the answer, not the thinking).

Importing this module imports inspect-ai: only ``sdfkit.evaluate.capabilities`` does, inside the
commands that need it. Registered as ``sdfkit`` for ``get_model("sdfkit/<base model>",
sampling_client=..., renderer=...)``; ``sdfkit.evaluate.capabilities`` builds the ``Model`` directly.
"""

from __future__ import annotations

import asyncio
from typing import Any

from inspect_ai.model import (
    ChatMessage,
    ChatMessageAssistant,
    ContentReasoning,
    ContentText,
    GenerateConfig,
    Model,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    modelapi,
)
from inspect_ai.model._model_output import ChatCompletionChoice
from inspect_ai.tool import ToolChoice, ToolInfo

from sdfkit.errors import SdfError

#: Tinker stop reasons -> inspect's.
STOP_REASONS = {"stop": "stop", "length": "max_tokens"}


class UnsupportedRequest(SdfError):
    """An inspect task asked for something this provider cannot do (tools, images...)."""


def to_messages(input: list[ChatMessage]) -> list[dict[str, str]]:
    """inspect chat messages as sdfkit ``{"role", "content"}`` messages (text only)."""
    out = []
    for m in input:
        if m.role not in ("system", "user", "assistant"):
            raise UnsupportedRequest(
                f"the task sent a {m.role!r} message: sdfkit's Tinker provider serves "
                "text chat tasks only (no tools)"
            )
        if not isinstance(m.content, str) and any(
            c.type not in ("text", "reasoning") for c in m.content
        ):
            raise UnsupportedRequest("the task sent non-text content (images, audio...)")
        out.append({"role": m.role, "content": m.text})
    return out


@modelapi(name="sdfkit")
class TinkerSamplingAPI(ModelAPI):
    """inspect ``ModelAPI`` over one Tinker sampling client (a checkpoint or a base model)."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),  # noqa: B008 - inspect's own signature
        *,
        sampling_client: Any = None,
        renderer: Any = None,
        max_tokens: int = 2048,
        temperature: float = 1.0,
        deadline: float = 600.0,
        on_sample: Any = None,
        cache: Any = None,
    ) -> None:
        super().__init__(model_name, base_url, api_key, [], config)
        if sampling_client is None or renderer is None:
            raise UnsupportedRequest(
                "the sdfkit provider needs sampling_client= and renderer= (use "
                "sdfkit.evaluate.capabilities, or pass them as model args)"
            )
        # underscored: ModelAPI has methods named max_tokens, ...
        self._client = sampling_client
        self._renderer = renderer
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._deadline = deadline
        self._on_sample = on_sample  # called with (prompt tokens, completion tokens)
        self._stop = renderer.stop_ids()
        self._cache = (
            cache  # sdfkit.evaluate.capabilities.SampleCache: completions already paid for
        )

    def max_tokens(self) -> int | None:
        return self._max_tokens  # used when the task sets none

    def max_connections(self) -> int:
        return 32  # Tinker queues requests itself; many in flight keep it busy

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        from tinker import types

        from sdfkit.evaluate.sampling import prompt_tokens
        from sdfkit.train.service import within

        if tools:
            raise UnsupportedRequest("the task offers tools: sdfkit's Tinker provider has none")
        messages = to_messages(input)
        if not messages or messages[-1]["role"] != "user":
            raise UnsupportedRequest("the task's conversation must end with a user message")
        tokens = prompt_tokens(self._renderer, messages)
        params = types.SamplingParams(
            max_tokens=config.max_tokens or self._max_tokens,
            temperature=self._temperature if config.temperature is None else config.temperature,
            stop=self._stop,
            seed=config.seed,
            top_p=1.0 if config.top_p is None else config.top_p,  # a task's own settings
            top_k=-1 if config.top_k is None else config.top_k,
        )

        key, occurrence, hit = None, 0, None
        if self._cache is not None:
            key = self._cache.key(tokens, params)
            occurrence, hit = self._cache.claim(key)

        def call() -> Any:
            resp = self._client.sample(
                prompt=types.ModelInput.from_ints(tokens), num_samples=1, sampling_params=params
            ).result()
            if key is not None and resp.sequences:  # kept here: even if inspect cancels us now
                seq = resp.sequences[0]
                self._cache.add(key, occurrence, len(tokens), list(seq.tokens), seq.stop_reason)
            return resp

        if hit is not None:
            completion, stop_reason = hit
        else:
            what = f"sampling {self.model_name}"
            resp = await asyncio.to_thread(within, self._deadline, what, call)
            if not resp.sequences:
                raise UnsupportedRequest("Tinker returned no sequence")
            seq = resp.sequences[0]
            completion, stop_reason = list(seq.tokens), seq.stop_reason
        comp = self._renderer.parse(self._renderer.decode(completion))
        content: list[Any] = []
        if comp.reasoning:
            content.append(ContentReasoning(reasoning=comp.reasoning))
        content.append(ContentText(text=comp.answer))
        if self._on_sample is not None:
            self._on_sample(len(tokens), len(completion))
        return ModelOutput(
            model=self.model_name,
            choices=[
                ChatCompletionChoice(
                    message=ChatMessageAssistant(
                        content=content, model=self.model_name, source="generate"
                    ),
                    stop_reason=STOP_REASONS.get(stop_reason, "unknown"),  # type: ignore[arg-type]
                )
            ],
            usage=ModelUsage(
                input_tokens=len(tokens),
                output_tokens=len(completion),
                total_tokens=len(tokens) + len(completion),
            ),
        )


def tinker_model(
    name: str,
    sampling_client: Any,
    renderer: Any,
    *,
    max_tokens: int,
    temperature: float,
    deadline: float,
    on_sample: Any = None,
    cache: Any = None,
) -> Model:
    """An inspect ``Model`` sampling from ``sampling_client`` through ``renderer``."""
    api = TinkerSamplingAPI(
        name,
        sampling_client=sampling_client,
        renderer=renderer,
        max_tokens=max_tokens,
        temperature=temperature,
        deadline=deadline,
        on_sample=on_sample,
        cache=cache,
    )
    return Model(api, GenerateConfig())
