"""ChromaDB vector store: an embedded PersistentClient in the cache dir, or a `chroma run` server via HttpClient.

Vectors are always computed by us and passed in (the collection has no embedding function, so ChromaDB's
default, which downloads a model, is never used).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    pass


def _settings() -> Any:
    import chromadb

    return chromadb.Settings(anonymized_telemetry=False, allow_reset=False)


class VectorStore:
    def __init__(self, collection_name: str, persist_dir: Path | None = None, url: str | None = None) -> None:
        import chromadb

        self.url = url
        if url:
            parsed = urlparse(url if "://" in url else f"http://{url}")
            if not parsed.hostname:
                raise StoreError(f"chroma_url {url!r} is not of the form http://host:port; fix the setting")
            try:
                self.client = chromadb.HttpClient(
                    host=parsed.hostname, port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                    ssl=parsed.scheme == "https", settings=_settings())
                self.client.heartbeat()
            except Exception as exc:
                raise StoreError(f"cannot reach the ChromaDB server at {url} ({exc}); start it with "
                                 "`chroma run --path DIR --port PORT` or unset chroma_url") from exc
            self.mode = "http"
        else:
            assert persist_dir is not None
            persist_dir.mkdir(parents=True, exist_ok=True)
            self.client = chromadb.PersistentClient(path=str(persist_dir), settings=_settings())
            self.mode = "persistent"
        self.collection = self.client.get_or_create_collection(
            collection_name, embedding_function=None, metadata={"hnsw:space": "cosine"})
        self._max_batch = int(getattr(self.client, "get_max_batch_size", lambda: 1000)() or 1000)

    def upsert(self, ids: list[str], embeddings: np.ndarray, documents: list[str],
               metadatas: list[dict[str, Any]]) -> None:
        step = max(1, min(self._max_batch, 2000))
        # The embedded store is private to this index, whose catalog already holds each chunk's text: storing
        # it again costs ~40% of an upsert (Chroma indexes documents for full-text search). A shared server
        # (chroma_url) gets the text too, for whoever else reads the collection.
        keep_text = self.mode == "http"
        for s in range(0, len(ids), step):
            self.collection.upsert(ids=ids[s:s + step], embeddings=embeddings[s:s + step],
                                   documents=documents[s:s + step] if keep_text else None,
                                   metadatas=metadatas[s:s + step])  # type: ignore[arg-type]

    def update_metadata(self, ids: list[str], metadatas: list[dict[str, Any]]) -> None:
        """New metadata for stored vectors (their text, hence vector, is unchanged)."""
        step = max(1, min(self._max_batch, 2000))
        for s in range(0, len(ids), step):
            self.collection.update(ids=ids[s:s + step], metadatas=metadatas[s:s + step])  # type: ignore[arg-type]

    def delete(self, ids: list[str]) -> None:
        step = max(1, min(self._max_batch, 2000))
        for s in range(0, len(ids), step):
            self.collection.delete(ids=ids[s:s + step])

    def embeddings(self, ids: list[str]) -> dict[str, np.ndarray]:
        if not ids:
            return {}
        got = self.collection.get(ids=ids, include=["embeddings"])
        vecs = got.get("embeddings")
        if vecs is None:
            return {}
        return {i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], vecs, strict=True)}

    def query(self, vector: np.ndarray, n: int) -> list[tuple[str, float]]:
        total = self.count()
        if total == 0:
            return []
        res = self.collection.query(query_embeddings=[vector], n_results=min(n, total), include=["distances"])
        return list(zip(res["ids"][0], res["distances"][0], strict=True))  # type: ignore[index]

    def all_ids(self) -> set[str]:
        out: set[str] = set()
        offset = 0
        while True:
            got = self.collection.get(include=[], limit=5000, offset=offset)
            if not got["ids"]:
                return out
            out.update(got["ids"])
            offset += len(got["ids"])

    def documents(self) -> list[str]:
        got = self.collection.get(include=["documents", "metadatas"])
        docs = [d or "" for d in (got.get("documents") or [])]
        metas = [repr(m) for m in (got.get("metadatas") or [])]
        return docs + metas

    def count(self) -> int:
        return int(self.collection.count())

    def close(self) -> None:
        # The embedded client keeps a process-wide system per path; drop it so the dir can be reopened/removed.
        if self.mode == "persistent":
            try:
                self.client.clear_system_cache()
            except Exception:  # noqa: BLE001 - best effort on shutdown
                log.debug("chroma clear_system_cache failed", exc_info=True)
