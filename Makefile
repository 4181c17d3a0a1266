# The two commands: `make app` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
# A CPU build of torch lies on this machine's disk; pointing uv at pip's find-links
# folder keeps it from pulling a multi-GB CUDA build from PyPI.
WHEELS := $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null || echo /opt/wheels)
# Naming the wheel itself pins it; with only --find-links uv still prefers PyPI's CUDA build.
TORCH_WHEEL := $(firstword $(wildcard $(WHEELS)/torch-*+cpu-*.whl))
UV_FLAGS := $(if $(TORCH_WHEEL),--find-links $(WHEELS) $(TORCH_WHEEL),)

export HF_HUB_OFFLINE ?= 1
export HF_EVALUATE_OFFLINE ?= 1
export YDATA_PROFILING_NO_ANALYTICS ?= True

.PHONY: app test install lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade uv
	$(BIN)/uv pip install --python $(BIN)/python $(UV_FLAGS) -e ".[dev,llm]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

app: install
	$(BIN)/pond app

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
