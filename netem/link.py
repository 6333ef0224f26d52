"""Emulated edge–cloud link: a userspace TCP proxy that adds one-way delay and limits rate.

Put :class:`LinkEmulator` between the edge and the cloud gateway and every byte between them
crosses a link shaped like a named profile (:data:`netem.profiles.PROFILES`). It is a byte
proxy: TLS passes through untouched, so the real HTTPS client and server see a slower network
and nothing else. :mod:`netem.measure` checks it against its profile.

Per direction, each chunk read from one side gets a send time from a token bucket shared by
every connection of the emulator (one link, one capacity: eight parallel transfers share it
as they would share a real uplink) — its arrival time if tokens are there, else when they
will be — and is released to the other side at ``send time + rtt/2``. Chunks stay in order,
so the delay pipelines: it adds latency but does not reduce throughput. A new connection
also pays one RTT before its first byte goes upstream, as the TCP handshake would.

Plain threads rather than asyncio: asyncio's timers round up to whole milliseconds (epoll's
timeout unit), which would add up to 1 ms to the ``lan`` profile's 1 ms one-way delay. The
remaining error of a thread's wake-up (~30 µs, 6 % of a ``lan`` round trip over two hops) is
taken out by kernel arrival stamps (``SO_TIMESTAMPNS``), 1 ns timer slack and a learned
wake-up lead (:class:`_Clock`).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from netem.errors import LinkError
from netem.profiles import LinkProfile, get_profile

logger = logging.getLogger(__name__)

_READ_BYTES = 256 * 1024  # large reads keep the 1000 Mbit/s profile below a few thousand syscalls/s
# How far ahead of the link's schedule a reader may commit bytes: the link's buffer. Threads
# that wake up late (a busy machine) then lose no throughput. 1 Gbit/s through a 1 ms bucket
# with two extra busy loops on 2 cores: 980–1038 Mbit/s in 8 runs with it, 690–968 without.
_QUEUE_S = 0.02
_PIPE_LIMIT_BYTES = 4 * 1024 * 1024  # per direction and connection, when the receiver reads slowly
_CONNECT_TIMEOUT_S = 5.0
_JOIN_TIMEOUT_S = 5.0
_MAX_SLEEP_S = 0.05  # a sleeping writer notices stop() within this
_PR_SET_TIMERSLACK = 29
_SO_TIMESTAMPNS = 35  # Linux (asm-generic and x86); the socket module does not name it
_STAMP_SPACE = socket.CMSG_SPACE(16)  # one struct timespec
_LINGER_RESET = struct.pack("ii", 1, 0)
_SEND_TIMEOUT = struct.pack("ll", 0, 100_000)  # struct timeval: 100 ms
_MAX_CHUNKS = 512  # below IOV_MAX (1024) for one sendmsg


def _precise_timers() -> None:
    """Ask Linux for exact wake-ups in this thread (timer slack 1 ns instead of 50 µs).

    The ``lan`` profile adds 0.5 ms per direction; the default slack alone would add 10 % to it.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)


def parse_hostport(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts.

    :raises LinkError: not of that form, or the port is not in 1–65535.
    """
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LinkError(f"bad address {text!r} — give HOST:PORT, e.g. 127.0.0.1:8443")
    return host, int(port)


def _enable_arrival_stamps(sock: socket.socket) -> None:
    """Have the kernel stamp received data, so the delay counts from arrival, not from wake-up."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)


def _recv_stamped(sock: socket.socket) -> tuple[bytes, float]:
    """Read what is there; :returns: the bytes and when the kernel received them (monotonic).

    Without the kernel's stamp the time the thread woke up is used: on this machine a wake-up
    comes ~30 µs after the data, 6 % of a ``lan`` round trip over two hops.
    """
    data, ancdata, _, _ = sock.recvmsg(_READ_BYTES, _STAMP_SPACE)
    now = time.monotonic()
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= 16:
            sec, nsec = struct.unpack("qq", payload[:16])
            # The stamp is wall-clock time; shift it onto the monotonic clock via "now".
            return data, min(now, now - (time.time() - (sec + nsec * 1e-9)))
    return data, now


def _send_all(sock: socket.socket, chunks: list[bytes | memoryview], failed: threading.Event) -> None:
    """Send every chunk in order, in as few system calls as possible (no joining copy).

    :raises ConnectionAbortedError: the connection failed while a send was waiting.
    """
    while chunks:
        try:
            sent = sock.sendmsg(chunks)
        except BlockingIOError:  # SO_SNDTIMEO expired: the peer is not reading
            if failed.is_set():
                raise ConnectionAbortedError("link connection torn down") from None
            continue
        while chunks and sent >= len(chunks[0]):
            sent -= len(chunks.pop(0))
        if sent:
            chunks[0] = memoryview(chunks[0])[sent:]


class _TokenBucket:
    """Thread-safe token bucket shared by all connections of one direction.

    Reservations may drive the level negative; later callers then queue behind, first come
    first served, so parallel connections share the rate fairly.
    """

    def __init__(self, rate: float, capacity: int) -> None:
        self._rate = rate
        self._capacity = float(capacity)
        self._level = float(capacity)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self, n: int) -> float:
        """Take ``n`` tokens; :returns: seconds until they exist (0 when they do now)."""
        with self._lock:
            now = time.monotonic()
            self._level = min(self._capacity, self._level + (now - self._stamp) * self._rate)
            self._stamp = now
            self._level -= n
            return 0.0 if self._level >= 0 else -self._level / self._rate


class _Clock:
    """Sleeps until a deadline, learning how late this machine wakes and waking that much earlier.

    Each wake-up is ~30 µs late here; over the two hops of a round trip that alone is 6 % of
    the ``lan`` profile's 1 ms. The estimate is an average of observed lateness, capped so a
    burst of load cannot make releases early by more than the cap.
    """

    _CAP_S = 200e-6

    def __init__(self) -> None:
        self.lateness_s = 0.0

    def sleep_until(self, deadline: float, cancelled: Callable[[], bool]) -> None:
        """Sleep until ``deadline`` (monotonic) or until ``cancelled()`` turns true."""
        target = deadline - self.lateness_s
        while (wait := target - time.monotonic()) > 0 and not cancelled():
            if wait > _MAX_SLEEP_S:
                time.sleep(_MAX_SLEEP_S)
                continue
            time.sleep(wait)
            late = min(time.monotonic() - target, self._CAP_S)
            self.lateness_s = max(0.0, self.lateness_s + 0.1 * (late - self.lateness_s))
            return


class _Pipe:
    """Ordered queue of ``(release_time, bytes)`` for one direction of one connection."""

    def __init__(self, clock: _Clock) -> None:
        self._clock = clock
        self._items: collections.deque[tuple[float, bytes | memoryview | None]] = collections.deque()
        self._bytes = 0
        self._aborted = False
        self._cond = threading.Condition()

    def put(self, release: float, data: bytes | memoryview | None) -> bool:
        """Queue ``data`` (``None`` = EOF); blocks while too much is queued. :returns: False if aborted."""
        with self._cond:
            while self._bytes >= _PIPE_LIMIT_BYTES and not self._aborted:
                self._cond.wait()
            if self._aborted:
                return False
            self._items.append((release, data))
            self._bytes += len(data) if data else 0
            self._cond.notify_all()
            return True

    def get(self) -> tuple[list[bytes | memoryview], bool] | None:
        """Wait for the head item's release time; :returns: the due chunks and whether EOF follows them, None if aborted."""
        with self._cond:
            while not self._items and not self._aborted:
                self._cond.wait()
            if self._aborted:
                return None
            release = self._items[0][0]
        # Sleep outside the lock: items queued meanwhile are released later, never earlier, and
        # time.sleep overshoots by ~25 µs where a timed Condition.wait overshoots by ~80 µs.
        self._clock.sleep_until(release, lambda: self._aborted)
        with self._cond:
            if self._aborted:
                return None
            chunks: list[bytes | memoryview] = []
            size, now, eof = 0, time.monotonic(), False
            # Coalesce everything already due into one send: fewer syscalls at 1 Gbit/s.
            while self._items and self._items[0][0] <= now and size < _READ_BYTES and len(chunks) < _MAX_CHUNKS:
                _, data = self._items.popleft()
                if data is None:
                    eof = True
                    break
                chunks.append(data)
                size += len(data)
            self._bytes -= size
            self._cond.notify_all()
            return chunks, eof

    def abort(self) -> None:
        """Drop what is queued and wake every waiter."""
        with self._cond:
            self._aborted = True
            self._items.clear()
            self._cond.notify_all()


class _Connection:
    """One proxied connection: client socket, upstream socket, four forwarding threads."""

    def __init__(self, emulator: LinkEmulator, client: socket.socket, peer: Any, number: int) -> None:
        self._em = emulator
        self._client = client
        self._upstream: socket.socket | None = None
        self._peer = peer
        self._name = f"ecqa-link-{emulator.address[1]}-{number}"
        self._accepted = time.monotonic()
        self._failed = threading.Event()
        self._lock = threading.Lock()
        self._running = 0
        self._threads: list[threading.Thread] = []
        self._pipes = (_Pipe(emulator._clock), _Pipe(emulator._clock))

    def start(self) -> None:
        """Connect upstream and start forwarding, in a thread of its own."""
        self._spawn(self._open_and_forward, "up-read")

    def join(self, timeout: float) -> None:
        """Wait for every thread of this connection, also those started while waiting."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            with self._lock:
                alive = [t for t in self._threads if t.is_alive()]
            if not alive:
                return
            alive[0].join(left)

    def _spawn(self, target: Callable[..., None], role: str, *args: Any) -> None:
        thread = threading.Thread(target=self._run, args=(target, *args), name=f"{self._name}-{role}", daemon=True)
        with self._lock:
            self._running += 1
            self._threads.append(thread)
        thread.start()

    def _run(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except OSError as exc:  # a reset or a closed socket on either side ends the connection
            logger.debug("%s: %s", self._name, exc)
            self.fail()
        except Exception:  # a bug must not leave the other three threads waiting forever
            logger.exception("%s: forwarding failed", self._name)
            self.fail()
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                self._close()

    def _open_and_forward(self) -> None:
        em = self._em
        try:
            upstream = socket.create_connection(em.target, timeout=_CONNECT_TIMEOUT_S)
        except OSError as exc:
            logger.warning("link %s: cannot connect to %s:%s (%s) — resetting the client", em.profile.name,
                           em.target[0], em.target[1], exc)
            self.fail()
            return
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._upstream = upstream
        if self._failed.is_set():  # stop() came while connecting; the last thread closes both
            return
        logger.debug("%s: %s -> %s:%s", self._name, self._peer, em.target[0], em.target[1])
        up, down = self._pipes
        # Over a real link the client may send after one RTT (SYN, SYN-ACK), and the server,
        # which accepts when the last ACK arrives, after 1.5 RTT.
        rtt = em.profile.rtt_ms / 1000.0
        self._spawn(self._write, "up-write", upstream, up)
        self._spawn(self._read, "down-read", upstream, down, em._down_bucket, self._accepted + 1.5 * rtt)
        self._spawn(self._write, "down-write", self._client, down)
        self._read(self._client, up, em._up_bucket, self._accepted + rtt)

    def _read(self, src: socket.socket, pipe: _Pipe, bucket: _TokenBucket, not_before: float) -> None:
        delay = self._em.profile.one_way_delay_s
        step = self._em.profile.bucket_bytes
        _enable_arrival_stamps(src)
        last = not_before
        while True:
            data, arrived = _recv_stamped(src)
            if not data:
                pipe.put(max(arrived, last) + delay, None)
                return
            view = memoryview(data)
            for start in range(0, len(data), step):
                piece = view[start:start + step]
                wait = bucket.reserve(len(piece))
                now = time.monotonic()
                last = ready = max(arrived if wait <= 0 else now + wait, last)
                # Commit bytes at most _QUEUE_S ahead of the link's schedule (the link's buffer):
                # a thread that wakes up late by less than that loses no throughput, and the
                # wait pushes back on the sender through TCP.
                if (pause := ready - _QUEUE_S - now) > 0 and self._failed.wait(pause):
                    return
                if not pipe.put(ready + delay, piece):
                    return

    def _write(self, dst: socket.socket, pipe: _Pipe) -> None:
        _precise_timers()
        # A send blocked on a peer that does not read returns after this, to notice fail().
        dst.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _SEND_TIMEOUT)
        while True:
            got = pipe.get()
            if got is None:
                return
            chunks, eof = got
            _send_all(dst, chunks, self._failed)
            if eof:
                dst.shutdown(socket.SHUT_WR)  # half-close: the peer may still send the other way
                return

    def fail(self) -> None:
        """Tear the connection down: wake every thread; the last one closes the sockets."""
        self._failed.set()
        for pipe in self._pipes:
            pipe.abort()
        with self._lock:  # never touch a socket that _close() is closing
            for sock in (self._client, self._upstream):
                if sock is None or sock.fileno() < 0:
                    continue
                with contextlib.suppress(OSError):
                    # Linger 0: the last thread's close() sends a reset, so both peers learn this
                    # was no clean end. SHUT_RD wakes a blocked recv() and, unlike SHUT_WR, sends
                    # no FIN that would reach the peer as a clean EOF before the reset.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                    sock.shutdown(socket.SHUT_RD)

    def _close(self) -> None:
        with self._lock:
            for sock in (self._client, self._upstream):
                if sock is not None:
                    sock.close()
        self._em._forget(self)
        logger.debug("%s: closed", self._name)


class LinkEmulator:
    """TCP proxy on 127.0.0.1 that forwards to ``target`` over an emulated link.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    :param profile: the link to emulate (a :class:`LinkProfile` or a profile name).
    :param target: ``(host, port)`` to forward to.
    :param listen_port: port to listen on; 0 picks a free one (see :attr:`address`).
    :param listen_host: address to listen on (loopback unless you mean to expose it).
    """

    def __init__(self, profile: LinkProfile | str, target: tuple[str, int], listen_port: int = 0,
                 listen_host: str = "127.0.0.1") -> None:
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.target = target
        self._listen = (listen_host, listen_port)
        self._sock: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._conns: set[_Connection] = set()
        self._lock = threading.Lock()
        self._count = 0
        self._up_bucket = _TokenBucket(self.profile.bytes_per_s, self.profile.bucket_bytes)
        self._down_bucket = _TokenBucket(self.profile.bytes_per_s, self.profile.bucket_bytes)
        self._clock = _Clock()

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` clients connect to.

        :raises LinkError: the emulator is not started.
        """
        if self._sock is None:
            raise LinkError("link emulator is not running — call start() or use it in a `with` block")
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def connections(self) -> int:
        """Connections open right now."""
        with self._lock:
            return len(self._conns)

    def start(self) -> LinkEmulator:
        """Listen and start accepting connections.

        :raises LinkError: already started, or the address cannot be bound.
        """
        if self._sock is not None:
            raise LinkError("link emulator already started — call stop() first")
        try:
            sock = socket.create_server(self._listen, backlog=128)
        except OSError as exc:
            raise LinkError(f"cannot listen on {self._listen[0]}:{self._listen[1]} ({exc.strerror}) — "
                            "pick another port or 0 for a free one") from None
        self._sock = sock
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"ecqa-link-{self.address[1]}-accept",
                                          daemon=True)
        self._acceptor.start()
        logger.info("link %s (%.1f ms RTT, %.0f Mbit/s) listening on %s:%s -> %s:%s", self.profile.name,
                    self.profile.rtt_ms, self.profile.bandwidth_mbit, *self.address, *self.target)
        return self

    def stop(self) -> None:
        """Stop accepting, reset every open connection and wait for all threads to end."""
        if self._sock is None:
            return
        assert self._wake_w is not None and self._wake_r is not None and self._acceptor is not None
        self._wake_w.send(b"x")
        self._acceptor.join(_JOIN_TIMEOUT_S)
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()
        self._sock = None
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.fail()
        for conn in conns:
            conn.join(_JOIN_TIMEOUT_S)
        logger.info("link %s stopped (%d connections reset)", self.profile.name, len(conns))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._sock is not None and self._wake_r is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                events = sel.select()
                if any(key.fileobj is self._wake_r for key, _ in events):
                    return
                try:
                    client, peer = self._sock.accept()
                except OSError as exc:  # e.g. the client gave up before we accepted
                    logger.debug("accept failed: %s", exc)
                    continue
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._lock:
                    self._count += 1
                    conn = _Connection(self, client, peer, self._count)
                    self._conns.add(conn)
                conn.start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)



__all__ = [
    "LinkEmulator",
    "parse_hostport",
]
