# Two commands on a fresh machine: `make demo` and `make test`.
# Everything they need is installed here: Debian's registry and skopeo (system),
# and a virtualenv in .venv with modelpack and its test dependencies.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install system-deps peers demo test test-fast interop lint format bench bench-cluster bench-hubs bench-images harbor-screenshots docs dist clean

install: $(STAMP)

system-deps:
	@scripts/install-system-deps.sh

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	@scripts/install-system-deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -U pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@# Byte-compile the checkout: with PYTHONDONTWRITEBYTECODE set, every start would recompile it.
	@$(PY) -m compileall -q modelpack modelpack_cli >/dev/null
	@touch $(STAMP)
	@echo "installed modelpack into $(VENV)"

# The reference tools (oras, modctl, kit, cosign, crane, regctl) at the pins in
# scripts/peers/pins.txt, built from the Go module proxy once into ~/.cache/modelpack-peers
# (MODELPACK_PEERS_DIR); a tool is rebuilt only when its pin changes.
# Also the Rust peers, one cargo workspace in tests/clients/ (dfdaemon, the hf-hub crate,
# Dragonfly's hf:// backend) from crates.io at its Cargo.lock, rebuilt only when it changes,
# Dragonfly's Go manager and scheduler at their pins, and Harbor's core, jobservice and
# registryctl (v2.15.2 and main) from the source snapshots in ../shared/peer-src
# (scripts/peers/build-harbor.sh, rebuilt only when a snapshot changes; scripts/peers/build-all.sh),
# and MatrixHub from the same folder (scripts/peers/build-matrixhub.sh: its server and its
# React UI, which the model-page test opens in Chromium; MODELPACK_MATRIXHUB_UI=0 leaves the UI out).
peers:
	@bash scripts/peers/build-all.sh

demo: install
	@$(PY) examples/demo.py

# The peers build in the background while the tests that need none run (scripts/test.sh).
test: install
	@PY=$(PY) scripts/test.sh

# Harbor's web UI showing a model: builds Harbor's portal once (scripts/peers/build-harbor-portal.sh,
# npm and Angular, about 5 minutes from nothing on 2 cores; not part of `make test` or `make peers`),
# serves it with nginx in front of a Harbor and writes docs/img/harbor-*.png
# (scripts/harbor_screenshots.py). Needs Debian's nginx and chromium, and Node.js with npm.
harbor-screenshots: install
	@MODELPACK_HARBOR_VERSIONS=v2.15.2 bash scripts/peers/build-harbor.sh
	@MODELPACK_HARBOR_VERSIONS=v2.15.2 bash scripts/peers/build-harbor-portal.sh
	@$(PY) scripts/harbor_screenshots.py --version v2.15.2

# Run the interop tests (the reference tools, the Python peers, skopeo, both registries)
# and write their matrix into docs/interop.md.
interop: install peers
	@$(PY) scripts/interop_matrix.py

test-fast: install
	@$(PY) -m pytest -m "not integration"

lint: install
	@$(VENV)/bin/ruff check modelpack modelpack_cli tests examples benchmarks
	@$(VENV)/bin/ruff format --check modelpack modelpack_cli tests examples benchmarks

format: install
	@$(VENV)/bin/ruff check --fix modelpack modelpack_cli tests examples benchmarks
	@$(VENV)/bin/ruff format modelpack modelpack_cli tests examples benchmarks

$(VENV)/.bench-installed: $(STAMP)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[bench]'
	@touch $@

# Case a's push and pull also go through Harbor v2.15.2 (built once by build-harbor.sh, about
# 10 minutes from nothing, then cached); without a build the Harbor rows are left out, saying so.
# The speed case (the gateway with and without its authorization cache beside nginx, wrk;
# benchmarks/gateway_speed.py) writes its own section; `make install` installs wrk and nginx.
bench: install $(VENV)/.bench-installed
	@MODELPACK_HARBOR_VERSIONS=v2.15.2 bash scripts/peers/build-harbor.sh || echo "make bench: Harbor v2.15.2 not built, no Harbor rows" >&2
	@$(PY) -m benchmarks $(BENCH_ARGS)

# 8 nodes (network namespaces) pull one model at once: from the registry, through a
# distribution mirror, through modelpack serve (benchmarks/cluster_bench.py). Root only.
bench-cluster:
	@if [ "$$(id -u)" != 0 ]; then echo "make bench-cluster needs root (network namespaces, veth, tc)" >&2; exit 2; fi
	@$(MAKE) --no-print-directory install $(VENV)/.bench-installed
	@$(PY) -m benchmarks.cluster_bench $(BENCH_ARGS)

# modelpack serve and MatrixHub side by side (issue 32), one run on this machine: downloads
# through each hub's proxy (cold, warm, 8 clients at once), uploads through LFS and Xet,
# list_models over 200 repositories, 8 nodes in network namespaces through each; the section
# "MatrixHub side by side" of docs/benchmarks.md (benchmarks/hubs.py). MatrixHub is built
# once from ../shared/peer-src (scripts/peers/build-matrixhub.sh). Root only (a network
# namespace of its own, iptables byte counters in it). About 8 minutes; up to 12 GiB in
# --workdir (BENCH_ARGS="--workdir /dev/shm/hubs" to keep them off the disk). Then a 1 GiB
# file changed by 5 % downloaded again through Xet, plain HTTP and MatrixHub, the section
# "Xet downloads: a changed file again" (benchmarks/xet_download.py; XET_ARGS="--mib 256"
# for a smaller file): a few minutes more, up to 7 GiB in its --workdir.
bench-hubs:
	@if [ "$$(id -u)" != 0 ]; then echo "make bench-hubs needs root (network namespaces, iptables)" >&2; exit 2; fi
	@$(MAKE) --no-print-directory install $(VENV)/.bench-installed
	@bash scripts/peers/build-matrixhub.sh
	@$(PY) -m benchmarks --cases hubs $(BENCH_ARGS)
	@$(PY) -m benchmarks.xet_download $(XET_ARGS)

# A node's cold start: modelpack pull -o vs containerd pulling the model as an image
# (image volume, modelcar), benchmarks/cold_start.py. Root only (it runs containerd).
bench-images:
	@if [ "$$(id -u)" != 0 ]; then echo "make bench-images needs root (it runs containerd)" >&2; exit 2; fi
	@$(MAKE) --no-print-directory install $(VENV)/.bench-installed
	@$(PY) -m benchmarks.cold_start $(BENCH_ARGS)

# The documentation site (mkdocs + material + mkdocstrings + mkdocs-click) into site/.
# `make test` builds it too (tests/unit/test_docs_site.py), so a broken link fails the tests.
# (mkdocs and its plugins come with the [test] extra that `make install` installs.)
docs: install
	@NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d site
	@echo "site built in site/ (open site/index.html)"

# The sdist and wheel in dist/, checked with twine.
dist: install
	@$(PY) -m pip install -q --disable-pip-version-check build twine
	@rm -rf dist
	@$(PY) -m build -q -o dist .
	@$(PY) -m twine check --strict dist/*
	@ls -l dist

clean:
	rm -rf $(VENV) build dist site *.egg-info .pytest_cache .ruff_cache
