"""The capability registry: edge workers advertise what they are and how loaded, under a TTL.

Each worker puts its :class:`WorkerEntry` again every ``ttl / 3`` seconds (its heartbeat); an entry
not renewed within its TTL is gone on its own, so a dead worker drops out without anyone removing it.

- :class:`FileRegistry` (the default; no server): one JSON file per worker in a folder, written
  atomically, its age read from the entry's own timestamp. Workers and dispatchers on one host share it.
- :class:`RedisRegistry` (edges on several hosts): one key per worker, ``SET … PX ttl``, so Redis
  itself expires a worker whose heartbeat stops.

An authenticated fleet stores each entry **sealed** (:class:`EntrySeal`): signed by the worker's key,
with its certificate, and opened by every reader against the project's CA, so whoever can write the
folder or the Redis keys cannot add a worker (``pipelines/fleet.py``). Unsealed entries are read only
when the fleet is explicitly insecure (one trusted host, plain HTTP).

Keys read like DNS names (the capability metadata store of the collaborative edge-AI design):
``/edge/<id>/model``, ``/edge/<id>/quantization``, ``/edge/<id>/prompt_tps`` … (:meth:`WorkerEntry.keys`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

logger = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# A worker's URL: http(s)://host[:port][/path] with a host a client can reach (never an unspecified address).
_URL = re.compile(r"^https?://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(:(?P<port>[0-9]{1,5}))?(/[!-~]*)?$")
_UNSPECIFIED = {"0.0.0.0", "[::]", "[0:0:0:0:0:0:0:0]"}
# The largest count (slots, requests) and number (tokens per second, a time stamp) an entry may hold:
# far above any real worker, low enough that capacity and load stay finite.
MAX_COUNT = 10**9
MAX_NUMBER = 1e12
# Seconds a heartbeat may lie in the future (clocks of hosts sharing a registry drift a little).
CLOCK_SKEW_S = 2.0


class RegistryError(EdgeError):
    """The registry cannot be reached or read."""


@dataclass(frozen=True)
class WorkerEntry:
    """One worker's capabilities and load, as it advertises them.

    ``capacity`` (C_i) is what the dispatcher weighs: prompt tokens per second of whole reads over all
    its slots (raw prefill speed when no read was measured).
    """

    id: str
    url: str
    model: str
    parameters: str = ""  # e.g. "0.5B"
    quantization: str = ""  # e.g. "Q4_K_M"
    n_ctx: int = 0
    threads: int = 0
    cores: str = ""  # the CPUs it runs on, e.g. "0-1"
    prompt_tps: float = 0.0  # measured by the worker itself at start-up
    gen_tps: float = 0.0
    # Prompt tokens per second of a whole read (probe, answer, parsing) of a real passage at start-up:
    # what the worker really serves. Raw prefill speed overstates a model that answers at length
    # (gemma-3-270m: 189 tok/s prefill, 47 tok/s per read; `make bench-dispatch`).
    read_tps: float = 0.0
    concurrency: int = 1
    queue: int = 0
    in_flight: int = 0  # W_i: admitted requests, running and queued
    served: int = 0
    rejected: int = 0
    healthy: bool = True
    pid: int = 0
    heartbeat: float = 0.0  # time.time() of the put

    @property
    def capacity(self) -> float:
        return max(self.read_tps or self.prompt_tps, 1e-9) * max(self.concurrency, 1)

    @property
    def limit(self) -> int:
        return self.concurrency + self.queue

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerEntry:
        """An entry as a registry holds it, checked field by field.

        :raises ValueError: not an entry: a bad id or URL, a field of the wrong type, a number that is
            negative, not finite or absurdly large.
        """
        if not isinstance(data, dict):
            raise ValueError("an entry is a JSON object")
        out: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            v = data[f.name]
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            if kind == "str":
                ok = isinstance(v, str) and len(v) <= 512
            elif kind == "bool":
                ok = isinstance(v, bool)
            elif kind == "int":
                ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT
            else:  # float
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= MAX_NUMBER
                v = float(v) if ok else v
            if not ok:
                raise ValueError(f"field {f.name!r} is not a valid {kind}")
            out[f.name] = v
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in out]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        if not _ID.match(out["id"]):
            raise ValueError("no valid id")
        m = _URL.match(out.get("url", ""))
        if m is None or m["host"] in _UNSPECIFIED or (m["port"] is not None and not 0 < int(m["port"]) < 65536):
            raise ValueError(f"url {str(out.get('url', ''))[:80]!r} is not http(s)://host[:port] of a reachable host")
        return cls(**out)

    def keys(self) -> dict[str, Any]:
        """The entry as DNS-like keys: ``/edge/<id>/<field>``."""
        return {f"/edge/{self.id}/{k}": v for k, v in self.to_json().items() if k != "id"}


def fresh(entry: WorkerEntry, now: float, ttl_s: float) -> bool:
    """Whether an entry's heartbeat is live: at most ``ttl_s`` old, and not in the future (beyond a small
    skew) — a heartbeat from the future would never expire."""
    return -CLOCK_SKEW_S <= now - entry.heartbeat <= ttl_s


class EntrySeal(ABC):
    """How a registry stores entries in an authenticated fleet: sealed by the worker, opened by readers."""

    @abstractmethod
    def seal(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The record to store for ``entry`` (its JSON), signed."""

    @abstractmethod
    def open(self, record: Any) -> dict[str, Any]:
        """The entry JSON of a stored record.

        :raises ValueError: not sealed by a worker of this fleet (the message says why, in a few words).
        """


class _Refusals:
    """One warning line per refused entry (by where it was found), not one per read."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, where: str, why: str) -> None:
        if where not in self._seen:
            self._seen.add(where)
            logger.warning("registry entry %s refused: %s", where, why)


def check_worker_id(worker_id: str) -> str:
    """:raises RegistryError: an id that is not 1-64 letters, digits, '_', '.' or '-'."""
    if not _ID.match(worker_id or ""):
        raise RegistryError(f"worker id {worker_id[:80]!r} is not 1-64 letters, digits, '_', '.' or '-' — pick another --id")
    return worker_id


class Registry(ABC):
    """Where workers advertise; what the dispatcher and `ecqa edge list` read."""

    def __init__(self, ttl_s: float, seal: EntrySeal | None = None) -> None:
        if not ttl_s > 0:
            raise RegistryError("the registry TTL must be above 0 s — set ECQA_REGISTRY_TTL_S")
        self.ttl_s = ttl_s
        self.seal = seal

    def _record(self, entry: WorkerEntry) -> str:
        data = entry.to_json()
        return json.dumps(self.seal.seal(data) if self.seal is not None else data)

    def _entry(self, raw: str | bytes) -> WorkerEntry:
        """:raises ValueError, TypeError, RecursionError: not a (sealed, when the fleet is) entry."""
        record = json.loads(raw)
        return WorkerEntry.from_json(self.seal.open(record) if self.seal is not None else record)

    @abstractmethod
    def put(self, entry: WorkerEntry) -> None:
        """Advertise (or renew) ``entry`` for ``ttl_s`` seconds from now."""

    @abstractmethod
    def entries(self) -> list[WorkerEntry]:
        """The live entries (renewed within their TTL), by id."""

    @abstractmethod
    def remove(self, worker_id: str) -> None:
        """Withdraw a worker (it stops cleanly); a missing one is no error."""

    @abstractmethod
    def describe(self) -> str:
        """Where the registry is, for messages."""


class FileRegistry(Registry):
    """Entries as ``<folder>/<id>.json``; an entry older than the TTL is dead (and swept).

    :param folder: the registry folder (created on first put).
    :param ttl_s: seconds an entry lives without a heartbeat.
    :param clock: the wall clock (tests pass their own).
    """

    def __init__(self, folder: str | Path, ttl_s: float = 6.0, clock: Callable[[], float] = time.time,
                 seal: EntrySeal | None = None) -> None:
        super().__init__(ttl_s, seal)
        self.folder = Path(folder)
        self.clock = clock
        self._refused = _Refusals()

    def put(self, entry: WorkerEntry) -> None:
        check_worker_id(entry.id)
        entry = replace(entry, heartbeat=self.clock())
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{entry.id}.{os.getpid()}.tmp"
            tmp.write_text(self._record(entry))
            os.replace(tmp, self.folder / f"{entry.id}.json")  # atomic: a reader never sees half an entry
        except OSError as exc:
            raise RegistryError(f"cannot write the registry {self.folder}: {exc.strerror or exc} — check the folder "
                                "(ECQA_REGISTRY) is writable") from None

    def entries(self) -> list[WorkerEntry]:
        now = self.clock()
        out = []
        try:
            paths = sorted(self.folder.glob("*.json"))
        except OSError:
            return []
        for path in paths:
            try:
                entry = self._entry(path.read_text())
            except FileNotFoundError:
                continue  # removed while read
            except (OSError, ValueError, TypeError, RecursionError) as exc:
                self._refused(str(path), str(exc)[:200])
                continue
            if entry.id != path.stem:
                self._refused(str(path), f"it names another worker ({entry.id!r})")
            elif now - entry.heartbeat < -CLOCK_SKEW_S:
                self._refused(str(path), "its heartbeat is in the future")
            elif fresh(entry, now, self.ttl_s):
                out.append(entry)
        return out

    def remove(self, worker_id: str) -> None:
        check_worker_id(worker_id)
        (self.folder / f"{worker_id}.json").unlink(missing_ok=True)

    def describe(self) -> str:
        return str(self.folder)


class RedisRegistry(Registry):
    """Entries as Redis keys ``<prefix><id>`` holding the entry's JSON, each expiring after the TTL.

    :param url: ``redis://[user:password@]host:port/db`` or ``rediss://…`` (TLS).
    :param ttl_s: seconds an entry lives without a heartbeat (Redis expires it).
    :param prefix: key prefix, so several deployments can share one Redis.
    :param password: the password of the ACL user (or of ``requirepass``) when the URL has none.
    :param username: the ACL user when the URL has none.
    :param ca_file: the CA that signs the server's certificate, for ``rediss://``.
    :param require_auth: refuse a Redis without a password (anyone reaching the port could write entries).
    """

    def __init__(self, url: str, ttl_s: float = 6.0, prefix: str = "ecqa:edge:", seal: EntrySeal | None = None,
                 password: str | None = None, username: str | None = None, ca_file: str | None = None,
                 require_auth: bool = False) -> None:
        super().__init__(ttl_s, seal)
        import redis  # only a Redis-backed registry needs the client

        self.prefix = prefix
        self._refused = _Refusals()
        self._redis_errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.url = _without_password(url)
        extra: dict[str, Any] = {}
        if password:
            extra["password"] = password
        if username:
            extra["username"] = username
        if ca_file and url.startswith("rediss://"):
            extra["ssl_ca_certs"] = ca_file
        try:
            self._client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, **extra)
        except ValueError as exc:
            raise RegistryError(f"bad Redis URL {self.url!r}: {str(exc).replace(url, self.url)} — use "
                                "redis://host:port/db") from None
        kw = self._client.connection_pool.connection_kwargs
        if require_auth and not kw.get("password"):
            raise RegistryError(f"the Redis registry {self.url} has no password: anyone who reaches it could add workers — "
                                "give one (redis://USER:PASSWORD@host:port/db, or ECQA_REGISTRY_PASSWORD), or set "
                                "ECQA_FLEET_INSECURE=1 on a single trusted host")

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self._redis_errors as exc:
            first = str(exc).splitlines()[0] if str(exc) else repr(exc)
            if type(exc).__name__ in ("AuthenticationError", "AuthenticationWrongNumberOfArgsError", "NoPermissionError") \
                    or "NOAUTH" in first or "WRONGPASS" in first or "NOPERM" in first:
                raise RegistryError(f"Redis registry {self.url} refused the credentials ({first[:120]}) — check the user and "
                                    "password (redis://USER:PASSWORD@host:port/db or ECQA_REGISTRY_PASSWORD) and its ACL "
                                    f"(it needs GET, SET, DEL, SCAN, MGET on {self.prefix}*, and SELECT for a db other "
                                    "than 0)") from None
            raise RegistryError(f"Redis registry {self.url} unreachable: {first}"
                                " — start redis-server or fix ECQA_EDGE_REGISTRY") from None

    def put(self, entry: WorkerEntry) -> None:
        check_worker_id(entry.id)
        entry = replace(entry, heartbeat=time.time())
        self._call(lambda: self._client.set(self.prefix + entry.id, self._record(entry),
                                            px=max(1, int(self.ttl_s * 1000))))

    def entries(self) -> list[WorkerEntry]:
        keys = sorted(self._call(lambda: list(self._client.scan_iter(match=self.prefix + "*", count=100))))
        if not keys:
            return []
        values = self._call(lambda: self._client.mget(keys))
        now = time.time()
        out = []
        for key, raw in zip(keys, values, strict=True):
            if raw is None:  # expired between SCAN and MGET
                continue
            name = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
            try:
                entry = self._entry(raw)
            except (ValueError, TypeError, RecursionError) as exc:
                self._refused(name, str(exc)[:200])
                continue
            # The TTL is checked here too: a key set by hand without one (or with a heartbeat from the
            # future) would otherwise be listed forever.
            if name != self.prefix + entry.id:
                self._refused(name, f"it names another worker ({entry.id!r})")
            elif now - entry.heartbeat < -CLOCK_SKEW_S:
                self._refused(name, "its heartbeat is in the future")
            elif fresh(entry, now, self.ttl_s):
                out.append(entry)
        return out

    def remove(self, worker_id: str) -> None:
        check_worker_id(worker_id)
        self._call(lambda: self._client.delete(self.prefix + worker_id))

    def describe(self) -> str:
        return self.url


def _without_password(url: str) -> str:
    """A Redis URL fit for messages: its password replaced by ***."""
    return re.sub(r"^([a-z]+://[^:@/]*:)[^@/]*@", r"\1***@", url)


def open_registry(spec: str, default_folder: Path, ttl_s: float, seal: EntrySeal | None = None,
                  **redis: Any) -> Registry:
    """The registry named by ``spec``: ``redis://…`` (or ``rediss://…``), else a folder ('' or
    "file" = ``default_folder``); ``redis``: :class:`RedisRegistry`'s credentials and TLS options.

    :raises RegistryError: a bad Redis URL, or one without the credentials ``require_auth`` asks for.
    """
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisRegistry(spec, ttl_s, seal=seal, **redis)
    if spec in ("", "file"):
        return FileRegistry(default_folder, ttl_s, seal=seal)
    return FileRegistry(Path(spec.removeprefix("file:")).expanduser(), ttl_s, seal=seal)
