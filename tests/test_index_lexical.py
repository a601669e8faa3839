"""Which words of a search query are looked up as symbol definitions."""

from __future__ import annotations

from pathlib import Path

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


def test_lexical_search_skips_terms_most_chunks_contain(tmp_path: Path) -> None:
    from indexing.catalog import Catalog, FileRow
    from indexing.chunker import Chunk

    catalog = Catalog(tmp_path / "catalog.sqlite3")
    with catalog.transaction() as db:
        for i in range(400):
            text = f"def handler_{i}(value):\n    return value + {i}\n"
            if i == 7:
                text += "    checksum_crc32 = compute(value)\n"
            chunk = Chunk(0, 2, f"handler_{i}", "function", "python", text)
            catalog.replace_file(db, FileRow(f"m{i}.py", f"h{i}", len(text), 0), "python",
                                 [(f"id{i}", f"t{i}", chunk, "")], [])
        catalog.bump_generation(db)
    # `value` is in every chunk: not worth its 400 postings; unknown terms are dropped; rare ones lead.
    assert catalog.selective_terms(["value", "checksum_crc32", "nowhere_to_be_found"]) == ["checksum_crc32"]
    assert catalog.lexical(["value", "checksum_crc32"], 3, selective=True) == [
        (cid, score) for cid, score in catalog.lexical(["checksum_crc32"], 3)]
    assert len(catalog.lexical(["value", "checksum_crc32"], 3)) == 3  # a search matches every term
    assert catalog.selective_terms(["value"]) == ["value"]  # a lone term is kept
    assert catalog.selective_terms(["value", "return"]) == ["value"]  # all common: the rarest one stays
    assert len(catalog.lexical(["value"], 5)) == 5
    catalog.close()
