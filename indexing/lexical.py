"""Lexical search terms for code: identifiers kept whole and split into parts, for SQLite FTS5's BM25.

FTS5 (rather than an in-memory BM25 library) because it updates incrementally inside the catalog's
transactions: a one-file update never rebuilds the lexical index, and a crash leaves it consistent.
"""

from __future__ import annotations

import re

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# Words so common in code that they only add noise to a query.
STOPWORDS = frozenset(
    "self this the a an and or not is in of to for if else elif return def class function func fn var let "
    "const import from as with none null true false new public private static void int str pass".split())


def identifier_parts(ident: str) -> list[str]:
    parts: list[str] = []
    for piece in ident.split("_"):
        parts.extend(p.lower() for p in _CAMEL.findall(piece))
    return parts


def code_terms(text: str) -> str:
    """Space-joined FTS terms: each identifier lowercased whole, plus its snake/camel parts."""
    out: list[str] = []
    for ident in _IDENT.findall(text):
        low = ident.lower()
        out.append(low)
        parts = identifier_parts(ident)
        if len(parts) > 1:
            out.extend(parts)
    return " ".join(out)


def query_terms(text: str, limit: int = 32) -> list[str]:
    """Distinct, informative terms of a query, most specific (whole identifiers) first."""
    seen: dict[str, None] = {}
    for ident in _IDENT.findall(text):
        low = ident.lower().strip("_")
        if len(low) > 1 and low not in STOPWORDS and not low.isdigit():
            seen.setdefault(low, None)
    for ident in _IDENT.findall(text):
        for part in identifier_parts(ident):
            if len(part) > 2 and part not in STOPWORDS:
                seen.setdefault(part, None)
    return list(seen)[:limit]


def fts_query(terms: list[str]) -> str:
    return " OR ".join('"' + t.replace('"', "") + '"' for t in terms)


def identifiers(text: str) -> list[str]:
    """Identifiers in order of first appearance (for definition lookup near a cursor)."""
    seen: dict[str, None] = {}
    for ident in _IDENT.findall(text):
        if len(ident) > 1 and not ident[0].isdigit() and ident.lower() not in STOPWORDS:
            seen.setdefault(ident, None)
    return list(seen)


_CODE_PUNCT = re.compile(r"\w\(|\w\.[A-Za-z_]|[=\[\]{};]")  # a call, an attribute, brackets: code, not prose


def symbol_candidates(query: str) -> list[str]:
    """Identifiers in a search query worth looking up as definitions.

    In code (or a one-word query) every identifier counts; in prose only those shaped like code
    (``snake_case``, ``camelCase``, with digits): "Return the number of bytes" names no symbol, and
    looking up ``number`` and ``bytes`` as definitions only adds noise (docstring -> code search MRR
    0.52 with every word vs 0.56 without; bench/bench_index.py).
    """
    names = [n for n in identifiers(query) if len(n) > 2]
    if len(names) <= 1 or _CODE_PUNCT.search(query):
        return names
    return [n for n in names if "_" in n or any(c.isdigit() for c in n) or any(c.isupper() for c in n[1:])]
