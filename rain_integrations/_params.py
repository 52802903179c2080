"""What every RAIN adapter is configured with, and how it turns into a generator.

Both the LangChain and the LlamaIndex adapters are pydantic models; they
inherit these fields, so the two share defaults (the embedded model, the
``paper`` preset, the ``harmless`` template) and accept a template, evaluator
or configuration override the same way. Nothing here imports a framework.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from rain_search.config import RainConfig
from rain_search.errors import ConfigError, ModelLoadError, PromptError
from rain_search.knobs import refuse_unsupported
from rain_search.models import load_options
from rain_search.result import RainResult
from rain_search.templates import EvalTemplate, load_template

if TYPE_CHECKING:  # types only: building a generator imports torch, on first use
    from rain_search.search import RainGenerator
    from rain_search.stream import RainStream

ALIASES = {"max_tokens": "max_new_tokens", "stop": "stop_sequences"}
"""The names LangChain's and LlamaIndex's standard parameters use for our fields."""
CONFIG_FIELDS = frozenset(RainConfig.model_fields)
CALL_OPTIONS = frozenset({"system", "preset"})


def unalias(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with standard parameter names turned into RainConfig field names."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = ALIASES.get(key, key)
        if name in out:
            first = next(k for k in values if ALIASES.get(k, k) == name)
            raise ConfigError(f"{first!r} and {key!r} both set {name}; pass only one")
        out[name] = tuple(value or ()) if name == "stop_sequences" else value
    return out


class RainParams(BaseModel):
    """Model, search configuration and judge of a RAIN adapter.

    Any :class:`~rain_search.RainConfig` field may also be given directly,
    e.g. ``max_new_tokens=64``; it is folded into ``config`` and validated.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    model_id: str | None = Field(
        default=None,
        description="HF model id, local directory or .gguf file; None: the embedded SmolLM2.",
    )
    config: RainConfig = Field(default_factory=lambda: RainConfig.preset("paper"))
    template: EvalTemplate | None = Field(
        default=None, description="Evaluation template for self-evaluation (default harmless)."
    )
    evaluator: Any = Field(
        default=None,
        description="'self' (default), an Evaluator, or a callable text -> score in [-1, 1].",
    )
    embedder: Any = Field(default="minilm", description="'minilm', 'hidden' or an Embedder.")
    system: str | None = Field(default=None, description="System message for every call.")
    device: str | None = None
    dtype: str | None = None
    device_map: str | dict[str, Any] | None = Field(
        default=None, description="Placement by accelerate, e.g. 'auto' (excludes device)."
    )
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Loading options as from_pretrained takes them: torch_dtype/dtype, "
        "quantization_config, trust_remote_code, revision, attn_implementation, device_map.",
    )
    model: Any = Field(
        default=None, exclude=True, description="A ready transformers model (with tokenizer=)."
    )
    tokenizer: Any = Field(default=None, exclude=True, description="The ready model's tokenizer.")
    generator: Any = Field(
        default=None, exclude=True, description="A ready RainGenerator to use instead."
    )

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _built_here: bool = PrivateAttr(default=False)

    @model_validator(mode="before")
    @classmethod
    def _fold_config_fields(cls, values: Any) -> Any:
        """Accept ``preset=`` and top-level RainConfig fields as configuration."""
        if not isinstance(values, Mapping):
            return values
        values = unalias(values)
        refuse_unsupported(values)
        known = set(cls.model_fields) | {"preset"}
        unknown = sorted(set(values) - known - CONFIG_FIELDS)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {unknown} for {cls.__name__}; use its fields "
                f"(model_id, template, evaluator, model_kwargs, ...) or RainConfig fields "
                "such as max_new_tokens, seed, temperature, max_iterations"
            )
        overrides = {key: values.pop(key) for key in list(values) if key in CONFIG_FIELDS}
        preset = values.pop("preset", None)
        base = values.get("config")
        if preset is not None and base is not None:
            raise ConfigError(
                "both preset= and config= were given; pass one (to change a preset, add "
                "RainConfig fields as keywords, e.g. preset='fast', max_new_tokens=32)"
            )
        if isinstance(base, str) or preset is not None:
            base = RainConfig.preset(preset or base)
        elif isinstance(base, Mapping):
            base = RainConfig.create(**base)
        elif base is None:
            base = RainConfig.preset("paper")
        values["config"] = base.merged(**overrides) if overrides else base
        return values

    @model_validator(mode="after")
    def _check_loading(self) -> Any:
        """Loading options are checked now, not when the model first loads."""
        self.load_options()
        if (self.model is None) != (self.tokenizer is None):
            raise ConfigError("model= and tokenizer= come together; pass both or neither")
        if self.model is not None and (self.model_id is not None or self.generator is not None):
            raise ConfigError("pass one of model_id=, model= (with tokenizer=) or generator=")
        return self

    def load_options(self) -> dict[str, Any]:
        """``device``, ``dtype``, ``device_map`` and ``model_kwargs``, validated, as one dict."""
        given = {"device": self.device, "dtype": self.dtype, "device_map": self.device_map}
        options: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        clash = sorted(set(options) & set(self.model_kwargs))
        if clash:
            raise ConfigError(f"{clash} given both directly and in model_kwargs; pass once")
        options.update(self.model_kwargs)
        try:
            load_options(**options)
        except ModelLoadError as exc:
            raise ConfigError(str(exc)) from exc
        return options

    @field_validator("template", mode="before")
    @classmethod
    def _load_template(cls, value: Any) -> EvalTemplate | None:
        return None if value is None else load_template(value)

    @classmethod
    def from_model_id(cls, model_id: str | None = None, **kwargs: Any) -> Any:
        """Any HF id, local directory or .gguf file (None: the embedded SmolLM2)."""
        return cls(model_id=model_id, **kwargs)

    @classmethod
    def from_generator(cls, generator: Any, **kwargs: Any) -> Any:
        """Wrap a ready :class:`~rain_search.RainGenerator` (its model, judge and config)."""
        return cls(generator=generator, **{"config": generator.config, **kwargs})

    @property
    def rain(self) -> RainGenerator:
        """The :class:`~rain_search.RainGenerator`, built (and the model loaded) on first use."""
        with self._lock:
            if self.generator is None:
                from rain_search.search import RainGenerator

                parts = {
                    "evaluator": self.evaluator,
                    "template": self.template,
                    "embedder": self.embedder,
                }
                if self.model is not None:
                    self.generator = RainGenerator(self.model, self.tokenizer, self.config, **parts)
                else:
                    self.generator = RainGenerator.from_pretrained(
                        self.model_id, self.config, model_kwargs=self.load_options(), **parts
                    )
                    self._built_here = True
            generator: RainGenerator = self.generator
            return generator

    @property
    def model_name(self) -> str:
        if self.model_id is not None:
            return self.model_id
        if self.model is not None:
            return str(getattr(self.model, "name_or_path", "") or "custom")
        if self.generator is not None and not self._built_here:
            return str(getattr(self.generator.model, "name_or_path", "") or "custom")
        from rain_search.models import EMBEDDED_MODEL_NAME

        return EMBEDDED_MODEL_NAME

    def token_ids(self, text: str) -> list[int]:
        """``text`` in the model's own tokens (loads the model on first use)."""
        return list(self.rain.tokenizer.encode(text, add_special_tokens=False))

    def open_stream(
        self, prompt: Any, stop: Sequence[str] | None, kwargs: Mapping[str, Any]
    ) -> RainStream:
        """Start one generation: a :class:`~rain_search.search.RainStream` of its steps."""
        system, config = self.call_options(stop, kwargs)
        return self.rain.stream(prompt, system=system, config=config)

    def call_options(
        self, stop: Sequence[str] | None, kwargs: Mapping[str, Any]
    ) -> tuple[str | None, RainConfig]:
        """The system message and configuration of one call.

        ``stop`` adds to the configured stop sequences; keyword arguments may be
        ``system``, ``preset`` (a named configuration instead of this adapter's),
        any RainConfig field, or ``max_tokens`` / ``stop``. Anything else is an
        error, so no option is silently ignored.
        """
        kwargs = unalias(kwargs)
        refuse_unsupported(kwargs)
        unknown = sorted(set(kwargs) - CONFIG_FIELDS - CALL_OPTIONS)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {unknown} for a RAIN call; use 'system', 'preset' or "
                "RainConfig fields such as max_new_tokens, seed, temperature, max_iterations"
            )
        overrides = {key: value for key, value in kwargs.items() if key in CONFIG_FIELDS}
        own = self.config if kwargs.get("preset") is None else RainConfig.preset(kwargs["preset"])
        if stop:
            base = overrides.get("stop_sequences", own.stop_sequences)
            overrides["stop_sequences"] = tuple(base) + tuple(stop)
        config = own.merged(**overrides) if overrides else own
        return kwargs.get("system", self.system), config


def search_metadata(result: RainResult) -> dict[str, Any]:
    """What a RAIN answer reports to the framework: finish reason and search statistics."""
    return {
        "finish_reason": result.finish_reason,
        "search": result.stats,
        "token_sets": result.token_sets,
        "warnings": list(result.warnings),
    }


def token_usage(result: RainResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def chat_messages(
    messages: Iterable[tuple[str, str]], roles: Mapping[str, str], adapter: str
) -> list[dict[str, str]]:
    """(framework role, text) pairs as role/content dicts for the model's chat template."""
    chat = []
    for kind, content in messages:
        if kind not in roles:
            raise PromptError(
                f"{adapter} cannot send a {kind!r} message to the model; use "
                f"{', '.join(roles)} messages"
            )
        chat.append({"role": roles[kind], "content": content})
    return chat
