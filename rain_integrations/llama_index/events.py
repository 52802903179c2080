"""Guard decisions as LlamaIndex instrumentation events.

Every decision of a LlamaIndex guard (a tool output judged, a retrieved node
kept, rewritten or dropped) goes to LlamaIndex's dispatcher as a
:class:`RainGuardEvent`, so an event handler (Arize Phoenix, Langfuse, your
own ``BaseEventHandler``) sees it in the span that made it; a dropped node
leaves a trace with its id and score. The event carries no judged text.
"""

from __future__ import annotations

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent

from rain_integrations._guard import Decision, GuardSettings

dispatcher = get_dispatcher(__name__)


class RainGuardEvent(BaseEvent):
    """One guard decision: what was judged, its score, and the action taken."""

    guard: str
    subject: str
    score: float
    threshold: float
    action: str

    @classmethod
    def class_name(cls) -> str:
        return "RainGuardEvent"


class DispatchingGuard(GuardSettings):
    """GuardSettings whose decisions go to LlamaIndex's dispatcher."""

    def emit(self, decision: Decision) -> None:
        dispatcher.event(RainGuardEvent(**decision))
