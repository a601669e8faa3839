"""Tree-sitter outline of one source text for explanations: definitions (with signature and docstring) and calls.

Everything here is read from the code itself, never from a model, so it can be shown as a fact with a
line number. The same ``.scm`` tag queries the index uses decide what is a definition and what is a call,
so the live document and the index agree.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from tree_sitter import Node, QueryCursor

from indexing.languages import (
    CODE_LANGUAGES,
    COMMENT_TYPES,
    EXTENSIONS,
    WRAPPER_TYPES,
    parser_for,
    tags_query,
)

# LSP language ids that differ from the index's language names.
_LSP_IDS = {"javascriptreact": "javascript", "typescriptreact": "tsx", "py": "python"}
_CONTAINER_TYPES = {"class_definition", "class_declaration", "class", "interface_declaration", "impl_item",
                    "trait_item", "struct_item"}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_SIGNATURE_CHARS = 240


@dataclass(frozen=True)
class Definition:
    """A function, method or class of the text; lines are 0-based and inclusive."""

    name: str
    kind: str  # "function" | "method" | "class" | ...
    start_line: int  # the definition node's first line (decorators excluded)
    end_line: int
    name_line: int
    signature: str  # the header up to the body, on one line
    docstring: str | None
    doc_line: int | None
    body_start_line: int | None  # first line of the body block, when the grammar has one
    doc_end_line: int | None = None

    def contains(self, start: int, end: int) -> bool:
        return self.start_line <= start and end <= self.end_line

    @property
    def span(self) -> int:
        return self.end_line - self.start_line


@dataclass(frozen=True)
class CallSite:
    name: str
    line: int
    col: int


@dataclass
class Outline:
    language: str
    definitions: list[Definition]
    calls: list[CallSite]

    def innermost(self, start: int, end: int | None = None) -> Definition | None:
        """The narrowest definition containing lines ``start..end``."""
        end = start if end is None else end
        inside = [d for d in self.definitions if d.contains(start, end)]
        return min(inside, key=lambda d: (d.span, -d.start_line)) if inside else None

    def named(self, name: str) -> list[Definition]:
        return [d for d in self.definitions if d.name == name]

    def calls_in(self, start: int, end: int) -> list[CallSite]:
        return [c for c in self.calls if start <= c.line <= end]


def code_language(language_id: str | None, path: str) -> str | None:
    """The index's language name for a document when it is code with a grammar, else None."""
    lang = language_id.lower() if isinstance(language_id, str) else ""  # a client may send anything
    lang = _LSP_IDS.get(lang, lang)
    if lang in CODE_LANGUAGES:
        return lang
    by_ext = EXTENSIONS.get(PurePosixPath(path).suffix.lower())
    return by_ext if by_ext in CODE_LANGUAGES else None


def supported_languages() -> list[str]:
    return sorted(CODE_LANGUAGES)


def word_at(line_text: str, character: int) -> str | None:
    """The identifier under (or just before) the cursor column."""
    for m in _WORD.finditer(line_text):
        if m.start() <= character <= m.end():
            return m.group(0)
    return None


def outline(text: str, language: str) -> Outline:
    """Definitions and call sites of ``text``; never raises on malformed code (tree-sitter recovers)."""
    return _outline_cached(text, language)


@functools.lru_cache(maxsize=32)
def _outline_cached(text: str, language: str) -> Outline:
    source = text.encode("utf-8")
    tree = parser_for(language).parse(source)
    defs: dict[int, Definition] = {}
    calls: list[CallSite] = []
    for _, caps in QueryCursor(tags_query(language)).matches(tree.root_node):
        names = caps.get("name")
        if not names:
            continue
        name_node = names[0]
        name = _text(name_node, source)
        for key, nodes in caps.items():
            if key.startswith("definition."):
                node = nodes[0]
                if node.id not in defs:
                    defs[node.id] = _definition(node, name_node, name, key.split(".", 1)[1], source)
            elif key == "reference.call":
                calls.append(CallSite(name, name_node.start_point[0], name_node.start_point[1]))
    ordered = sorted(defs.values(), key=lambda d: (d.start_line, -d.end_line, d.name))
    calls.sort(key=lambda c: (c.line, c.col, c.name))
    return Outline(language, ordered, calls)


def _text(node: Node, source: bytes) -> str:
    return source[node.start_byte:node.end_byte].decode("utf-8", "replace")


def _definition(node: Node, name_node: Node, name: str, kind: str, source: bytes) -> Definition:
    body = node.child_by_field_name("body")
    header_end = body.start_byte if body is not None else source.find(b"\n", node.start_byte)
    if header_end < 0:
        header_end = node.end_byte
    signature = " ".join(source[node.start_byte:header_end].decode("utf-8", "replace").split())
    if body is not None and body.type == "block" and not signature.endswith(":"):
        signature += ":"  # tree-sitter-python puts the colon before the block
    if len(signature) > MAX_SIGNATURE_CHARS:
        signature = signature[:MAX_SIGNATURE_CHARS - 1] + "…"
    if kind == "function" and _inside_container(node):
        kind = "method"
    doc, doc_line, doc_end = _docstring(node, body, source)
    return Definition(name, kind, node.start_point[0], node.end_point[0], name_node.start_point[0], signature,
                      doc, doc_line, body.start_point[0] if body is not None else None, doc_end)


def _inside_container(node: Node) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.type in _CONTAINER_TYPES:
            return True
        if parent.type in ("function_definition", "function_declaration", "method_declaration"):
            return False
        parent = parent.parent
    return False


def _docstring(node: Node, body: Node | None, source: bytes) -> tuple[str | None, int | None, int | None]:
    """A Python docstring, else the comment block right above the definition (or its wrapper)."""
    if body is not None and body.named_child_count:
        first = body.named_children[0]
        if first.type == "expression_statement" and first.named_child_count:
            first = first.named_children[0]
        if first.type == "string":
            raw = _text(first, source)
            doc = _clean_doc(re.sub(r"^[rRbBuUfF]*('''|\"\"\"|'|\")|('''|\"\"\"|'|\")$", "", raw))
            if doc:
                return doc, first.start_point[0], first.end_point[0]
    anchor = node.parent if node.parent is not None and node.parent.type in WRAPPER_TYPES else node
    comments: list[Node] = []
    prev = anchor.prev_named_sibling
    expected = anchor.start_point[0] - 1
    while prev is not None and prev.type in COMMENT_TYPES and prev.end_point[0] == expected:
        comments.insert(0, prev)
        expected = prev.start_point[0] - 1
        prev = prev.prev_named_sibling
    if comments:
        lines = []
        for c in comments:
            for ln in _text(c, source).split("\n"):
                lines.append(re.sub(r"^\s*(///?|#|/\*\*?|\*/?|--)\s?", "", ln).rstrip("*/ ").rstrip())
        doc = _clean_doc("\n".join(lines))
        if doc:
            return doc, comments[0].start_point[0], comments[-1].end_point[0]
    return None, None, None


def _clean_doc(doc: str) -> str:
    lines = [ln.strip() for ln in doc.strip().split("\n")]
    return "\n".join(lines).strip()


def first_sentence(doc: str, limit: int = 200) -> str:
    """The docstring's first paragraph, cut to a sentence where it is long."""
    para = " ".join(doc.split("\n\n", 1)[0].split())
    if len(para) > limit:
        cut = para[:limit]
        para = cut[:cut.rfind(". ") + 1] if ". " in cut else cut.rstrip() + "…"
    return para
