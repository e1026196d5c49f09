# servegraph developer commands. `make serve` and `make test` are the README's quickstart.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve run test lint typecheck bench bench-models bench-http bench-streams bench-steps clean docs-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,all]'
	touch $(STAMP)

## serve: install, then serve the quickstart graph on http://127.0.0.1:8080 (Ctrl-C stops it)
serve: $(STAMP)
	$(BIN)/servegraph serve examples.quickstart:build_graph --host 127.0.0.1 --port 8080

## run: install and run the quickstart example over its sample events (no broker, no database)
run: $(STAMP)
	$(BIN)/python examples/quickstart.py

## test: install everything, start the services the tests need, run lint, types and every test
test: $(STAMP)
	bash scripts/services.sh
	$(BIN)/ruff check src tests examples benchmarks scripts
	$(BIN)/ruff format --check src tests examples benchmarks scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks scripts
	$(BIN)/ruff format --check src tests examples benchmarks scripts

typecheck: $(STAMP)
	$(BIN)/mypy

## bench: the W1 flow benchmark (not part of `make test`)
bench: $(STAMP)
	$(BIN)/python benchmarks/flow_bench.py

## bench-models: the model-serving benchmarks, W1-router and batching (not part of `make test`)
bench-models: $(STAMP)
	$(BIN)/python benchmarks/model_bench.py

## bench-http: W1 and W2 over HTTP against Starlette baselines, with wrk (installed if missing)
bench-http: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/http_bench.py

## bench-streams: W1 cut by a queue over Redis Streams and NATS JetStream, against the raw clients
bench-streams: $(STAMP)
	bash scripts/services.sh
	$(BIN)/python -m benchmarks.stream_bench

## bench-steps: the built-in steps against storey (installs storey into .venv-storey/ the first time)
bench-steps: $(STAMP)
	bash scripts/services.sh
	$(BIN)/python -m benchmarks.steps_bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

## docs-check: run the code blocks in docs/*.md and check they print what the docs say
docs-check: $(STAMP)
	$(BIN)/python scripts/check_docs.py docs/*.md
