"""RAIN: prompt -> tree search -> text.

Read top-down: :class:`RainGenerator` turns a prompt into token ids and a
:class:`~rain_search.policy.TreeSearch` (the policy: search, commit, repeat
until the answer ends); its engine (:mod:`rain_search.engine`) runs that search
with every other live one in shared forward calls; a
:class:`~rain_search.stream.RainStream` hands the committed steps to the reader
and ends with the :class:`~rain_search.result.RainResult`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rain_search.admission import default_budget
from rain_search.backends.hf import HFBackend
from rain_search.backends.openmp import release_idle_workers
from rain_search.backends.reencode import ReencodeBackend
from rain_search.config import RainConfig
from rain_search.embeddings import Embedder, make_embedder
from rain_search.engine import Engine, Scheduler
from rain_search.errors import ConfigError, PromptError
from rain_search.evaluators import (
    Evaluator,
    SelfEvaluator,
    TemplateEvaluator,
    make_evaluator,
)
from rain_search.knobs import note_model_defaults, refuse_unsupported
from rain_search.models import LOAD_OPTIONS, context_window, encode_prompt, load_model
from rain_search.policy import TreeSearch
from rain_search.result import RainResult, StepStats
from rain_search.seeds import draw_seed, make_generator
from rain_search.stats import Counters
from rain_search.stops import Stops
from rain_search.stream import RainStream
from rain_search.templates import EvalTemplate

__all__ = [
    "Prompt",
    "RainGenerator",
    "RainStream",
    "StepCallback",
    "TreeSearch",
    "run_alone",
    "steps_alone",
]

Prompt = str | Sequence[Mapping[str, str]]
StepCallback = Callable[[StepStats], None]


class RainGenerator:
    """Generates with RAIN on a Hugging Face causal LM.

    >>> model, tokenizer = load_model()                       # doctest: +SKIP
    >>> gen = RainGenerator(model, tokenizer, "fast")          # doctest: +SKIP
    >>> print(gen.generate("How do I pick a lock?").text)      # doctest: +SKIP

    ``kv_cache=False`` re-encodes the whole text for every candidate, rollout
    and judgment instead of sharing one cache along the tree: many times
    slower, but it works for models whose cache cannot be cut and joined, and
    it is the baseline the benchmarks measure the cached search against.

    Concurrent searches (``generate_batch``, several streams, a server's
    requests) share the engine's forward calls; ``max_batch_rows`` and
    ``max_batch_kv_tokens`` bound what the live ones may hold at once (the
    rest wait their turn). By default: 320 rows on a CPU; on a GPU 4096, or
    fewer when their logits would take over a tenth of the free memory; and the
    key/value positions that fit 4 GiB on a CPU or half the GPU memory free
    when the generator is built.

    ``batch_invariant=True`` runs each search's rows in calls of their own, so
    every answer is the one the search gives alone, bit for bit, in any dtype
    and on any device; by default searches share calls, and a row's numbers
    may differ in the last bits with what shares its call (in float32 we have
    not seen an answer change; in bfloat16/float16 on a GPU some do).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: RainConfig | str | None = None,
        *,
        evaluator: str | Evaluator | Callable[..., float] | None = None,
        template: str | EvalTemplate | None = None,
        embedder: str | Embedder | None = "minilm",
        kv_cache: bool = True,
        max_batch_rows: int | None = None,
        max_batch_kv_tokens: int | None = None,
        batch_invariant: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = resolve_config(config)
        # kv_cache=False: re-encode the whole text for every candidate and judgment.
        self.backend = (HFBackend if kv_cache else ReencodeBackend)(model, tokenizer)
        self.evaluator = self._judge(evaluator, template)
        self.embedder = make_embedder(embedder, model=model, tokenizer=tokenizer)
        note_model_defaults(getattr(model, "generation_config", None))
        # One engine per generator: concurrent searches share its forward calls.
        budget = default_budget(
            model.config, self.backend.device, max_batch_rows, max_batch_kv_tokens
        )
        self.scheduler = Scheduler(Engine(self.backend, budget, batch_invariant))
        # The searches may run on other threads: the team this thread's loading left idle
        # would slow every forward call there (backends/openmp.py).
        release_idle_workers()

    def with_judge(
        self,
        evaluator: str | Evaluator | Callable[..., float] | None = None,
        *,
        template: str | EvalTemplate | None = None,
        **config_overrides: Any,
    ) -> RainGenerator:
        """A generator that judges differently and shares this one's model, embedder and engine.

        Searches of both run in the same forward calls (the twin shares this
        generator's engine), so a server answering requests with several templates,
        or a pipeline with a second judge, batches them together.
        ``config_overrides`` change the new generator's configuration (e.g.
        ``votes="soft"``).
        """
        twin = copy.copy(self)
        twin.config = self.config.merged(**config_overrides) if config_overrides else self.config
        twin.evaluator = twin._judge(evaluator, template)
        return twin

    def _judge(
        self,
        evaluator: str | Evaluator | Callable[..., float] | None,
        template: str | EvalTemplate | None,
    ) -> Evaluator:
        judge = make_evaluator(evaluator, template, self.config.votes, self.config.swap_labels)
        if isinstance(judge, SelfEvaluator):
            judge.bind(self.model, self.tokenizer, kv_cache=isinstance(self.backend, HFBackend))
        return judge

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        config: RainConfig | str | None = None,
        *,
        model_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> RainGenerator:
        """Load ``model`` (default: the embedded SmolLM2) and wrap it.

        Loading options (``device``, ``device_map``, ``dtype``/``torch_dtype``,
        ``quantization_config``, ``trust_remote_code``, ``revision``,
        ``attn_implementation``) may be given directly or as ``model_kwargs``;
        the other keywords go to the generator.
        """
        options = {key: kwargs.pop(key) for key in list(kwargs) if key in LOAD_OPTIONS}
        loaded, tokenizer = load_model(model, **{**(model_kwargs or {}), **options})
        return cls(loaded, tokenizer, config, **kwargs)

    def generate(
        self,
        prompt: Prompt,
        *,
        system: str | None = None,
        on_step: StepCallback | None = None,
        config: RainConfig | None = None,
        **overrides: Any,
    ) -> RainResult:
        """Answer ``prompt`` (text or chat messages) with the tree search.

        Keyword overrides change configuration fields for this call only,
        e.g. ``generate(prompt, max_new_tokens=32, seed=7)``; ``config``
        replaces the generator's configuration for this call.
        """
        stream = self.stream(prompt, system=system, config=config, **overrides)
        for step in stream:
            if on_step is not None:
                on_step(step)
        assert stream.result is not None  # set when the stream is exhausted
        return stream.result

    def stream(
        self,
        prompt: Prompt,
        *,
        system: str | None = None,
        config: RainConfig | None = None,
        **overrides: Any,
    ) -> RainStream:
        """Like :meth:`generate`, but yields each committed step as it is committed.

        The prompt and configuration are checked before this returns. Breaking
        out of the loop, or calling ``cancel()`` from another thread, stops
        the search; ``result`` holds the :class:`RainResult` once the stream is
        exhausted. ``config`` replaces the generator's configuration for this call.
        """
        prompt_ids, judge_prompt = self.encode(prompt, system)
        return self.stream_ids(prompt_ids, judge_prompt, config=config, **overrides)

    def stream_ids(
        self,
        prompt_ids: Sequence[int],
        judge_prompt: str,
        *,
        config: RainConfig | None = None,
        **overrides: Any,
    ) -> RainStream:
        """:meth:`stream` for a prompt that is already token ids (``model.generate`` has
        only those); ``judge_prompt`` is the text the evaluator reads as the question."""
        refuse_unsupported(overrides)
        config = config or self.config
        config = config.merged(**overrides) if overrides else config
        self.check_judge_settings(config)
        budget, warnings = self.fit_context(len(prompt_ids), config.max_new_tokens)
        search = TreeSearch[Any](  # either backend: its state type is its own business
            self.backend,
            self.evaluator,
            self.embedder,
            config.merged(max_new_tokens=budget),
            judge_prompt,
        )
        return RainStream(self.scheduler, search, prompt_ids, warnings)

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        *,
        system: str | None = None,
        config: RainConfig | None = None,
        **overrides: Any,
    ) -> list[RainResult]:
        """Answer every prompt, their searches sharing forward calls; results in order.

        Each answer is the one :meth:`generate` gives for that prompt alone
        (its random draws are keyed by its own seed and tree, not by the batch).
        """
        streams = [
            self.stream(prompt, system=system, config=config, **overrides).start()
            for prompt in prompts
        ]
        return [stream.finish() for stream in streams]

    def check_judge_settings(self, config: RainConfig) -> None:
        """The self-evaluator is built once: a per-call change of how it judges is an error."""
        if not isinstance(self.evaluator, SelfEvaluator):
            return
        for name in ("votes", "swap_labels"):
            wanted, built = getattr(config, name), getattr(self.config, name)
            if wanted != built:
                raise ConfigError(
                    f"{name}={wanted!r} differs from the {built!r} this generator's judge was "
                    "built with; build the generator with that config, or pass "
                    f"evaluator=SelfEvaluator(template, {name}={wanted!r})"
                )

    def warm_up(self) -> None:
        """Pay one-off costs now, so the first answer is not slower than the rest.

        Loads the embedder, encodes the judge template's fixed part, builds the
        punctuation table and runs the model once; useful before timing runs or
        in a server before the first request.
        """
        self.backend.ends_clause(0)
        self.embedder.embed(["warm up"])
        if isinstance(self.evaluator, TemplateEvaluator):
            self.evaluator.warm_up()
        self.vanilla("Hi", max_new_tokens=2)

    def vanilla(
        self,
        prompt: Prompt,
        *,
        system: str | None = None,
        do_sample: bool = False,
        **overrides: Any,
    ) -> RainResult:
        """Plain KV-cached decoding (greedy unless ``do_sample``), counted like the search."""
        refuse_unsupported(overrides)
        config = self.config.merged(**overrides) if overrides else self.config
        prompt_ids, _ = self.encode(prompt, system)
        budget, warnings = self.fit_context(len(prompt_ids), config.max_new_tokens)
        seed = draw_seed(config.seed)
        stops = Stops(self.backend, config.all_stops)
        start = time.perf_counter()
        token_ids = self.backend.vanilla(
            prompt_ids,
            budget,
            make_generator(seed, self.backend.device),
            do_sample=do_sample,
            temperature=config.temperature,
            top_k=config.top_k,
            should_stop=stops.found,
        )
        release_idle_workers()  # as a search's turn does: other threads may search next
        # one call for the prompt, one per later token (counted here: searches may run beside it)
        cost = Counters(
            forward_calls=len(token_ids), tokens_processed=len(prompt_ids) + len(token_ids) - 1
        )
        text, finish, token_ids = stops.finish(token_ids, self.backend.eos_token_ids, budget)
        return RainResult(
            text=text,
            token_ids=token_ids,
            prompt_tokens=len(prompt_ids),
            finish_reason=finish,
            mode="vanilla",
            totals=cost,
            wall_time=time.perf_counter() - start,
            seed=seed,
            warnings=warnings,
        )

    def encode(self, prompt: Prompt, system: str | None) -> tuple[list[int], str]:
        """Token ids of the formatted prompt, and the plain prompt text the judge reads."""
        ids = encode_prompt(self.tokenizer, prompt, system)  # contents never special tokens
        judge_prompt = prompt if isinstance(prompt, str) else last_user_message(prompt)
        return ids, judge_prompt

    def fit_context(self, prompt_tokens: int, max_new_tokens: int) -> tuple[int, list[str]]:
        """Clamp the answer budget to the context window; refuse prompts that do not fit."""
        window = context_window(self.model)
        if window is None or prompt_tokens + max_new_tokens <= window:
            return max_new_tokens, []
        if prompt_tokens >= window:
            raise PromptError(
                f"the prompt is {prompt_tokens} tokens but the model's context window is "
                f"{window}; shorten the prompt"
            )
        budget = window - prompt_tokens
        return budget, [
            f"max_new_tokens lowered from {max_new_tokens} to {budget} to fit the "
            f"model's {window}-token context window"
        ]


def resolve_config(config: RainConfig | str | None) -> RainConfig:
    if config is None:
        return RainConfig()
    if isinstance(config, str):
        return RainConfig.preset(config)
    if isinstance(config, RainConfig):
        return config
    raise ConfigError(f"config must be a RainConfig or a preset name, got {type(config).__name__}")


def last_user_message(messages: Sequence[Mapping[str, str]]) -> str:
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    return users[-1] if users else ""


def steps_alone(search: TreeSearch[Any], prompt_ids: Sequence[int]) -> Iterator[StepStats]:
    """Run one search on the caller's thread with an engine of its own, step by step.

    When the iterator is exhausted, ``search.result`` holds the answer.
    """
    yield from Engine(search.backend).solo(search, prompt_ids)


def run_alone(search: TreeSearch[Any], prompt_ids: Sequence[int]) -> RainResult:
    """The whole answer of one search run alone (:func:`steps_alone`)."""
    for _ in steps_alone(search, prompt_ids):
        pass
    assert search.result is not None
    return search.result
