"""Repository memory: an ∞-gram (suffix array) over the token ids of the workspace's files.

A small model cannot memorise a repository; an index of its tokens can. For any context this
answers, in well under a millisecond for ~1M tokens: the longest suffix of the context that occurs in
the workspace, how often, and which tokens followed it. The server mixes that distribution into
decoding and the distiller uses it as a teacher (``distill_code.memory_mix``).

Layout: the files' tokens are concatenated forward, each file between separators, and the suffix
array is built (``pydivsufsort``, ~0.1 s per 1M tokens) over the *reversed* stream. A suffix of the
context read backwards is then a prefix of reversed suffixes, so extending the match by one token
only narrows the current suffix-array range (two binary searches), and the longest match falls out
of one pass. Design notes (rebuild policy, what happens on corruption) are in ``indexing/README.md``.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indexing.memory_status import saved_status  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

SEP = 2**31 - 1  # between files: compares above every token id, never matches one
MAX_CONTEXT = 48  # tokens of context a query looks at (longer matches are counted as this long)
MAX_SAMPLE = 2048  # occurrences read for the next-token distribution of a dense match
FORMAT = 1
BUFFER_BLOCK_LINES = 32  # the open buffer is tokenized in blocks of this many lines, cached by content
BUFFER_BLOCK_CACHE = 256

Encoder = Callable[[list[str]], list[list[int]]]


@dataclass
class Match:
    """The ∞-gram answer for one context."""

    length: int = 0  # tokens of the longest context suffix that occurs with a known next token
    count: int = 0  # such occurrences (sampled counts are scaled to this)
    next_counts: dict[int, int] = field(default_factory=dict)  # next token -> occurrences (maybe sampled)
    where: list[tuple[Any, int]] = field(default_factory=list)  # (shard, forward position of the next token)

    @property
    def sparse(self) -> bool:
        """Every occurrence is followed by the same token (the paper's "sparse" estimate)."""
        return len(self.next_counts) == 1

    def distribution(self) -> dict[int, float]:
        total = sum(self.next_counts.values())
        return {t: c / total for t, c in self.next_counts.items()} if total else {}

    def best(self) -> int | None:
        return max(self.next_counts.items(), key=lambda kv: kv[1])[0] if self.next_counts else None


@dataclass
class FileSpan:
    path: str
    digest: str  # sha256 of the (secret-masked) text the tokens came from
    start: int  # forward position of the file's first token
    length: int


def suffix_array(tokens: np.ndarray) -> np.ndarray:
    """The suffix array of an int32 token stream, ordered as ``Shard.ranges`` compares (a shorter suffix
    first, SEP above every id). Streams whose ids fit in 16 bits (every tokenizer this project ships) are
    sorted as 2-byte symbols, SEP mapped to 0xFFFF: about twice as fast as 4-byte symbols, same order."""
    import pydivsufsort

    if tokens.shape[0] == 0:
        return np.zeros(0, dtype=np.int32)
    ids = tokens[tokens != SEP]
    if ids.shape[0] == 0 or (int(ids.min()) >= 0 and int(ids.max()) < 0xFFFF):
        small = np.where(tokens == SEP, 0xFFFF, tokens).astype(np.uint16)
        return pydivsufsort.divsufsort(small).astype(np.int32, copy=False)
    return pydivsufsort.divsufsort(tokens).astype(np.int32, copy=False)


class Shard:
    """One suffix array over a token stream of files between separators."""

    def __init__(self, tokens: np.ndarray, files: list[FileSpan], sa: np.ndarray | None = None) -> None:
        self.tokens = np.ascontiguousarray(tokens, dtype=np.int32)
        self.files = files
        self.n = int(self.tokens.shape[0])
        self.rev = np.ascontiguousarray(self.tokens[::-1])
        self.sa = (np.ascontiguousarray(sa, dtype=np.int32) if sa is not None
                   else suffix_array(self.rev))
        if self.sa.shape[0] != self.n:
            raise ValueError(f"suffix array has {self.sa.shape[0]} entries for {self.n} tokens")
        # memoryviews index to Python ints several times faster than numpy scalars (the binary searches).
        self._rev_mv = memoryview(self.rev.data).cast("B").cast("i")
        self._sa_mv = memoryview(self.sa.data).cast("B").cast("i")
        self._starts = np.array([f.start for f in files], dtype=np.int64)
        self._by_path = {f.path: f for f in files}

    def span_of(self, path: str) -> FileSpan | None:
        return self._by_path.get(path)

    @classmethod
    def from_token_lists(cls, items: Iterable[tuple[str, str, Sequence[int] | np.ndarray]]) -> Shard:
        """Build from (path, digest, token ids) triples."""
        parts: list[np.ndarray] = [np.array([SEP], dtype=np.int32)]
        files: list[FileSpan] = []
        pos = 1
        for path, digest, ids in items:
            arr = np.asarray(ids, dtype=np.int32)
            files.append(FileSpan(path, digest, pos, int(arr.shape[0])))
            parts.extend([arr, np.array([SEP], dtype=np.int32)])
            pos += int(arr.shape[0]) + 1
        return cls(np.concatenate(parts), files)

    def file_tokens(self, span: FileSpan) -> np.ndarray:
        return self.tokens[span.start: span.start + span.length]

    # -- queries ----------------------------------------------------------------------
    def ranges(self, context: Sequence[int]) -> list[tuple[int, int, int]]:
        """(match length, lo, hi) for every length the context's suffix occurs at, shortest first."""
        n, rev, sa = self.n, self._rev_mv, self._sa_mv
        lo, hi = 0, n
        out = [(0, 0, n)]
        limit = min(len(context), MAX_CONTEXT)
        for k in range(limit):
            tok = int(context[-1 - k])
            if tok < 0 or tok >= SEP:
                break
            if hi - lo == 1:
                # One candidate left: extend by direct comparison instead of binary searches.
                p = sa[lo]
                while k < limit and p + k < n and rev[p + k] == int(context[-1 - k]):
                    k += 1
                    out.append((k, lo, hi))
                break

            def key(p: int, k: int = k) -> int:
                return rev[p + k] if p + k < n else -1

            nlo = bisect.bisect_left(sa, tok, lo, hi, key=key)
            nhi = bisect.bisect_right(sa, tok, nlo, hi, key=key)
            if nlo == nhi:
                break
            lo, hi = nlo, nhi
            out.append((k + 1, lo, hi))
        return out

    def next_tokens(self, lo: int, hi: int, exclude: tuple[int, int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Forward positions of the next token after the occurrences in [lo, hi), their token ids, and the
        estimated number of valid occurrences (ranges over MAX_SAMPLE are sampled evenly)."""
        size = hi - lo
        step = max(1, size // MAX_SAMPLE)
        p = self.sa[lo:hi:step].astype(np.int64)
        nxt_pos = self.n - p  # reversed position p is forward n-1-p; the token after it is n-p
        ok = nxt_pos < self.n
        nxt_pos = nxt_pos[ok]
        ids = self.tokens[nxt_pos]
        ok = ids != SEP
        if exclude is not None:
            ok &= (nxt_pos <= exclude[0]) | (nxt_pos > exclude[1])
        nxt_pos, ids = nxt_pos[ok], ids[ok]
        estimate = int(len(ids) * size / max(1, len(p))) if step > 1 else len(ids)
        return nxt_pos, ids, estimate

    def locate(self, pos: int) -> tuple[FileSpan, int] | None:
        """The file and token offset within it of forward position ``pos``."""
        i = int(np.searchsorted(self._starts, pos, side="right")) - 1
        if i < 0:
            return None
        span = self.files[i]
        return (span, pos - span.start) if pos < span.start + span.length else None

    def continuation(self, pos: int, k: int) -> list[int]:
        """Up to ``k`` tokens from forward position ``pos``, stopping at the file's end."""
        out = self.tokens[pos: pos + k].tolist()
        return out[: out.index(SEP)] if SEP in out else out


def query_shards(shards: Sequence[Shard], context: Sequence[int],
                 exclude: dict[int, tuple[int, int]] | None = None) -> Match:
    """The longest-suffix match over several shards: the longest length wins; equal lengths pool."""
    best: list[tuple[Shard, np.ndarray, np.ndarray, int]] = []
    best_len = 0
    for si, shard in enumerate(shards):
        ex = exclude.get(si) if exclude else None
        for length, lo, hi in reversed(shard.ranges(context)):
            if length < best_len or length == 0:
                break
            pos, ids, est = shard.next_tokens(lo, hi, ex)
            if len(ids) == 0:
                continue  # every occurrence ends its file (or is excluded): back off one token
            if length > best_len:
                best, best_len = [], length
            best.append((shard, pos, ids, est))
            break
    m = Match(length=best_len)
    for shard, pos, ids, est in best:
        m.count += est
        uniq, counts = np.unique(ids, return_counts=True)
        for t, c in zip(uniq.tolist(), counts.tolist(), strict=True):
            m.next_counts[t] = m.next_counts.get(t, 0) + c
        m.where.extend((shard, int(q)) for q in pos[:8].tolist())
    return m


@dataclass
class MemoryStats:
    files: int = 0
    tokens: int = 0
    tokenized_files: int = 0  # files whose tokens were not cached
    build_s: float = 0.0
    bytes: int = 0
    reason: str = ""


class RepoMemory:
    """The workspace's memory: one shard over the indexed files plus one for the open buffer.

    Built from the index's walk (gitignore, deny-list, size/binary checks, secrets masked first); a
    save re-tokenizes that file and rebuilds the suffix array in the background (a whole rebuild is
    ~0.1 s per 1M tokens, so no overlay is needed at workspace scale). Queries read whichever shard was
    current when they started, so a rebuild never blocks a completion.
    """

    def __init__(self, encode: Encoder, tokenizer_id: str, cache_dir: Path | None = None,
                 config: Any = None) -> None:
        self.encode = encode
        self.config = config  # an IndexConfig: the walk's limits and extra ignores
        self.tokenizer_id = tokenizer_id
        self.cache_dir = (cache_dir / "memory" / tokenizer_id) if cache_dir is not None else None
        self.shard: Shard | None = None
        self.root: Path | None = None  # the workspace the shard was built from
        self.generation = 0  # bumped whenever the workspace shard changes (suggestion caches go stale)
        self.stats = MemoryStats()
        self._lock = threading.Lock()  # one build at a time
        self._buffer: tuple[str, Shard | None] = ("", None)
        self._blocks: dict[str, np.ndarray] = {}  # buffer text block -> token ids

    # -- building -----------------------------------------------------------------------
    def build(self, root: Path, read: Callable[[Path], Iterable[tuple[str, str]]] | None = None) -> MemoryStats:
        """(Re)build from every file of the workspace; tokens of unchanged files come from the old shard."""
        with self._lock:
            t0 = time.perf_counter()
            self.root = root.resolve()
            texts = list(read(root) if read is not None else workspace_texts(root, self.config))
            return self._rebuild(texts, t0)

    def update(self, root: Path, rels: list[str]) -> MemoryStats:
        """Re-read the given workspace-relative files (a save, a watched change, a delete, a rename)."""
        with self._lock:
            t0 = time.perf_counter()
            self.root = root.resolve()
            current = {f.path: f for f in (self.shard.files if self.shard is not None else [])}
            wanted = set(rels)
            fresh = dict(read_files(root, rels, self.config))
            texts: list[tuple[str, str]] = []
            old = self.shard
            for path in current:
                if path in wanted:
                    if path in fresh:
                        texts.append((path, fresh.pop(path)))
                    continue  # deleted or now ignored
                texts.append((path, ""))  # placeholder: tokens reused by digest below
            texts.extend(fresh.items())
            return self._rebuild(texts, t0, keep=old)

    def _rebuild(self, texts: list[tuple[str, str]], t0: float, keep: Shard | None = None) -> MemoryStats:
        old = keep or self.shard
        known = {f.path: f for f in (old.files if old is not None else [])}
        items: list[tuple[str, str, Sequence[int] | np.ndarray]] = []
        todo: list[tuple[int, str, str]] = []
        for path, text in texts:
            span = known.get(path)
            if text == "" and span is not None and old is not None:
                items.append((path, span.digest, old.file_tokens(span)))
                continue
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            if span is not None and span.digest == digest and old is not None:
                items.append((path, digest, old.file_tokens(span)))
            else:
                todo.append((len(items), path, text))
                items.append((path, digest, []))
        if todo:
            encoded = self.encode([t for _, _, t in todo])
            for (i, path, _), ids in zip(todo, encoded, strict=True):
                items[i] = (path, items[i][1], ids)
        shard = Shard.from_token_lists(items)
        self.shard = shard
        self.generation += 1
        self.stats = MemoryStats(files=len(shard.files), tokens=shard.n - len(shard.files) - 1,
                                 tokenized_files=len(todo), build_s=time.perf_counter() - t0,
                                 bytes=shard.tokens.nbytes + shard.sa.nbytes)
        self._save(shard, self.stats)
        log.info("repository memory: %d files, %d tokens (%d files tokenized) in %.2fs", self.stats.files,
                 self.stats.tokens, len(todo), self.stats.build_s)
        return self.stats

    # -- persistence --------------------------------------------------------------------
    def _save(self, shard: Shard, stats: MemoryStats) -> None:
        if self.cache_dir is None:
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_dir / f"memory.{os.getpid()}.{threading.get_ident()}.tmp.npz"
            meta = {"format": FORMAT, "tokenizer": self.tokenizer_id, "tokens": stats.tokens,
                    "build_s": round(stats.build_s, 4), "built_at": time.time(), "mb": round(stats.bytes / 1e6, 2),
                    "files": [[f.path, f.digest, f.start, f.length] for f in shard.files]}
            with open(tmp, "wb") as fh:
                np.savez(fh, tokens=shard.tokens, sa=shard.sa,
                         meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8))
            os.replace(tmp, self.cache_dir / "memory.npz")  # readers see the old file or the new one
        except OSError as exc:
            log.warning("could not save the repository memory to %s (%s); it is rebuilt next start",
                        self.cache_dir, exc)

    def load(self) -> bool:
        """Load the saved memory; False (with the reason logged) when it is missing or unusable."""
        if self.cache_dir is None:
            return False
        path = self.cache_dir / "memory.npz"
        if not path.exists():
            self.stats.reason = "no saved memory"
            return False
        t0 = time.perf_counter()
        try:
            with np.load(path, allow_pickle=False) as z:
                tokens, sa = z["tokens"], z["sa"]
                meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            if meta.get("format") != FORMAT or meta.get("tokenizer") != self.tokenizer_id:
                raise ValueError("written by another format or tokenizer")
            files = [FileSpan(str(p), str(d), int(s), int(n)) for p, d, s, n in meta["files"]]
            if tokens.ndim != 1 or sa.shape != tokens.shape or tokens.shape[0] < 1:
                raise ValueError("token and suffix arrays disagree")
            if int(tokens[0]) != SEP or any(int(tokens[f.start - 1]) != SEP or int(tokens[f.start + f.length]) != SEP
                                            for f in files):
                raise ValueError("file spans do not match the token stream")
            if sa.min() < 0 or sa.max() >= tokens.shape[0]:
                raise ValueError("suffix array points outside the token stream")
            shard = Shard(tokens, files, sa)
        except Exception as exc:  # noqa: BLE001 - any damage means: rebuild
            self.stats.reason = f"saved memory at {path} is unusable ({exc})"
            log.warning("%s; rebuilding it", self.stats.reason)
            return False
        self.shard = shard
        self.generation += 1
        self.stats = MemoryStats(files=len(files), tokens=shard.n - len(files) - 1, build_s=time.perf_counter() - t0,
                                 bytes=shard.tokens.nbytes + shard.sa.nbytes, reason="loaded")
        return True

    # -- queries ------------------------------------------------------------------------
    def buffer_shard(self, text: str, line: int) -> Shard | None:
        """The open document minus the cursor's line, as memory. Cached until a line other than the
        cursor's changes (typing within a line reuses it); the text is tokenized in blocks of lines that
        are cached by content, so moving to another line re-tokenizes only the blocks around it."""
        lines = text.split("\n")
        before, after = lines[:line], lines[line + 1:]
        key = hashlib.sha1("\n".join(before).encode() + b"\0\0" + "\n".join(after).encode()).hexdigest()
        cached_key, cached = self._buffer
        if cached_key == key:
            return cached
        items: list[tuple[str, str, Sequence[int] | np.ndarray]] = []
        for name, part, first in (("<buffer:before>", before, 0), ("<buffer:after>", after, line + 1)):
            ids = self._block_tokens(part, first)
            if len(ids):
                items.append((name, "", ids))
        shard = Shard.from_token_lists(items) if items else None
        self._buffer = (key, shard)
        return shard

    def _block_tokens(self, lines: list[str], first: int = 0) -> np.ndarray:
        """Token ids of ``lines`` (document lines ``first``...) joined by newlines, tokenized in cached blocks
        that end at multiples of BUFFER_BLOCK_LINES document lines: the blocks do not shift when the cursor
        moves, so only the one or two around the cursor are new."""
        cuts = [0, *range(-first % BUFFER_BLOCK_LINES or BUFFER_BLOCK_LINES, len(lines), BUFFER_BLOCK_LINES)]
        if cuts[-1] != len(lines):
            cuts.append(len(lines))
        blocks = ["\n".join(lines[a:b]) + ("\n" if b < len(lines) else "") for a, b in itertools.pairwise(cuts) if b > a]
        missing = [b for b in dict.fromkeys(blocks) if b not in self._blocks]
        if missing:
            for b, ids in zip(missing, self.encode(missing), strict=True):
                self._blocks[b] = np.asarray(ids, dtype=np.int32)
        out = np.concatenate([self._blocks[b] for b in blocks]) if blocks else np.zeros(0, dtype=np.int32)
        if len(self._blocks) > 4 * BUFFER_BLOCK_CACHE:
            keep = set(blocks)
            self._blocks = {b: v for b, v in self._blocks.items() if b in keep}
        return out

    def query(self, context: Sequence[int], buffer: Shard | None = None, exclude: str | None = None) -> Match:
        """Longest match over the workspace and the open buffer. ``exclude``: the workspace-relative path of
        the open document, whose saved copy the buffer supersedes (its saved cursor line would otherwise
        "predict" whatever was typed before, e.g. the end of the line)."""
        shard = self.shard
        shards = [s for s in (shard, buffer) if s is not None]
        if not shards:
            return Match()
        skip = None
        if exclude is not None and shard is not None:
            span = shard.span_of(exclude)
            if span is not None:
                skip = {0: (span.start - 1, span.start + span.length)}
        return query_shards(shards, context, skip)

    def relative(self, path: str) -> str | None:
        """The workspace-relative path of a file path or ``file:`` URI, or None when outside the workspace."""
        if self.root is None:
            return None
        if path.startswith("file:"):
            from urllib.parse import unquote, urlparse

            path = unquote(urlparse(path).path)
        p = Path(path)
        if not p.is_absolute():
            return p.as_posix()
        try:
            return p.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return None

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {"files": s.files, "tokens": s.tokens, "build_s": round(s.build_s, 3),
                "mb": round(s.bytes / 1e6, 2), "tokenizer": self.tokenizer_id,
                "state": "ready" if self.shard is not None else (s.reason or "not built")}


def read_files(root: Path, rels: Iterable[str], config: Any = None) -> Iterable[tuple[str, str]]:
    """(rel, secret-masked text) for the given files that the index would read (same deny-list, size,
    binary and line-length checks as ``IndexConfig``); others are skipped."""
    from indexing.config import IndexConfig
    from indexing.secrets import redact_secrets
    from indexing.walk import is_denied, read_text_checked

    c = config or IndexConfig()
    for rel in rels:
        path = root / rel
        if not path.is_file() or path.is_symlink() or is_denied(root, rel, c.extra_ignore):
            continue
        text, _ = read_text_checked(path, path.stat().st_size, c.max_file_bytes, c.max_line_chars)
        if text is not None:
            yield rel, redact_secrets(text)[0]


def workspace_texts(root: Path, config: Any = None) -> Iterable[tuple[str, str]]:
    """Every indexable file of the workspace, as the index's walk sees it, secrets masked."""
    from indexing.walk import walk_workspace

    rels = [e.rel for e in walk_workspace(root, getattr(config, "extra_ignore", None))]
    return read_files(root, sorted(rels), config)
