"""Repository index: tree-sitter chunking, incremental ChromaDB store, hybrid retrieval, repo map."""

from indexing.api import RepoIndex
from indexing.config import IndexConfig
from indexing.lock import IndexLockedError
from indexing.results import ContextSnippet, IndexStats, SearchHit, SymbolLocation

__all__ = ["ContextSnippet", "IndexConfig", "IndexLockedError", "IndexStats", "RepoIndex", "SearchHit",
           "SymbolLocation"]
