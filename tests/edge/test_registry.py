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
