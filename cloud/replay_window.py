"""ReplayCache: the gateway's replay window — every nonce seen, kept until its envelope's timestamp leaves the
window, in memory and (optionally) in a file that outlives the process."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from cloud.errors import GatewayStartError, ReplayError
from cloud.wire import NONCE_BYTES

logger = logging.getLogger(__name__)

REPLAY_FILE = "replay-window.log"


class ReplayCache:
    """Nonces seen per key id, each kept until its envelope's timestamp leaves the window.

    An envelope older than the window is refused by the timestamp check, so a nonce never needs
    to be remembered longer than ``ts + skew``: memory is bounded by the request rate x window.

    With a ``path`` the window outlives the process: every accepted nonce is appended to the file
    (one ``write`` of one line, which survives a SIGKILL of the process), and :meth:`open` reads back
    the nonces still inside the window before the first request — so an envelope captured before a
    restart is still a replay after it. The file is rewritten (atomically: a temporary file renamed
    over it) with only the live nonces at start and whenever it holds mostly expired ones. One
    gateway process per cloud directory.

    :param skew_s: the timestamp window (s) on each side.
    :param max_entries: refuse (as a replay) rather than grow past this many live nonces.
    :param path: the file that keeps the window across restarts; None = memory only.
    """

    def __init__(self, skew_s: float, max_entries: int = 1_000_000, path: Path | None = None) -> None:
        self.skew_ms = int(skew_s * 1000)
        self.max_entries = max_entries
        self.path = path
        self._seen: OrderedDict[tuple[str, bytes], int] = OrderedDict()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._lines = 0  # lines in the file since it was last rewritten

    def __len__(self) -> int:
        return len(self._seen)

    def open(self, now: int) -> None:
        """Load the nonces of ``path`` still inside the window, rewrite it with those only, and record
        every nonce from now on. Idempotent; nothing to do without a path.

        :raises GatewayStartError: the file cannot be read or written.
        """
        if self.path is None or self._fd is not None:
            return
        try:
            text = self.path.read_bytes().decode("ascii", errors="replace")
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise GatewayStartError(f"cannot read the replay window {self.path}: {exc.strerror} — make the cloud "
                                    "directory readable and writable by the gateway") from None
        live: dict[tuple[str, bytes], int] = {}
        for line in text.splitlines():  # a line cut short by a crash or foreign text is skipped
            parts = line.split(" ")
            if len(parts) != 3 or not parts[0].isdigit():
                continue
            try:
                nonce = base64.b64decode(parts[2], validate=True)
            except (binascii.Error, ValueError):
                continue
            if int(parts[0]) >= now and len(nonce) == NONCE_BYTES:
                live[(parts[1], nonce)] = max(int(parts[0]), live.get((parts[1], nonce), 0))
        with self._lock:
            for key, expires in sorted(live.items(), key=lambda kv: kv[1]):
                self._seen.setdefault(key, expires)
            self._rewrite()
        logger.info("replay window: %d nonces still live from %s", len(live), self.path)

    def _line(self, kid: str, nonce: bytes, expires: int) -> bytes:
        return f"{expires} {kid} {base64.b64encode(nonce).decode('ascii')}\n".encode("ascii")

    def _rewrite(self) -> None:
        """Replace the file by the live nonces (atomic rename), and append to the new one. Holds the lock."""
        assert self.path is not None
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"".join(self._line(kid, nonce, exp) for (kid, nonce), exp in self._seen.items()))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise GatewayStartError(f"cannot write the replay window {self.path}: {exc.strerror} — make the cloud "
                                    "directory writable by the gateway") from None
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._lines = fd, len(self._seen)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def check_and_add(self, kid: str, nonce: bytes, ts_ms: int, now: int) -> None:
        """:raises ReplayError: the nonce was seen (by this process or, with a path, a previous one), the
        cache is full, or the nonce cannot be recorded."""
        with self._lock:
            while self._seen:
                key, expires = next(iter(self._seen.items()))
                if expires >= now:
                    break
                del self._seen[key]
            if (kid, nonce) in self._seen:
                raise ReplayError("this envelope was already received (replayed nonce) — seal every request with a fresh nonce")
            if len(self._seen) >= self.max_entries:
                raise ReplayError("the gateway's replay cache is full — retry in a few seconds")
            # Insertion order is expiry order up to the window, so the purge above may stop early
            # and keep an expired entry a little longer: harmless.
            expires = max(ts_ms + self.skew_ms, now)
            if self._fd is not None:
                try:
                    if self._lines > max(10_000, 2 * len(self._seen)):  # mostly expired lines: compact
                        self._rewrite()
                    os.write(self._fd, self._line(kid, nonce, expires))
                    self._lines += 1
                except (OSError, GatewayStartError) as exc:
                    # Not recorded = could be replayed after a restart: refuse rather than serve it.
                    logger.error("cannot record a nonce in %s: %s", self.path, exc)
                    raise ReplayError("the gateway cannot record this request (its disk is full or read-only) — "
                                      "retry later") from None
            self._seen[(kid, nonce)] = expires
