"""Make a Python suggestion parseable in context: scope it to its enclosing statement and repair fragments.

Bandit needs an AST, and a completion is usually a fragment: a line cut before its closing
brackets, a block header without a body, a ``try`` without its handler yet. Parsing the whole
document on every keystroke is too slow (~100 ms for 2,000 lines), so the screen parses only the
enclosing function (or top-level statement) plus the file's imports, and, when that does not
parse, closes what the fragment left open. Every segment line keeps the document line it came from,
so findings map back to the document exactly.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache

LOG = logging.getLogger(__name__)

# One coarse token at a time; strings are consumed by _STRING_BODY so brackets inside them never count.
_TOKEN = re.compile(
    r"""(?P<quote>'''|\"\"\"|'|")
      |(?P<comment>\#[^\n]*)
      |(?P<open>[(\[{])
      |(?P<close>[)\]}])
      |(?P<cont>\\\r?\n)
      |(?P<nl>\r?\n)
      |(?P<other>[^'"\#()\[\]{}\n\\]+|\\)""",
    re.X,
)
_STRING_BODY = {
    "'": re.compile(r"(?:[^'\\\n]|\\.)*'"),
    '"': re.compile(r'(?:[^"\\\n]|\\.)*"'),
    "'''": re.compile(r"(?:[^\\]|\\.)*?'''", re.S),
    '"""': re.compile(r'(?:[^\\]|\\.)*?"""', re.S),
}
_CLOSER = {"(": ")", "[": "]", "{": "}"}
# A logical line ending in one of these still needs an operand before it can parse.
_DANGLING_OPERATOR = re.compile(
    r"(?:[-+*/%@&|^~<>=!]=?|\*\*|//|<<|>>|->|:=|\.|\b(?:and|or|not|in|is|if|else|await|lambda|yield|as)\b)\s*$"
)
_NEEDS_OPERAND_EVEN_AT_END = re.compile(r"(?:[-+*/%@&|^~<>=!]=?|\*\*|//|<<|>>|->|:=|\.|\b(?:and|or|not|in|is|await|lambda|as)\b)\s*$")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
# A comprehension cut inside its `for` clause: `(f(x) for` or `(f(x) for x`.
_OPEN_FOR = re.compile(r"\bfor(?:\s+[\w, ]*)?$")
_WORD = re.compile(r"[A-Za-z_]\w*|@|\S")
_LEADING_WORD = re.compile(r"\s*(async\s+def|[A-Za-z_]\w*|@|\S)")
_CLAUSE_WORDS = frozenset({"else", "elif", "except", "finally", "case"})
_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+[\w.]+[ \t]+import[ \t]*\([^)]*\)|(?:from[ \t]+[\w.]+[ \t]+)?import[ \t]+[^\n#;\\]+)",
    re.M,
)


@dataclass
class LexState:
    """What a text leaves open at its end, and its logical lines (for block repair)."""

    brackets: list[str] = field(default_factory=list)
    open_quote: str | None = None
    continued: bool = False  # ends in a backslash continuation
    ends_in_comment: bool = False  # the last token is a comment: appended code must start a new line
    # (indent string, first word, last significant text, ends with ':') of each logical line
    logical: list[tuple[str, str, str, bool]] = field(default_factory=list)


def lex(text: str) -> LexState:
    """Scan ``text`` once, tracking brackets, strings, comments and logical lines."""
    state = LexState()
    pos, n = 0, len(text)
    line_start = 0  # start of the current logical line
    tail = ""  # last significant text of the current logical line
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the pattern accepts every character
            pos += 1
            continue
        kind = m.lastgroup
        end = m.end()
        if kind == "quote":
            quote = m.group()
            body = _STRING_BODY[quote].match(text, end)
            if body is None:
                state.open_quote = quote
                pos = n
                tail = quote
                break
            end = body.end()
            tail = quote
        elif kind == "open":
            state.brackets.append(m.group())
            tail = m.group()
        elif kind == "close":
            if state.brackets:
                state.brackets.pop()
            tail = m.group()
        elif kind == "nl":
            if not state.brackets:
                _end_logical(state, text, line_start, tail)
                line_start = end
                tail = ""
        elif kind == "comment":
            state.ends_in_comment = True
            pos = end
            continue
        elif kind == "other":
            stripped = m.group().strip()
            if stripped:
                tail = stripped
        if kind != "other" or m.group().strip():
            state.ends_in_comment = False
        pos = end
    state.continued = text.endswith("\\") or text.endswith("\\\n")
    if state.open_quote is None and not state.brackets and text[line_start:].strip():
        _end_logical(state, text, line_start, tail)
    elif state.brackets or state.open_quote:
        # An unfinished logical line: record it so block repair knows its indentation.
        _end_logical(state, text, line_start, tail)
    return state


def _end_logical(state: LexState, text: str, start: int, tail: str) -> None:
    stop = text.find("\n", start)
    line = text[start:stop if stop >= 0 else len(text)]
    stripped = line.lstrip(" \t\f")
    if not stripped or stripped.startswith("#"):
        return
    indent = line[: len(line) - len(stripped)]
    word = _WORD.match(stripped)
    state.logical.append((indent, word.group() if word else "", tail, tail.endswith(":")))


def _body_indent(indent: str) -> str:
    return indent + ("\t" if "\t" in indent else "    ")


def repair_suffix(text: str) -> str:
    """Text to append so that a cut-off fragment becomes complete Python (may be empty).

    Closes an open string, fills a dangling operator with a placeholder name, closes open
    brackets in order, gives a trailing block header a ``pass`` body and a bare ``try`` a
    ``finally``. The result still has to be parsed: this is a repair, not a guarantee.
    """
    state = lex(text)
    out = state.open_quote or ""
    if state.ends_in_comment and state.brackets:
        out += "\n"  # closers after a trailing comment would be commented out
    tail = state.logical[-1][2] if state.logical else ""
    if state.continued:
        out += " _"  # a backslash continuation with nothing after it
    elif state.brackets and (tail.endswith(":") or _DANGLING_OPERATOR.search(tail)):
        out += " _"  # `call(x, shell=`, `{"k":`, `a +` inside brackets
    elif state.brackets and tail == "(" and not out:
        out += "_"  # `os.system(`: a call about to get its arguments (checks that read args[0] need one)
    elif not state.brackets and not state.open_quote and _NEEDS_OPERAND_EVEN_AT_END.search(tail):
        out += " _"
    out += "".join(_CLOSER[b] for b in reversed(state.brackets))
    # Closing a string or brackets never leaves a line ending in ':', so the logical lines seen so
    # far decide the rest (no second pass over a long scope).
    logical = state.logical
    if not out and logical and logical[-1][3]:
        # `...`, not `pass`: an `except X:` cut before its body must not look like `except X: pass` (B110).
        out += "\n" + _body_indent(logical[-1][0]) + "..."
    out += "".join(
        f"\n{indent}finally:\n{_body_indent(indent)}pass" for indent in _unhandled_try_indents(logical)
    )
    return out


def _unhandled_try_indents(logical: list[tuple[str, str, str, bool]]) -> list[str]:
    """Indentation of each ``try:`` still waiting for ``except``/``finally`` at the end, innermost first."""
    stack: list[tuple[int, str, bool, str]] = []  # (indent width, word, handled, indent)
    for indent, word, _tail, is_header in logical:
        width = len(indent.expandtabs(8))
        while stack and stack[-1][0] > width:
            stack.pop()
        if stack and stack[-1][0] == width:
            if word in ("except", "finally") and stack[-1][1] == "try":
                top = stack.pop()
                stack.append((top[0], "try", True, top[3]))
                continue
            if word in _CLAUSE_WORDS:
                continue
            stack.pop()
        if is_header:
            stack.append((width, word, False, indent))
    return [entry[3] for entry in reversed(stack) if entry[1] == "try" and not entry[2]]


def parse_tree(text: str) -> tuple[ast.Module | None, SyntaxError | None]:
    """The AST of ``text``, or None and the SyntaxError (with its message)."""
    try:
        tree = compile(text, "<segment>", "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                       dont_inherit=True)
    except SyntaxError as err:  # IndentationError and TabError are SyntaxErrors too
        return None, err
    except (ValueError, MemoryError, RecursionError) as err:  # null bytes, absurd nesting
        return None, SyntaxError(str(err))
    return tree, None


def parses(text: str) -> SyntaxError | None:
    """``None`` when ``text`` is valid Python, else the SyntaxError."""
    return parse_tree(text)[1]


def repair(text: str) -> tuple[str, SyntaxError | None]:
    """``text`` plus the repair it needs; the error is ``None`` when the result parses."""
    fixed, err, _tree = repair_tree(text)
    return fixed, err


def repair_tree(text: str) -> tuple[str, SyntaxError | None, ast.Module | None]:
    """Like :func:`repair`, also returning the AST of the result (each text is parsed once)."""
    tree, err = parse_tree(text)
    if tree is not None:
        return text, None, tree
    fixed = text + repair_suffix(text)
    tree, err = parse_tree(fixed)
    if err is not None and "expected ':'" in str(err.msg):
        fixed2 = fixed.rstrip() + ":"
        fixed2 += repair_suffix(fixed2)
        tree2, err2 = parse_tree(fixed2)
        if tree2 is not None:
            return fixed2, None, tree2
    if err is not None and _OPEN_FOR.search(text.rstrip()):
        stem = text.rstrip()
        for tail in (" in _", " _ in _"):
            fixed4 = stem + tail + repair_suffix(stem + tail)
            tree4, _err4 = parse_tree(fixed4)
            if tree4 is not None:
                return fixed4, None, tree4
    if err is not None:
        # `f(cmd, shell=True, text` closed as `text)` is a positional argument after a keyword one. A bare
        # name is a keyword being typed (`text=_`, which keeps the cut as written); anything else drops
        # the unfinished last argument, keeping the call and every argument before it.
        trimmed = trim_partial_argument(text)
        if trimmed != text and _IDENTIFIER.fullmatch(text[len(trimmed):].strip()):
            fixed5 = text + "=_" + repair_suffix(text + "=_")
            tree5, _err5 = parse_tree(fixed5)
            if tree5 is not None:
                return fixed5, None, tree5
        if trimmed != text:
            fixed3 = trimmed + repair_suffix(trimmed)
            tree3, err3 = parse_tree(fixed3)
            if tree3 is not None:
                return fixed3, None, tree3
    return fixed, err, tree


def trim_partial_argument(text: str) -> str:
    """``text`` cut back to just after the last comma (or the opening bracket) of its innermost open
    bracket; ``text`` itself when no bracket is open."""
    stack: list[int] = []  # for each open bracket: where its current item starts
    pos, n = 0, len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the pattern accepts every character
            pos += 1
            continue
        kind, end = m.lastgroup, m.end()
        if kind == "quote":
            body = _STRING_BODY[m.group()].match(text, end)
            if body is None:
                break
            end = body.end()
        elif kind == "open":
            stack.append(end)
        elif kind == "close":
            if stack:
                stack.pop()
        elif kind == "other" and stack and "," in m.group():
            stack[-1] = pos + m.group().rindex(",") + 1
        pos = end
    return text[:stack[-1]] if stack else text


@dataclass
class Segment:
    """Source handed to Bandit, and for each of its lines the document line it came from (or None)."""

    text: str
    line_map: list[int | None]
    kind: str  # "skeleton", "scope", "scope-repaired" or "statement-repaired"
    tree: ast.Module | None = None  # set once the segment has parsed
    repaired: bool = False  # text was added (closers, placeholders, bodies) or an unfinished argument dropped


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t\f"))


def _is_code(line: str) -> bool:
    stripped = line.lstrip()
    return bool(stripped) and not stripped.startswith("#")


def _first_word(line: str) -> str:
    m = _LEADING_WORD.match(line)
    return m.group(1) if m else ""


def enclosing_headers(lines: list[str], ref: int) -> list[int]:
    """Indexes of the block headers enclosing line ``ref``, outermost first (by indentation)."""
    headers: list[int] = []
    cur = _indent_of(lines[ref]) if _is_code(lines[ref]) else 10**9
    if cur == 0:
        return headers  # a top-level line has no enclosing block
    for i in range(ref - 1, -1, -1):
        line = lines[i]
        if line[:cur].isspace() and len(line) > cur:
            continue  # indented at least as deep as the current block: cheap to rule out
        if not _is_code(line):
            continue
        ind = _indent_of(line)
        if ind < cur and not line.lstrip().startswith((")", "]", "}")):
            if _first_word(line) in _CLAUSE_WORDS:
                # `else:`/`except:` belong to the statement that opened them: keep climbing at this level.
                cur = ind + 1
                continue
            headers.append(i)
            cur = ind
            if ind == 0:
                break
    headers.reverse()
    return headers


def _statement_start(lines: list[str], i: int) -> int:
    """Walk back from an indent-0 line to the start of its statement (past clauses, bodies and closers)."""
    while i > 0:
        line = lines[i]
        if (not _is_code(line) or _indent_of(line) > 0 or _first_word(line) in _CLAUSE_WORDS
                or line.lstrip().startswith((")", "]", "}"))):
            i -= 1
            continue
        break
    return _with_decorators(lines, i)


def _with_decorators(lines: list[str], i: int) -> int:
    indent = _indent_of(lines[i])
    j = i - 1
    while j >= 0 and _is_code(lines[j]) and _indent_of(lines[j]) == indent and lines[j].lstrip().startswith("@"):
        i = j
        j -= 1
    return i


def _block_word(lines: list[str], first: int, ref: int) -> str:
    """First word of the header of the block holding line ``first`` (indentation ``ref``)."""
    for i in range(first - 1, max(-1, first - 400), -1):
        line = lines[i]
        if _is_code(line) and _indent_of(line) < ref and not line.lstrip().startswith((")", "]", "}")):
            return _first_word(line)
    return ""


def choose_scope(lines: list[str], first: int, last: int, max_lines: int = 400) -> tuple[int, int, list[str]]:
    """Scope ``(start, end_exclusive, wrapper_indents)`` for an insertion spanning lines first..last.

    The scope is the outermost enclosing function (methods stay apart from their class), or the
    enclosing top-level statement; ``wrapper_indents`` are the indentations of the blocks around
    it, which the segment re-creates as ``if True:`` lines so the scope keeps its indentation.
    """
    chain = enclosing_headers(lines, first)
    start_idx = None
    for k, h in enumerate(chain):
        if _first_word(lines[h]) in ("def", "async def"):
            start_idx = k
            break
    if start_idx is None and chain:
        start_idx = 0
    if start_idx is None:
        start = _statement_start(lines, first) if _indent_of(lines[first]) == 0 else first
        wrappers_from: list[int] = []
    else:
        start = _with_decorators(lines, chain[start_idx])
        if _indent_of(lines[start]) == 0:
            start = _statement_start(lines, start)
        wrappers_from = chain[:start_idx]
    wrappers = [lines[h][: _indent_of(lines[h])] for h in wrappers_from]
    base = _indent_of(lines[start])
    if base > 0 and (not wrappers or _indent_of(lines[wrappers_from[0]]) > 0):
        wrappers.insert(0, "")
    # The scope ends with the statement the suggestion is in (its continuation lines, its block and
    # its own else/except clauses): later siblings cannot hold findings on the suggestion, and
    # parsing them would cost time on every keystroke. A cut block is closed by the repair.
    ref = _indent_of(lines[first]) if _is_code(lines[first]) else base
    # Bandit judges an except handler by its whole body (B110/B112: `except: pass`), so inside
    # one the rest of the handler stays.
    whole_block = _block_word(lines, first, ref) == "except"
    end = last + 1
    limit = min(len(lines), last + 1 + max_lines)
    while end < limit:
        line = lines[end]
        if _is_code(line):
            indent = _indent_of(line)
            stripped = line.lstrip()
            if indent < ref or (indent == ref and not whole_block and _first_word(line) not in _CLAUSE_WORDS):
                if not stripped.startswith((")", "]", "}")):
                    break
        end += 1
    return start, end, wrappers


@lru_cache(maxsize=4096)
def _import_ok(statement: str) -> bool:
    return parses(statement) is None


def collect_imports(document: str, before_offset: int) -> list[str]:
    """Import statements of ``document`` before ``before_offset``, each on one line, in order (broken ones dropped)."""
    found: list[str] = []
    # Search the literal word first (fast, in C), then check the line it is on: anchoring a regex at
    # every line start costs ~3 ms on a 2,000-line file, per suggestion.
    pos = document.find("import", 0, before_offset)
    while pos >= 0:
        line_start = document.rfind("\n", 0, pos) + 1
        m = _IMPORT.match(document, line_start, before_offset)
        if m is not None and m.end() > pos:
            text = m.group()
            text = " ".join(text.split()) if ("\n" in text or "\t" in text or "  " in text) else text.strip()
            if _import_ok(text):
                found.append(text)
            pos = document.find("import", m.end(), before_offset)
        else:
            pos = document.find("import", pos + 6, before_offset)
    return found


# Scopes with more lines than this above the suggestion are first tried as a skeleton.
SKELETON_MIN_LINES = 40


def _header_end(lines: list[str], h: int, limit: int) -> int | None:
    """Last line of the (possibly multi-line) block header starting at line ``h``."""
    for k in range(h, min(limit, h + 30)):
        if lines[k].split("#", 1)[0].rstrip().endswith(":"):
            return k
    return None


def _opener(lines: list[str], clause: int) -> int | None:
    """The `try`/`if`/`for`/`while`/`match` line an `else`/`except`/... clause belongs to."""
    indent = _indent_of(lines[clause])
    for i in range(clause - 1, -1, -1):
        if _is_code(lines[i]) and _indent_of(lines[i]) <= indent:
            if _indent_of(lines[i]) < indent:
                return None
            if _first_word(lines[i]) not in _CLAUSE_WORDS:
                return i
    return None


def skeleton(lines: list[str], start: int, first: int) -> list[str] | None:
    """Lines start..first-1 with everything blanked but the block headers leading to line ``first``.

    Statements above the suggestion hold no finding on it, yet parsing them costs most of the
    time in a long function. Blank lines keep every line number; an emptied block gets ``pass``.
    Returns None when the structure is unclear; the caller then parses the full scope.
    """
    if first - start < SKELETON_MIN_LINES:
        return None
    top = start
    while top < first and lines[top].lstrip().startswith("@"):
        top += 1
    top_end = _header_end(lines, top, first)
    if top_end is None:
        return None
    headers = [(top, top_end)]
    cur, i = _indent_of(lines[first]), first
    if _first_word(lines[first]) in _CLAUSE_WORDS:
        opened = _opener(lines, first)
        if opened is None or opened <= top_end:
            return None
        i = opened
        end = _header_end(lines, i, first)
        if end is None:
            return None
        headers.append((i, end))
    for j in range(i - 1, top_end, -1):
        line = lines[j]
        if not _is_code(line) or line.lstrip().startswith((")", "]", "}")):
            continue
        indent = _indent_of(line)
        if indent >= cur:
            continue
        end = _header_end(lines, j, first)
        if end is None:
            return None
        headers.append((j, end))
        cur = indent
        if _first_word(line) in _CLAUSE_WORDS:
            opener = _opener(lines, j)
            if opener is None or opener <= top_end:
                return None
            end = _header_end(lines, opener, first)
            if end is None:
                return None
            headers.append((opener, end))
        if cur <= _indent_of(lines[top]):
            return None  # climbed out of the scope: the indentation is not what it seems
    out = [""] * (first - start)
    for lo, hi in headers:
        for k in range(lo, hi + 1):
            out[k - start] = lines[k]
    for k in range(start, top):
        out[k - start] = lines[k]
    # A header whose body is now empty gets `pass` on its first (blanked) body line.
    for lo, hi in sorted(headers):
        nxt = next((k for k in range(hi + 1, first) if out[k - start].strip()), first)
        if _indent_of(lines[nxt]) > _indent_of(lines[lo]) and nxt <= first:
            if nxt < first or _is_code(lines[first]):
                continue
        slot = hi + 1
        if slot >= first or out[slot - start].strip():
            return None
        out[slot - start] = _body_indent(lines[lo][: _indent_of(lines[lo])]) + "pass"
    return out


def build_segments(lines: list[str], first: int, last: int, imports: list[str],
                   scope: tuple[int, int, list[str]] | None = None,
                   max_lines: int | None = None) -> list[Segment]:
    """Candidate segments for an insertion spanning document lines first..last, best first (not yet parsed).

    Candidates longer than ``max_lines`` are dropped (the statement alone is always kept): Bandit's
    cost grows faster than linearly with some statements (a 7,000-element literal takes it ~40 s).
    """
    start, end, wrappers = scope or choose_scope(lines, first, last)
    head = list(imports) + [f"{indent}if True:" for indent in wrappers]
    head_map: list[int | None] = [None] * len(head)
    candidates = [("scope", start, end)]
    skeleton_lines = skeleton(lines, start, first)
    if skeleton_lines is not None:
        candidates.insert(0, ("skeleton", start, end))
    if end != last + 1:
        candidates.append(("scope-repaired", start, last + 1))
    if first != start:
        candidates.append(("statement-repaired", first, last + 1))
    if max_lines is not None:
        kept = [c for c in candidates if c[2] - c[1] <= max_lines]
        if len(kept) < len(candidates):
            LOG.debug("scope of %d lines is over the %d-line budget; screening a narrower segment", end - start, max_lines)
        candidates = kept or [("statement-repaired", first, last + 1)]
    segments = []
    for kind, lo, hi in candidates:
        body = lines[lo:hi]
        if kind == "skeleton" and skeleton_lines is not None:
            body = skeleton_lines + lines[first:hi]
        local_head, local_map = head, head_map
        if kind == "statement-repaired":
            indent = lines[first][: _indent_of(lines[first])]
            local_head = list(imports) + (["if True:"] if indent else [])
            local_map = [None] * len(local_head)
        segments.append(Segment("\n".join(local_head + body) + "\n", local_map + list(range(lo, hi)), kind))
    return segments


def parseable_segment(lines: list[str], first: int, last: int, imports: list[str],
                      scope: tuple[int, int, list[str]] | None = None,
                      max_lines: int | None = None, allow_repair: bool = True) -> tuple[Segment | None, str]:
    """The first candidate segment that parses (repairing fragments), or None with the last parse error."""
    error = "empty"
    for seg in build_segments(lines, first, last, imports, scope, max_lines):
        if not allow_repair:
            if seg.kind != "scope":
                continue
            tree, err = parse_tree(seg.text)
            if tree is not None:
                return Segment(seg.text, seg.line_map, seg.kind, tree), ""
        else:
            # The scope is cut after the suggestion's statement, so even "scope" may need a block closed.
            fixed, err, tree = repair_tree(seg.text.rstrip("\n"))
            if tree is not None:
                extra = fixed.count("\n") + 1 - len(seg.line_map)
                return Segment(fixed + "\n", seg.line_map + [None] * max(0, extra), seg.kind, tree,
                               repaired=fixed != seg.text.rstrip("\n")), ""
        assert err is not None
        error = f"{err.msg} (line {err.lineno})" if err.lineno else str(err.msg)
    return None, error
