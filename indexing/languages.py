"""Language detection by file name, bundled tree-sitter parsers, and the per-language tag queries (.scm)."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import PurePosixPath

from tree_sitter import Language, Parser, Query
from tree_sitter_language_pack import get_language, get_parser

# language name -> (tree-sitter grammar, query file stem)
CODE_LANGUAGES: dict[str, tuple[str, str]] = {
    "python": ("python", "python"),
    "javascript": ("javascript", "javascript"),
    "typescript": ("typescript", "typescript"),
    "tsx": ("tsx", "typescript"),
    "go": ("go", "go"),
    "rust": ("rust", "rust"),
    "java": ("java", "java"),
}
DOC_LANGUAGES = {"markdown", "rst"}

EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown", ".rst": "rst",
}
# Node types that are comments: a comment right above a definition belongs to its chunk.
COMMENT_TYPES = {"comment", "line_comment", "block_comment"}
# Wrappers whose start a definition's chunk extends to (decorators, `export`).
WRAPPER_TYPES = {"decorated_definition", "export_statement"}
# Kinds whose definitions contain others and are summarised as header + members when large.
CONTAINER_KINDS = {"class", "interface", "impl", "module"}


def language_for(path: str) -> str:
    """The language name for a workspace-relative path; ``text`` when no grammar or doc splitter applies."""
    return EXTENSIONS.get(PurePosixPath(path).suffix.lower(), "text")


@functools.cache
def parser_for(language: str) -> Parser:
    return get_parser(CODE_LANGUAGES[language][0])  # type: ignore[arg-type]


@functools.cache
def grammar_for(language: str) -> Language:
    return get_language(CODE_LANGUAGES[language][0])  # type: ignore[arg-type]


def query_source(language: str) -> str:
    stem = CODE_LANGUAGES[language][1]
    return resources.files("indexing").joinpath("queries", f"{stem}.scm").read_text(encoding="utf-8")


@functools.cache
def tags_query(language: str) -> Query:
    return Query(grammar_for(language), query_source(language))
