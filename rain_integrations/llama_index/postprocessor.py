"""``RainNodePostprocessor``: retrieved chunks judged before a query engine answers from them.

A retrieval-augmented answer is only as safe as the chunks put in front of
the LLM; this postprocessor reads each one with a RAIN judge, the user's
query as the prompt, and drops the ones judged bad (or, with ``drop=False``,
annotates, replaces or rewrites them as a guard's ``policy`` says). The
index's own nodes are never changed: a kept chunk whose text changes is a copy.

Built on llama-index-core alone: nothing here imports LangChain.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from rain_integrations._guard import GuardSettings, Verdict

VERDICT_KEY = "rain_guard"
"""The node metadata key of the verdict (kept out of the LLM's and the embedder's text)."""


class RainNodePostprocessor(GuardSettings, BaseNodePostprocessor):
    """Judge retrieved nodes; drop the bad ones, or act on them by ``policy``.

    >>> engine = index.as_query_engine(                              # doctest: +SKIP
    ...     node_postprocessors=[RainNodePostprocessor(evaluator=judge)])
    """

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
        judged = [(node, *self.check(node.node.get_content(), query)) for node in nodes]
        return self._kept(judged)

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = _query(query_bundle)
        judged = [(node, *await self.acheck(node.node.get_content(), query)) for node in nodes]
        return self._kept(judged)

    def _kept(self, judged: list[tuple[NodeWithScore, str, Verdict]]) -> list[NodeWithScore]:
        kept = []
        for node, text, verdict in judged:
            if self.drop and verdict["action"] != "pass":
                continue
            kept.append(_with_verdict(node, text, verdict))
        return kept


def _query(query_bundle: QueryBundle | None) -> str | None:
    return None if query_bundle is None else query_bundle.query_str


def _with_verdict(node: NodeWithScore, text: str, verdict: Verdict) -> NodeWithScore:
    """A copy of ``node`` saying ``text``, its verdict in metadata the LLM does not read."""
    copy: Any = node.node.model_copy()
    copy.metadata = {**node.node.metadata, VERDICT_KEY: dict(verdict)}
    for field in ("excluded_llm_metadata_keys", "excluded_embed_metadata_keys"):
        excluded = [k for k in getattr(node.node, field) if k != VERDICT_KEY]
        setattr(copy, field, [*excluded, VERDICT_KEY])  # new lists: the index's stay as they are
    if text != node.node.get_content():
        copy.set_content(text)
    return NodeWithScore(node=copy, score=node.score)
