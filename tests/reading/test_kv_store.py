"""The passage KV store on its own: keys, checksums, LRU eviction, failures that degrade, and two
processes sharing one folder."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import pytest

from reading.kv_store import PassageStateStore, state_key


def test_a_state_comes_back_byte_for_byte_and_counts_hits_and_misses(tmp_path: Path) -> None:
    store = PassageStateStore(tmp_path / "kv")
    assert store.get("a" * 64) is None
    assert store.put("a" * 64, b"state bytes" * 100)
    assert store.get("a" * 64) == b"state bytes" * 100
    assert (store.stats.hits, store.stats.misses, store.stats.writes) == (1, 1, 1)
    assert len(store) == 1 and store.size_bytes() > 1100
    assert not [p for p in (tmp_path / "kv").iterdir() if p.name.startswith(".tmp-")]  # no temporary left behind


@pytest.mark.parametrize("change", ["model", "template", "kv_type", "passage"])
def test_any_change_of_model_template_cache_type_or_passage_is_another_key(change: str) -> None:
    base = {"model": "m" * 64, "template": "t" * 64, "kv_type": "q8_0", "passage": "<system>Passage: Miret is..."}
    other = dict(base)
    other[change] = {"model": "n" * 64, "template": "u" * 64, "kv_type": "f16", "passage": "<system>Passage: Miret was..."}[change]
    assert state_key(*base.values()) != state_key(*other.values())
    assert state_key(*base.values()) == state_key(*dict(base).values())


def test_parts_cannot_shift_into_each_other() -> None:
    assert state_key("ab", "c", "f16", "x") != state_key("a", "bc", "f16", "x")


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "foreign"])
def test_a_corrupt_state_is_refused_deleted_and_reported_as_a_miss(tmp_path: Path, damage: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    store = PassageStateStore(tmp_path)
    store.put("k" * 64, os.urandom(5000))
    path = store.path("k" * 64)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[-100] ^= 0x01
    elif damage == "truncate":
        raw = raw[:-1]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw = bytearray(b"GGUF" + bytes(60))
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="reading.kv_store"):
        assert store.get("k" * 64) is None
    assert not path.exists() and store.stats.corrupt == 1
    assert "checksum" in caplog.text


def test_another_passages_state_copied_under_this_name_is_refused(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Issue 22, finding 1: the header's SHA-256 covered the payload, not the key, so `cp red.kv blue.kv`
    was read as blue's state (the edge then answered from the wrong passage)."""
    store = PassageStateStore(tmp_path)
    red, blue = "r" * 64, "b" * 64
    store.put(red, b"the red house's state" * 50)
    shutil.copyfile(store.path(red), store.path(blue))
    with caplog.at_level(logging.WARNING, logger="reading.kv_store"):
        assert store.get(blue) is None
    assert not store.path(blue).exists() and store.stats.corrupt == 1 and "not this passage's state" in caplog.text
    assert store.get(red) == b"the red house's state" * 50  # the original is untouched


def test_a_state_of_the_old_format_is_a_quiet_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Stores filled before states were bound to their key: each old file is recomputed once, without a
    warning line per passage (a collection of 960 would have printed 960)."""
    import hashlib
    import struct

    store = PassageStateStore(tmp_path)
    payload = b"old state" * 10
    store.path("k" * 64).write_bytes(struct.pack("<8sQ32s", b"ECQAKV1\n", len(payload),
                                                 hashlib.sha256(payload).digest()) + payload)
    with caplog.at_level(logging.WARNING, logger="reading.kv_store"):
        assert store.get("k" * 64) is None
    assert caplog.records == [] and store.stats.corrupt == 0 and store.stats.misses == 1
    assert not store.path("k" * 64).exists()


def test_past_the_budget_the_least_recently_used_state_goes(tmp_path: Path) -> None:
    payload = bytes(1000)
    store = PassageStateStore(tmp_path, budget_bytes=2 * (1000 + 48) + 10)
    store.put("a" * 64, payload)
    store.put("b" * 64, payload)
    past = time.time() - 100
    os.utime(store.path("a" * 64), (past, past))
    os.utime(store.path("b" * 64), (past + 1, past + 1))
    assert store.get("a" * 64) == payload  # a hit: "a" is now the most recently used
    store.put("c" * 64, payload)
    assert store.get("b" * 64) is None and store.get("a" * 64) == payload and store.get("c" * 64) == payload
    assert store.stats.evictions == 1 and store.size_bytes() <= store.budget_bytes


def test_a_state_over_the_whole_budget_is_not_stored(tmp_path: Path) -> None:
    store = PassageStateStore(tmp_path, budget_bytes=100)
    assert not store.put("a" * 64, bytes(1000))
    assert len(store) == 0


def test_a_deleted_folder_degrades_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = PassageStateStore(tmp_path / "kv")
    store.put("a" * 64, b"x" * 10)
    shutil.rmtree(tmp_path / "kv")
    with caplog.at_level(logging.WARNING, logger="reading.kv_store"):
        assert store.get("a" * 64) is None
        assert not store.put("b" * 64, b"y")
        assert not store.put("c" * 64, b"z")
    assert caplog.text.count("plain prefill") == 1 and store.stats.errors == 2


def test_a_folder_that_cannot_be_created_degrades(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="reading.kv_store"):
        store = PassageStateStore(tmp_path / "file" / "kv")
        assert not store.put("a" * 64, b"x")
        assert store.get("a" * 64) is None
    assert caplog.text.count("plain prefill") == 1


def test_a_full_disk_degrades(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PassageStateStore(tmp_path)

    def full(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("reading.kv_store.os.replace", full)
    assert not store.put("a" * 64, b"x" * 100)
    assert store.stats.errors == 1 and not list(tmp_path.iterdir())  # the temporary file is gone too


def _writer(folder: str, n: int, seed: int) -> None:
    store = PassageStateStore(folder)
    for i in range(n):
        key = f"{i % 5:064d}"
        store.put(key, bytes([seed]) * (20_000 + 997 * (i % 7)))


def test_two_processes_sharing_a_store_never_read_a_half_written_state(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), 300, seed)) for seed in (1, 2)]
    for w in writers:
        w.start()
    reader = PassageStateStore(tmp_path)
    seen = 0
    while any(w.is_alive() for w in writers):
        for i in range(5):
            data = reader.get(f"{i:064d}")
            if data is not None:
                seen += 1
                assert data in (bytes([1]) * len(data), bytes([2]) * len(data))
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert seen > 0 and reader.stats.corrupt == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
