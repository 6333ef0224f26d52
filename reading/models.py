"""Verifying the manifest's GGUF files in one cache folder, and resolving a setting to a file that may be loaded.

Every model file is checked against the manifest (size + SHA-256) before anything loads it; a
stamp written after a full check keeps that check cheap on every later load. Fetching the files
is :mod:`reading.model_fetch`'s; the manifest itself is :mod:`reading.model_manifest`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from reading.errors import ModelFileError, ModelNotPulledError, ModelVerifyError
from reading.model_manifest import MODELS, ModelSpec, get_spec

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)``: called while downloading, assembling or hashing."""
PullState = Literal["verified", "unverified", "missing"]

CHUNK = 1 << 20  # bytes per read/write while assembling or hashing
GGUF_MAGIC = b"GGUF"


# --- the cache folder and its stamps ----------------------------------------------------------
def models_dir() -> Path:
    """``$ECQA_MODELS_DIR``, else ``$XDG_CACHE_HOME/ecqa/models``, else ``~/.cache/ecqa/models``."""
    configured = os.environ.get("ECQA_MODELS_DIR")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ecqa" / "models"


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_of(path: Path, sha256: str) -> dict[str, int | str]:
    st = path.stat()
    # ctime too: a write with the modification time put back (`touch -r`) still moves the change time,
    # which no user call can set. (Copying or chmod-ing the cache moves it as well: one re-hash, no harm.)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino,
            "sha256": sha256}


def _stamp_ok(spec: ModelSpec, path: Path) -> bool:
    """Whether ``path`` was fully hashed as ``spec`` and has not changed since (size, mtime, ctime, inode)."""
    try:
        if path.stat().st_size != spec.size:
            return False
        return bool(json.loads(_stamp_path(path).read_text()) == _stamp_of(path, spec.sha256))
    except (OSError, ValueError):
        return False


def _write_stamp(spec: ModelSpec, path: Path) -> None:
    """Record a full check. Best effort: the stamp only spares work (a read-only cache re-hashes)."""
    stamp = _stamp_path(path)
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(_stamp_of(path, spec.sha256)) + "\n")
        os.replace(tmp, stamp)
    except OSError as exc:
        logger.warning("cannot write %s (%s): the next load hashes %s again", stamp, exc.strerror, path.name)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _hash_file(path: Path, progress: Progress | None = None) -> tuple[int, str]:
    """(bytes read, SHA-256 hex) of ``path``."""
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as fh:
        while chunk := fh.read(4 * CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return done, digest.hexdigest()


def _mismatch(spec: ModelSpec, size: int, sha256: str) -> str:
    size_note = "" if size == spec.size else f"; size expected {spec.size}, got {size}"
    return f"sha256 expected {spec.sha256}, got {sha256}{size_note}"


def _rehash(spec: ModelSpec, path: Path, progress: Progress | None = None) -> tuple[bool, int, str]:
    """Hash ``path`` in full; stamp it if it is ``spec``'s file, else remove its stamp.

    :returns: (whether it is, its size, its SHA-256).
    """
    size, sha256 = _hash_file(path, progress)
    ok = size == spec.size and sha256 == spec.sha256
    if ok:
        _write_stamp(spec, path)
    else:
        _stamp_path(path).unlink(missing_ok=True)
    return ok, size, sha256


def _check_file(spec: ModelSpec, path: Path, progress: Progress | None = None) -> None:
    """:raises ModelVerifyError: ``path`` is not ``spec``'s file (see :func:`_rehash`)."""
    ok, size, sha256 = _rehash(spec, path, progress)
    if not ok:
        raise ModelVerifyError(
            f"model {spec.name} at {path} does not match the manifest ({_mismatch(spec, size, sha256)}) — "
            f"nothing was loaded; run `ecqa models pull {spec.name}` to fetch it again"
        )


def pull_state(name: str) -> PullState:
    """``verified`` (stamp valid), ``unverified`` (file present, not checked since it changed) or ``missing``.

    Cheap: never hashes.
    """
    spec = get_spec(name)
    path = models_dir() / spec.file
    if _stamp_ok(spec, path):
        return "verified"
    return "unverified" if path.is_file() else "missing"


def model_path(name: str, *, verify: bool = True) -> Path:
    """The pulled file of model ``name``, checked against the manifest.

    With ``verify`` (the default) a valid stamp (size, mtime, inode, sha256 of the last full check)
    makes the check cheap; a size change or a stale stamp costs one full re-hash.

    :raises UnknownModelError: not in the manifest.
    :raises ModelNotPulledError: not in the cache.
    :raises ModelVerifyError: the file's hash is not the manifest's.
    """
    spec = get_spec(name)
    path = models_dir() / spec.file
    if not path.is_file():
        raise ModelNotPulledError(f"model {name} is not pulled — run `ecqa models pull {name}`")
    if verify and not _stamp_ok(spec, path):
        logger.info("hashing %s: it changed since its last check, or was never checked", path)
        _check_file(spec, path)
    return path


def verify(name: str, *, progress: Progress | None = None) -> tuple[bool, str]:
    """Re-hash the pulled file of ``name`` in full, renewing or removing its stamp.

    :returns: (whether size and SHA-256 match the manifest, the file's SHA-256).
    :raises ModelNotPulledError: not in the cache.
    """
    spec = get_spec(name)
    path = models_dir() / spec.file
    if not path.is_file():
        raise ModelNotPulledError(f"model {name} is not pulled — run `ecqa models pull {name}`")
    ok, _size, sha256 = _rehash(spec, path, progress)
    return ok, sha256


def _manifest_spec_at(path: Path) -> ModelSpec | None:
    """The spec whose cached file ``path`` is (same folder as :func:`models_dir`, same file name)."""
    if os.path.realpath(path.parent) != os.path.realpath(models_dir()):
        return None
    return next((spec for spec in MODELS.values() if spec.file == path.name), None)


def spec_for_path(path: str | Path) -> ModelSpec | None:
    """The manifest entry of a model file, to learn its prompt family or hash; None for other files.

    A file in :func:`models_dir` is known by its name; a copy elsewhere by its name and size
    (not hashed here: only :func:`model_path` and :func:`resolve_gguf` vouch for the bytes).
    """
    p = Path(path).expanduser()
    spec = _manifest_spec_at(p)
    if spec is not None:
        return spec
    for spec in MODELS.values():
        if p.name == spec.file:
            with contextlib.suppress(OSError):
                if p.stat().st_size == spec.size:
                    return spec
    return None


def _sha256_of(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def model_sha256(path: str | Path) -> str:
    """The SHA-256 of a model file: the manifest's for a verified manifest file, else hashed once per
    (path, size, mtime) in this process (about 1 s per GB)."""
    p = Path(path).expanduser()
    spec = _manifest_spec_at(p)
    if spec is not None and _stamp_ok(spec, p):
        return spec.sha256
    st = p.stat()
    key = (os.path.realpath(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = _sha256_of(p)
    return _SHA_CACHE[key]


def resolve_gguf(value: str, default: str) -> Path:
    """Turn a setting value into the path of a GGUF file that may be loaded.

    ``''`` → the pulled model ``default``; a manifest name → that pulled model; otherwise a path
    to an existing GGUF file (a manifest file inside :func:`models_dir` is verified as such).

    :raises ModelNotPulledError: a manifest model that is not pulled.
    :raises ModelVerifyError: a manifest model whose file does not match.
    :raises ModelFileError: a path that does not exist or is not a GGUF file.
    """
    value = value.strip()
    if not value:
        return model_path(default)
    if value in MODELS:
        return model_path(value)
    path = Path(value).expanduser()
    spec = _manifest_spec_at(path)
    if spec is not None:
        return model_path(spec.name)
    names = ", ".join(MODELS)
    if not path.is_file():
        raise ModelFileError(
            f"model {value!r} is neither a model name nor a file — give the path of a GGUF file, "
            f"or one of: {names} (fetch it with `ecqa models pull NAME`)"
        )
    try:
        with path.open("rb") as fh:
            magic = fh.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelFileError(f"cannot read model {path}: {exc.strerror} — check its permissions") from None
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"{path} is not a GGUF file — convert it with llama.cpp's convert_hf_to_gguf.py, "
            f"or give one of: {names} (fetch it with `ecqa models pull NAME`)"
        )
    return path

