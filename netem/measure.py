"""Measuring a link: local echo and sink servers, round-trip time, receiver-side bandwidth, a profile's check."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any, Self

from netem.errors import LinkError
from netem.link import _JOIN_TIMEOUT_S, _READ_BYTES, LinkEmulator
from netem.profiles import LinkProfile, get_profile

logger = logging.getLogger(__name__)

TOLERANCE = 0.20  # measured RTT and bandwidth must be within 20 % of the profile


# --- local servers for measurements and tests -------------------------------------------------
class _Server:
    """Threaded TCP server on 127.0.0.1 calling ``handle(sock)`` per connection."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self._handle = handle
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._acceptor = threading.Thread(target=self._accept_loop, name="ecqa-link-server", daemon=True)
        self._acceptor.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return host, port

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return  # the listening socket was shut down by close()
            if self._stopping:
                client.close()
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(client,), name="ecqa-link-server-conn", daemon=True)
            with self._lock:
                self._clients.add(client)
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        try:
            with contextlib.suppress(OSError):
                self._handle(client)
        finally:
            with self._lock:
                self._clients.discard(client)
                client.close()

    def close(self) -> None:
        """Stop accepting, end open connections and join every thread."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        self._acceptor.join(_JOIN_TIMEOUT_S)
        self._sock.close()
        with self._lock:
            for client in self._clients:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)  # each handler then ends and closes its socket
            threads = list(self._threads)
        for thread in threads:
            thread.join(_JOIN_TIMEOUT_S)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EchoServer(_Server):
    """Sends back every byte it receives; half-closes after the client does."""

    def __init__(self) -> None:
        super().__init__(self._echo)

    @staticmethod
    def _echo(sock: socket.socket) -> None:
        while data := sock.recv(_READ_BYTES):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)


class SinkServer(_Server):
    """Reads until EOF, timing the arrival of the bytes; replies with the SHA-256 of what it read.

    :attr:`results` holds one ``(total_bytes, times, cumulative_bytes)`` per finished connection.
    """

    def __init__(self) -> None:
        super().__init__(self._sink)
        self.results: list[tuple[int, list[float], list[int]]] = []
        self._done = threading.Condition()

    def _sink(self, sock: socket.socket) -> None:
        buf = bytearray(_READ_BYTES)
        digest = hashlib.sha256()
        times: list[float] = []
        marks: list[int] = []
        total = 0
        while n := sock.recv_into(buf):
            times.append(time.perf_counter())
            total += n
            marks.append(total)
            digest.update(memoryview(buf)[:n])
        sock.sendall(digest.digest())
        sock.shutdown(socket.SHUT_WR)
        with self._done:
            self.results.append((total, times, marks))
            self._done.notify_all()

    def wait(self, count: int, timeout: float) -> list[tuple[int, list[float], list[int]]]:
        """Wait until ``count`` connections have finished; :returns: their results."""
        with self._done:
            self._done.wait_for(lambda: len(self.results) >= count, timeout)
            return list(self.results)


# --- measurement -------------------------------------------------------------------------------
def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts: list[bytes] = []
    while n:
        data = sock.recv(n)
        if not data:
            raise LinkError("the link closed during a measurement — is the target server running?")
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def measure_rtt(address: tuple[str, int], pings: int = 20, warmup: int = 3) -> list[float]:
    """Ping-pong 8 bytes over one TCP_NODELAY connection to an echo service.

    :returns: the round-trip times in milliseconds, warm-up pings left out.
    """
    with socket.create_connection(address, timeout=10.0) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples: list[float] = []
        for i in range(warmup + pings):
            start = time.perf_counter()
            sock.sendall(b"ecqaping")
            _recv_exactly(sock, 8)
            if i >= warmup:
                samples.append((time.perf_counter() - start) * 1000.0)
        sock.shutdown(socket.SHUT_WR)
    return samples


def receiver_rate_mbit(times: list[float], marks: list[int], skip: float = 0.1) -> float:
    """Throughput seen by a receiver, from its arrival times and cumulative byte counts.

    The first ``skip`` fraction of the bytes is left out: it holds the token bucket's initial
    burst and the connection's start, which would inflate a short measurement.
    """
    if len(times) < 2:
        raise LinkError("too few arrivals to measure bandwidth — send more bytes")
    threshold = marks[-1] * skip
    first = next(i for i, m in enumerate(marks) if m >= threshold)
    first = min(first, len(times) - 2)
    seconds = times[-1] - times[first]
    if seconds <= 0:
        raise LinkError("all bytes arrived at once — send more bytes to measure bandwidth")
    return (marks[-1] - marks[first]) * 8 / seconds / 1e6


def _zeros_digest(total: int) -> bytes:
    digest, block = hashlib.sha256(), bytes(1024 * 1024)
    for start in range(0, total, len(block)):
        digest.update(memoryview(block)[:min(len(block), total - start)])
    return digest.digest()


def send_bulk(address: tuple[str, int], total: int) -> bytes:
    """Send ``total`` zero bytes, half-close and :returns: the sink's 32-byte reply."""
    block = bytes(min(total, 1024 * 1024))
    with socket.create_connection(address, timeout=30.0) as sock:
        left = total
        while left:
            n = min(left, len(block))
            sock.sendall(memoryview(block)[:n])
            left -= n
        sock.shutdown(socket.SHUT_WR)
        return _recv_exactly(sock, 32)


def measure_link(profile: LinkProfile | str, *, pings: int = 20, bulk_seconds: float = 0.4) -> dict[str, Any]:
    """Measure a profile through a fresh :class:`LinkEmulator` to local echo and sink servers.

    RTT is the median of ``pings`` 8-byte ping-pongs; bandwidth is a bulk transfer sized to
    take ``bulk_seconds`` at the profile's rate, timed where it is received.

    :returns: ``profile``, ``target_rtt_ms``, ``rtt_ms``, ``target_mbit``, ``mbit``,
        ``rtt_ratio``, ``mbit_ratio`` (measured / target), ``within_tolerance`` (both ratios
        within :data:`TOLERANCE` of 1), ``pings``, ``bulk_bytes``.
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    total = int(prof.bytes_per_s * bulk_seconds)
    with EchoServer() as echo, LinkEmulator(prof, echo.address) as link:
        rtts = measure_rtt(link.address, pings=pings)
    with SinkServer() as sink, LinkEmulator(prof, sink.address) as link:
        reply = send_bulk(link.address, total)
        (got, times, marks), = sink.wait(1, timeout=10.0)
    if got != total or reply != _zeros_digest(total):
        raise LinkError(f"bulk transfer lost data ({got} of {total} bytes) — this is a bug in the link emulator")
    rtt = statistics.median(rtts)
    mbit = receiver_rate_mbit(times, marks)
    rtt_ratio, mbit_ratio = rtt / prof.rtt_ms, mbit / prof.bandwidth_mbit
    result = {
        "profile": prof.name,
        "target_rtt_ms": prof.rtt_ms,
        "rtt_ms": round(rtt, 3),
        "target_mbit": prof.bandwidth_mbit,
        "mbit": round(mbit, 2),
        "rtt_ratio": round(rtt_ratio, 3),
        "mbit_ratio": round(mbit_ratio, 3),
        "within_tolerance": abs(rtt_ratio - 1) <= TOLERANCE and abs(mbit_ratio - 1) <= TOLERANCE,
        "pings": len(rtts),
        "bulk_bytes": total,
    }
    logger.info("link %s measured: %.2f ms RTT, %.1f Mbit/s", prof.name, rtt, mbit)
    return result


__all__ = [
    "TOLERANCE",
    "EchoServer",
    "SinkServer",
    "measure_link",
    "measure_rtt",
    "receiver_rate_mbit",
    "send_bulk",
]
