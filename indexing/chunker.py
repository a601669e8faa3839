"""Chunk a file into retrieval units: tree-sitter definitions for code, sections for docs, line windows otherwise.

Code: every definition the language's ``.scm`` query tags becomes a chunk; a definition longer than
``max_chars`` that contains others (a large class) becomes a *header* chunk — its own lines with member
signatures — plus its members' chunks; a long leaf definition is split into line windows. Consecutive small
siblings are merged so the index is not flooded with three-line chunks. The same query yields the tags
(definitions and references) used by the repo map and by ``definitions``/``references``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tree_sitter import Node, QueryCursor

from indexing.languages import (
    CODE_LANGUAGES,
    COMMENT_TYPES,
    CONTAINER_KINDS,
    WRAPPER_TYPES,
    parser_for,
    tags_query,
)


@dataclass
class Chunk:
    start_line: int  # 0-based, inclusive
    end_line: int  # 0-based, inclusive
    symbol: str
    kind: str
    language: str
    text: str


@dataclass(frozen=True)
class Tag:
    symbol: str
    role: str  # "def" or "ref"
    kind: str  # def: function/method/class/...; ref: call/class/type
    line: int  # 0-based line of the name
    signature: str  # def: its first line; ref: the source line


@dataclass
class ParsedFile:
    chunks: list[Chunk]
    tags: list[Tag]


@dataclass
class ChunkLimits:
    max_chars: int = 1_500
    merge_below_chars: int = 400
    window_lines: int = 60
    window_overlap: int = 10


@dataclass
class _Def:
    node: Node
    kind: str
    name: str
    start: int  # first line, including decorators and the comment right above
    end: int
    start_byte: int
    end_byte: int
    children: list[_Def] = field(default_factory=list)


@dataclass
class _Seg:
    start: int
    end: int
    symbol: str
    kind: str
    text: str
    mergeable: bool


def chunk_file(text: str, language: str, path: str, limits: ChunkLimits | None = None) -> ParsedFile:
    """Chunks and tags for one file's text; never raises on malformed input (tree-sitter is error-tolerant)."""
    limits = limits or ChunkLimits()
    lines = _Lines(text.split("\n"))
    if language in CODE_LANGUAGES:
        return _chunk_code(text, lines, language, limits)
    if language == "markdown":
        return ParsedFile(_chunk_sections(lines, _markdown_headings(lines), language, path, limits), [])
    if language == "rst":
        return ParsedFile(_chunk_sections(lines, _rst_headings(lines), language, path, limits), [])
    return ParsedFile(_finish(_windows(lines, 0, len(lines) - 1, path, "text", limits), lines, language), [])


# ---------------------------------------------------------------- code


def _chunk_code(text: str, lines: list[str], language: str, limits: ChunkLimits) -> ParsedFile:
    source = text.encode("utf-8")
    tree = parser_for(language).parse(source)
    defs, tags = _collect(tree.root_node, language, lines)
    top = _nest(defs)
    tags = sorted(tags + _def_tags(defs, lines), key=lambda t: (t.line, t.role, t.symbol, t.kind))
    segs = _level(top, 0, len(lines) - 1, lines, source, limits, top_level=True)
    return ParsedFile(_finish(segs, lines, language), tags)


def _collect(root: Node, language: str, lines: list[str]) -> tuple[list[_Def], list[Tag]]:
    defs: dict[int, _Def] = {}
    tags: list[Tag] = []
    for _, caps in QueryCursor(tags_query(language)).matches(root):
        names = caps.get("name")
        if not names:
            continue
        name_node = names[0]
        name = (name_node.text or b"").decode("utf-8", "replace")
        for key, nodes in caps.items():
            if key.startswith("definition."):
                node = nodes[0]
                if node.id not in defs:
                    defs[node.id] = _Def(node, key.split(".", 1)[1], name, _extended_start(node),
                                         node.end_point[0], node.start_byte, node.end_byte)
            elif key.startswith("reference."):
                row = name_node.start_point[0]
                tags.append(Tag(name, "ref", key.split(".", 1)[1], row, lines[row].strip()[:200]))
    ordered = sorted(defs.values(), key=lambda d: (d.start_byte, -d.end_byte))
    return ordered, tags


def _def_tags(defs: list[_Def], lines: list[str]) -> list[Tag]:
    """Definition tags, after nesting has told methods from functions."""
    return [Tag(d.name, "def", d.kind, _name_row(d), lines[d.node.start_point[0]].strip()[:200]) for d in defs]


def _name_row(d: _Def) -> int:
    name = d.node.child_by_field_name("name")
    return name.start_point[0] if name is not None else d.node.start_point[0]


def _extended_start(node: Node) -> int:
    """A definition's chunk starts at its decorators/`export` and the comments directly above it."""
    top = node
    while top.parent is not None and top.parent.type in WRAPPER_TYPES:
        top = top.parent
    start = top.start_point[0]
    prev = top.prev_named_sibling
    while prev is not None and prev.type in COMMENT_TYPES and prev.end_point[0] >= start - 1:
        start = prev.start_point[0]
        prev = prev.prev_named_sibling
    return start


def _nest(defs: list[_Def]) -> list[_Def]:
    """Arrange definitions by containment; a function directly inside a class-like container is a method."""
    top: list[_Def] = []
    stack: list[_Def] = []
    for d in defs:
        while stack and d.start_byte >= stack[-1].end_byte:
            stack.pop()
        if stack:
            parent = stack[-1]
            if d.kind == "function" and parent.kind in CONTAINER_KINDS:
                d.kind = "method"
            # A nested definition never starts above its container (comments are the container's own).
            d.start = max(d.start, parent.start + 1 if d.node.start_point[0] > parent.start else parent.start)
            parent.children.append(d)
        else:
            top.append(d)
        stack.append(d)
    return top


class _Lines(list[str]):
    """The file's lines with prefix sums, so span sizes cost O(1) (merging asks for many)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines)
        self.prefix = [0]
        total = 0
        for line in lines:
            total += len(line) + 1
            self.prefix.append(total)


def _size(lines: list[str], start: int, end: int) -> int:
    prefix = lines.prefix  # type: ignore[attr-defined]
    end = min(end, len(prefix) - 2)
    return prefix[end + 1] - prefix[start] if end >= start else 0


def _level(defs: list[_Def], start: int, end: int, lines: list[str], source: bytes, limits: ChunkLimits,
           top_level: bool) -> list[_Seg]:
    """Segments for the definitions at one nesting level; at the top level, gaps become module chunks."""
    segs: list[_Seg] = []
    cursor = start
    for d in defs:
        if top_level and d.start > cursor:
            segs.extend(_gap(lines, cursor, d.start - 1, limits))
        if _size(lines, d.start, d.end) <= limits.max_chars:
            segs.append(_Seg(d.start, d.end, d.name, d.kind, "", True))
        elif d.children:
            segs.append(_Seg(d.start, d.end, d.name, d.kind, _header(d, lines, source, limits), False))
            segs.extend(_level(d.children, d.start, d.end, lines, source, limits, top_level=False))
        else:
            for w in _windows(lines, d.start, d.end, d.name, d.kind, limits):
                segs.append(w)
        cursor = max(cursor, d.end + 1)
    if top_level and cursor <= end:
        segs.extend(_gap(lines, cursor, end, limits))
    return _merge(segs, lines, limits)


def _gap(lines: list[str], start: int, end: int, limits: ChunkLimits) -> list[_Seg]:
    while start <= end and not lines[start].strip():
        start += 1
    while end >= start and not lines[end].strip():
        end -= 1
    if start > end:
        return []
    if _size(lines, start, end) <= limits.max_chars:
        return [_Seg(start, end, "", "module", "", True)]
    return _windows(lines, start, end, "", "module", limits)


def _signature(d: _Def, source: bytes) -> str:
    body = d.node.child_by_field_name("body")
    stop = body.start_byte if body is not None else d.node.end_byte
    sig = source[d.node.start_byte:stop].decode("utf-8", "replace").rstrip()
    sig_lines = sig.split("\n")
    if len(sig_lines) > 6:
        sig = "\n".join(sig_lines[:6]) + " ..."
    return sig + (" ..." if body is not None else "")


def _header(d: _Def, lines: list[str], source: bytes, limits: ChunkLimits) -> str:
    """A container's own lines, with each member reduced to its signature."""
    parts: list[str] = []
    cursor = d.start
    for child in d.children:
        parts.extend(lines[cursor:child.start])
        indent = re.match(r"\s*", lines[child.node.start_point[0]]).group(0)  # type: ignore[union-attr]
        parts.append(indent + _signature(child, source).lstrip())
        cursor = child.end + 1
    parts.extend(lines[cursor:d.end + 1])
    text = "\n".join(line for line in parts if line.strip())
    cap = 2 * limits.max_chars
    return text if len(text) <= cap else text[:cap].rsplit("\n", 1)[0] + "\n..."


def _windows(lines: list[str], start: int, end: int, symbol: str, kind: str, limits: ChunkLimits) -> list[_Seg]:
    """Line windows bounded by both ``window_lines`` and ``max_chars``, overlapping a little."""
    out: list[_Seg] = []
    i = start
    while i <= end:
        j, size = i, 0
        while j <= end and j - i < limits.window_lines and (size == 0 or size + len(lines[j]) + 1 <= limits.max_chars):
            size += len(lines[j]) + 1
            j += 1
        if any(line.strip() for line in lines[i:j]):
            out.append(_Seg(i, j - 1, symbol, kind, "", False))
        if j > end:
            break
        i = max(j - limits.window_overlap, i + 1) if j - i > 2 * limits.window_overlap else j
    return out


def _merge(segs: list[_Seg], lines: list[str], limits: ChunkLimits) -> list[_Seg]:
    """Merge runs of small mergeable neighbours into chunks of up to ``max_chars``."""
    out: list[_Seg] = []
    for seg in segs:
        prev = out[-1] if out else None
        if (prev is not None and prev.mergeable and seg.mergeable and prev.end < seg.start
                and _size(lines, prev.start, seg.end) <= limits.max_chars
                and min(_size(lines, prev.start, prev.end), _size(lines, seg.start, seg.end)) < limits.merge_below_chars):
            names = [n for n in (prev.symbol, seg.symbol) if n]
            kinds = {prev.kind, seg.kind} - {"module"}
            kind = kinds.pop() if len(kinds) == 1 else ("module" if not kinds else "definitions")
            out[-1] = _Seg(prev.start, seg.end, ", ".join(names), kind, "", True)
        else:
            out.append(seg)
    return out


def _finish(segs: list[_Seg], lines: list[str], language: str) -> list[Chunk]:
    chunks = []
    for seg in segs:
        text = seg.text or "\n".join(lines[seg.start:seg.end + 1])
        symbol = seg.symbol if len(seg.symbol) <= 120 else seg.symbol[:117].rsplit(", ", 1)[0] + ", ..."
        chunks.append(Chunk(seg.start, seg.end, symbol, seg.kind, language, text))
    return chunks


# ---------------------------------------------------------------- docs

_FENCE = re.compile(r"^\s*(```|~~~)")
_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_RST_UNDERLINE = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")


def _markdown_headings(lines: list[str]) -> list[tuple[int, str]]:
    heads: list[tuple[int, str]] = []
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (m := _ATX.match(line)):
            heads.append((i, m.group(2)))
    return heads


def _rst_headings(lines: list[str]) -> list[tuple[int, str]]:
    heads: list[tuple[int, str]] = []
    for i in range(len(lines) - 1):
        title = lines[i].rstrip()
        if title.strip() and not _RST_UNDERLINE.match(title) and _RST_UNDERLINE.match(lines[i + 1]) \
                and len(lines[i + 1].rstrip()) >= len(title.strip()) and not title.startswith(" "):
            start = i - 1 if i > 0 and _RST_UNDERLINE.match(lines[i - 1]) else i
            heads.append((start, title.strip()))
    return heads


def _chunk_sections(lines: list[str], heads: list[tuple[int, str]], language: str, path: str,
                    limits: ChunkLimits) -> list[Chunk]:
    """One chunk per section (heading to next heading); small sections merge, long ones are windowed."""
    bounds = [(0, path.rsplit("/", 1)[-1])] if not heads or heads[0][0] > 0 else []
    bounds += heads
    segs: list[_Seg] = []
    for n, (start, title) in enumerate(bounds):
        end = (bounds[n + 1][0] - 1) if n + 1 < len(bounds) else len(lines) - 1
        while end > start and not lines[end].strip():
            end -= 1
        if not any(line.strip() for line in lines[start:end + 1]):
            continue
        if _size(lines, start, end) <= limits.max_chars:
            segs.append(_Seg(start, end, title, "section", "", True))
        else:
            segs.extend(_windows(lines, start, end, title, "section", limits))
    return _finish(_merge(segs, lines, limits), lines, language)
