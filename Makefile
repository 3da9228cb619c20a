# mail-tf: `make test` and `make benchmark` create .venv/ and install everything on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

MODELS ?= mail_rn18,mail_rn50,resnet18_pair
IMAGE_SIZE ?= 128
BATCH_SIZE ?= 32
OUT ?= runs

.PHONY: install test benchmark clean

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
	$(PY) -m pytest

benchmark: $(STAMP)
	$(PY) -m experiments.benchmark --models $(MODELS) --image-size $(IMAGE_SIZE) \
		--batch-size $(BATCH_SIZE) --json $(OUT)/benchmark.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
