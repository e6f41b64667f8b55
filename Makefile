# miniai — the plain entry points. `make train` and `make test` are the README's two commands; both set up
# everything they need first (a venv in .venv, torch, the package, the data).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# torch is installed first and on its own, so the package install never swaps it for another build.
# Other hardware (e.g. a CUDA or Apple machine): make train TORCH_SPEC="torch==X torchvision==Y"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
OUT ?= runs/flagship
TRAIN_ARGS ?=
PYTEST_ARGS ?=
PY := $(VENV)/bin/python
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup data train test bench docs export clean-nbs check-sync help gpu-check

help:
	@echo "make train   - set up, then train the flagship model on Fashion-MNIST (report in $(OUT))"
	@echo "make test    - set up, then run every test (library, real data, all notebooks in quick mode)"
	@echo "make bench   - run the benchmarks in bench/"
	@echo "make gpu-check - on a CUDA machine: tests on the GPU + overhead/time-to-accuracy/amp benchmarks, one table (exit 3: no GPU)"
	@echo "make docs    - build the docs site into _docs/ (nbdev-docs if quarto is on PATH, else offline mkdocs)"
	@echo "make export  - regenerate miniai/ from nbs/ ;  make clean-nbs - strip notebook metadata"

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev,docs]"
	$(PY) -c "import torch, miniai; print('installed torch', torch.__version__, '| miniai', miniai.__version__)"
	touch $@

setup: $(VENV)/.installed

# Fashion-MNIST: Debian's package when apt is here (offline-friendly); otherwise the HF hub is used at first load.
data:
	@if [ -d "$(MINIAI_DATA)" ] && [ -n "$(MINIAI_DATA)" ]; then echo "data: using MINIAI_DATA=$(MINIAI_DATA)"; \
	elif [ -d $(FASHION_DIR) ]; then echo "data: $(FASHION_DIR) present"; \
	elif command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "data: installing Debian's dataset-fashion-mnist"; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "data: no apt-get; the first load will download Fashion-MNIST from the HF hub"; fi

# the report goes to $(OUT), except for your own pictures (TRAIN_ARGS="--images DIR"): miniai names their folder
# runs/DIR-RECIPE, so a Fashion-MNIST report is not overwritten (OUT=... on the command line still decides)
TRAIN_OUT = $(if $(filter command line environment,$(origin OUT)),--out $(OUT),$(if $(findstring --images,$(TRAIN_ARGS)),,--out $(OUT)))
train: setup data
	$(VENV)/bin/miniai train $(TRAIN_OUT) $(TRAIN_ARGS)

test: setup data
	$(PY) -m pytest tests --durations=15 -ra $(PYTEST_ARGS)

bench: setup data
	$(PY) bench/overhead.py
	$(PY) bench/callback_order.py
	$(PY) bench/data.py
	$(PY) bench/datablock.py
	$(PY) bench/amp.py

# The GPU check (bench/gpu_check.sh): ~6 minutes on one GPU; exit status 3 when there is no CUDA GPU.
gpu-check: setup data
	PYTHON=$(PY) bench/gpu_check.sh

# The lessons and API reference as a static site. Quarto (nbdev's own route) can't be fetched offline, so without it
# tools/build_docs.py builds the site with mkdocs-material + mkdocs-jupyter; DOCS_ARGS=--execute re-runs the notebooks.
DOCS_ARGS ?=
docs: setup
	@if command -v quarto >/dev/null; then $(VENV)/bin/nbdev-docs; \
	else $(PY) tools/build_docs.py $(DOCS_ARGS); fi

export: setup
	$(VENV)/bin/nbdev-export

clean-nbs: setup
	$(VENV)/bin/nbdev-clean
