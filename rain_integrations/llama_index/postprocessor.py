"""``RainNodePostprocessor``: retrieved chunks judged before a query engine answers from them.

A retrieval-augmented answer is only as safe as the chunks put in front of
the LLM; this postprocessor reads each one with a RAIN judge, the user's
query as the prompt, and drops the ones judged bad (or, with ``drop=False``,
annotates, replaces or rewrites them as a guard's ``policy`` says; ``block``
raises :class:`~rain_integrations.llama_index.GuardViolation`). The index's
own nodes are never changed: a kept chunk whose text changes is a copy.

The judge reads exactly what the LLM will read: the node's content in
``MetadataMode.LLM``, metadata included (an instruction hidden in a metadata
field is judged like one in the body). A replaced or rewritten chunk shows
the LLM the new text alone: the metadata the LLM was shown is dropped from the
copy (it was part of what was judged bad); keys the LLM never read are kept.
Every decision, a dropped node's included, is logged and dispatched as a
:class:`~rain_integrations.llama_index.events.RainGuardEvent`.

Built on llama-index-core alone: nothing here imports LangChain.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import ConfigDict, Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from rain_integrations._guard import Verdict
from rain_integrations.llama_index.events import DispatchingGuard

VERDICT_KEY = "rain_guard"
"""The node metadata key of the verdict (kept out of the LLM's and the embedder's text)."""


class RainNodePostprocessor(DispatchingGuard, BaseNodePostprocessor):
    """Judge retrieved nodes; drop the bad ones, or act on them by ``policy``.

    >>> engine = index.as_query_engine(                              # doctest: +SKIP
    ...     node_postprocessors=[RainNodePostprocessor(evaluator=judge)])
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    drop: bool = Field(
        default=True,
        description="Drop chunks judged bad (default); False: keep them, acted on by policy.",
    )

    @classmethod
    def class_name(cls) -> str:
        return "RainNodePostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = _query(query_bundle)
        judged = [(node, *self.judged(llm_text(node), query)) for node in nodes]
        for node, _, verdict in judged:
            self.record(_subject(node), self._final(verdict))
        return self._kept(judged)

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = _query(query_bundle)
        judged = [(node, *await self.ajudged(llm_text(node), query)) for node in nodes]
        for node, _, verdict in judged:
            await self.arecord(_subject(node), self._final(verdict))
        return self._kept(judged)

    def _final(self, verdict: Verdict) -> Verdict:
        """The verdict as acted on: a bad node under ``drop`` is dropped (``block`` still
        blocks)."""
        if self.drop and verdict["action"] not in ("pass", "block"):
            return Verdict(score=verdict["score"], action="drop")
        return verdict

    def _kept(self, judged: list[tuple[NodeWithScore, str, Verdict]]) -> list[NodeWithScore]:
        return [
            _with_verdict(node, text, verdict)
            for node, text, verdict in judged
            if self._final(verdict)["action"] != "drop"
        ]


def llm_text(node: NodeWithScore) -> str:
    """What the LLM reads of ``node``: its text with the metadata it is shown."""
    return node.node.get_content(metadata_mode=MetadataMode.LLM)


def _subject(node: NodeWithScore) -> str:
    return f"node {node.node.node_id}"


def _query(query_bundle: QueryBundle | None) -> str | None:
    return None if query_bundle is None else query_bundle.query_str


def _with_verdict(node: NodeWithScore, text: str, verdict: Verdict) -> NodeWithScore:
    """A copy of ``node`` showing the LLM ``text``, its verdict in metadata the LLM does not
    read. New text (a replacement, a rewrite) stands alone: the metadata the LLM was shown
    was part of what was judged bad, so the copy drops it (keys the LLM never read stay)."""
    copy: Any = node.node.model_copy()
    hidden = [k for k in node.node.excluded_llm_metadata_keys if k != VERDICT_KEY]
    changed = text != llm_text(node)
    kept = {k: v for k, v in node.node.metadata.items() if not changed or k in hidden}
    copy.metadata = {**kept, VERDICT_KEY: dict(verdict)}
    copy.excluded_llm_metadata_keys = [*hidden, VERDICT_KEY]  # new lists: the index's stay
    embed_hidden = [k for k in node.node.excluded_embed_metadata_keys if k != VERDICT_KEY]
    copy.excluded_embed_metadata_keys = [*embed_hidden, VERDICT_KEY]
    if changed:
        copy.set_content(text)
    return NodeWithScore(node=copy, score=node.score)
