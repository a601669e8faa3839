"""Chunking and tag goldens per language (tree-sitter .scm queries), docs by section, fallbacks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from indexing.chunker import ChunkLimits, chunk_file
from indexing.languages import CODE_LANGUAGES, language_for, tags_query

FIXTURES = Path(__file__).parent / "fixtures" / "index"
LANG_FILES = sorted((FIXTURES / "lang").iterdir())
# Small limits so short fixtures exercise headers, windows and (separately) merging.
GOLDEN_LIMITS = ChunkLimits(max_chars=300, merge_below_chars=0, window_lines=12, window_overlap=2)


def _summary(path: Path) -> dict:
    language = language_for(path.name)
    parsed = chunk_file(path.read_text(encoding="utf-8"), language, path.name, GOLDEN_LIMITS)
    return {
        "language": language,
        "chunks": [[c.start_line, c.end_line, c.kind, c.symbol, c.text.split("\n", 1)[0]] for c in parsed.chunks],
        "definitions": [[t.symbol, t.kind, t.line] for t in parsed.tags if t.role == "def"],
        "references": sorted({t.symbol for t in parsed.tags if t.role == "ref"}),
    }


def _dump(summary: dict) -> str:
    """One chunk / definition per line, so golden diffs read like the chunking itself."""
    out = ["{"]
    for n, (key, value) in enumerate(summary.items()):
        comma = "," if n < len(summary) - 1 else ""
        if isinstance(value, list) and value and isinstance(value[0], list):
            rows = ",\n".join("  " + json.dumps(row) for row in value)
            out.append(f"  {json.dumps(key)}: [\n{rows}\n  ]{comma}")
        else:
            out.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    return "\n".join(out) + "\n}\n"


@pytest.mark.parametrize("path", LANG_FILES, ids=[p.name for p in LANG_FILES])
def test_golden(path: Path) -> None:
    golden = FIXTURES / "golden" / (path.name + ".json")
    got = _summary(path)
    if os.environ.get("PROTEGE_UPDATE_GOLDENS"):
        golden.write_text(_dump(got))
    assert got == json.loads(golden.read_text())


def test_every_code_language_has_a_fixture_and_a_query() -> None:
    covered = {language_for(p.name) for p in LANG_FILES}
    for language in CODE_LANGUAGES:
        tags_query(language)  # the .scm compiles against the bundled grammar
    assert {"python", "javascript", "typescript", "go", "rust", "java", "markdown", "rst"} <= covered


def test_large_class_becomes_header_plus_methods() -> None:
    parsed = chunk_file((FIXTURES / "lang" / "sample.py").read_text(), "python", "sample.py", GOLDEN_LIMITS)
    header = next(c for c in parsed.chunks if c.symbol == "Repository")
    # The header keeps the class's own lines and reduces each method to its signature.
    assert "kind = \"repo\"" in header.text
    assert "def scan(self, pattern=\"*.py\"): ..." in header.text
    assert "os.walk" not in header.text
    methods = {c.symbol for c in parsed.chunks if c.kind == "method"}
    assert {"__init__", "scan", "read"} <= methods
    # A method longer than max_chars is windowed, each window within the method's lines.
    scans = [c for c in parsed.chunks if c.symbol == "scan"]
    assert len(scans) >= 2 and all(28 <= c.start_line and c.end_line <= 34 for c in scans)
    decorated = next(c for c in parsed.chunks if c.symbol == "decorated")
    assert decorated.text.startswith("@staticmethod")


def test_small_siblings_merge_up_to_the_limit() -> None:
    text = "\n\n".join(f"def f{i}(x):\n    return x + {i}" for i in range(40))
    limits = ChunkLimits(max_chars=200, merge_below_chars=100)
    parsed = chunk_file(text, "python", "m.py", limits)
    assert 1 < len(parsed.chunks) < 40
    assert all(len(c.text) <= 200 for c in parsed.chunks)
    # Nothing is lost: every function body appears in exactly one chunk.
    for i in range(40):
        assert sum(f"return x + {i}\n" in c.text + "\n" for c in parsed.chunks) == 1


def test_line_windows_for_text_without_a_grammar() -> None:
    text = "\n".join(f"line {i} " + "x" * 30 for i in range(100))
    parsed = chunk_file(text, "text", "notes.txt", ChunkLimits(max_chars=400, window_lines=10, window_overlap=2))
    assert parsed.tags == []
    assert parsed.chunks[0].start_line == 0 and parsed.chunks[-1].end_line == 99
    for a, b in zip(parsed.chunks, parsed.chunks[1:], strict=False):
        assert b.start_line <= a.end_line + 1  # contiguous or overlapping: no line is dropped
        assert len(a.text) <= 400


def test_broken_code_still_chunks() -> None:
    text = "def ok(a):\n    return a\n\ndef broken(:\n    pass\n\nclass C:\n    def m(self): return 1\n"
    parsed = chunk_file(text, "python", "b.py")
    joined = "\n".join(c.text for c in parsed.chunks)
    assert "def ok" in joined and "class C" in joined
    assert any(t.symbol == "ok" and t.role == "def" for t in parsed.tags)


def test_markdown_headings_inside_fences_are_not_sections() -> None:
    parsed = chunk_file((FIXTURES / "lang" / "sample.md").read_text(), "markdown", "sample.md", GOLDEN_LIMITS)
    assert [c.symbol for c in parsed.chunks] == ["Protege sample", "Install", "Usage", "Advanced"]
    assert "pip install protege" in parsed.chunks[1].text
