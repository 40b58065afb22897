# Shortcuts for the commands in README.md and CONTRIBUTING.md. Every target uses .venv.
PY := .venv/bin/python

.PHONY: setup test lint format typecheck bench-tiny gpu-check ci

setup:            ## .venv with the engine and the dev tools
	bash scripts/setup.sh dev

test:             ## the test suite on two workers
	$(PY) -m pytest -q -n 2

lint:             ## ruff: lint rules and formatting (no changes made)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format:           ## apply ruff's fixes and formatting
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

typecheck:        ## mypy with the configuration in pyproject.toml
	$(PY) -m mypy

bench-tiny:       ## every benchmark in its small CPU form (prints; writes nothing)
	$(PY) -m giftnet.bench.kernels --tiny
	$(PY) -m giftnet.bench.train --tiny
	$(PY) -m giftnet.bench.data --tiny

gpu-check:        ## on a GPU machine: correctness checks then every benchmark, into OUT (default gpu-out)
	bash bench/gpu_check.sh $(or $(OUT),gpu-out)

ci: lint typecheck test
