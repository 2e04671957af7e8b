# bertjax: `make demo` pretrains a mini BERT on a real sample corpus; `make test` runs the suite.
# Both set up .venv themselves on a fresh clone.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_WORKDIR ?= runs/demo
FINETUNE_WORKDIR ?= runs/r8
NER_WORKDIR ?= runs/ner
QA_WORKDIR ?= runs/qa
# The NER and QA demos compute in bfloat16 (float32 parameters and optimizer) where the CPU has AMX
# (about 1.5x float32's speed there), else in float32; NER_CONFIG= / QA_CONFIG= choose.
BF16_ARG := $(shell grep -qs amx_bf16 /proc/cpuinfo && echo :bf16)
NER_CONFIG ?= configs/demo_ner.py$(BF16_ARG)
QA_CONFIG ?= configs/demo_qa.py$(BF16_ARG)

.PHONY: venv data data-finetune data-ner data-qa demo demo-finetune demo-ner demo-qa compare-ner compare-qa test test-fast test-recipes lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 (CPU) is pinned in the test extra; pip takes it from the local wheel cache here.
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

data: $(STAMP)
	$(PY) -m bertjax.data.samples --out=data/samples --cache=data/cache

demo: data
	$(PY) -m bertjax.pretrain --config=configs/demo.py --workdir=$(DEMO_WORKDIR)

data-finetune: $(STAMP)
	$(PY) -m bertjax.data.samples --out=data/samples --cache=data/cache --r8

# The real all-MiniLM-L6-v2 weights fine-tuned on Reuters R8; prints test accuracy beside published figures.
demo-finetune: data-finetune
	$(PY) -m bertjax.finetune --config=configs/r8.py --workdir=$(FINETUNE_WORKDIR)

data-ner: $(STAMP)
	$(PY) -m bertjax.data.samples --out=data/samples --cache=data/cache --conll2003

data-qa: $(STAMP)
	$(PY) -m bertjax.data.samples --out=data/samples --cache=data/cache --squad

# MiniLM fine-tuned for named entities on CoNLL-2003; prints entity F1 beside the published figure.
demo-ner: data-ner
	$(PY) -m bertjax.finetune --config=$(NER_CONFIG) --workdir=$(NER_WORKDIR)
	@echo "beside transformers' torch peer trained on this machine: make compare-ner"

# MiniLM fine-tuned for question answering on SQuAD v1.1 (a share of train); prints EM/F1.
demo-qa: data-qa
	$(PY) -m bertjax.finetune --config=$(QA_CONFIG) --workdir=$(QA_WORKDIR)
	@echo "beside transformers' torch peer trained on this machine: make compare-qa"

# Each demo and transformers' torch peer on the same config, one after the other on this machine:
# their scores and wall times in one table (runs/<demo>-vs-torch/side_by_side.txt).
compare-ner: data-ner
	$(PY) experiments/peers/side_by_side.py --config=$(NER_CONFIG) --workdir=$(NER_WORKDIR)-vs-torch --group-by-length

compare-qa: data-qa
	$(PY) experiments/peers/side_by_side.py --config=$(QA_CONFIG) --workdir=$(QA_WORKDIR)-vs-torch

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The whole suite: unit tests and end-to-end runs (tests/unit, tests/e2e), after the linters.
test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile

# The unit tests (in-process), less the few marked slow, with every compilation cached between
# runs: the edit-run loop (68 s on 2 cores with a warm cache, alone; 212 tests, 2026-12-06).
test-fast: $(STAMP)
	JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.cache/jax-tests JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
		$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" tests/unit

# Compiles every paper recipe's full-size sharded train step on 8 simulated devices and trains each
# recipe's runlocal variant (18 tests, 10 min on 2 cores).
test-recipes: $(STAMP)
	BERTJAX_ALL_RECIPES=1 $(PY) -m pytest -q tests/e2e/test_recipes.py

# Train-step speed of bertjax beside transformers' torch BERT (prints a table, writes runs/bench/bench.json).
bench: data
	$(PY) -m benchmarks.bench --out=runs/bench/bench.json

clean:
	rm -rf runs data/samples data/prepared .pytest_cache .ruff_cache
