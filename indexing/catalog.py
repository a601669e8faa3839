"""The index catalog (SQLite, WAL): files with content hashes, chunks, tags, and the vector-store journal.

The catalog is the source of truth; the vector store holds embeddings keyed by the catalog's chunk ids.
Ids that may exist in the vector store without a catalog row are journalled first, so a crash at any point
leaves something the next run can reconcile (see README.md).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from indexing.chunker import Chunk, Tag
from indexing.lexical import code_terms, fts_query

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
  path TEXT PRIMARY KEY, hash TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
  language TEXT NOT NULL, indexed_at REAL NOT NULL, nchunks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
  id TEXT PRIMARY KEY, path TEXT NOT NULL, ordinal INTEGER NOT NULL, start_line INTEGER NOT NULL,
  end_line INTEGER NOT NULL, symbol TEXT NOT NULL, kind TEXT NOT NULL, language TEXT NOT NULL,
  text TEXT NOT NULL, text_hash TEXT NOT NULL, flags TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS chunks_path ON chunks(path);
CREATE INDEX IF NOT EXISTS chunks_text_hash ON chunks(text_hash);
CREATE TABLE IF NOT EXISTS tags (
  path TEXT NOT NULL, symbol TEXT NOT NULL, role TEXT NOT NULL, kind TEXT NOT NULL, line INTEGER NOT NULL,
  signature TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tags_symbol ON tags(symbol, role);
CREATE INDEX IF NOT EXISTS tags_path ON tags(path);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(terms, tokenize='unicode61 tokenchars _');
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts_vocab USING fts5vocab(chunks_fts, 'row');
CREATE TABLE IF NOT EXISTS journal (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS skipped (
  path TEXT PRIMARY KEY, reason TEXT NOT NULL, size INTEGER NOT NULL DEFAULT -1,
  mtime_ns INTEGER NOT NULL DEFAULT -1);
"""


@dataclass(frozen=True)
class FileRow:
    path: str
    hash: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ChunkRow:
    id: str
    path: str
    start_line: int
    end_line: int
    symbol: str
    kind: str
    language: str
    text: str
    flags: str


CHUNK_COLUMNS = "id, path, start_line, end_line, symbol, kind, language, text, flags"
LEXICAL_MAX_TERMS = 12
LEXICAL_COMMON_SHARE = 0.05  # a term in more than this share of chunks is not worth its postings...
LEXICAL_COMMON_MIN_DOCS = 200  # ...unless the index is small


class Catalog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: the LSP server reads from worker threads; writes are serialised by the lock.
        self.db = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._count_cache: tuple[int, int] | None = None  # (generation, chunks)
        self._df_cache: dict[str, int] = {}  # term -> chunks containing it, for this generation

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str, db: sqlite3.Connection | None = None) -> None:
        (db or self.db).execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def generation(self) -> int:
        return int(self.get_meta("generation", "0") or 0)

    def bump_generation(self, db: sqlite3.Connection) -> None:
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('generation', "
                   "CAST(COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key='generation'), 0) + 1 AS TEXT))")
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_update', ?)", (str(time.time()),))

    def wipe(self) -> None:
        with self.transaction() as db:
            for table in ("files", "chunks", "chunks_fts", "tags", "journal", "skipped", "meta"):
                db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names

    # -- files
    def files(self) -> dict[str, FileRow]:
        return {r[0]: FileRow(*r) for r in self.db.execute("SELECT path, hash, size, mtime_ns FROM files")}

    def file(self, path: str) -> FileRow | None:
        r = self.db.execute("SELECT path, hash, size, mtime_ns FROM files WHERE path=?", (path,)).fetchone()
        return FileRow(*r) if r else None

    def touch(self, rows: Iterable[FileRow]) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE files SET size=?, mtime_ns=? WHERE path=?",
                           [(r.size, r.mtime_ns, r.path) for r in rows])

    def chunk_ids(self, path: str, db: sqlite3.Connection | None = None) -> list[str]:
        return [r[0] for r in (db or self.db).execute("SELECT id FROM chunks WHERE path=?", (path,))]

    def replace_file(self, db: sqlite3.Connection, row: FileRow, language: str,
                     chunks: list[tuple[str, str, Chunk, str]], tags: list[Tag]) -> list[str]:
        """Swap a file's chunks and tags for new ones; returns the old chunk ids (journalled for deletion)."""
        old = self.remove_file(db, row.path)
        db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (row.path, row.hash, row.size, row.mtime_ns, language, time.time(), len(chunks)))
        db.executemany(
            "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(cid, row.path, n, c.start_line, c.end_line, c.symbol, c.kind, c.language, c.text, th, flags)
             for n, (cid, th, c, flags) in enumerate(chunks)])
        # The FTS row shares the chunk's rowid, so deletes by path stay index lookups.
        db.executemany(
            "INSERT INTO chunks_fts(rowid, terms) SELECT rowid, ? FROM chunks WHERE id=?",
            [(code_terms(f"{row.path} {c.symbol}\n{c.text}"), cid) for cid, _, c, _ in chunks])
        db.executemany("INSERT INTO tags VALUES (?, ?, ?, ?, ?, ?)",
                       [(row.path, t.symbol, t.role, t.kind, t.line, t.signature) for t in tags])
        db.execute("DELETE FROM skipped WHERE path=?", (row.path,))
        new_ids = {cid for cid, _, _, _ in chunks}
        return [i for i in old if i not in new_ids]

    def remove_file(self, db: sqlite3.Connection, path: str) -> list[str]:
        old = self.chunk_ids(path, db)
        db.executemany("INSERT OR IGNORE INTO journal(id) VALUES (?)", [(i,) for i in old])
        db.execute("DELETE FROM chunks_fts WHERE rowid IN (SELECT rowid FROM chunks WHERE path=?)", (path,))
        db.execute("DELETE FROM chunks WHERE path=?", (path,))
        db.execute("DELETE FROM tags WHERE path=?", (path,))
        db.execute("DELETE FROM files WHERE path=?", (path,))
        return old

    def record_skip(self, db: sqlite3.Connection, path: str, reason: str, size: int = -1, mtime_ns: int = -1) -> None:
        db.execute("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)", (path, reason, size, mtime_ns))

    def skipped_stat(self) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, reason) of files skipped last time (not re-read while unchanged)."""
        return {p: (size, mtime, reason) for p, reason, size, mtime in
                self.db.execute("SELECT path, reason, size, mtime_ns FROM skipped")}

    def forget_skipped(self, paths: list[str]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM skipped WHERE path=?", [(p,) for p in paths])

    # -- journal
    def journal_add(self, ids: Iterable[str]) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO journal(id) VALUES (?)", [(i,) for i in ids])

    def journal_orphans(self) -> list[str]:
        """Journalled ids with no chunk row: to delete from the vector store."""
        return [r[0] for r in self.db.execute(
            "SELECT j.id FROM journal j LEFT JOIN chunks c ON c.id = j.id WHERE c.id IS NULL")]

    def journal_clear(self) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM journal")

    # -- reads
    def _first_by_text_hash(self, column: str, text_hashes: list[str]) -> dict[str, str]:
        """text_hash -> ``column`` of one chunk with that text (``column`` is a fixed name, never input)."""
        out: dict[str, str] = {}
        for start in range(0, len(text_hashes), 500):
            part = text_hashes[start:start + 500]
            marks = ",".join("?" * len(part))
            for th, value in self.db.execute(
                    f"SELECT text_hash, {column} FROM chunks WHERE text_hash IN ({marks})", part):  # noqa: S608
                out.setdefault(th, value)
        return out

    def embedding_sources(self, text_hashes: list[str]) -> dict[str, str]:
        """text_hash -> an existing chunk id with that text (its vector can be reused)."""
        return self._first_by_text_hash("id", text_hashes)

    def flags_by_text_hash(self, text_hashes: list[str]) -> dict[str, str]:
        """text_hash -> the security flags stored with a chunk of that text."""
        return self._first_by_text_hash("flags", text_hashes)

    def chunks_by_ids(self, ids: list[str]) -> dict[str, ChunkRow]:
        out: dict[str, ChunkRow] = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            for r in self.db.execute(f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE id IN ({marks})", part):  # noqa: S608
                out[r[0]] = ChunkRow(*r)
        return out

    def all_chunks(self) -> list[ChunkRow]:
        return [ChunkRow(*r) for r in self.db.execute(f"SELECT {CHUNK_COLUMNS} FROM chunks ORDER BY id")]  # noqa: S608

    def selective_terms(self, terms: list[str]) -> list[str]:
        """The query terms worth matching: the rarest LEXICAL_MAX_TERMS, without those in most chunks.

        An OR query costs the postings of every term: `value` or `name` occur in thousands of chunks of a
        large repository, add little to BM25 (low IDF) and made a completion-context query take ~130 ms
        over the standard library (36k chunks; ~40 ms with this). Terms missing from the index are dropped.
        """
        if len(terms) <= 1:
            return terms
        total = self._chunk_count()  # also drops the cached frequencies when the index changed
        cache = self._df_cache  # replaced, never cleared: a reader on another thread keeps a whole dict
        missing = [t for t in terms if t not in cache]
        if missing:
            marks = ",".join("?" * len(missing))
            found = dict(self.db.execute(
                f"SELECT term, doc FROM chunks_fts_vocab WHERE term IN ({marks})", missing).fetchall())  # noqa: S608
            if len(cache) > 50_000:
                cache = self._df_cache = {}
            for t in missing:
                cache[t] = int(found.get(t, 0))
        df = {t: cache[t] for t in terms if cache.get(t, 0) > 0}
        limit = max(LEXICAL_COMMON_MIN_DOCS, int(total * LEXICAL_COMMON_SHARE))
        present = [t for t in terms if t in df]
        kept = [t for t in present if df[t] <= limit] or sorted(present, key=lambda t: df[t])[:1]
        return sorted(kept, key=lambda t: df[t])[:LEXICAL_MAX_TERMS]

    def _chunk_count(self) -> int:
        gen = self.generation()
        if self._count_cache is None or self._count_cache[0] != gen:
            self._count_cache = (gen, int(self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]))
            self._df_cache = {}
        return self._count_cache[1]

    def lexical(self, terms: list[str], k: int, selective: bool = False) -> list[tuple[str, float]]:
        """BM25 over code terms: (chunk id, score), best first. ``selective`` matches only the terms
        ``selective_terms`` keeps: bounded latency (the completion fast path) for a little recall."""
        if selective:
            terms = self.selective_terms(terms)
        if not terms:
            return []
        rows = self.db.execute(
            "SELECT c.id, bm25(chunks_fts) AS s FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid "
            "WHERE chunks_fts MATCH ? ORDER BY s LIMIT ?", (fts_query(terms), k))
        return [(cid, -score) for cid, score in rows]

    def chunk_at(self, path: str, line: int) -> ChunkRow | None:
        """The narrowest chunk of ``path`` covering ``line``."""
        r = self.db.execute(
            f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE path=? AND start_line<=? AND end_line>=? "  # noqa: S608
            "ORDER BY end_line - start_line, start_line LIMIT 1", (path, line, line)).fetchone()
        return ChunkRow(*r) if r else None

    def tags_for(self, symbol: str, role: str, limit: int = 200) -> list[tuple[str, int, str, str]]:
        return list(self.db.execute(
            "SELECT path, line, kind, signature FROM tags WHERE symbol=? AND role=? ORDER BY path, line LIMIT ?",
            (symbol, role, limit)))

    def all_tags(self) -> list[tuple[str, str, str, str, int, str]]:
        return list(self.db.execute(
            "SELECT path, symbol, role, kind, line, signature FROM tags ORDER BY path, line, role, symbol"))

    def counts(self) -> dict[str, int]:
        return {t: int(self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])  # noqa: S608
                for t in ("files", "chunks", "tags", "skipped", "journal")}

    def skipped(self) -> dict[str, str]:
        return {p: r for p, r in self.db.execute("SELECT path, reason FROM skipped")}
