"""Which words of a search query are looked up as symbol definitions."""

from __future__ import annotations

import pytest

from indexing.lexical import symbol_candidates


@pytest.mark.parametrize(("query", "expected"), [
    ("Return the number of bytes in the buffer.", []),  # prose: no word is a symbol
    ("Open the file. Return a file object.", []),
    ("how does getUserName handle guests", ["getUserName"]),  # a camelCase name in prose
    ("where is parse_args called", ["parse_args"]),
    ("tokenize", ["tokenize"]),  # a one-word query is a name
    ("self.cache.get(key)", ["cache", "get", "key"]),  # code: every identifier (not `self`)
    ("total = price * rate", ["total", "price", "rate"]),
])
def test_symbol_candidates(query: str, expected: list[str]) -> None:
    assert symbol_candidates(query) == expected
