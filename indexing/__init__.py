"""Repository index: tree-sitter chunking, incremental ChromaDB store, hybrid retrieval, repo map.

The names below load on first use (PEP 562): importing a submodule such as ``indexing.cli`` for
``protege --help`` must not pull in ChromaDB, the embedder and tree-sitter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from indexing.api import RepoIndex
    from indexing.config import IndexConfig
    from indexing.lock import IndexLockedError
    from indexing.results import ContextSnippet, IndexStats, SearchHit, SymbolLocation

_WHERE = {
    "RepoIndex": "indexing.api",
    "IndexConfig": "indexing.config",
    "IndexLockedError": "indexing.lock",
    "ContextSnippet": "indexing.results",
    "IndexStats": "indexing.results",
    "SearchHit": "indexing.results",
    "SymbolLocation": "indexing.results",
}

__all__ = ["ContextSnippet", "IndexConfig", "IndexLockedError", "IndexStats", "RepoIndex", "SearchHit",
           "SymbolLocation"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'indexing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
