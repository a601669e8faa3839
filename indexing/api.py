"""RepoIndex: the public face of the repository index (open, update, search, context, repo map, symbols)."""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexing.catalog import Catalog
from indexing.config import DEFAULT_EMBED_MAX_TOKENS, INDEX_FORMAT_VERSION, IndexConfig
from indexing.embed import model_id
from indexing.indexer import Updater
from indexing.lock import IndexLockedError, WriterLock
from indexing.results import ContextSnippet, IndexStats, SearchHit, SymbolLocation
from indexing.retrieval import Retriever

log = logging.getLogger(__name__)

__all__ = ["RepoIndex", "IndexLockedError"]

if TYPE_CHECKING:  # loaded on first use: opening an index for its status needs neither
    from indexing.embed import Embedder
    from indexing.store import VectorStore

_EMBEDDERS: dict[tuple[Any, ...], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def _stored_embed_tokens(catalog: Catalog) -> int | None:
    stored = catalog.get_meta("embedding_input") or ""
    head = stored.split(" tokens", 1)[0]
    return int(head) if head.isdigit() else None


class RepoIndex:
    """One workspace's index. Reads are safe from many threads; writes take the single-writer lock."""

    def __init__(self, root: Path, config: IndexConfig) -> None:
        self.root = root
        self.cache_dir = config.resolved_cache_dir(root)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.cache_dir / "catalog.sqlite3")
        if config.embed_max_tokens is None:
            # Not chosen: keep what the existing index was built with (a `protege search` must not rebuild an
            # index the editor built with other settings), else the default.
            config = replace(config, embed_max_tokens=_stored_embed_tokens(self.catalog) or DEFAULT_EMBED_MAX_TOKENS)
        self.config = config
        self.model_id = model_id(config.embedding_model)
        ws = hashlib.sha256(str(root).encode()).hexdigest()[:12]
        self.collection_name = f"{config.collection_prefix}-{ws}-v{INDEX_FORMAT_VERSION}-{self.model_id}"
        self._store: VectorStore | None = None
        self._embedder: Embedder | None = None
        self._init_lock = threading.Lock()
        self.lock = WriterLock(self.cache_dir / "writer.lock")
        # The embedded ChromaDB store is not safe to open from two processes at once (two editor windows on
        # one workspace corrupted it, and its Rust bindings failed to start). One process owns it: the
        # first to need it, until it closes. Another process reads the catalog (SQLite: BM25, definitions)
        # and, while it does not own the store, searches without vectors and does not write; it takes
        # ownership as soon as the owner has gone. A ChromaDB server (chroma_url) needs no owner.
        self.owner = WriterLock(self.cache_dir / "store-owner.lock")
        self._check_version()
        self._updater = Updater(root, config, self.catalog, self._get_store, self._get_embedder)
        self._retriever = Retriever(self.catalog, self._get_store, self._get_embedder,
                                    lambda: (self._embedder is not None and self._embedder._model is not None
                                             and self.owns_store()))
        self._map_cache: dict[tuple[int, int, tuple[str, ...]], str] = {}

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, workspace: str | Path, config: IndexConfig | None = None) -> RepoIndex:
        root = Path(workspace).expanduser().resolve()
        if not root.is_dir():
            raise NotADirectoryError(f"workspace {workspace} is not a directory; pass the repository's root folder")
        return cls(root, config or IndexConfig())

    def close(self) -> None:
        self.lock.release()
        if self._store is not None:
            self._store.close()
            self._store = None
        self.owner.release()
        self.catalog.close()

    def owns_store(self) -> bool:
        """Whether this process may use the vector store (taking ownership if nobody holds it)."""
        return bool(self.config.chroma_url) or self.owner.held or self.owner.try_acquire()

    def _require_owner(self) -> None:
        if not self.owns_store():
            raise IndexLockedError(
                f"another Protege process (pid {self.owner.holder()}) has the index at {self.cache_dir} open "
                "for writing; it keeps the index up to date for this workspace (searches here use the "
                "index without vectors until it closes)")

    def __enter__(self) -> RepoIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_version(self) -> None:
        """A cache written by another format or embedding model is rebuilt, not mixed."""
        c = self.config
        want = {"format_version": str(INDEX_FORMAT_VERSION), "embedding_model": self.model_id,
                "embedding_input": f"{c.embed_max_tokens} tokens, {'int8' if c.embed_quantize else 'fp32'}",
                "collection": self.collection_name, "workspace": str(self.root)}
        have = {k: self.catalog.get_meta(k) for k in want}
        if have == want:
            return
        if any(v is not None for v in have.values()):
            log.warning("index cache at %s was written by another version or model (%s); rebuilding it",
                        self.cache_dir, have)
            self._require_owner()  # never wipe a store that another process has open
            with self.lock:
                self.catalog.wipe()
                old = have.get("collection")
                if old and old != self.collection_name and not self.config.chroma_url:
                    shutil.rmtree(self.cache_dir / "chroma", ignore_errors=True)
        with self.catalog.transaction() as db:
            for k, v in want.items():
                self.catalog.set_meta(k, v, db)

    def _get_store(self) -> VectorStore:
        with self._init_lock:
            if self._store is None:
                self._require_owner()
                from indexing.store import VectorStore

                self._store = VectorStore(self.collection_name, self.cache_dir / "chroma", self.config.chroma_url)
            return self._store

    def _get_embedder(self) -> Embedder:
        with self._init_lock:
            if self._embedder is None:
                c = self.config
                key = (c.embedding_model, c.embed_max_tokens or DEFAULT_EMBED_MAX_TOKENS, c.embed_batch_size,
                       c.embed_quantize, c.embed_threads, c.query_max_tokens)
                with _EMBEDDERS_LOCK:  # one model per process, shared by every open workspace
                    if key not in _EMBEDDERS:
                        from indexing.embed import Embedder

                        _EMBEDDERS[key] = Embedder(*key)
                    self._embedder = _EMBEDDERS[key]
        return self._embedder

    def warm_up(self) -> None:
        """Load the embedding model and open the store now (the completion fast path uses vectors only when warm)."""
        self._get_embedder().encode(["warm up"])
        if self.owns_store():
            self._get_store()
        self._retriever.measure_context_encoding()

    # ------------------------------------------------------------------ writes
    def update(self, paths: list[Path] | None = None, progress: Callable[[int, int, str], None] | None = None,
               cancel: threading.Event | None = None) -> IndexStats:
        """Index the workspace (``paths=None``) or the given files, incrementally by content hash."""
        self._require_owner()
        self.lock.acquire(self.config.lock_timeout_s)
        try:
            stats = self._updater.run(paths, progress, cancel)
        finally:
            self.lock.release()
        self._map_cache.clear()
        log.info("index update: %d indexed, %d unchanged, %d removed, %d skipped, %d chunks embedded, "
                 "%d reused in %.2fs", stats.files_indexed, stats.files_unchanged, stats.files_removed,
                 stats.files_skipped, stats.chunks_embedded, stats.chunks_reused, stats.seconds)
        return stats

    def remove(self, paths: list[Path]) -> None:
        self._require_owner()
        self.lock.acquire(self.config.lock_timeout_s)
        try:
            self._updater.reconcile()
            self._updater.remove(paths)
        finally:
            self.lock.release()

    # ------------------------------------------------------------------ reads
    def search(self, query: str, k: int = 10, vectors: bool = True) -> list[SearchHit]:
        """Hybrid search: BM25 over code terms, vectors, and symbol definitions, fused by reciprocal rank.
        ``vectors=False`` skips the vector half (no embedding model is loaded)."""
        has_chunks = self.catalog.db.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() is not None
        return self._retriever.search(query, k, use_vectors=has_chunks and vectors and self.owns_store())

    def completion_context(self, path: str, text: str, line: int, character: int,
                           max_chars: int = 2000) -> list[ContextSnippet]:
        """Fast path for completions: definitions of identifiers near the cursor, then similar chunks."""
        return self._retriever.completion_context(path, text, line, character, max_chars)

    def repo_map(self, token_budget: int = 1024, focus: list[str] | None = None) -> str:
        key = (self.catalog.generation(), token_budget, tuple(focus or ()))
        if key not in self._map_cache:
            from indexing.repomap import build_repo_map

            self._map_cache[key] = build_repo_map(self.catalog.all_tags(), token_budget, focus)
        return self._map_cache[key]

    def definitions(self, symbol: str) -> list[SymbolLocation]:
        return self._retriever.definitions(symbol)

    def references(self, symbol: str) -> list[SymbolLocation]:
        return self._retriever.references(symbol)

    def status(self) -> dict[str, Any]:
        counts = self.catalog.counts()
        last = self.catalog.get_meta("last_update")
        return {
            "workspace": str(self.root),
            "files": counts["files"],
            "chunks": counts["chunks"],
            "tags": counts["tags"],
            "skipped": counts["skipped"],
            "last_update": float(last) if last else None,
            "last_update_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(last))) if last else None,
            "cache_dir": str(self.cache_dir),
            "store_mode": "http" if self.config.chroma_url else "persistent",
            "chroma_url": self.config.chroma_url,
            "collection": self.collection_name,
            "format_version": INDEX_FORMAT_VERSION,
            "writer_active": self.lock.held,
            # False while another process (another editor window) owns the embedded vector store.
            "owns_store": bool(self.config.chroma_url) or self.owner.held,
        }

    def skipped(self) -> dict[str, str]:
        return self.catalog.skipped()
