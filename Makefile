# Set-up and the main jobs. Every target installs what it needs into .venv first.
#   make demo    the whole pipeline on the embedded demo pair
#   make test    the test suite
#   make bench   the CPU benchmark (reference loop vs batched path)
#   make bench-gpu   the GPU benchmark (Llama-2-7B shape, bfloat16, 1000 answers; needs a CUDA build of torch)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test bench bench-gpu clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python scripts/bench_logits.py

bench-gpu: install
	$(BIN)/python scripts/bench_logits.py --device cuda --shape llama2-7b

clean:
	rm -rf $(VENV) .pytest_cache
