# Everything runs from a local virtual environment that the first target creates.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
NPA    := $(VENV)/bin/npa
STAMP  := $(VENV)/.installed

.PHONY: all demo test fuzz build abi bench conformance clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	$(NPA) build
	$(NPA) inspect plugins-wasm/ixgbevf.wasm
	$(NPA) conformance plugins-wasm/ixgbevf.wasm
	$(NPA) run

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest

# Property tests at every trust boundary, long: at least 100,000 inputs, counted per boundary.
fuzz: $(STAMP)
	NPA_FUZZ_EXAMPLES=25000 $(PY) -m pytest tests/test_fuzz.py -p no:cacheprovider

build: $(STAMP)
	$(NPA) build

abi: $(STAMP)
	$(PY) -m shell_api.gen

conformance: $(STAMP)
	for image in plugins-wasm/*.wasm; do $(NPA) conformance -q $$image || exit 1; done

bench: $(STAMP)
	$(NPA) bench calls
	$(NPA) bench datapath
	$(NPA) bench nics
	$(NPA) bench switch
	$(NPA) bench noisy

clean:
	rm -rf $(VENV) build *.egg-info
