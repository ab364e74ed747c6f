# agebench: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE ?= 1

SYNTH_DIR ?= data/synth
BENCH_SYNTH_DIR ?= data/synth-bench
RESULTS ?= results
EXPLAIN_N ?= 128
PAPER_DRY_OUT ?= $(RESULTS)/paper-dry
PAPER_DRY_DATA ?= data/synth-dry

.DEFAULT_GOAL := help
.PHONY: help install browser test test-all test-cluster lint format bench bench-occlusion bench-cross bench-assurance synth synth-bench paper-dry-run clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

install: ## create .venv and install agebench with its dev tools (CPU-usable torch)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'

# The HTML leaderboard's browser test (tests/test_html_page.py) needs a Chromium binary; pip cannot provide one,
# so this target installs the distribution's with apt-get where it is missing and we are root, and fails where it
# can do neither (CI calls it before `make test`, so there the test runs rather than skips).
CHROMIUM := $(or $(AGEBENCH_CHROMIUM),$(firstword $(foreach b,chromium chromium-browser google-chrome,$(shell command -v $(b) 2>/dev/null))))
browser: ## make sure headless Chromium is here for the HTML page's test (apt-get install chromium when root)
ifneq ($(CHROMIUM),)
	@echo "chromium: $(CHROMIUM)"
else
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "no Chromium and no root apt-get: install chromium (or set AGEBENCH_CHROMIUM); its test skips without" >&2; \
		exit 1; \
	fi
endif

test: ## run the default test suite (excludes tests marked slow)
	$(BIN)/python -m pytest -m "not slow and not cluster" -q

test-all: ## run every test, slow ones included (cluster ones: make test-cluster)
	$(BIN)/python -m pytest -m "not cluster" -q

CLUSTER_TMP ?= /tmp/agebench-test-cluster
test-cluster: ## private SLURM cluster: the bench array, requeue, a failing cell, two torchrun nodes; then the paper dry run
	rm -rf $(CLUSTER_TMP)
	$(BIN)/python -m pytest -m cluster tests/test_cluster.py -q --basetemp=$(CLUSTER_TMP)
	@if pgrep -af -- '[/]$(patsubst /%,%,$(CLUSTER_TMP))' | grep -E 'slurmctld|slurmd|munged'; then \
		echo "test-cluster: the test cluster's daemons are still running (above)" >&2; exit 1; fi
	$(MAKE) --no-print-directory paper-dry-run PAPER_DRY_OUT=$(CLUSTER_TMP)/paper-dry PAPER_DRY_DATA=$(CLUSTER_TMP)/synth-dry
	rm -rf $(CLUSTER_TMP)/paper-dry  # 3.4 GB of full-size checkpoints

lint: ## ruff check and format check; lint-imports: the module layers of pyproject's [tool.importlinter]
	$(BIN)/ruff check agebench tests scripts
	$(BIN)/ruff format --check agebench tests scripts
	$(BIN)/lint-imports

format: ## ruff format and autofix
	$(BIN)/ruff format agebench tests scripts
	$(BIN)/ruff check --fix agebench tests scripts

synth: ## generate the synthetic data set (region masks, 64 px cache) under $(SYNTH_DIR) unless its cache exists
	@test -f $(SYNTH_DIR)/manifest.cache.npy || $(BIN)/agebench synth --out $(SYNTH_DIR) --n 5000 --seed 0 --masks --cache-size 64

synth-bench: ## the benchmark's synthetic set (10,000 face chips, half the subjects in test, masks, 64 px cache) under $(BENCH_SYNTH_DIR); redrawn if it is not the chip style
	@if ! { grep -qs '"style": "chip"' $(BENCH_SYNTH_DIR)/synth.json && test -f $(BENCH_SYNTH_DIR)/manifest.cache.npy; }; then \
	  if test -d $(RESULTS)/synth; then echo "make synth-bench: $(BENCH_SYNTH_DIR) must be redrawn (absent or not the chip style of agebench 0.7), but $(RESULTS)/synth holds cells trained on the old set, which the runner would keep: make clean (or remove $(RESULTS)/synth) first" >&2; exit 1; fi; \
	  $(BIN)/agebench synth --out $(BENCH_SYNTH_DIR) --style chip --n 10000 --seed 0 --splits 4/1/5 --masks --cache-size 64; \
	fi

bench: synth-bench ## train the 4 small models (hybrid, its trunk alone, ConvNeXt, ViT) on the synthetic set, explain them, write the leaderboard to $(RESULTS)/
	$(BIN)/agebench bench --config experiments/bench.yaml --out $(RESULTS)
	$(BIN)/agebench explain $$(for run in $(RESULTS)/synth/*/seed*; do printf -- '--run %s ' "$$run"; done) --n $(EXPLAIN_N) --out $(RESULTS)/explain
	$(BIN)/agebench leaderboard $(RESULTS) --format all --out $(RESULTS)

# Occlusion (one forward pass per window position) maps every model the same way at input resolution, where
# Grad-CAM's grid is each architecture's own (ConvNeXt 2x2 at 64 px); --control scores each untrained twin too.
bench-occlusion: ## occlusion maps of `make bench`'s run, untrained controls beside them (about 5 min on 2 cores) -> $(RESULTS)/explain/occlusion.png
	@ls -d $(RESULTS)/synth/*/seed* >/dev/null 2>&1 || { echo "make bench-occlusion: no bench run in $(RESULTS)/synth: run make bench first" >&2; exit 1; }
	$(BIN)/agebench explain $$(for run in $(RESULTS)/synth/*/seed*; do printf -- '--run %s ' "$$run"; done) --n $(EXPLAIN_N) --out $(RESULTS)/explain --method occlusion --control --no-failures
	$(BIN)/agebench leaderboard $(RESULTS) --format all --out $(RESULTS)

bench-assurance: synth-bench ## planted disparity: bench's convnext-atto on the bench set and on it with dark skin drawn 8 years older (test only) -> $(RESULTS)-assurance/
	@if ! { grep -qs '"style": "chip"' data/synth-bench-dark8/synth.json && test -f data/synth-bench-dark8/manifest.cache.npy; }; then \
	  if test -d $(RESULTS)-assurance; then echo "make bench-assurance: data/synth-bench-dark8 must be redrawn, but $(RESULTS)-assurance holds cells trained on the old sets: make clean (or remove $(RESULTS)-assurance) first" >&2; exit 1; fi; \
	  $(BIN)/agebench synth --out data/synth-bench-dark8 --style chip --n 10000 --seed 0 --splits 4/1/5 --masks --cache-size 64 --apparent-bias skin_tone=dark:+8; \
	fi
	$(BIN)/agebench bench --config experiments/assurance.yaml --out $(RESULTS)-assurance
	$(BIN)/agebench assurance $(RESULTS)-assurance --thresholds 13,16,18,21,25
	$(BIN)/agebench leaderboard $(RESULTS)-assurance --format all --out $(RESULTS)-assurance

CROSS_N ?= 2500
bench-cross: ## cross-dataset matrix on two synthetic styles (studio, snapshot): train on each, test on both -> $(RESULTS)-cross/
	@test -f data/synth-studio/manifest.cache.npy || $(BIN)/agebench synth --out data/synth-studio --style studio --n $(CROSS_N) --seed 1 --size 64 --cache-size 64
	@test -f data/synth-snapshot/manifest.cache.npy || $(BIN)/agebench synth --out data/synth-snapshot --style snapshot --n $(CROSS_N) --seed 2 --size 64 --cache-size 64
	$(BIN)/agebench bench --config experiments/cross.yaml --out $(RESULTS)-cross
	$(BIN)/agebench leaderboard $(RESULTS)-cross --format all --out $(RESULTS)-cross

# The paper protocol's three full-size models at 224 px through `torchrun ... agebench bench --cell K`, as on a GPU
# node, but on CPU (2 gloo processes, 2 steps, 4 test images): a few minutes here; a rerun skips finished cells.
paper-dry-run: ## dry run of experiments/paper/synth_gpu.yaml on CPU (2-process DDP, 2 steps), checks README's parameter counts
	$(BIN)/python scripts/paper_dry_run.py --out $(PAPER_DRY_OUT) --data $(PAPER_DRY_DATA)

clean: ## remove generated data, runs and results (keeps .venv)
	rm -rf data/synth data/synth-dry data/synth-bench data/synth-bench-dark8 data/synth-studio data/synth-snapshot runs results results-cross results-assurance lightning_logs
