"""The document store on Qdrant Edge: the Qdrant engine in-process, one shard folder per index version.

Layout of the store's folder::

    <path>/aliases.json              name -> backing version, replaced atomically (the "alias switch")
    <path>/aliases.lock              held while aliases.json is read-modified-written
    <path>/<name>__v<stamp>/         one Edge shard per version (segments/, wal/, edge_config.json)
    <path>/<name>__v<stamp>/ecqa.json    the build manifest (model, dimension, sources, …)
    <path>/<name>__v<stamp>.inuse    held shared by every process that has the version open

A build writes a new version folder and only then replaces ``aliases.json``, so a build killed
at any point (SIGKILL included) leaves the previous version serving; the next build deletes the
leftover. A version another process still has open is not deleted (its ``.inuse`` lock is held)
but left for a later build. A shard is opened by one process at a time (its WAL is locked).

Snapshots: a version folder packed as a tar is a *streamable* shard snapshot, the format
``EdgeShard.unpack_snapshot`` restores (the same call restores a Qdrant server's shard snapshot).
:func:`write_snapshot` packs any store's collection that way, with the build manifest inside, and
:func:`pull_snapshot` unpacks one into a new version and switches the alias when it is loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from edge.errors import StoreError, StoreLockedError
from edge.store import DENSE, SPARSE, IndexStore, PointRecord, check_collection_name

logger = logging.getLogger(__name__)

QDRANT_EDGE_VERSION = "0.9.0"  # beta: its API still moves, so pyproject pins it exactly
MANIFEST = "ecqa.json"
ALIASES = "aliases.json"
SNAPSHOT_FORMAT = "ecqa-edge-shard/1"


class EdgeShardStore(IndexStore):
    """Versions of each collection as Qdrant Edge shards in one folder.

    :param path: the store's folder; None = a temporary folder removed at :meth:`close` (tests).
    """

    kind = "edge"

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._root: Path | None = None
        self._temporary = False
        self._shards: dict[str, Any] = {}
        self._inuse: dict[str, IO[bytes]] = {}
        # The UI searches from several threads: a shard is loaded (and let go) by one of them at a time, as a
        # second load of the same shard fails on its WAL lock.
        self._lock = threading.RLock()

    # --- lifecycle --------------------------------------------------------------------------
    def open(self) -> EdgeShardStore:
        if self._root is not None:
            return self
        if self.path is None:
            self._root, self._temporary = Path(tempfile.mkdtemp(prefix="ecqa-edge-")), True
            return self
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create index folder {self.path}: {exc.strerror} — pass a writable --qdrant-path") from None
        self._root = self.path
        return self

    def close(self) -> None:
        for backing in list(self._shards):
            self._release(backing)
        if self._temporary and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
        self._root = None

    def __enter__(self) -> EdgeShardStore:
        return self.open()

    @property
    def where(self) -> str:
        return str(self.path or self._root or ":temporary:")

    @property
    def root(self) -> Path:
        if self._root is None:
            self.open()
        assert self._root is not None
        return self._root

    def _dir(self, backing: str) -> Path:
        return self.root / backing

    def _shard(self, backing: str) -> Any:
        """The open shard of ``backing`` (loaded on first use, kept until the store closes or it is dropped)."""
        shard = self._shards.get(backing)
        if shard is not None:
            return shard
        with self._lock:
            return self._shards.get(backing) or self._load(backing)

    def _load(self, backing: str) -> Any:
        from qdrant_edge import EdgeShard

        folder = self._dir(backing)
        if not (folder / "edge_config.json").is_file():
            raise StoreError(f"index version {backing!r} in {self.where} is missing or incomplete — rebuild it with "
                             "`ecqa index build … --recreate`")
        lock = self._hold(backing)
        try:
            shard = EdgeShard.load(str(folder))
        except Exception as exc:
            lock.close()
            if "WouldBlock" in str(exc):
                raise StoreLockedError(
                    f"the index {backing!r} in {self.where} is open in another ecqa process — stop it, "
                    "or use a Qdrant server with --qdrant-url"
                ) from None
            raise StoreError(f"cannot load index version {backing!r} in {self.where}: {' '.join(str(exc).split())} — "
                             "rebuild it with `ecqa index build … --recreate`") from None
        self._shards[backing], self._inuse[backing] = shard, lock
        return shard

    def _hold(self, backing: str) -> IO[bytes]:
        """A shared lock on ``backing``'s ``.inuse`` file, held while this process has the version open."""
        lock = open(self.root / f"{backing}.inuse", "ab")  # noqa: SIM115 - closed by _release
        fcntl.flock(lock, fcntl.LOCK_SH)
        return lock

    def _release(self, backing: str) -> None:
        with self._lock:
            shard = self._shards.pop(backing, None)
            if shard is not None:
                with contextlib.suppress(Exception):
                    shard.flush()
                with contextlib.suppress(Exception):
                    shard.close()
            lock = self._inuse.pop(backing, None)
            if lock is not None:
                lock.close()

    # --- aliases ----------------------------------------------------------------------------
    def _aliases(self) -> dict[str, str]:
        try:
            data = json.loads((self.root / ALIASES).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.root / ALIASES} is unreadable ({exc}) — restore it or rebuild the index") from None
        aliases = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        # A reader in another process may hold versions no alias names any more: let them go.
        for backing in [b for b in self._shards if b not in aliases.values() and not self._building(b)]:
            self._release(backing)
        return aliases

    def _building(self, backing: str) -> bool:
        meta = self._dir(backing) / MANIFEST
        return not meta.is_file() or not json.loads(meta.read_text()).get("published", False)

    @contextlib.contextmanager
    def _alias_lock(self) -> Iterator[None]:
        with open(self.root / "aliases.lock", "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _set_alias(self, name: str, backing: str | None) -> None:
        with self._alias_lock():
            aliases = self._aliases()
            if backing is None:
                aliases.pop(name, None)
            else:
                aliases[name] = backing
            _write_atomically(self.root / ALIASES, json.dumps(aliases, indent=1, sort_keys=True))

    def _collections(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "edge_config.json").is_file())

    # --- reading ----------------------------------------------------------------------------
    def _metadata(self, backing: str) -> dict[str, Any]:
        try:
            return dict(json.loads((self._dir(backing) / MANIFEST).read_text()))
        except FileNotFoundError:
            return {}

    def _dimension(self, backing: str) -> int:
        try:
            config = json.loads((self._dir(backing) / "edge_config.json").read_text())
        except (OSError, ValueError):
            return 0
        vectors = config.get("vectors") or {}
        dense = vectors.get(DENSE) if isinstance(vectors, dict) else None
        return int(dense.get("size", 0)) if isinstance(dense, dict) else 0

    def count(self, backing: str) -> int:
        from qdrant_edge import CountRequest

        return int(self._shard(backing).count(CountRequest(exact=True)))

    def _query(self, backing: str, using: str, vector: Any, limit: int) -> list[tuple[str, float, dict[str, Any]]]:
        from qdrant_edge import Query, QueryRequest, SparseVector

        query_vector = SparseVector(list(vector[0]), list(vector[1])) if using == SPARSE else list(vector)
        pts = self._shard(backing).query(
            QueryRequest(limit=limit, query=Query.Nearest(query_vector, using=using), with_payload=True)
        )
        return [(str(p.id), float(p.score), dict(p.payload or {})) for p in pts]

    def existing_ids(self, backing: str, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), 256):
            recs = self._shard(backing).retrieve(list(ids[i : i + 256]), with_payload=False, with_vector=False)
            found.update(str(r.id) for r in recs)
        return found

    def points(self, backing: str, batch: int = 256) -> Iterator[list[PointRecord]]:
        from qdrant_edge import ScrollRequest

        offset = None
        while True:
            recs, offset = self._shard(backing).scroll(
                ScrollRequest(limit=batch, offset=offset, with_vector=True, with_payload=True)
            )
            records: list[PointRecord] = []
            for r in recs:
                vec = r.vector if isinstance(r.vector, dict) else {}
                sp = vec.get(SPARSE)
                records.append((str(r.id), [float(x) for x in vec.get(DENSE, [])],
                                (list(sp.indices), list(sp.values)) if sp is not None else None, dict(r.payload or {})))
            if records:
                yield records
            if offset is None:
                return

    # --- writing ----------------------------------------------------------------------------
    def create_version(self, name: str, dimension: int, hybrid: bool) -> str:
        from qdrant_edge import Distance, EdgeConfig, EdgeShard, EdgeSparseVectorParams, EdgeVectorParams, Modifier

        backing = self._new_backing(name)
        config = EdgeConfig(
            vectors={DENSE: EdgeVectorParams(size=dimension, distance=Distance.Cosine)},
            sparse_vectors={SPARSE: EdgeSparseVectorParams(modifier=Modifier.Idf)} if hybrid else None,
        )
        lock = self._hold(backing)
        try:
            self._shards[backing] = EdgeShard.create(str(self._dir(backing)), config)
        except Exception as exc:
            lock.close()
            raise StoreError(f"cannot create an index version in {self.where}: {' '.join(str(exc).split())} — "
                             "check the folder is writable and has space") from None
        self._inuse[backing] = lock
        _write_atomically(self._dir(backing) / MANIFEST, json.dumps({"dimension": dimension, "hybrid": hybrid}))
        return backing

    def upsert(
        self,
        backing: str,
        ids: Sequence[str],
        dense: Sequence[Sequence[float]],
        sparse: Sequence[tuple[list[int], list[float]]] | None,
        payloads: Sequence[dict[str, Any]],
    ) -> None:
        from qdrant_edge import Point, SparseVector, UpdateOperation

        points = []
        for i, pid in enumerate(ids):
            vector: dict[str, Any] = {DENSE: [float(x) for x in dense[i]]}
            if sparse is not None:
                vector[SPARSE] = SparseVector(list(sparse[i][0]), [float(x) for x in sparse[i][1]])
            points.append(Point(pid, vector, payloads[i]))
        self._shard(backing).update(UpdateOperation.upsert_points(points))

    def write_metadata(self, backing: str, metadata: dict[str, Any]) -> None:
        merged = self._metadata(backing) | metadata | {"published": True}
        _write_atomically(self._dir(backing) / MANIFEST, json.dumps(merged))

    def finish(self, backing: str) -> None:
        """Build the HNSW index where the shard is big enough for one, and flush: the version is complete on disk."""
        shard = self._shard(backing)
        shard.optimize()
        shard.flush()

    def _delete(self, backing: str) -> bool:
        self._release(backing)
        lock_path = self.root / f"{backing}.inuse"
        with open(lock_path, "ab") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("index version %s is still open in another process; left for a later build", backing)
                return False
            shutil.rmtree(self._dir(backing), ignore_errors=True)
            lock_path.unlink(missing_ok=True)
        return True

    # --- snapshots --------------------------------------------------------------------------
    def pack(self, backing: str, out: Path, manifest: dict[str, Any]) -> None:
        """Write ``backing`` as a shard snapshot (a tar of its folder, ``manifest`` inside) to ``out``, atomically."""
        self._release(backing)  # closed: every segment and the WAL are complete on disk
        _tar_folder(self._dir(backing), out, manifest)

    def unpack(self, name: str, snapshot: Path) -> str:
        """A new version of ``name`` from a shard snapshot, loaded and counted; not published yet.

        :raises StoreError: not a snapshot, or one the engine cannot restore.
        """
        from qdrant_edge import EdgeShard

        backing = self._new_backing(name)
        folder = self._dir(backing)
        try:
            EdgeShard.unpack_snapshot(str(snapshot), str(folder))
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise StoreError(f"{snapshot} is not a shard snapshot Qdrant Edge can restore "
                             f"({' '.join(str(exc).split())[:160]}) — make one with "
                             "`ecqa index build FILE --snapshot OUT`") from None
        try:
            self.count(backing)
        except StoreError:
            self.discard(backing)
            raise
        return backing


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _tar_folder(folder: Path, out: Path, manifest: dict[str, Any]) -> None:
    """GNU tar with ``--sparse``: a shard preallocates its files (32 MiB each for a WAL segment or a vector
    store, mostly holes), so a plain tar of a 1-point shard is 136 MB where this one is 80 kB; the engine's
    ``unpack_snapshot`` restores sparse members."""
    tmp = out.with_name(f".{out.name}.tmp")
    with tempfile.TemporaryDirectory() as staging:
        (Path(staging) / MANIFEST).write_text(json.dumps(manifest))
        cmd = ["tar", "--sparse", "--format=gnu", "-cf", str(tmp), "-C", str(folder), f"--exclude=./{MANIFEST}",
               "--exclude=./.*", ".", "-C", staging, MANIFEST]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise StoreError(f"cannot run tar to write the snapshot ({exc.strerror}) — install GNU tar") from None
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        reason = " ".join(done.stderr.split())[:160]
        raise StoreError(f"cannot write the snapshot {out}: {reason} — choose a writable path with free space")
    os.replace(tmp, out)


def write_snapshot(store: IndexStore, name: str, out: Path) -> dict[str, Any]:
    """Pack collection ``name`` of any store as a Qdrant Edge shard snapshot at ``out``.

    A store that is not on Qdrant Edge (local mode, a server) is copied into a temporary shard first.
    :returns: the snapshot's manifest (the collection's, plus the snapshot format).
    :raises StoreError: no such collection, or ``out`` is not writable.
    """
    check_collection_name(name)
    info = store.info(name)
    meta = {k: v for k, v in store._metadata(info.backing).items() if k != "published"}
    meta |= {"snapshot_format": SNAPSHOT_FORMAT, "collection": name}
    if isinstance(store, EdgeShardStore):
        store.pack(info.backing, out, meta)
        return meta
    with EdgeShardStore() as scratch:
        backing = scratch.create_version(name, info.dimension, info.hybrid)
        scratch.copy_points(info.backing, backing, source=store)
        scratch.finish(backing)
        scratch.pack(backing, out, meta)
    return meta


def snapshot_manifest(snapshot: Path) -> dict[str, Any]:
    """The build manifest inside an ecqa shard snapshot.

    :raises StoreError: missing or unreadable file, or a tar without the manifest.
    """
    try:
        with tarfile.open(snapshot) as tar:
            member = tar.extractfile(MANIFEST)
            data = json.loads(member.read()) if member is not None else None
    except FileNotFoundError:
        raise StoreError(f"snapshot {snapshot} does not exist — check the path") from None
    except KeyError:
        raise StoreError(f"{snapshot} holds no {MANIFEST} (not made by ecqa) — make one with "
                         "`ecqa index build FILE --snapshot OUT`") from None
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise StoreError(f"{snapshot} is not an index snapshot ({' '.join(str(exc).split())[:120]}) — make one with "
                         "`ecqa index build FILE --snapshot OUT`") from None
    if not isinstance(data, dict) or data.get("snapshot_format") != SNAPSHOT_FORMAT:
        raise StoreError(f"{snapshot} is not an ecqa index snapshot of format {SNAPSHOT_FORMAT} — make one with "
                         "`ecqa index build FILE --snapshot OUT`")
    return data


def pull_snapshot(store: IndexStore, snapshot: Path, name: str) -> tuple[str, dict[str, Any]]:
    """Make ``snapshot`` the collection ``name`` of ``store``: the old version serves until the new one is
    loaded, then one alias switch.

    :returns: the new backing version and the snapshot's manifest.
    :raises StoreError: not an ecqa snapshot, or one the engine cannot restore.
    """
    check_collection_name(name)
    manifest = snapshot_manifest(snapshot)
    meta = {k: v for k, v in manifest.items() if k not in ("published", "collection")}
    if isinstance(store, EdgeShardStore):
        backing = store.unpack(name, snapshot)
        try:
            store.publish(name, backing, meta)
        except BaseException:
            store.discard(backing)
            raise
        return backing, manifest
    with EdgeShardStore() as scratch:
        source = scratch.unpack(name, snapshot)
        backing = store.create_version(name, int(manifest.get("dimension") or scratch._dimension(source)),
                                       bool(manifest.get("hybrid", True)))
        try:
            store.copy_points(source, backing, source=scratch)
            store.publish(name, backing, meta)
        except BaseException:
            store.discard(backing)
            raise
    return backing, manifest
