"""Retrieval: hybrid search (FTS5 BM25 + vectors + symbol definitions, fused by reciprocal rank) and the
completion-context fast path (definitions of identifiers near the cursor, then similar code)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from indexing.catalog import Catalog, ChunkRow
from indexing.lexical import identifiers, query_terms, symbol_candidates
from indexing.results import ContextSnippet, SearchHit, SymbolLocation

if TYPE_CHECKING:
    from indexing.embed import Embedder
    from indexing.store import VectorStore

log = logging.getLogger(__name__)

AMBIGUOUS = 5  # a name with more definitions than this is not looked up for completion context
RRF_K = 60  # the usual constant: damps the head of each list so one retriever cannot dominate
CANDIDATES = 50
# The completion fast path adds vector neighbours only while a query embedding has recently taken less
# than this; on a saturated CPU (encode ~0.3-4 s measured at load 12-16 on 2 cores) it stays
# definitions + BM25, which are SQLite lookups of well under a millisecond each.
CONTEXT_VECTOR_BUDGET_MS = 25.0
# The completion fast path embeds the last tokens before the cursor: shorter than a search query, so it
# fits the budget, and the end of the window (what is being written), not its start.
CONTEXT_QUERY_TOKENS = 32  # MiniLM int8, one thread: ~10 ms (64 tokens: ~20 ms, 128: ~41 ms)
CONTEXT_QUERY_LINES = 12
_PROBE_TEXT = "def probe(value):\n    return value * 2  # latency\n" * 6  # a context-sized query


def rrf(rankings: list[list[str]], weights: list[float] | None = None) -> list[tuple[str, float]]:
    """Reciprocal rank fusion; ties broken by id so the order is deterministic."""
    scores: dict[str, float] = {}
    for n, ranking in enumerate(rankings):
        w = weights[n] if weights else 1.0
        for rank, cid in enumerate(ranking):
            scores[cid] = scores.get(cid, 0.0) + w / (RRF_K + rank + 1)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _context_pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="protege-context")
        return _POOL


class Retriever:
    def __init__(self, catalog: Catalog, store: Callable[[], VectorStore], embedder: Callable[[], Embedder],
                 embedder_ready: Callable[[], bool]) -> None:
        self.catalog = catalog
        self._store = store
        self._embedder = embedder
        self._embedder_ready = embedder_ready
        self.encode_ms: float | None = None  # moving average of query-embedding latency
        self._skips = 0
        self._probing = threading.Event()

    # ------------------------------------------------------------------ search
    def _encode_context(self, text: str) -> Any:
        """A completion-context query vector, timed: the moving average decides whether vectors are affordable."""
        start = time.perf_counter()
        vec = self._embedder().encode_query(text, max_tokens=CONTEXT_QUERY_TOKENS, tail=True)
        ms = (time.perf_counter() - start) * 1000
        self.encode_ms = ms if self.encode_ms is None else 0.8 * self.encode_ms + 0.2 * ms
        return vec

    def vector_ids(self, text: str, n: int) -> list[str]:
        """Nearest chunks to a search query (cut to ``query_max_tokens``)."""
        return [cid for cid, _ in self._store().query(self._embedder().encode_query(text), n)]

    def context_vectors_affordable(self) -> bool:
        if not self._embedder_ready():
            return False
        if self.encode_ms is None or self.encode_ms < CONTEXT_VECTOR_BUDGET_MS:
            return True
        # Over budget: re-measure now and then off the request path, so vectors return when the CPU frees up.
        self._skips += 1
        if self._skips % 20 == 0 and not self._probing.is_set():
            self._probing.set()
            threading.Thread(target=self._probe, name="protege-embed-probe", daemon=True).start()
        return False

    def measure_context_encoding(self) -> None:
        """Time a context-sized query once the model is warm (a first call also pays one-time set-up)."""
        self._embedder().encode_query(_PROBE_TEXT, max_tokens=CONTEXT_QUERY_TOKENS, tail=True)
        self.encode_ms = None
        self._encode_context(_PROBE_TEXT)

    def _probe(self) -> None:
        try:
            self._encode_context(_PROBE_TEXT)
        except Exception:  # noqa: BLE001 - a probe failure only keeps the fast path lexical
            log.debug("embedding latency probe failed", exc_info=True)
        finally:
            self._probing.clear()

    def symbol_ids(self, names: list[str], limit_per_name: int = 3) -> list[str]:
        """Chunks holding the definitions of the given identifiers, in the order of the names."""
        out: list[str] = []
        for name in names:
            for path, line, _, _ in self.catalog.tags_for(name, "def", limit_per_name):
                row = self.catalog.chunk_at(path, line)
                if row is not None and row.id not in out:
                    out.append(row.id)
        return out

    def search(self, query: str, k: int = 10, use_vectors: bool = True) -> list[SearchHit]:
        if not query.strip():
            return []
        lexical = [cid for cid, _ in self.catalog.lexical(query_terms(query), CANDIDATES)]
        rankings = [lexical]
        weights = [1.0]
        if use_vectors:
            rankings.append(self.vector_ids(query, CANDIDATES))
            weights.append(1.0)
        symbols = self.symbol_ids(symbol_candidates(query))
        if symbols:
            rankings.append(symbols)
            weights.append(1.0)
        fused = rrf(rankings, weights)
        rows = self.catalog.chunks_by_ids([cid for cid, _ in fused[:k * 3]])
        hits = []
        for cid, score in fused:
            row = rows.get(cid)
            if row is None:  # a vector without a catalog row (being written, or orphaned): never shown
                continue
            hits.append(_hit(row, score))
            if len(hits) >= k:
                break
        return hits

    # ------------------------------------------------------------------ completion context
    def completion_context(self, path: str, text: str, line: int, character: int,
                           max_chars: int = 2000) -> list[ContextSnippet]:
        lines = text.split("\n")
        line = max(0, min(line, len(lines) - 1)) if lines else 0
        near = "\n".join(lines[max(0, line - 15):line + 3])
        window = "\n".join(lines[max(0, line - 40):line + 1])
        snippets: list[ContextSnippet] = []
        used: set[str] = set()
        budget = max_chars
        # The vector neighbours are computed on a worker thread while the definitions and BM25 are looked
        # up here (torch and SQLite both release the GIL): the fast path costs the slower of the two, not
        # their sum.
        vectors: Future[list[str]] | None = None
        character = max(0, min(character, len(lines[line]) if lines else 0))
        if self.context_vectors_affordable():
            recent = "\n".join(lines[max(0, line - CONTEXT_QUERY_LINES):line] + [lines[line][:character]])
            vectors = _context_pool().submit(
                lambda: [cid for cid, _ in self._store().query(self._encode_context(recent), 20)])

        def take(row: ChunkRow, snippet_text: str, start: int, score: float, reason: str) -> None:
            nonlocal budget
            if row.id in used or budget <= 0:
                return
            if row.path == path and row.start_line <= line + 3 and row.end_line >= line - 40:
                return  # the editor already sends the text around the cursor
            clipped = snippet_text[:budget]
            used.add(row.id)
            budget -= len(clipped)
            snippets.append(ContextSnippet(row.path, start, clipped, round(score, 6), reason))

        # 1. definitions of identifiers used near the cursor, nearest use first
        names = _by_distance(lines, line, identifiers(near))
        for rank, name in enumerate(names[:16]):
            defs = self.catalog.tags_for(name, "def", AMBIGUOUS + 1)
            if len(defs) > AMBIGUOUS:
                continue  # `get`, `append`, `run`: defined everywhere, so the name alone says nothing
            # Nearest in the tree first: the same file, then the same package, ...
            defs.sort(key=lambda d: (-_shared_prefix(d[0], path), d[0], d[1]))
            for def_path, def_line, _, _ in defs[:2]:
                if def_path == path and abs(def_line - line) <= 40:
                    continue
                row = self.catalog.chunk_at(def_path, def_line)
                if row is None:
                    continue
                offset = max(0, def_line - row.start_line)
                body = row.text.split("\n")
                excerpt = "\n".join(body[max(0, offset - 1):offset + 14])
                take(row, excerpt, row.start_line + max(0, offset - 1), 1.0 / (1 + rank), f"definition of {name}")
        # 2. chunks similar to the code before the cursor (lexical always; vectors when the model is loaded)
        rankings = [[cid for cid, _ in self.catalog.lexical(query_terms(window, 24), 20, selective=True)]]
        if vectors is not None:
            rankings.append(vectors.result())
        fused = rrf(rankings)
        rows = self.catalog.chunks_by_ids([cid for cid, _ in fused[:20]])
        for cid, score in fused[:20]:
            row = rows.get(cid)
            if row is not None:
                take(row, row.text, row.start_line, score, "similar code")
            if budget <= 0:
                break
        return snippets

    # ------------------------------------------------------------------ symbols
    def definitions(self, symbol: str) -> list[SymbolLocation]:
        return [SymbolLocation(p, ln, kind, symbol, sig) for p, ln, kind, sig in self.catalog.tags_for(symbol, "def")]

    def references(self, symbol: str) -> list[SymbolLocation]:
        return [SymbolLocation(p, ln, kind, symbol, sig) for p, ln, kind, sig in self.catalog.tags_for(symbol, "ref")]


def _hit(row: ChunkRow, score: float) -> SearchHit:
    return SearchHit(row.path, row.start_line, row.end_line, row.symbol, row.kind, row.language, row.text,
                     round(score, 6))


def _shared_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("/"), b.split("/"), strict=False):
        if x != y:
            break
        n += 1
    return n


def _by_distance(lines: list[str], line: int, names: list[str]) -> list[str]:
    """Order identifiers by how close to the cursor line they last appear (then alphabetically)."""
    dist: dict[str, int] = {}
    for offset in range(0, 16):
        for row in (line - offset, line + offset):
            if 0 <= row < len(lines):
                for ident in identifiers(lines[row]):
                    dist.setdefault(ident, offset)
    return sorted(names, key=lambda n: (dist.get(n, 99), n))
