# Everything runs from a local virtual environment that the first target creates.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
NPA    := $(VENV)/bin/npa
STAMP  := $(VENV)/.installed
# The data path's kernels (a .py and its .pxd each): compiled at install, so a change rebuilds.
PXD     := $(shell find nic_model runtime -name '*.pxd')
KERNELS := $(PXD) $(PXD:.pxd=.py)

.PHONY: all demo test fuzz sysdeps build abi bench conformance clean

all: test

$(STAMP): pyproject.toml setup.py $(KERNELS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	$(NPA) build
	$(NPA) inspect plugins-wasm/ixgbevf.wasm
	$(NPA) conformance plugins-wasm/ixgbevf.wasm
	$(NPA) run
	$(NPA) run --packets 300000 --migrate-to mlx5 --migrate-at 60000 --plot timeline.png

# System tools the network tests use (tests/test_network.py), installed where missing when we
# are root on Debian; elsewhere those tests skip and say why.
SYSDEPS := ip:iproute2 ping:iputils-ping tcpdump:tcpdump iperf3:iperf3 curl:curl
sysdeps:
	@missing=""; for d in $(SYSDEPS); do command -v $${d%%:*} >/dev/null 2>&1 || missing="$$missing $${d##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; } \
	      || echo "note: could not install$$missing: the network tests will be skipped"; \
	  else echo "note: the network tests need$$missing (not root, or no apt-get): they will be skipped"; fi; \
	fi

test: $(STAMP) sysdeps
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest

# Property tests at every trust boundary, long: at least 100,000 inputs, counted per boundary.
fuzz: $(STAMP)
	NPA_FUZZ_EXAMPLES=25000 $(PY) -m pytest tests/test_fuzz.py tests/test_kernels.py -p no:cacheprovider

build: $(STAMP)
	$(NPA) build

abi: $(STAMP)
	$(PY) -m npa.shell_api.gen

conformance: $(STAMP)
	for image in plugins-wasm/*.wasm; do $(NPA) conformance -q $$image || exit 1; done

bench: $(STAMP)
	$(NPA) bench kernels
	$(NPA) bench calls
	$(NPA) bench datapath
	$(NPA) bench nics
	$(NPA) bench switch
	$(NPA) bench noisy

clean:
	rm -rf $(VENV) build *.egg-info
	find nic_model runtime -name "*.so" -delete; rm -f $(PXD:.pxd=.c)
