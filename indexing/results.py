"""Result types returned by the index API (plain dataclasses; JSON-friendly through ``asdict``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SearchHit:
    path: str  # workspace-relative, POSIX separators
    start_line: int  # 0-based, inclusive
    end_line: int  # 0-based, inclusive
    symbol: str
    kind: str
    language: str
    text: str
    score: float


@dataclass
class ContextSnippet:
    path: str
    start_line: int  # 0-based
    text: str
    score: float
    reason: str  # "definition of NAME" | "similar code"


@dataclass
class SymbolLocation:
    path: str
    line: int  # 0-based
    kind: str
    symbol: str
    signature: str


@dataclass
class IndexStats:
    files_seen: int = 0
    files_indexed: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    files_skipped: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0  # vectors reused from unchanged chunk text (no model call)
    secrets_redacted: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason
