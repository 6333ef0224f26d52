"""Build an edge worker from the settings: its cores, threads, model instances and self-measured speed."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from haystack import Document

from cloud.certs import CA_CERT
from edge.reader import EdgeReader
from edge.registry import EntrySeal, Registry, WorkerEntry, check_worker_id, open_registry
from edge.worker import EdgeWorker, make_server
from pipelines.cloud_path import cloud_dir_of
from pipelines.edge_pipeline import edge_reader_for
from pipelines.errors import PipelineError
from pipelines.settings import Settings, default_data_dir

__all__ = ["build_worker", "check_worker_id", "make_server", "parse_cores", "registry_for"]

logger = logging.getLogger(__name__)

_PARAMS = re.compile(r"(?<![a-z0-9])(\d+(?:\.\d+)?[mb])(?![a-z0-9])", re.I)
_QUANT = re.compile(r"(?<![a-z0-9])((?:iq|q)\d(?:_[a-z0-9]+)*|bf16|f16|f32)(?![a-z0-9])", re.I)


def registry_for(settings: Settings, seal: EntrySeal | None = None) -> Registry:
    """The workers' registry of the settings; a worker or `ecqa edge list` with none set uses the default folder.

    :param seal: how entries are signed and opened (:mod:`pipelines.fleet`); None in an insecure fleet.
    :raises RegistryError: a malformed Redis URL, or a Redis one without a password in a secure fleet.
    """
    folder = default_data_dir() / "registry"
    password = settings.registry_password.get_secret_value() if settings.registry_password else None
    spec = settings.effective_registry() or str(folder)
    redis = {"password": password, "username": settings.registry_username or None,
             "ca_file": str(cloud_dir_of(settings) / CA_CERT), "require_auth": not settings.fleet_insecure}
    return open_registry(spec, folder, settings.registry_ttl_s, seal, **redis)


def parse_cores(spec: str | None) -> list[int]:
    """CPU numbers from "0,2-3"; None or '' = the CPUs this process may run on now.

    :raises PipelineError: malformed, or CPUs this machine does not let the process use.
    """
    allowed = sorted(os.sched_getaffinity(0))
    if not spec:
        return allowed
    cores: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            a, b = int(lo), int(hi or lo)
            if a > b:
                raise ValueError
            cores.update(range(a, b + 1))
    except ValueError:
        raise PipelineError(f"--cores {spec[:40]!r} is not a CPU list — write it like 0 or 0,1 or 0-3") from None
    missing = sorted(cores - set(allowed))
    if missing:
        raise PipelineError(f"CPU {missing[0]} is not available here (available: {_ranges(allowed)}) — pick from those")
    return sorted(cores)


def _ranges(cores: list[int]) -> str:
    out, start = [], None
    for i, c in enumerate(cores):
        start = c if start is None else start
        if i + 1 == len(cores) or cores[i + 1] != c + 1:
            out.append(f"{start}-{c}" if c != start else str(c))
            start = None
    return ",".join(out)


def describe_model(file_name: str) -> tuple[str, str]:
    """Parameter count and quantization from a GGUF file name ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")."""
    stem = Path(file_name).stem
    params = _PARAMS.search(stem)
    quant = _QUANT.findall(stem)
    return (params.group(1).upper() if params else "", quant[-1].upper() if quant else "")


# A read of this passage (~300 prompt tokens with the instructions) measures what the worker serves.
_SPEED_PASSAGE = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region "
                  "in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway who, "
                  "under their leader Rollo, agreed to swear fealty to King Charles III of West Francia. ") * 3


def _measure_read(reader: EdgeReader) -> float:
    """Prompt tokens per second of one whole read (probe, answer, parse) of a fixed passage."""
    doc = Document(id="speed", content=_SPEED_PASSAGE, meta={"title": "Normans"})
    store, reader.generator.store = reader.generator.store, None  # prefilled as a new passage, never a stored state
    try:
        t0 = time.perf_counter()
        ans = reader.read("Who was the leader of the Normans?", [doc])
        seconds = time.perf_counter() - t0
    finally:
        reader.generator.store = store
    tokens = ans.usage.get("prompt_tokens", 0) or len(_SPEED_PASSAGE) // 4
    return tokens / max(seconds, 1e-9)


def build_worker(settings: Settings, worker_id: str, cores: list[int], concurrency: int, queue: int,
                 registry: Registry | None, threads: int = 0) -> EdgeWorker:
    """A worker pinned to ``cores`` with ``concurrency`` loaded model instances, its speed measured.

    Each instance gets ``len(cores) // concurrency`` threads (at least 1) unless ``threads`` is given:
    more threads than cores made llama.cpp stall (`make bench-dispatch`, contention table).

    :raises PipelineError: a bad id; :raises ModelError: the model does not load.
    """
    check_worker_id(worker_id)
    os.sched_setaffinity(0, cores)  # the process's threads (llama.cpp's included) stay on its cores
    per = threads or max(1, len(cores) // concurrency)
    readers = []
    for _ in range(concurrency):
        readers.append(edge_reader_for(settings, n_threads=per).warm_up())
    llama = readers[0].generator.reader
    prompt_tps, gen_tps = llama.measure_speed()
    read_tps = _measure_read(readers[0])
    params, quant = describe_model(llama.name)
    logger.info("worker %s: %s, %.0f prompt tok/s, %.1f gen tok/s", worker_id, llama.name, prompt_tps, gen_tps)
    entry = WorkerEntry(id=worker_id, url="", model=llama.name, parameters=params, quantization=quant,
                        n_ctx=settings.slm_n_ctx, threads=per, cores=_ranges(cores), prompt_tps=round(prompt_tps, 1),
                        gen_tps=round(gen_tps, 2), read_tps=round(read_tps, 1))
    return EdgeWorker(readers, entry, queue, registry)
