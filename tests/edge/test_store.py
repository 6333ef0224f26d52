from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edge.errors import CollectionNotFoundError, StoreLockedError, StoreUnreachableError
from edge.store import DocumentStore, IndexStore, document_id


def _put(store: IndexStore, name: str, texts: list[str], dim: int = 3) -> str:
    backing = store.create_version(name, dim, hybrid=False)
    ids = [document_id("t", t) for t in texts]
    vecs = [[1.0, float(i), 0.0] for i in range(len(texts))]
    store.upsert(backing, ids, vecs, None, [{"text": t, "title": "t"} for t in texts])
    return backing


def test_document_id_is_content_hash() -> None:
    assert document_id("a", "x") == document_id("a", "x")
    assert document_id("a", "x") != document_id("b", "x")
    assert len(document_id("a", "x")) == 36


def test_publish_switches_alias_and_drops_old_version(memory_store: IndexStore) -> None:
    first = _put(memory_store, "docs", ["one", "two"])
    memory_store.publish("docs", first, {"model": "m", "dimension": 3, "sources": [{"path": "a"}]})
    assert memory_store.info("docs").documents == 2
    second = _put(memory_store, "docs", ["three"])
    # Until publish, the alias still serves the first version.
    assert memory_store.resolve("docs") == first and memory_store.info("docs").documents == 2
    memory_store.publish("docs", second, {"model": "m", "dimension": 3})
    assert memory_store.resolve("docs") == second
    assert first not in memory_store._collections()
    info = memory_store.info("docs")
    assert (info.documents, info.dimension, info.model) == (1, 3, "m")


def test_discard_leaves_serving_version(memory_store: IndexStore) -> None:
    first = _put(memory_store, "docs", ["one"])
    memory_store.publish("docs", first, {})
    broken = _put(memory_store, "docs", ["two", "three"])
    memory_store.discard(broken)
    assert memory_store.resolve("docs") == first
    assert broken not in memory_store._collections()


def test_existing_ids_and_copy(memory_store: IndexStore) -> None:
    src = _put(memory_store, "a", ["one", "two"])
    assert memory_store.existing_ids(src, [document_id("t", "one"), document_id("t", "zzz")]) == {document_id("t", "one")}
    dst = memory_store.create_version("a", 3, hybrid=False)
    assert memory_store.copy_points(src, dst, batch=1) == 2
    assert memory_store.count(dst) == 2


def test_drop_and_missing_collection(memory_store: IndexStore) -> None:
    memory_store.publish("docs", _put(memory_store, "docs", ["one"]), {})
    memory_store.drop("docs")
    assert memory_store.list_collections() == []
    with pytest.raises(CollectionNotFoundError, match="ecqa index build"):
        memory_store.info("docs")
    with pytest.raises(CollectionNotFoundError):
        memory_store.drop("docs")


def test_dense_search_ranks_by_cosine(memory_store: IndexStore) -> None:
    memory_store.publish("docs", _put(memory_store, "docs", ["zero", "one", "two"]), {})
    hits = memory_store.search("docs", [1.0, 2.0, 0.0], None, top_k=2)
    assert [h.payload["text"] for h in hits] == ["two", "one"]
    assert hits[0].dense_score == pytest.approx(hits[0].score) and hits[0].sparse_score is None


def test_local_folder_is_locked_for_a_second_client(tmp_path: Path) -> None:
    with DocumentStore(path=tmp_path / "q"), pytest.raises(StoreLockedError, match="--qdrant-url"):
        DocumentStore(path=tmp_path / "q").open()


def test_unreachable_server_is_one_clear_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreUnreachableError, match="did not answer"):
        DocumentStore(url=f"http://127.0.0.1:{port}").open()


def test_drop_refuses_the_backing_collection_of_an_alias(memory_store: IndexStore) -> None:
    """Defect #12.10: `index drop good__v…` silently removed the live data behind the alias `good`."""
    from edge.errors import StoreError

    backing = _put(memory_store, "good", ["one", "two"])
    memory_store.publish("good", backing, {})
    with pytest.raises(StoreError) as exc:
        memory_store.drop(backing)
    assert "'good'" in str(exc.value) and "ecqa index drop good" in str(exc.value)
    assert memory_store.resolve("good") == backing and memory_store.info("good").documents == 2
    leftover = _put(memory_store, "good", ["three"])  # an unpublished version (an interrupted build) may go
    assert memory_store.drop(leftover) == leftover and leftover not in memory_store._collections()


@pytest.mark.parametrize("name", ["a" * 233, "é" * 120, "bad name", "", "x/y"])
def test_create_version_refuses_names_qdrant_cannot_hold(memory_store: IndexStore, name: str) -> None:
    """Defect #12.6: a 233-character name (ValueError in Qdrant) or 120 × 'é' (OSError: file name too long)."""
    from edge.errors import StoreError

    with pytest.raises(StoreError) as exc:
        memory_store.create_version(name, 3, hybrid=False)
    assert "collection name" in str(exc.value) and " — " in str(exc.value)
    assert memory_store._collections() == []


def test_longest_allowed_name_builds_in_a_local_folder(tmp_path: Path) -> None:
    from edge.store import MAX_COLLECTION_NAME_BYTES

    name = "é" * (MAX_COLLECTION_NAME_BYTES // 2)  # 232 bytes: the longest a backing folder can carry
    with DocumentStore(path=tmp_path / "q") as store:
        store.publish(name, _put(store, name, ["one"]), {})
        assert store.info(name).documents == 1


def test_a_name_no_build_can_make_is_not_suggested_to_build(memory_store: IndexStore) -> None:
    """Found by the fuzz harness: `index drop $'\\r'` printed the name raw in "--collection \\r" (two lines)."""
    with pytest.raises(CollectionNotFoundError) as exc:
        memory_store.drop("bad\r\nname")
    msg = str(exc.value)
    assert "'bad\\r\\nname' not found" in msg and "check the name" in msg and "\n" not in msg and "\r" not in msg
