"""Search settings as LangChain configurable fields: ``max_new_tokens``, ``seed``, ``preset``...

LangChain's ``configurable_fields`` rebuilds a model from its pydantic fields,
but RAIN's settings live inside one ``config`` field (and ``preset`` is not a
field at all). Every setting is also a per-call option, so a configured value
becomes exactly that: ``model.bind(max_new_tokens=...)`` for the run. The model
(and its loaded weights) is the same object for every configuration.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config
from langchain_core.runnables.configurable import RunnableConfigurableFields
from langchain_core.runnables.utils import ConfigurableField, ConfigurableFieldSpec

from rain_integrations._params import ALIASES, CONFIG_FIELDS
from rain_search.config import RainConfig
from rain_search.errors import ConfigError

SETTINGS = CONFIG_FIELDS | set(ALIASES) | {"preset", "system"}
"""The names a run may configure: every RainConfig field (and its LangChain alias),
``preset`` (a named configuration replacing the model's own) and ``system``."""


def is_setting(name: str) -> bool:
    return name in SETTINGS


# Unparametrized on purpose: LangChain's pydantic generic, subscripted, builds an abstract
# RunnableSerializable[Any, Any] when copied, which cannot be instantiated.
class SearchSettings(RunnableConfigurableFields):  # type: ignore[type-arg]
    """A RAIN model whose search settings a run's ``configurable`` values choose."""

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        specs = []
        for name, spec in self.fields.items():
            assert isinstance(spec, ConfigurableField)  # checked by configurable()
            specs.append(
                ConfigurableFieldSpec(
                    id=spec.id,
                    name=spec.name,
                    description=spec.description or describe(name),
                    annotation=spec.annotation or annotation(name),
                    default=current(self.default, name),
                    is_shared=spec.is_shared,
                )
            )
        return specs

    def _prepare(
        self, config: RunnableConfig | None = None
    ) -> tuple[Runnable[Any, Any], RunnableConfig]:
        config = ensure_config(config)
        given = config.get("configurable", {})
        chosen = {
            name: given[spec.id]
            for name, spec in self.fields.items()
            if isinstance(spec, ConfigurableField) and spec.id in given
        }
        if not chosen:
            return self.default, config
        return self.default.bind(**chosen), config


def configurable(model: Any, fields: dict[str, Any]) -> SearchSettings:
    """``model`` with ``fields`` (all search settings) chosen per run."""
    others = sorted(name for name in fields if not is_setting(name))
    if others:
        raise ConfigError(
            f"{others} cannot be configured together with search settings; configure "
            f"search settings ({sorted(n for n in fields if is_setting(n))}) in one "
            "configurable_fields call and model fields in another"
        )
    for name, spec in fields.items():
        if not isinstance(spec, ConfigurableField):
            raise ConfigError(
                f"{name} takes a ConfigurableField (its value is chosen per run), "
                f"not {type(spec).__name__}"
            )
    return SearchSettings(default=model, fields=fields)


def _field(name: str) -> Any:
    return RainConfig.model_fields.get(ALIASES.get(name, name))


def describe(name: str) -> str | None:
    if name == "preset":
        return "A named search configuration (fast, paper, ...) replacing the model's own."
    if name == "system":
        return "The system message of the call."
    field = _field(name)
    return None if field is None else field.description


def annotation(name: str) -> Any:
    if name in ("preset", "system"):
        return str
    return _field(name).annotation


def current(model: Any, name: str) -> Any:
    """The model's own value, the default a run that configures nothing gets."""
    if name == "preset":
        return None
    if name == "system":
        return model.system
    return getattr(model.config, ALIASES.get(name, name))
