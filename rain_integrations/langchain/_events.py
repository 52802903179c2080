"""Guard decisions as LangChain custom events, so callbacks and ``astream_events`` see them.

Each decision goes out as an ``on_custom_event`` named ``rain_guard`` on the
run that was being judged (a guard's own run, a tool's, the agent's model
step). Outside any run there is no one to tell: the decision is still in the
``rain_integrations.guard`` log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
)

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from rain_integrations._guard import Decision

EVENT = "rain_guard"
"""The name of the custom event (``on_custom_event`` / ``astream_events``) of a decision."""


def emit(decision: Decision, config: RunnableConfig | None = None) -> None:
    config = ensure_config(config)
    if get_callback_manager_for_config(config).parent_run_id is not None:
        dispatch_custom_event(EVENT, dict(decision), config=config)


async def aemit(decision: Decision, config: RunnableConfig | None = None) -> None:
    config = ensure_config(config)
    if get_async_callback_manager_for_config(config).parent_run_id is not None:
        await adispatch_custom_event(EVENT, dict(decision), config=config)
