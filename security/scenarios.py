"""Completion scenarios derived from real files and Bandit's whole-file findings (for tests and benchmarks).

Each statement of a file becomes a completion: prefix = the file up to the statement (or to the
middle of its first line), suggestion = the rest of the statement (sometimes cut before its
closing brackets, which the suffix then either keeps, as an editor's auto-close would, or
lacks), suffix = the rest of the file. A scenario expects the test ids that Bandit reports on the
suggestion's text when it scans the whole file; a statement Bandit does not flag expects none.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from security.bandit_checks import BanditIssue, parse_nosec, run_bandit

_CLOSERS = ")]}"


@dataclass(frozen=True)
class Scenario:
    """One completion: the document without the suggestion, the cursor, the suggestion, what Bandit says."""

    file: str
    kind: str  # "line", "mid-line", "cut" (closers lost) or "cut-autoclosed" (closers in the suffix)
    document: str
    line: int
    character: int
    suggestion: str
    expected: frozenset[str]  # Bandit test ids on the suggestion in a whole-file scan
    waived: bool  # the suggestion carries a `# nosec` waiver (Bandit honours it, the screen by design not)


def whole_file_issues(source: str) -> list[BanditIssue]:
    """What Bandit reports on the whole file, honouring ``# nosec`` as its own scan does."""
    return run_bandit(source, parse_nosec(source.split("\n")))


def _offsets(lines: list[str]) -> list[int]:
    starts = [0]
    for text in lines:
        starts.append(starts[-1] + len(text) + 1)
    return starts


def _char(line: str, byte_col: int) -> int:
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore")) if not line.isascii() else byte_col


def _statements(tree: ast.AST) -> list[ast.stmt | ast.ExceptHandler]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.stmt, ast.ExceptHandler))]


def scenarios_for_source(name: str, source: str) -> list[Scenario]:
    """All scenarios of one file (empty when the file does not parse: Bandit skips it too)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.split("\n")
    starts = _offsets(lines)
    issues = whole_file_issues(source)
    spans = [(starts[i.line - 1] + i.col, starts[i.end_line - 1] + i.end_col, i.test_id) for i in issues]
    out: list[Scenario] = []
    seen: set[tuple[int, int, str]] = set()
    for node in _statements(tree):
        line = node.lineno - 1
        text = lines[line]
        first_col = _char(text, node.col_offset)
        if text[:first_col].strip():
            continue  # a second statement on the line (`a; b`): the line's first statement covers it
        end_lineno = node.end_lineno or node.lineno
        end = starts[end_lineno - 1] + _char(lines[end_lineno - 1], node.end_col_offset or 0)
        begin = starts[line] + first_col
        code_end = len(text.rstrip())
        mid = first_col + max(1, (code_end - first_col) // 2)
        cursors = [("line", begin)]
        if starts[line] + mid < end and mid < code_end:
            cursors.append(("mid-line", starts[line] + mid))
        body = source[begin:end]
        stripped = body.rstrip(_CLOSERS + " \t\r\n")
        cut_at = begin + len(stripped)
        for kind, cursor in cursors:
            variants = [(kind, cursor, end, source[end:])]
            if kind == "line" and cut_at < end and cut_at > cursor:
                variants.append(("cut", cursor, cut_at, source[end:]))
                variants.append(("cut-autoclosed", cursor, cut_at, source[cut_at:]))
            for vkind, lo, hi, suffix in variants:
                if (lo, hi, vkind) in seen:
                    continue
                seen.add((lo, hi, vkind))
                suggestion = source[lo:hi]
                # Bandit's issues whose span overlaps the suggestion (an empty span counts as one character)
                expected = frozenset(tid for s, e, tid in spans if s < hi and lo < max(e, s + 1))
                cur_line = source.count("\n", 0, lo)
                out.append(Scenario(name, vkind, source[:lo] + suffix, cur_line, lo - starts[cur_line], suggestion,
                                    expected, "nosec" in suggestion.lower()))
    return out


def corpus_files(root: Path) -> list[Path]:
    """The corpus's Python files, sorted (the package marker excluded)."""
    return sorted(p for p in root.rglob("*.py") if p.name != "__init__.py")
