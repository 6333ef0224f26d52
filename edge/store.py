"""Qdrant document store: versioned collections behind an alias, hybrid dense + BM25 search.

A collection the user names (``squad``) is an *alias*. Each build writes a fresh backing
collection ``squad__v<timestamp>`` and switches the alias to it in one atomic alias update only
when the build is complete, so an interrupted build leaves the previous version serving. The
build manifest (model, dimension, sources, …) lives in the backing collection's metadata.

Two stores share that behaviour through :class:`IndexStore`: :class:`DocumentStore` here, on
qdrant-client (embedded local mode with ``path=``: one process per folder, brute force; or a
server or cluster with ``url=``), and :class:`edge.store_edge.EdgeShardStore` on Qdrant Edge (the
engine in-process: HNSW, snapshots). Fusion, naming, aliases and the version life cycle live
once, in the base class; each store supplies a few primitives.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.errors import CollectionNotFoundError, StoreError, StoreLockedError, StoreUnreachableError
from edge.fusion import fuse

logger = logging.getLogger(__name__)

DENSE = "dense"
SPARSE = "bm25"
_VERSION_SEP = "__v"
_VERSION_DIGITS = 20  # %Y%m%d%H%M%S%f
# A build writes "<name>__v<20 digits>": Qdrant caps collection names at 255 characters and embedded
# Qdrant makes a folder of that name (255 bytes on Linux filesystems), so the name keeps 232 bytes.
MAX_COLLECTION_NAME_BYTES = 255 - len(_VERSION_SEP) - _VERSION_DIGITS


def collection_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a collection, as a message that says how to fix it; None if it can.

    The one check of a collection name (settings, flags and the store all use it): letters and
    digits (any script), '-' and '_', at most :data:`MAX_COLLECTION_NAME_BYTES` bytes of UTF-8.
    """
    if not isinstance(name, str) or not name:
        return "a collection name must be a non-empty string — use letters, digits, '-' and '_', e.g. 'squad'"
    if not all(c.isalnum() or c in "-_" for c in name):
        return (f"collection name {name[:40]!r} has characters other than letters, digits, '-' and '_' — "
                "use only those, e.g. 'my-docs_2'")
    size = len(name.encode("utf-8"))
    if size > MAX_COLLECTION_NAME_BYTES:
        return (f"collection name {name[:20]!r}… is {size} bytes in UTF-8, over {MAX_COLLECTION_NAME_BYTES} — "
                "choose a shorter name")
    return None


def check_collection_name(name: str) -> str:
    """:raises StoreError: see :func:`collection_name_problem`."""
    problem = collection_name_problem(name)
    if problem:
        raise StoreError(problem)
    return name


@dataclass(frozen=True)
class Hit:
    """One retrieved passage with its fused score and the per-retriever scores behind it."""

    id: str
    score: float
    payload: dict[str, Any]
    dense_score: float | None = None
    sparse_score: float | None = None


@dataclass
class CollectionInfo:
    """What `index stats` reports about a collection."""

    collection: str
    backing: str
    documents: int
    dimension: int
    model: str = ""
    built_at: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    hybrid: bool = True
    embed_titles: bool = True
    sparse_avg_len: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "backing_collection": self.backing,
            "documents": self.documents,
            "dimension": self.dimension,
            "model": self.model,
            "built_at": self.built_at,
            "sources": self.sources,
            "hybrid": self.hybrid,
            "embed_titles": self.embed_titles,
        }


def document_id(title: str, text: str) -> str:
    """Deterministic point id: a UUID made from the SHA-256 of title and text."""
    import hashlib

    digest = hashlib.sha256(f"{title}\n{text}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16]))


# One point as stores exchange it: id, dense vector, BM25 vector (or None), payload.
PointRecord = tuple[str, list[float], "tuple[list[int], list[float]] | None", dict[str, Any]]


class IndexStore(abc.ABC):
    """What every document store does: versions behind aliases, hybrid search, the build life cycle.

    Subclasses supply the primitives (``_aliases``, ``_collections``, ``_set_alias``,
    ``_metadata``, ``_dimension``, ``_query``, ``_delete``, ``count``, ``points``,
    ``create_version``, ``upsert``, ``existing_ids``, ``write_metadata``); the rest is shared.
    """

    kind: str = ""

    # --- lifecycle --------------------------------------------------------------------------
    @abc.abstractmethod
    def open(self) -> IndexStore: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> IndexStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    @abc.abstractmethod
    def where(self) -> str: ...

    # --- primitives ---------------------------------------------------------------------------
    @abc.abstractmethod
    def _aliases(self) -> dict[str, str]: ...

    @abc.abstractmethod
    def _collections(self) -> list[str]: ...

    @abc.abstractmethod
    def _set_alias(self, name: str, backing: str | None) -> None:
        """Point ``name`` at ``backing`` (None: remove it), in one atomic step."""

    @abc.abstractmethod
    def _metadata(self, backing: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _dimension(self, backing: str) -> int: ...

    @abc.abstractmethod
    def _query(self, backing: str, using: str, vector: Any, limit: int) -> list[tuple[str, float, dict[str, Any]]]:
        """Best-first ``(id, score, payload)`` of one named vector; ``vector`` is dense floats or (indices, values)."""

    @abc.abstractmethod
    def _delete(self, backing: str) -> bool:
        """Delete a backing collection; False when another process still reads it (it is left for later)."""

    @abc.abstractmethod
    def count(self, backing: str) -> int: ...

    @abc.abstractmethod
    def points(self, backing: str, batch: int = 256) -> Iterator[list[PointRecord]]:
        """Every point of ``backing`` with its vectors and payload, ``batch`` at a time."""

    @abc.abstractmethod
    def create_version(self, name: str, dimension: int, hybrid: bool) -> str:
        """Create an empty backing collection for a new build of ``name``."""

    @abc.abstractmethod
    def upsert(self, backing: str, ids: Sequence[str], dense: Sequence[Sequence[float]],
               sparse: Sequence[tuple[list[int], list[float]]] | None, payloads: Sequence[dict[str, Any]]) -> None: ...

    @abc.abstractmethod
    def existing_ids(self, backing: str, ids: Sequence[str]) -> set[str]: ...

    @abc.abstractmethod
    def write_metadata(self, backing: str, metadata: dict[str, Any]) -> None:
        """Store the build manifest with ``backing`` (before the alias points at it)."""

    def finish(self, backing: str) -> None:  # noqa: B027 - an optional hook: most stores have nothing to finish
        """Make ``backing`` ready to serve (flush, build indexes); called before the alias switch."""

    # --- naming ------------------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        """Backing collection of ``name`` (an alias, or a plain collection made elsewhere)."""
        aliases = self._aliases()
        if name in aliases:
            return aliases[name]
        if name in self._collections():
            return name
        known = sorted(aliases) or ["none yet"]
        if collection_name_problem(name):  # no build can make it: do not suggest one (nor echo control characters)
            raise CollectionNotFoundError(
                f"collection {name[:40]!r} not found in {self.where} (have: {', '.join(known)}) — check the name: "
                "collection names hold letters, digits, '-' and '_'"
            )
        raise CollectionNotFoundError(
            f"collection {name!r} not found in {self.where} (have: {', '.join(known)}) — "
            f"run `ecqa index build FILE --collection {name}`"
        )

    def exists(self, name: str) -> bool:
        try:
            self.resolve(name)
        except CollectionNotFoundError:
            return False
        return True

    # --- reading ----------------------------------------------------------------------------
    def info(self, name: str) -> CollectionInfo:
        backing = self.resolve(name)
        meta = self._metadata(backing)
        return CollectionInfo(
            collection=name,
            backing=backing,
            documents=self.count(backing),
            dimension=self._dimension(backing) or int(meta.get("dimension", 0)),
            model=str(meta.get("model", "")),
            built_at=str(meta.get("built_at", "")),
            sources=list(meta.get("sources", [])),
            hybrid=bool(meta.get("hybrid", False)),
            embed_titles=bool(meta.get("embed_titles", False)),
            sparse_avg_len=float(meta.get("sparse_avg_len", 0.0)),
        )

    def list_collections(self) -> list[CollectionInfo]:
        return [self.info(alias) for alias in sorted(self._aliases())]

    def search(
        self,
        name: str,
        dense: Sequence[float],
        sparse: tuple[list[int], list[float]] | None,
        top_k: int,
        fusion: str = "convex",
        dense_weight: float = 0.6,
        sparse_weight: float = 1.0,
    ) -> list[Hit]:
        """Top-k passages: dense cosine alone, or dense and BM25 fused (see :mod:`edge.fusion`).

        Fusion runs here rather than in Qdrant's ``FusionQuery`` so each hit keeps its cosine
        and BM25 scores, which the confidence features use.
        """
        backing = self.resolve(name)
        depth = max(top_k * 4, 20)
        dense_pts = self._query(backing, DENSE, list(dense), depth if sparse else top_k)
        sparse_pts = self._query(backing, SPARSE, sparse, depth) if sparse and sparse[0] else []
        if not sparse:
            return [Hit(pid, score, payload, dense_score=score) for pid, score, payload in dense_pts]
        payloads = {pid: payload for pid, _, payload in [*sparse_pts, *dense_pts]}
        dense_scores = {pid: score for pid, score, _ in dense_pts}
        sparse_scores = {pid: score for pid, score, _ in sparse_pts}
        best = fuse(list(dense_scores.items()), list(sparse_scores.items()), top_k, fusion, dense_weight, sparse_weight)
        return [
            Hit(pid, score, payloads[pid], dense_scores.get(pid), sparse_scores.get(pid)) for pid, score in best
        ]

    # --- writing ----------------------------------------------------------------------------
    def _new_backing(self, name: str) -> str:
        check_collection_name(name)
        return f"{name}{_VERSION_SEP}{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"

    def copy_points(self, src: str, dst: str, batch: int = 256, source: IndexStore | None = None) -> int:
        """Copy every point (vectors and payload) of ``src`` (in ``source``, default this store) into ``dst``."""
        copied = 0
        for records in (source or self).points(src, batch):
            self.upsert(dst, [r[0] for r in records], [r[1] for r in records],
                        [r[2] or ([], []) for r in records] if any(r[2] is not None for r in records) else None,
                        [r[3] for r in records])
            copied += len(records)
        return copied

    def publish(self, name: str, backing: str, metadata: dict[str, Any]) -> None:
        """Write the manifest, then point ``name`` at ``backing`` in one atomic alias update."""
        self.write_metadata(backing, metadata)
        self.finish(backing)
        if name in self._collections():
            raise StoreError(
                f"{name!r} is a plain collection made outside ecqa — drop it with `ecqa index drop {name}` first"
            )
        self._set_alias(name, backing)
        self._drop_unaliased(name, keep=backing)

    def discard(self, backing: str) -> None:
        """Remove an unfinished backing collection (a failed build)."""
        with contextlib.suppress(Exception):
            self._delete(backing)

    def _drop_unaliased(self, name: str, keep: str) -> None:
        """Delete older versions of ``name`` and leftovers of interrupted builds."""
        prefix = f"{name}{_VERSION_SEP}"
        in_use = set(self._aliases().values())
        for coll in self._collections():
            if coll.startswith(prefix) and coll != keep and coll not in in_use:
                logger.info("dropping old index version %s", coll)
                self._delete(coll)

    def drop(self, name: str) -> str:
        """Delete the alias ``name`` and its backing collection; returns the backing name.

        :raises StoreError: ``name`` is the backing collection of an alias (the live data of another name).
        :raises CollectionNotFoundError: no such collection.
        """
        aliases = self._aliases()
        users = sorted(alias for alias, target in aliases.items() if target == name and alias != name)
        if name not in aliases and users:
            raise StoreError(
                f"{name!r} is the version now serving collection {users[0]!r}, not a collection — "
                f"drop the collection with `ecqa index drop {users[0]}` (a rebuild replaces versions by itself)"
            )
        backing = self.resolve(name)
        if name in aliases:
            self._set_alias(name, None)
        self._delete(backing)
        self._drop_unaliased(name, keep="")
        return backing


class DocumentStore(IndexStore):
    """A qdrant-client store opened on a local folder (local mode) or a server URL.

    :param path: folder of the embedded index (ignored when ``url`` is given); neither = in memory.
    :param url: Qdrant server or cluster URL.
    :param api_key: API key for ``url``.
    """

    def __init__(self, path: Path | None = None, url: str | None = None, api_key: str | None = None) -> None:
        self.path = path
        self.url = url
        self.api_key = api_key
        self._client: Any = None

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "server" if self.url else "local"

    # --- lifecycle --------------------------------------------------------------------------
    def open(self) -> DocumentStore:
        if self._client is not None:
            return self
        from qdrant_client import QdrantClient

        if self.url:
            self._client = QdrantClient(url=self.url, api_key=self.api_key, timeout=10, check_compatibility=False)
            with self._guard():
                self._client.get_collections()
            return self
        if self.path is None:  # tests and benchmarks
            self._client = QdrantClient(":memory:")
            return self
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create index folder {self.path}: {exc.strerror} — pass a writable --qdrant-path") from None
        try:
            self._client = QdrantClient(path=str(self.path))
        except RuntimeError as exc:
            import portalocker

            # qdrant-client raises a bare RuntimeError while handling portalocker's LockException: map by that type.
            if isinstance(exc.__context__, portalocker.exceptions.LockException):
                raise StoreLockedError(
                    f"the index folder {self.path} is open in another ecqa process — stop it, "
                    "or use a Qdrant server with --qdrant-url"
                ) from None
            raise
        return self

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def __enter__(self) -> DocumentStore:
        return self.open()

    @property
    def where(self) -> str:
        return self.url or str(self.path or ":memory:")

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn transport failures of a Qdrant server into one clear error."""
        from qdrant_client.http.exceptions import ResponseHandlingException

        try:
            yield
        except ResponseHandlingException as exc:
            raise StoreUnreachableError(
                f"Qdrant at {self.url} did not answer ({exc.source.__class__.__name__}) — start it or fix --qdrant-url"
            ) from None

    @property
    def client(self) -> Any:
        if self._client is None:
            self.open()
        return self._client

    # --- primitives ---------------------------------------------------------------------------
    def _aliases(self) -> dict[str, str]:
        with self._guard():
            return {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}

    def _collections(self) -> list[str]:
        with self._guard():
            return [c.name for c in self.client.get_collections().collections]

    def _set_alias(self, name: str, backing: str | None) -> None:
        from qdrant_client import models as m

        ops: list[Any] = []
        if name in self._aliases():
            ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=name)))
        if backing is not None:
            ops.append(m.CreateAliasOperation(create_alias=m.CreateAlias(collection_name=backing, alias_name=name)))
        with self._guard():
            self.client.update_collection_aliases(change_aliases_operations=ops)

    def _metadata(self, backing: str) -> dict[str, Any]:
        with self._guard():
            return dict(self.client.get_collection(backing).config.metadata or {})

    def _dimension(self, backing: str) -> int:
        with self._guard():
            vectors = self.client.get_collection(backing).config.params.vectors
        return int(vectors[DENSE].size) if isinstance(vectors, dict) and DENSE in vectors else 0

    def count(self, backing: str) -> int:
        with self._guard():
            return int(self.client.count(backing, exact=True).count)

    def _query(self, backing: str, using: str, vector: Any, limit: int) -> list[tuple[str, float, dict[str, Any]]]:
        from qdrant_client import models as m

        query = m.SparseVector(indices=vector[0], values=vector[1]) if using == SPARSE else vector
        with self._guard():
            pts = self.client.query_points(backing, query=query, using=using, limit=limit, with_payload=True).points
        return [(str(p.id), float(p.score), p.payload or {}) for p in pts]

    def _delete(self, backing: str) -> bool:
        with self._guard():
            self.client.delete_collection(backing)
        return True

    def existing_ids(self, backing: str, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), 256):
            with self._guard():
                pts = self.client.retrieve(backing, ids=list(ids[i : i + 256]), with_payload=False, with_vectors=False)
            found.update(str(p.id) for p in pts)
        return found

    def points(self, backing: str, batch: int = 256) -> Iterator[list[PointRecord]]:
        offset = None
        while True:
            with self._guard():
                pts, offset = self.client.scroll(backing, limit=batch, offset=offset, with_payload=True, with_vectors=True)
            records: list[PointRecord] = []
            for p in pts:
                vec = p.vector if isinstance(p.vector, dict) else {}
                sp = vec.get(SPARSE)
                records.append((str(p.id), list(vec.get(DENSE, [])),
                                (list(sp.indices), list(sp.values)) if sp is not None else None, p.payload or {}))
            if records:
                yield records
            if offset is None:
                return

    # --- writing ----------------------------------------------------------------------------
    def create_version(self, name: str, dimension: int, hybrid: bool) -> str:
        """Create an empty backing collection for a new build of ``name``."""
        from qdrant_client import models as m

        backing = self._new_backing(name)
        sparse_cfg = {SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)} if hybrid else None
        with self._guard():
            self.client.create_collection(
                backing,
                vectors_config={DENSE: m.VectorParams(size=dimension, distance=m.Distance.COSINE)},
                sparse_vectors_config=sparse_cfg,
            )
        return backing

    def upsert(
        self,
        backing: str,
        ids: Sequence[str],
        dense: Sequence[Sequence[float]],
        sparse: Sequence[tuple[list[int], list[float]]] | None,
        payloads: Sequence[dict[str, Any]],
    ) -> None:
        from qdrant_client import models as m

        points = []
        for i, pid in enumerate(ids):
            vector: dict[str, Any] = {DENSE: list(map(float, dense[i]))}
            if sparse is not None:
                vector[SPARSE] = m.SparseVector(indices=sparse[i][0], values=sparse[i][1])
            points.append(m.PointStruct(id=pid, vector=vector, payload=payloads[i]))
        with self._guard():
            self.client.upsert(backing, points=points, wait=True)

    def write_metadata(self, backing: str, metadata: dict[str, Any]) -> None:
        with self._guard():
            self.client.update_collection(backing, metadata=metadata)


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()
