"""The capability registry: a folder (default) and a real redis-server started by the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from edge.registry import FileRegistry, RedisRegistry, RegistryError, WorkerEntry, open_registry


def entry(wid: str, **kw: object) -> WorkerEntry:
    return WorkerEntry(id=wid, url=f"http://127.0.0.1:1/{wid}", model="m.gguf", prompt_tps=200.0, **kw)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_file_registry_entries_expire_after_their_ttl(tmp_path: Path) -> None:
    clock = Clock()
    reg = FileRegistry(tmp_path / "reg", ttl_s=6.0, clock=clock)
    reg.put(entry("a", in_flight=2, concurrency=2, queue=1))
    reg.put(entry("b"))
    assert [e.id for e in reg.entries()] == ["a", "b"]
    a = reg.entries()[0]
    assert (a.in_flight, a.limit, a.capacity, a.heartbeat) == (2, 3, 400.0, 1000.0)
    clock.t += 4.0
    reg.put(entry("b"))  # b heartbeats, a does not
    clock.t += 4.0  # a is 8 s old, b 4 s
    assert [e.id for e in reg.entries()] == ["b"]
    clock.t += 2.5
    assert reg.entries() == []
    reg.put(entry("a"))  # a worker that comes back is live again
    assert [e.id for e in reg.entries()] == ["a"]
    reg.remove("a")
    reg.remove("a")  # withdrawing twice is no error
    assert reg.entries() == []


def test_capacity_is_the_measured_read_speed_when_there_is_one() -> None:
    assert entry("a", concurrency=2).capacity == 400.0  # no read measured: raw prefill speed x slots
    assert entry("a", concurrency=2, read_tps=50.0).capacity == 100.0


def test_file_registry_keys_read_like_dns_names(tmp_path: Path) -> None:
    e = entry("qwen-1", quantization="Q4_K_M", parameters="0.5B")
    assert e.keys()["/edge/qwen-1/quantization"] == "Q4_K_M"
    assert e.keys()["/edge/qwen-1/parameters"] == "0.5B"
    assert "/edge/qwen-1/id" not in e.keys()


def test_bad_ids_and_unwritable_folders_get_one_line(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="pick another --id"):
        reg.put(entry("../escape"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RegistryError, match="writable") as info:
        FileRegistry(blocker / "reg").put(entry("a"))
    assert "\n" not in str(info.value)
    with pytest.raises(RegistryError, match="TTL"):
        FileRegistry(tmp_path, ttl_s=0)


def test_a_torn_or_foreign_file_is_not_an_entry(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    reg.put(entry("a"))
    (tmp_path / "b.json").write_text("{not json")
    (tmp_path / "c.json").write_text('{"id": "c"}')  # no url, no model
    assert [e.id for e in reg.entries()] == ["a"]


ROGUE = {"id": "zz-fake", "url": "http://127.0.0.1:9/", "model": "m.gguf", "read_tps": 1e9}


@pytest.mark.parametrize(("name", "change", "why"), [
    ("future", {"heartbeat": 1000.0 + 3600}, "in the future"),  # would never expire
    ("stale", {"heartbeat": 1000.0 - 60}, None),  # simply dead: dropped without a warning
    ("nobeat", {}, None),  # no heartbeat at all: as old as can be
    ("unspecified", {"url": "http://0.0.0.0:8000", "heartbeat": 1000.0}, "reachable host"),
    ("types", {"read_tps": "fast", "heartbeat": 1000.0}, "read_tps"),
    ("infinite", {"read_tps": float("inf"), "heartbeat": 1000.0}, "read_tps"),
    ("negative", {"in_flight": -5, "heartbeat": 1000.0}, "in_flight"),
    ("impostor", {"id": "a", "heartbeat": 1000.0}, "names another worker"),
])
def test_a_hand_written_entry_in_the_folder_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                       name: str, change: dict, why: str | None) -> None:
    """Issue 22, finding 2: a hand-written `zz-fake.json` (no or a future heartbeat, any numbers) was listed
    forever and won load-aware dispatch with `read_tps: 1e9`."""
    import json
    import logging

    clock = Clock()
    reg = FileRegistry(tmp_path, ttl_s=6.0, clock=clock)
    reg.put(entry("a"))
    (tmp_path / f"{ROGUE['id']}.json").write_text(json.dumps({**ROGUE, **change}))
    with caplog.at_level(logging.WARNING, logger="edge.registry"):
        assert [e.id for e in reg.entries()] == ["a"]
        reg.entries()
    warned = [r.getMessage() for r in caplog.records]
    if why is None:
        assert warned == []
    else:  # one line naming the file, however often the registry is read
        assert len(warned) == 1 and "zz-fake.json" in warned[0] and why in warned[0]


def test_a_worker_bound_to_every_address_advertises_a_reachable_one() -> None:
    """Issue 22, finding 2: `--host 0.0.0.0` advertised http://0.0.0.0:PORT, which no dispatcher can reach."""
    from app.cli_edge import advertised_host

    assert advertised_host("0.0.0.0", None) == socket.gethostname() == advertised_host("::", None)
    assert advertised_host("0.0.0.0", "edge-3.lan") == "edge-3.lan"
    assert advertised_host("127.0.0.1", None) == "127.0.0.1" and advertised_host("::1", None) == "[::1]"
    assert WorkerEntry.from_json({"id": "w", "url": f"http://{advertised_host('0.0.0.0', None)}:8000", "model": "m"})


def test_open_registry_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_registry("", tmp_path, 5), FileRegistry)
    assert open_registry("file:" + str(tmp_path / "x"), tmp_path, 5).describe() == str(tmp_path / "x")
    assert isinstance(open_registry("redis://127.0.0.1:1/0", tmp_path, 5), RedisRegistry)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real redis-server on a free port, nothing persisted (make test installs it)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing — `make test` installs it (apt-get install redis-server)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.mark.network
def test_redis_registry_heartbeats_and_expires_in_redis(redis_url: str) -> None:
    reg = RedisRegistry(redis_url, ttl_s=0.6, prefix="test:ttl:")
    reg.put(entry("a", in_flight=1))
    reg.put(entry("b"))
    got = reg.entries()
    assert [(e.id, e.in_flight) for e in got] == [("a", 1), ("b", 0)]
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # b heartbeats every 0.2 s; a never again
        reg.put(entry("b"))
        time.sleep(0.2)
    assert [e.id for e in reg.entries()] == ["b"]  # Redis expired a on its own
    other = RedisRegistry(redis_url, ttl_s=0.6, prefix="test:other:")
    assert other.entries() == []  # prefixes keep deployments apart
    reg.remove("b")
    assert reg.entries() == []


@pytest.mark.network
def test_an_entry_set_by_hand_in_redis_without_a_ttl_is_not_listed_forever(redis_url: str) -> None:
    """Issue 22, finding 2: `SET ecqa:edge:x …` (no TTL, or a heartbeat from the future) was listed forever."""
    import json

    import redis

    reg = RedisRegistry(redis_url, ttl_s=2.0, prefix="test:rogue:")
    reg.put(entry("a"))
    raw = redis.Redis.from_url(redis_url)
    raw.set("test:rogue:zz-fake", json.dumps({**ROGUE, "heartbeat": time.time()}))  # no expiry
    raw.set("test:rogue:zz-future", json.dumps({**ROGUE, "id": "zz-future", "heartbeat": time.time() + 3600}))
    raw.set("test:rogue:zz-junk", b"{not json")
    assert sorted(e.id for e in reg.entries()) == ["a", "zz-fake"]  # fresh for now, like any entry
    time.sleep(2.3)
    reg.put(entry("a"))
    assert [e.id for e in reg.entries()] == ["a"]  # the TTL is checked on read, not only by Redis
    assert raw.ttl("test:rogue:zz-fake") == -1  # still there, never expiring in Redis itself
    reg.remove("a")


@pytest.mark.network
def test_unreachable_redis_is_one_clear_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    reg = RedisRegistry(f"redis://127.0.0.1:{port}/0", ttl_s=5)
    with pytest.raises(RegistryError, match="start redis-server") as info:
        reg.entries()
    assert "\n" not in str(info.value)
    with pytest.raises(RegistryError, match="redis://host:port/db"):
        RedisRegistry("redis://127.0.0.1:notaport/0", ttl_s=5)
