"""Adapters that make RAIN a model of LangChain (``rain_integrations.langchain``) and
LlamaIndex (``rain_integrations.llama_index``). Each imports only its own framework."""
