# The two commands the README opens with:
#   make demo   set up the virtualenv, then convert the sample, train briefly, benchmark input
#   make test   set up the virtualenv, then run the test suite
# Both create .venv on first use and reuse it afterwards.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?= ../shared/data/dogs-vs-cats/train
BUILD   ?= build
RECORDS ?= $(BUILD)/records
MODEL   ?= $(BUILD)/model
# Demo training is a short smoke run on CPU; raise these on a GPU machine.
EPOCHS  ?= 2
STEPS   ?= 20
WEIGHTS ?= none

.PHONY: setup demo records train benchmark test lint clean

# Reinstall only when the dependency declarations change.
$(BIN)/.installed: setup.cfg pyproject.toml requirements-lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements-lock.txt -e '.[test]'
	touch $@

setup: $(BIN)/.installed

records: setup
	$(BIN)/make_records --input=$(DATA) --output_dir=$(RECORDS) --max_short_side=160

train: records
	$(BIN)/train --records_dir=$(RECORDS) --model_dir=$(MODEL) --weights=$(WEIGHTS) \
	  --epochs=$(EPOCHS) --steps_per_epoch=$(STEPS) --batch_size=32

benchmark: records
	$(BIN)/benchmark_input --records_dir=$(RECORDS) --images_dir=$(DATA) \
	  --output_dir=$(BUILD)/benchmark

demo: records train benchmark

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/python -m pip install -q ruff==0.17.5
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

clean:
	rm -rf $(BUILD)
