# The two commands the README opens with:
#   make demo   set up the virtualenv, then convert the sample, train briefly, benchmark input
#   make test   set up the virtualenv, then run the test suite
# Both create .venv on first use and reuse it afterwards.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?= ../shared/data/dogs-vs-cats/train
BUILD   ?= build
# Training reads records re-encoded to a 160-pixel short side (cheaper to decode); the
# benchmark compares them with a full-resolution copy.
RECORDS ?= $(BUILD)/records
RECORDS_FULL ?= $(BUILD)/records_full
MODEL   ?= $(BUILD)/model
# Demo training is a short smoke run on CPU (VGG16 trains at ~2 images/s on 2 cores):
# on a GPU machine use e.g. `make train EPOCHS=10 STEPS= VAL_STEPS= WEIGHTS=imagenet BATCH=64`.
EPOCHS  ?= 2
STEPS   ?= 5
VAL_STEPS ?= 2
BATCH   ?= 16
WEIGHTS ?= none
# Freezing blocks 1-4 only makes sense with pretrained weights.
FREEZE  ?= $(if $(filter none,$(WEIGHTS)),0,15)

.PHONY: setup data demo records records_full train benchmark test lint clean

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
	$(BIN)/make_records --input=$(DATA) --output_dir=$(RECORDS) --max_short_side=160

records_full: setup data
	$(BIN)/make_records --input=$(DATA) --output_dir=$(RECORDS_FULL)

train: records
	$(BIN)/train --records_dir=$(RECORDS) --model_dir=$(MODEL) --weights=$(WEIGHTS) \
	  --freeze_layers=$(FREEZE) --epochs=$(EPOCHS) --batch_size=$(BATCH) \
	  $(if $(STEPS),--steps_per_epoch=$(STEPS)) $(if $(VAL_STEPS),--validation_steps=$(VAL_STEPS))

benchmark: records records_full
	$(BIN)/benchmark_input --records_dir=$(RECORDS_FULL) --small_records_dir=$(RECORDS) \
	  --images_dir=$(DATA) --output_dir=$(BUILD)/benchmark

demo: records train benchmark

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/python -m pip install -q ruff==0.17.5
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

clean:
	rm -rf $(BUILD)
