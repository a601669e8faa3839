"""The update pipeline: walk → compare content hashes → chunk/tag → embed (reusing vectors) → store → commit.

Order of writes, so that a crash (kill -9) at any point is repaired by the next run:
1. new chunk ids are journalled (committed) before they are written to the vector store;
2. vectors are upserted (ids are deterministic, so a retry overwrites, never duplicates);
3. one catalog transaction swaps the file's chunks, tags and FTS rows and journals the old ids;
4. journalled ids without a catalog row are deleted from the vector store, then the journal is cleared.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexing.catalog import Catalog, FileRow
from indexing.chunker import Chunk, ChunkLimits, ParsedFile, Tag, chunk_file
from indexing.config import IndexConfig
from indexing.foreground import FOREGROUND, lower_thread_priority
from indexing.languages import language_for
from indexing.results import IndexStats
from indexing.secrets import MASK, redact_secrets
from indexing.walk import WalkEntry, is_denied, read_text_checked, walk_workspace

if TYPE_CHECKING:
    from indexing.embed import Embedder
    from indexing.store import VectorStore

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
# Orphaned vectors an update of a few files may leave for later (each store delete costs ~50 ms).
DEFERRED_DELETES = 256
# LSP language ids the security screen understands, by our language names.
_SCREEN_LANGUAGE = {"python": "python", "javascript": "javascript", "typescript": "typescript",
                    "tsx": "typescriptreact"}


def _index_policy() -> Any:
    """The screen's default policy minus its secrets scan: the indexer masks secrets itself, first."""
    try:
        from security.policy import Policy
    except Exception:  # noqa: BLE001
        return None
    return Policy(check_secrets=False)


_INDEX_POLICY = _index_policy()


def _screen() -> Callable[..., Any] | None:
    """security.screen.screen_text when the security package is importable (it is optional for indexing)."""
    try:
        from security.screen import screen_text
    except Exception:  # noqa: BLE001 - any import failure means: index without flags
        return None
    return screen_text


@dataclass
class _Plan:
    """A batch on its way to the store: what to upsert, what only moved, and its vectors (maybe pending)."""

    batch: list[_Prepared]
    new_ids: list[str] = field(default_factory=list)
    docs: list[str] = field(default_factory=list)
    metas: list[dict[str, Any]] = field(default_factory=list)
    moved_ids: list[str] = field(default_factory=list)
    moved_metas: list[dict[str, Any]] = field(default_factory=list)
    vectors: Callable[[], Any] | None = None


@dataclass
class _Prepared:
    entry: WalkEntry
    hash: str
    language: str
    parsed: ParsedFile
    chunk_ids: list[str]
    embed_inputs: list[str]
    text_hashes: list[str]
    flags: list[str]


def embed_input(path: str, chunk: Chunk) -> str:
    """What is embedded for a chunk: what it defines, then its text (truncated by tokens).

    The path is left out: it is searched lexically, and in the vector it took a third of a short input
    (docstring -> code search MRR 0.50 with it vs 0.61 without, 32 tokens; bench/bench_index.py).
    """
    head = f"{chunk.symbol} ({chunk.kind})" if chunk.symbol else chunk.kind
    return f"{head}\n{chunk.text}"


class Updater:
    def __init__(self, root: Path, config: IndexConfig, catalog: Catalog,
                 store: Callable[[], VectorStore], embedder: Callable[[], Embedder]) -> None:
        self.root = root
        self.config = config
        self.catalog = catalog
        self._store = store
        self._embedder = embedder
        self.limits = ChunkLimits(config.chunk_max_chars, config.chunk_merge_below_chars, config.window_lines,
                                  config.window_overlap)
        self._screen_fn: Callable[..., Any] | None = None
        self._screen_loaded = not config.use_security_screen
        self._force_deletes = True

    @property
    def screen(self) -> Callable[..., Any] | None:
        """The security screen, imported on first use (Bandit's import costs ~0.3 s that status never needs)."""
        if not self._screen_loaded:
            self._screen_fn = _screen()
            self._screen_loaded = True
        return self._screen_fn

    @screen.setter
    def screen(self, fn: Callable[..., Any] | None) -> None:
        self._screen_fn, self._screen_loaded = fn, True

    # ------------------------------------------------------------------ recovery
    def reconcile(self) -> int:
        """Delete vectors the journal says may be orphaned (after a crash or an interrupted run)."""
        orphans = self.catalog.journal_orphans()
        if orphans:
            self._store().delete(orphans)
            log.info("removed %d orphaned vectors left by an interrupted run", len(orphans))
        if orphans or self.catalog.counts()["journal"]:
            self.catalog.journal_clear()
        return len(orphans)

    # ------------------------------------------------------------------ main entry
    def run(self, paths: list[Path] | None, progress: Progress | None,
            cancel: threading.Event | None) -> IndexStats:
        t0 = time.perf_counter()
        stats = IndexStats()
        # A whole-workspace run deletes every orphaned vector; an update of a few files (a save, a
        # watched change) defers deletes until DEFERRED_DELETES accumulate. Retrieval never shows a
        # vector without a catalog row, so a deferred orphan is invisible; it only costs disk.
        self._force_deletes = paths is None
        self._flush_journal(force=self._force_deletes)
        known = self.catalog.files()
        skipped_before = self.catalog.skipped_stat()
        candidates, removed = self._candidates(paths, known)
        if paths is None:
            seen = {e.rel for e in candidates}
            gone = [p for p in skipped_before if p not in seen]
            if gone:
                self.catalog.forget_skipped(gone)
        stats.files_seen = len(candidates)
        if removed:
            self._remove(removed, stats)
        total = len(candidates)
        done = 0
        touched: list[FileRow] = []
        batch: list[_Prepared] = []
        batch_chunks = 0
        pending: deque[_Plan] = deque()
        workers = max(1, self.config.embed_workers)
        embed_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="protege-embed",
                                        initializer=lower_thread_priority) if len(candidates) > 1 else None
        try:
            for entry in candidates:
                if cancel is not None and cancel.is_set():
                    stats.cancelled = True
                    break
                old = known.get(entry.rel)
                if old is not None and old.size == entry.size and old.mtime_ns == entry.mtime_ns:
                    stats.files_unchanged += 1
                    done += 1
                    if progress:
                        progress(done, total, entry.rel)
                    continue
                skip = skipped_before.get(entry.rel)
                if skip is not None and skip[:2] == (entry.size, entry.mtime_ns):
                    stats.files_skipped += 1  # still bad, unchanged: not re-read
                    stats.skipped[entry.rel] = skip[2]
                    done += 1
                    if progress:
                        progress(done, total, entry.rel)
                    continue
                FOREGROUND.wait_idle()  # a completion in flight goes first
                prepared = self._prepare(entry, old, stats, touched)
                if prepared is None:
                    done += 1
                    if progress:
                        progress(done, total, entry.rel)
                    continue
                batch.append(prepared)
                batch_chunks += len(prepared.chunk_ids)
                if batch_chunks >= self.config.batch_chunks:
                    # Pipelined: batches embed on worker threads (the traced encoder runs without the GIL)
                    # while earlier ones are committed and the next files are read, chunked and screened.
                    # One more batch than workers is in flight, so a worker never waits for this thread.
                    pending.append(self._plan(batch, stats, embed_pool))
                    while len(pending) > workers:
                        done = self._finish(pending.popleft(), stats, done, total, progress)
                    batch, batch_chunks = [], 0
            while pending:  # already embedding: commit them even when cancelled (nothing is lost)
                done = self._finish(pending.popleft(), stats, done, total, progress)
            if cancel is not None and cancel.is_set():
                stats.cancelled = True
            if batch and not stats.cancelled:
                done = self._finish(self._plan(batch, stats, None), stats, done, total, progress)
        finally:
            if embed_pool is not None:
                embed_pool.shutdown(wait=True)
        if touched:
            self.catalog.touch(touched)
        stats.seconds = time.perf_counter() - t0
        return stats

    # ------------------------------------------------------------------ steps
    def _candidates(self, paths: list[Path] | None, known: dict[str, FileRow]) -> tuple[list[WalkEntry], list[str]]:
        extra = self.config.extra_ignore
        if paths is None:
            entries = list(walk_workspace(self.root, extra))
            seen = {e.rel for e in entries}
            return entries, sorted(p for p in known if p not in seen)
        entries, removed = [], []
        for p in paths:
            absolute = (self.root / p) if not Path(p).is_absolute() else Path(p)
            try:
                rel = absolute.resolve().relative_to(self.root).as_posix()
            except ValueError:
                log.warning("not indexing %s: it is outside the workspace %s", p, self.root)
                continue
            if not absolute.is_file() or is_denied(self.root, rel, extra):
                if rel in known:
                    removed.append(rel)
                continue
            st = absolute.stat()
            entries.append(WalkEntry(rel, absolute, st.st_size, st.st_mtime_ns))
        return entries, removed

    def _prepare(self, entry: WalkEntry, old: FileRow | None, stats: IndexStats,
                 touched: list[FileRow]) -> _Prepared | None:
        text, reason = read_text_checked(entry.path, entry.size, self.config.max_file_bytes,
                                         self.config.max_line_chars)
        if text is None:
            log.info("skipped %s: %s", entry.rel, reason)
            stats.files_skipped += 1
            stats.skipped[entry.rel] = reason
            with self.catalog.transaction() as db:
                if old is not None:
                    self._journal_removed(self.catalog.remove_file(db, entry.rel), stats)
                self.catalog.record_skip(db, entry.rel, reason, entry.size, entry.mtime_ns)
                self.catalog.bump_generation(db)
            self._flush_journal()
            return None
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if old is not None and old.hash == digest:
            touched.append(FileRow(entry.rel, digest, entry.size, entry.mtime_ns))
            stats.files_unchanged += 1
            return None
        language = language_for(entry.rel)
        clean, findings = redact_secrets(text)
        if findings:
            stats.secrets_redacted += len(findings)
            log.warning("masked %d secret(s) in %s before indexing (%s)", len(findings), entry.rel,
                        ", ".join(sorted({f.kind for f in findings})))
        try:
            parsed = chunk_file(clean, language, entry.rel, self.limits)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
            log.warning("chunking %s with %s failed (%s); falling back to line windows", entry.rel, language, exc)
            language = "text"
            parsed = chunk_file(clean, "text", entry.rel, self.limits)
        secret_lines = {f.line for f in findings}
        ids, inputs, hashes = [], [], []
        seen: dict[str, int] = {}
        for chunk in parsed.chunks:
            inp = embed_input(entry.rel, chunk)
            inputs.append(inp)
            th = hashlib.sha1(inp.encode("utf-8")).hexdigest()
            hashes.append(th)
            # Keyed by content, not position: an edit leaves the ids (and vectors) of untouched chunks alone.
            k = seen[th] = seen.get(th, -1) + 1
            ids.append(hashlib.sha1(f"{entry.rel}\0{th}\0{k}".encode()).hexdigest()[:24])
        rules = self._chunk_rules(clean, language, entry.rel, parsed.chunks, hashes, old is not None)
        flags = []
        for chunk, chunk_rules in zip(parsed.chunks, rules, strict=True):
            chunk_flags = list(chunk_rules)
            if MASK in chunk.text or any(chunk.start_line <= ln <= chunk.end_line for ln in secret_lines):
                chunk_flags.insert(0, "secret-redacted")
            flags.append(",".join(chunk_flags))
        return _Prepared(entry, digest, language, parsed, ids, inputs, hashes, flags)

    def _chunk_rules(self, text: str, language: str, rel: str, chunks: list[Chunk], hashes: list[str],
                     known_file: bool) -> list[list[str]]:
        """Security rule ids per chunk. When a known file changes, chunks whose text is unchanged keep
        the rules the catalog holds for that text and only new chunks are screened, each on its own:
        an edit costs one function's screen, not the whole file's."""
        out: list[list[str]] = [[] for _ in chunks]
        if self.screen is None or _SCREEN_LANGUAGE.get(language) is None:
            return out
        previous = self.catalog.flags_by_text_hash(hashes) if known_file else {}
        new = [n for n, h in enumerate(hashes) if h not in previous]
        for n, h in enumerate(hashes):
            if h in previous:
                out[n] = [f for f in previous[h].split(",") if f and f != "secret-redacted"]
        if not new:
            return out
        if len(new) * 2 <= len(chunks):
            screened = [self._screen_chunk(chunks[n], language, rel) for n in new]
            if all(r is not None for r in screened):
                for n, r in zip(new, screened, strict=True):
                    out[n] = r or []
                return out
        insecure = self._insecure_lines(text, language, rel)
        for n in new:
            c = chunks[n]
            out[n] = sorted({rule for line, rule in insecure if c.start_line <= line <= c.end_line})
        return out

    def _screen_chunk(self, chunk: Chunk, language: str, rel: str) -> list[str] | None:
        """Rule ids found in one chunk's text, or None when it cannot be screened alone (it does not parse)."""
        import textwrap

        assert self.screen is not None
        try:
            result = self.screen(textwrap.dedent(chunk.text), _SCREEN_LANGUAGE[language], _INDEX_POLICY)
        except Exception as exc:  # noqa: BLE001 - the screen is advisory here
            log.info("security screen failed on a chunk of %s: %s", rel, exc)
            return None
        if getattr(result, "verdict", "") == "unscreened":
            return None
        return sorted({f.test_id for f in getattr(result, "findings", []) if f.source != "secrets"})

    def _insecure_lines(self, text: str, language: str, rel: str) -> list[tuple[int, str]]:
        lang = _SCREEN_LANGUAGE.get(language)
        if self.screen is None or lang is None:
            return []
        try:
            result = self.screen(text, lang, _INDEX_POLICY)
        except Exception as exc:  # noqa: BLE001 - the screen is advisory here
            log.info("security screen failed on %s: %s", rel, exc)
            return []
        return [(f.line, f.test_id) for f in getattr(result, "findings", []) if f.source != "secrets"]

    def _vectors(self, inputs: list[str], hashes: list[str], stats: IndexStats,
                 pool: ThreadPoolExecutor | None) -> Callable[[], Any]:
        """Vectors for ``inputs``: stored ones reused by text hash, the rest encoded (on ``pool`` when
        given). Returns a function that waits for and returns the stacked matrix."""
        import numpy as np

        sources = self.catalog.embedding_sources(sorted(set(hashes)))
        reused = self._store().embeddings(sorted(set(sources.values()))) if sources else {}
        by_hash = {h: reused[cid] for h, cid in sources.items() if cid in reused}
        missing = sorted({i for i, h in enumerate(hashes) if h not in by_hash}, key=lambda i: i)
        # Identical texts inside the batch are embedded once.
        first_of: dict[str, int] = {}
        todo = [i for i in missing if first_of.setdefault(hashes[i], i) == i]
        stats.chunks_embedded += len(todo)
        stats.chunks_reused += len(hashes) - len(todo)

        def stack(fresh: Any) -> Any:
            for row, i in enumerate(todo):
                by_hash[hashes[i]] = fresh[row]
            return np.stack([by_hash[h] for h in hashes]) if hashes else np.zeros((0, 1), dtype=np.float32)

        if not todo:
            return lambda: stack([])
        texts = [inputs[i] for i in todo]
        embedder = self._embedder()  # loaded here: a load error surfaces on the calling thread
        step = max(1, self.config.embed_batch_size)

        def encode() -> Any:
            parts = []
            for lo in range(0, len(texts), step):
                FOREGROUND.wait_idle()  # between model batches: a completion in flight goes first
                parts.append(embedder.encode(texts[lo:lo + step]))
            return np.concatenate(parts)

        if pool is None:
            fresh = encode()
            return lambda: stack(fresh)
        future = pool.submit(encode)
        return lambda: stack(future.result())

    def _plan(self, batch: list[_Prepared], stats: IndexStats, pool: ThreadPoolExecutor | None) -> _Plan:
        """Split a batch into new chunks (to embed and upsert) and moved ones (metadata only); start embedding."""
        ids = [i for p in batch for i in p.chunk_ids]
        plan = _Plan(batch)
        if not ids:
            return plan
        kept = self.catalog.chunks_by_ids(ids)  # unchanged text: the store already holds these vectors
        new_inputs: list[str] = []
        new_hashes: list[str] = []
        for p in batch:
            for n, chunk in enumerate(p.parsed.chunks):
                cid = p.chunk_ids[n]
                meta = {"path": p.entry.rel, "language": chunk.language, "kind": chunk.kind,
                        "symbol": chunk.symbol, "start_line": chunk.start_line, "end_line": chunk.end_line,
                        "content_hash": p.text_hashes[n], "security": p.flags[n]}
                old = kept.get(cid)
                if old is None:
                    plan.new_ids.append(cid)
                    new_inputs.append(p.embed_inputs[n])
                    new_hashes.append(p.text_hashes[n])
                    plan.docs.append(chunk.text)
                    plan.metas.append(meta)
                elif (old.start_line, old.end_line, old.symbol, old.kind, old.flags) != (
                        chunk.start_line, chunk.end_line, chunk.symbol, chunk.kind, p.flags[n]):
                    plan.moved_ids.append(cid)  # same text, shifted lines (or new flags): metadata only
                    plan.moved_metas.append(meta)
        stats.chunks_reused += len(ids) - len(plan.new_ids)
        if plan.new_ids:
            plan.vectors = self._vectors(new_inputs, new_hashes, stats, pool)
        return plan

    def _finish(self, plan: _Plan, stats: IndexStats, done: int, total: int, progress: Progress | None) -> int:
        batch = plan.batch
        if plan.vectors is not None:
            vectors = plan.vectors()
            self.catalog.journal_add(plan.new_ids)  # step 1: before the store may hold them
            self._store().upsert(plan.new_ids, vectors, plan.docs, plan.metas)  # step 2
        if plan.moved_ids:
            self._store().update_metadata(plan.moved_ids, plan.moved_metas)
        with self.catalog.transaction() as db:  # step 3
            for p in batch:
                rows = list(zip(p.chunk_ids, p.text_hashes, p.parsed.chunks, p.flags, strict=True))
                old_ids = self.catalog.replace_file(db, FileRow(p.entry.rel, p.hash, p.entry.size,
                                                                p.entry.mtime_ns),
                                                    p.language, rows, _dedupe(p.parsed.tags))
                stats.chunks_removed += len(old_ids)
                stats.chunks_added += len(rows)
            self.catalog.bump_generation(db)
        stats.files_indexed += len(batch)
        self._flush_journal()  # step 4
        for p in batch:
            done += 1
            if progress:
                progress(done, total, p.entry.rel)
        return done

    def _remove(self, rels: list[str], stats: IndexStats) -> None:
        with self.catalog.transaction() as db:
            for rel in rels:
                self._journal_removed(self.catalog.remove_file(db, rel), stats)
            self.catalog.bump_generation(db)
        stats.files_removed += len(rels)
        self._flush_journal(force=True)

    def _journal_removed(self, old: list[str], stats: IndexStats) -> None:
        stats.chunks_removed += len(old)

    def _flush_journal(self, force: bool | None = None) -> None:
        """Step 4: delete journalled ids that have no catalog row (now, or later when few; see run)."""
        orphans = self.catalog.journal_orphans()
        if not (self._force_deletes if force is None else force) and len(orphans) < DEFERRED_DELETES:
            return
        if orphans:
            self._store().delete(orphans)
        self.catalog.journal_clear()

    def remove(self, paths: list[Path]) -> int:
        rels = []
        for p in paths:
            absolute = (self.root / p) if not Path(p).is_absolute() else Path(p)
            try:
                rels.append(absolute.resolve().relative_to(self.root).as_posix())
            except ValueError:
                log.warning("not removing %s: it is outside the workspace %s", p, self.root)
        known = self.catalog.files()
        rels = [r for r in rels if r in known]
        if rels:
            self._remove(rels, IndexStats())
        return len(rels)


def _dedupe(tags: list[Tag]) -> list[Tag]:
    seen: set[Tag] = set()
    out = []
    for t in tags:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out
