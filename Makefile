# mail-tf: every target creates .venv/ and installs everything on a fresh machine first.
#   make train [DATASET=medmnist] [MODEL=mail_rn18] [EPOCHS=] [IMAGE_SIZE=] [BATCH_SIZE=] [SEED=] [OUT=runs/x] [ADV=1]
#   make test [TEST_WORKERS=2] | make benchmark [RATIOS=1] (RATIOS=1: only MAIL-RN18's speed ratios to the plain pair)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

DATASET ?= medmnist
MODEL ?= mail_rn18
MODELS ?= mail_rn18,mail_rn50,resnet18_pair,drifa_net
# Empty: the experiment's own defaults (train) or 128 / 32 (benchmark).
EPOCHS ?=
IMAGE_SIZE ?=
BATCH_SIZE ?=
SEED ?=
OUT ?=
# Test processes (pytest-xdist; a test file stays in one process, so its module fixtures are built
# once). Most of the suite's time is single-threaded graph tracing: two processes use both cores.
TEST_WORKERS ?= 2

.PHONY: install train test benchmark clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# medmnist hard-requires torch; only its metadata is used, so never let pip resolve its deps.
	$(PY) -m pip install --quiet --no-deps 'medmnist==3.0.2'
	$(PY) -c "import importlib.util as u, sys; sys.exit('torch must not be installed' if u.find_spec('torch') else 0)"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

train: $(STAMP)
	$(PY) -m experiments.train --dataset $(DATASET) --model $(MODEL) $(if $(EPOCHS),--epochs $(EPOCHS)) \
		$(if $(IMAGE_SIZE),--image_size $(IMAGE_SIZE)) $(if $(BATCH_SIZE),--batch_size $(BATCH_SIZE)) \
		$(if $(SEED),--seed $(SEED)) $(if $(OUT),--run $(OUT)) $(if $(RESUME),--resume) $(if $(OVERWRITE),--overwrite) \
		$(if $(ADV),--adversarial)

benchmark: $(STAMP)
	$(PY) -m experiments.benchmark --models $(if $(RATIOS),mail_rn18,$(MODELS)) --image_size $(or $(IMAGE_SIZE),128) \
		--batch_size $(or $(BATCH_SIZE),32) $(if $(RATIOS),--ratios_only) --out $(or $(OUT),runs)/benchmark.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
