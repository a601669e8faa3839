"""Post-processing of raw model output into a suggestion the editor can show.

Rules, in order: cut at stop tokens; one line when the cursor is mid-line, a block at the end of
a line (truncated where the block ends, by indentation); drop text that the suffix already has;
cut repetition loops; balance brackets against the suffix; drop empty suggestions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Mode = Literal["line", "block"]

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}
_BLOCK_OPENER = re.compile(r"[:{(\[]\s*(#.*)?$")


@dataclass
class CursorContext:
    """What the post-processor needs to know about the cursor position."""

    line_prefix: str  # text of the current line before the cursor
    line_suffix: str  # text of the current line after the cursor
    suffix: str  # the whole document after the cursor
    # Brackets opened on earlier lines and still open at the current line, outermost first (a call or a
    # signature spread over lines): the suggestion may close them.
    open_before: str = ""

    @classmethod
    def at(cls, prefix: str, suffix: str) -> CursorContext:
        """The context of a cursor between ``prefix`` and ``suffix`` (the whole document around it)."""
        # Only the lines the bracket scan reads are split off (this runs on every request, whatever the file's size).
        parts = prefix.rsplit("\n", OPEN_LOOKBACK_LINES + 1)
        return cls(line_prefix=parts[-1], line_suffix=suffix.split("\n", 1)[0], suffix=suffix,
                   open_before=open_brackets("\n".join(parts[-(OPEN_LOOKBACK_LINES + 1):-1])))

    @property
    def mode(self) -> Mode:
        """Mid-line (non-blank text after the cursor) asks for one line; end of line for a block."""
        return "line" if self.line_suffix.strip() else "block"

    @property
    def indent(self) -> int:
        """Indentation of the current line."""
        return len(self.line_prefix) - len(self.line_prefix.lstrip())


def cut_at_stops(text: str, stops: Iterable[str]) -> str:
    cut = len(text)
    for s in stops:
        if s and (i := text.find(s)) != -1:
            cut = min(cut, i)
    return text[:cut]


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def truncate_block(text: str, ctx: CursorContext) -> str:
    """Keep the first line plus the following lines that stay inside the block being written.

    After a line that opens a block (``:``, ``{``, ``(``...), deeper lines belong to it and a
    closing brace at the opener's indentation ends it; after a plain statement, lines at the same
    or deeper indentation continue it, and a dedent or a new definition ends the suggestion.
    """
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    first = ctx.line_prefix + lines[0]
    base = _indent_of(first) if first.strip() else ctx.indent
    opens_block = bool(_BLOCK_OPENER.search(first.rstrip()))
    kept = [lines[0]]
    blank_run = 0
    for ln in lines[1:]:
        if not ln.strip():
            blank_run += 1
            if blank_run >= 2:
                break
            kept.append(ln)
            continue
        blank_run = 0
        ind = _indent_of(ln)
        if opens_block:
            if ind > base:
                kept.append(ln)
                continue
            if ind == base and ln.strip()[:1] in ")]}":
                kept.append(ln)
            break
        if ind < base or (ind == base and ln.lstrip().startswith(("def ", "class ", "@", "async def "))):
            break
        kept.append(ln)
    while len(kept) > 1 and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept)


_STRING_PREFIXES = {"", "f", "r", "b", "u", "rb", "br", "fr", "rf", "t", "tr", "rt"}


def code_brackets(text: str) -> list[int]:
    """Indices of the brackets in ``text`` that are code: not inside a string literal.

    Strings start at ``'``, ``"`` or a backtick that is not inside a word (``don't`` in prose starts
    nothing; ``f"``, ``rb'`` and other Python prefixes do), end at their closing quote (triple quotes
    included) or at the end of the line. Expressions inside f-strings (``f"{x[0]}"``) and template
    literals (`` `${a(b)}` ``) are code; the braces that delimit them are not brackets.
    """
    out: list[int] = []
    # A stack of frames: ("code", open braces) or ("str", quote, expressions allowed).
    stack: list[tuple[str, str, bool]] = [("code", "", False)]
    depth = [0]  # braces opened in each code frame (a "}" at 0 ends an f-string expression)
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        kind, quote, interp = stack[-1]
        if kind == "str":
            if ch == "\\":
                i += 2
                continue
            if ch == "\n" and len(quote) == 1 and quote != "`":
                stack.pop()  # an unterminated one-line string ends with its line
            elif text.startswith(quote, i):
                stack.pop()
                i += len(quote)
                continue
            elif interp and ch == "{" and quote != "`":
                if text.startswith("{{", i):
                    i += 2
                    continue
                stack.append(("code", "", False))
                depth.append(0)
            elif interp and quote == "`" and text.startswith("${", i):
                stack.append(("code", "", False))
                depth.append(0)
                i += 2
                continue
            i += 1
            continue
        if ch in "'\"`":
            j = i
            while j > 0 and (text[j - 1].isalnum() or text[j - 1] == "_"):
                j -= 1
            word = text[j:i].lower()
            if word in _STRING_PREFIXES and (ch != "`" or not word):
                q = ch * 3 if ch != "`" and text.startswith(ch * 3, i) else ch
                stack.append(("str", q, "f" in word or "t" in word or ch == "`"))
                i += len(q)
                continue
        elif ch in _OPEN or ch in _CLOSE:
            if ch == "{":
                depth[-1] += 1
            elif ch == "}":
                if depth[-1] == 0 and len(stack) > 1:
                    stack.pop()  # the end of an f-string / template-literal expression
                    depth.pop()
                    i += 1
                    continue
                depth[-1] = max(0, depth[-1] - 1)
            out.append(i)
        i += 1
    return out


_TRAILING_COMMENT = re.compile(r"(^|\s)#[^'\"]*$")
_STATEMENT_START = re.compile(r"[A-Za-z_@]|[ \t]+(def|class|async def)\s|[ \t]+@")
OPEN_LOOKBACK_LINES = 60


def open_brackets(text: str, max_lines: int = OPEN_LOOKBACK_LINES) -> str:
    """The code brackets still open at the end of ``text`` (earlier lines of a document), outermost first.

    The scan starts at the last of the final ``max_lines`` lines that begins a top-level statement
    (column 0) or a definition (``def``, ``class``, a decorator), so an unbalanced bracket far above
    cannot leak in; comment lines and trailing
    ``# comments`` are skipped; a closer that closes nothing resets the scan (the text is not code we
    understand)."""
    lines = text.rsplit("\n", max_lines)[-max_lines:]
    start = 0
    for i in range(len(lines) - 1, -1, -1):
        if _STATEMENT_START.match(lines[i]):
            start = i
            break
    kept = []
    for ln in lines[start:]:
        if ln.lstrip().startswith("#"):
            continue
        kept.append(_TRAILING_COMMENT.sub("", ln) if "#" in ln else ln)
    code = "\n".join(kept)
    stack: list[str] = []
    for i in code_brackets(code):
        ch = code[i]
        if ch in _OPEN:
            stack.append(ch)
        elif stack and stack[-1] == _CLOSE[ch]:
            stack.pop()
        else:
            return ""
    return "".join(stack)


def _net_brackets(text: str) -> int:
    return sum(1 if text[i] in _OPEN else -1 for i in code_brackets(text))


def remove_suffix_overlap(text: str, ctx: CursorContext) -> str:
    """Drop a tail of the suggestion that the document already has right after the cursor.

    A tail made of closing brackets is dropped only when keeping it would over-close the line
    (``f = open(`` + ``path)`` + ``)``); plain text that repeats the suffix is always dropped.
    """
    suffix_line = ctx.line_suffix
    if suffix_line.strip():
        s = suffix_line.rstrip()
        for k in range(len(s), 0, -1):
            tail = s[:k]
            if not text.endswith(tail) or not tail.strip() or len(tail) >= len(text):
                continue
            if any(ch in _OPEN or ch in _CLOSE for ch in tail):
                full = abs(_net_brackets(ctx.line_prefix + text + suffix_line))
                cut = abs(_net_brackets(ctx.line_prefix + text[: len(text) - k] + suffix_line))
                if cut < full:
                    return text[: len(text) - k]
                continue
            if len(tail.strip()) >= 2:
                return text[: len(text) - k]
        return text
    # End of line: the suggestion's last lines may repeat the next lines of the document.
    nxt = [ln for ln in ctx.suffix.split("\n")[1:4] if ln.strip()]
    if nxt:
        lines = text.split("\n")
        head = nxt[0].strip()
        for i in range(1, len(lines)):
            if lines[i].strip() and lines[i].strip() == head:
                return "\n".join(lines[:i]).rstrip()
    return text


def remove_repetition(text: str) -> str:
    """Cut degenerate loops: a line repeated 3+ times, or a short unit repeated in one line."""
    lines = text.split("\n")
    out: list[str] = []
    for ln in lines:
        if len(out) >= 2 and ln.strip() and ln == out[-1] == out[-2]:
            break
        out.append(ln)
    while len(out) >= 3 and out[-1].strip() and out[-1] == out[-2]:
        out.pop()
    text = "\n".join(out)
    m = re.search(r"((?=\S).{2,20}?)\1{3,}", text)
    if m:
        text = text[: m.start() + len(m.group(1))]
    return text


def balance_brackets(text: str, ctx: CursorContext) -> str:
    """Drop closing brackets that close nothing, unless the suffix-side text still needs them."""
    depth: list[str] = list(ctx.open_before)
    outer = len(depth)
    # Brackets still open before the cursor (on this line or, for a call spread over lines, above it) may be
    # closed by the suggestion; brackets inside string literals (``"["``, ``f"\\033[{x}m"``) are text, not code.
    # A bracket opened on an earlier line is closed where formatted code closes it, at the start of a line
    # (``) -> Response:``); after an argument (``"text",`` + ``)``) the argument list goes on below.
    full = ctx.line_prefix + text
    start = len(ctx.line_prefix)
    for i in code_brackets(full):
        ch = full[i]
        if ch in _OPEN:
            depth.append(ch)
            continue
        if depth and depth[-1] == _CLOSE[ch]:
            line_head = full[full.rfind("\n", 0, i) + 1: i]
            if len(depth) > outer or not line_head.strip(" \t)]}") or i < start:
                depth.pop()
                outer = min(outer, len(depth))
                continue
        if i >= start:
            return text[: i - start]  # an unmatched closer: the rest belongs to code we cannot see
    return text


def postprocess(raw: str, ctx: CursorContext, stops: Iterable[str] = (), multiline: bool = True) -> str:
    """Turn raw model text into the suggestion to show ("" means: show nothing)."""
    text = cut_at_stops(raw, stops)
    mode = ctx.mode if multiline else "line"
    if mode == "line":
        stripped = text.lstrip("\n") if not ctx.line_prefix.strip() else text
        text = stripped.split("\n", 1)[0]
    else:
        text = truncate_block(text, ctx)
    text = remove_repetition(text)
    text = remove_suffix_overlap(text, ctx)
    text = balance_brackets(text, ctx)
    text = text.rstrip() if "\n" in text else text.rstrip("\n")
    if not text.strip():
        return ""
    return text
