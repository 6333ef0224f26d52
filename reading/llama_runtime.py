"""llama.cpp with run-time CPU dispatch: load the best CPU variant before any model.

The wheel is built once with ``-DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DGGML_NATIVE=OFF``
(Makefile, ``LLAMA_CMAKE_ARGS``): every x86-64 CPU variant of ggml's CPU backend is a shared
library ``libggml-cpu-<variant>.so`` and ggml scores each against the running CPU, so one cached
wheel runs on Intel with AMX, AMD Zen 4 and plain AVX2 machines alike. A fixed flag list did not:
``-march=native`` segfaulted on Intel AMX, forced ``AVX_VNNI`` raised SIGILL on AMD EPYC.

llama-cpp-python 0.3.36 installs the variants into ``site-packages/bin`` (or the Makefile copies
them beside ``llama_cpp/lib/libggml.so``); ggml's own search looks only beside the executable and
in the working directory, so without :func:`load_backends` no CPU backend exists and model
loading fails. Call it once per process, before the first ``Llama(...)``.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# ggml's x86 variants (ggml/src/CMakeLists.txt, llama.cpp as vendored by llama-cpp-python 0.3.36)
# and the /proc/cpuinfo flags each needs (ggml/src/ggml-cpu/arch/x86/cpu-feats.cpp: "AVX512"
# checks F, CD, VL, DQ and BW; "AMX" checks AMX_INT8). ggml picks the one with the highest
# score among those the CPU supports: the variant whose needs are the largest supported set.
_AVX512 = ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")
_HASWELL = ("sse4_2", "avx", "f16c", "fma", "avx2", "bmi2")
X86_VARIANTS: dict[str, tuple[str, ...]] = {
    "x64": (),
    "sse42": ("sse4_2",),
    "sandybridge": ("sse4_2", "avx"),
    "ivybridge": ("sse4_2", "avx", "f16c"),
    "piledriver": ("sse4_2", "avx", "f16c", "fma"),
    "haswell": _HASWELL,
    "skylakex": _HASWELL + _AVX512,
    "cannonlake": _HASWELL + _AVX512 + ("avx512vbmi",),
    "cascadelake": _HASWELL + _AVX512 + ("avx512_vnni",),
    "icelake": _HASWELL + _AVX512 + ("avx512vbmi", "avx512_vnni"),
    "cooperlake": _HASWELL + _AVX512 + ("avx512_vnni", "avx512_bf16"),
    "zen4": _HASWELL + _AVX512 + ("avx512vbmi", "avx512_vnni", "avx512_bf16"),
    "alderlake": _HASWELL + ("avx_vnni",),
    "sapphirerapids": _HASWELL + _AVX512 + ("avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8"),
}
# The flags worth printing when a build does not run on a CPU.
RELEVANT_FLAGS = tuple(sorted({f for need in X86_VARIANTS.values() for f in need}))

_VARIANT_RE = re.compile(r"libggml-cpu-([A-Za-z0-9_.]+)\.so")


class LlamaRuntimeError(RuntimeError):
    """llama.cpp's CPU backends cannot be found or loaded (the environment needs a rebuild)."""


@dataclass(frozen=True)
class Runtime:
    """What :func:`load_backends` found: where the CPU variants live and which one was loaded."""

    llama_cpp_version: str
    backend_dir: str
    variants: tuple[str, ...]
    variant: str  # the CPU variant ggml loaded, e.g. "zen4"; "builtin" for a build without backend DL

    def to_json(self) -> dict[str, Any]:
        return {"llama_cpp_version": self.llama_cpp_version, "backend_dir": self.backend_dir,
                "variants": list(self.variants), "cpu_variant": self.variant}


def cpu_flags() -> set[str]:
    """The running CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def relevant_cpu_flags(flags: set[str] | None = None) -> list[str]:
    """Those of the CPU's flags that decide which llama.cpp variant can run."""
    have = cpu_flags() if flags is None else flags
    return [f for f in RELEVANT_FLAGS if f in have]


def best_variant(flags: set[str], built: tuple[str, ...] | list[str]) -> str | None:
    """The variant ggml should pick among ``built`` for a CPU with ``flags`` (None: none runs)."""
    ok = [v for v in built if v in X86_VARIANTS and set(X86_VARIANTS[v]) <= flags]
    return max(ok, key=lambda v: len(X86_VARIANTS[v]), default=None)


def _variants_in(folder: Path) -> tuple[str, ...]:
    found = []
    for p in folder.glob("libggml-cpu-*.so"):
        m = _VARIANT_RE.fullmatch(p.name)
        if m:
            found.append(m.group(1))
    return tuple(sorted(found))


def backend_dirs(llama_cpp_module: Any) -> list[Path]:
    """Where a llama-cpp-python wheel may have put the ``libggml-cpu-*.so`` variants, in order."""
    pkg = Path(llama_cpp_module.__file__).resolve().parent
    site = pkg.parent
    return [pkg / "lib", site / "bin", Path(sys.prefix) / "bin"]


def loaded_cpu_variant() -> str | None:
    """The CPU variant library mapped into this process (from /proc/self/maps), if any."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    m = _VARIANT_RE.search(maps)
    return m.group(1) if m else None


@functools.cache
def load_backends() -> Runtime:
    """Import llama_cpp and load ggml's best CPU backend for this CPU (once per process).

    :raises LlamaRuntimeError: llama-cpp-python is missing, or built with backend DL but its
        CPU variants are nowhere to be found.
    """
    try:
        import llama_cpp
    except ImportError as exc:
        raise LlamaRuntimeError(f"llama-cpp-python is not installed ({exc}) — run `make env`") from None
    version = str(getattr(llama_cpp, "__version__", "?"))
    from llama_cpp import _logger

    # llama.cpp logs every backend it loads to stderr until a model sets its verbosity.
    _logger.set_verbose(logger.isEnabledFor(logging.DEBUG))
    for folder in backend_dirs(llama_cpp):
        variants = _variants_in(folder)
        if variants:
            break
    else:
        # A build without GGML_BACKEND_DL links its CPU backend in: nothing to load.
        return Runtime(version, "", (), "builtin")
    # By soname: the copy libllama already loaded. The wheel holds libggml.so, .so.0 and .so.0.x as
    # separate files (zips keep no symlinks); opening another by path would load a second ggml
    # whose backend registry the model loader never sees.
    ggml = ctypes.CDLL("libggml.so.0")
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load_all_from_path.restype = None
    ggml.ggml_backend_load_all_from_path(str(folder).encode())
    variant = loaded_cpu_variant()
    if variant is None:
        raise LlamaRuntimeError(
            f"llama.cpp found CPU variants {', '.join(variants)} in {folder} but none runs on this CPU "
            f"(flags: {' '.join(relevant_cpu_flags()) or 'none'}) — rebuild with `make rebuild-llama`"
        )
    logger.info("llama.cpp %s: CPU variant %s from %s", version, variant, folder)
    return Runtime(version, str(folder), variants, variant)
