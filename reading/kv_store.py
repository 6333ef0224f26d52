"""The passage KV store: llama.cpp's per-sequence state of each [system + passage] prompt prefix,
on disk, so that reading a passage for a question prefills only the question.

One file per state, named by its key: the SHA-256 of the model file's SHA-256, the prompt
template's hash, the KV cache type and the prefix text (which holds the passage). A change of any of
them is another key, so a stale state is never found; the old file ages out by LRU.

- **Written atomically**: to a temporary file in the same folder, then renamed. Two processes
  sharing a folder never read a half-written state.
- **Checked on read**: a header carries the payload's length and the SHA-256 of the key and the
  payload together, so a state is bound to its passage: a file that does not match (truncated,
  corrupt, another format, or another passage's state copied under this name) is deleted and
  reported as a miss, never loaded. (This stops mistakes and stale copies; whoever can write the
  folder can still forge a state — keep it as private as the model files.)
- **Bounded**: a byte budget; past it, the least recently used files go (a hit refreshes a file's
  modification time).
- **Never an error to the user**: a folder that is read-only, full or deleted while running
  degrades to plain prefill with one warning (per store) in the log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MAGIC = b"ECQAKV2\n"
OLD_MAGIC = b"ECQAKV1\n"  # v1 hashed the payload alone: a v1 file is a quiet miss, recomputed and replaced
_HEADER = struct.Struct("<8sQ32s")  # magic, payload length, SHA-256 of key and payload
SUFFIX = ".kv"
DEFAULT_BUDGET_BYTES = 2 * 1024**3


def state_key(model_sha256: str, template_sha256: str, kv_type: str, prefix: str) -> str:
    """The key of one prefix state: any change of model, template, cache type or passage is a new key."""
    h = hashlib.sha256()
    for part in (model_sha256, template_sha256, kv_type, prefix):
        data = part.encode("utf-8", errors="surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _digest(key: str, payload: bytes) -> bytes:
    """What a state file's header carries: the SHA-256 of its key (the passage's) and its payload."""
    h = hashlib.sha256()
    data = key.encode("ascii", errors="replace")
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)
    h.update(payload)
    return h.digest()


@dataclass
class StoreStats:
    """What a store did since it was opened."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    evictions: int = 0
    corrupt: int = 0
    errors: int = 0


class PassageStateStore:
    """States on disk under ``folder``, at most ``budget_bytes`` in all.

    :param folder: created if missing (a failure to create it is a warning; the store then stays empty).
    :param budget_bytes: the most bytes the folder's states may take; 0 = store nothing.
    """

    def __init__(self, folder: Path | str, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.folder = Path(folder)
        self.budget_bytes = max(0, int(budget_bytes))
        self.stats = StoreStats()
        self._warned = False
        self._lock = threading.Lock()
        self._bytes: int | None = None  # the folder's size as last counted
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._warn(f"cannot create {self.folder}: {exc.strerror or exc}")

    def _warn(self, what: str) -> None:
        self.stats.errors += 1
        if not self._warned:
            self._warned = True
            logger.warning("passage KV store: %s — reading passages with plain prefill", what)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def get(self, key: str) -> bytes | None:
        """The stored state, or None (missing, corrupt, unreadable)."""
        path = self.path(key)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        except OSError as exc:
            self._warn(f"cannot read {path.name}: {exc.strerror or exc}")
            self.stats.misses += 1
            return None
        if raw.startswith(OLD_MAGIC):  # written before states were bound to their key: stale, not corrupt
            self.stats.misses += 1
            logger.debug("passage KV store: %s is of the old format — recomputed", path.name)
            try:
                path.unlink()
            except OSError:
                pass
            return None
        payload = self._unpack(key, raw)
        if payload is None:
            self.stats.misses += 1
            self.discard(key, "it failed its checksum (corrupt, or not this passage's state)")
            return None
        try:
            os.utime(path)  # LRU: a hit is a use
        except OSError:
            pass
        self.stats.hits += 1
        return payload

    def discard(self, key: str, why: str) -> None:
        """Delete a state that could not be used."""
        self.stats.corrupt += 1
        logger.warning("passage KV store: %s: %s — deleted, the passage is prefilled again", self.path(key).name, why)
        try:
            self.path(key).unlink()
        except OSError:
            pass

    @staticmethod
    def _unpack(key: str, raw: bytes) -> bytes | None:
        if len(raw) < _HEADER.size:
            return None
        magic, length, digest = _HEADER.unpack_from(raw)
        payload = raw[_HEADER.size:]
        if magic != MAGIC or length != len(payload) or _digest(key, payload) != digest:
            return None
        return payload

    def put(self, key: str, payload: bytes) -> bool:
        """Store a state atomically; False when it could not be written (warned once)."""
        size = _HEADER.size + len(payload)
        if size > self.budget_bytes:
            return False
        header = _HEADER.pack(MAGIC, len(payload), _digest(key, payload))
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=self.folder)
            with os.fdopen(fd, "wb") as f:
                f.write(header)
                f.write(payload)
            os.replace(tmp, self.path(key))
            tmp = None
        except OSError as exc:
            self._warn(f"cannot write to {self.folder}: {exc.strerror or exc}")
            return False
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        self.stats.writes += 1
        with self._lock:
            if self._bytes is not None:
                self._bytes += size
            self._evict()
        return True

    def _entries(self) -> list[tuple[float, int, Path]]:
        out = []
        try:
            with os.scandir(self.folder) as it:
                for e in it:
                    if e.name.endswith(SUFFIX) and not e.name.startswith(".tmp-"):
                        try:
                            st = e.stat()
                        except OSError:
                            continue
                        out.append((st.st_mtime, st.st_size, Path(e.path)))
        except OSError:
            return []
        return out

    def _evict(self) -> None:
        if self._bytes is not None and self._bytes <= self.budget_bytes:
            return
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.budget_bytes:
                break
            try:
                path.unlink()
                self.stats.evictions += 1
            except OSError:
                pass
            total -= size
        self._bytes = total

    def size_bytes(self) -> int:
        """Bytes of states in the folder now."""
        return sum(size for _, size, _ in self._entries())

    def __len__(self) -> int:
        return len(self._entries())


class MemoryStateStore:
    """States in this process's memory, least recently used first out past ``budget_bytes``: the
    embedded cloud backend's passage cache (its states are the cloud model's, used by this process only).

    :param budget_bytes: the most bytes of states kept; 0 = keep nothing.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = max(0, int(budget_bytes))
        self.stats = StoreStats()
        self._states: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._states.get(key)
            if data is None:
                self.stats.misses += 1
                return None
            self._states.move_to_end(key)
            self.stats.hits += 1
            return data

    def put(self, key: str, payload: bytes) -> bool:
        if len(payload) > self.budget_bytes:
            return False
        with self._lock:
            old = self._states.pop(key, None)
            self._bytes -= len(old) if old is not None else 0
            self._states[key] = payload
            self._bytes += len(payload)
            self.stats.writes += 1
            while self._bytes > self.budget_bytes:
                _, gone = self._states.popitem(last=False)
                self._bytes -= len(gone)
                self.stats.evictions += 1
        return True

    def discard(self, key: str, why: str) -> None:
        with self._lock:
            gone = self._states.pop(key, None)
            if gone is not None:
                self._bytes -= len(gone)
                self.stats.corrupt += 1
        logger.warning("passage cache: a state was refused (%s) — the passage is prefilled again", why)

    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._states)
