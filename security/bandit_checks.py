"""Run Bandit's checks in-process on a source string and report each issue with the span it covers.

Bandit's own manager reads files and re-tokenizes them; a suggestion screen needs neither, so
this drives Bandit's node visitor directly with a test set built once per process. Each issue
keeps the AST node Bandit was visiting, so the screen can tell which characters an issue is
about (a compound statement's header, not its whole body).
"""

from __future__ import annotations

import ast
import io
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from bandit.core import config as b_config
from bandit.core import meta_ast as b_meta_ast
from bandit.core import metrics as b_metrics
from bandit.core import node_visitor as b_node_visitor
from bandit.core import test_set as b_test_set
from bandit.core import tester as b_tester

LOG = logging.getLogger(__name__)
# An absolute name with no package above it: Bandit resolves a module name from the path and
# would otherwise probe the file system for __init__.py files on every call.
_FNAME = "/suggestion.py"
_NOSEC = re.compile(r"#\s*nosec\b:?\s*(?P<tests>[^#]*)", re.I)
_TEST_ID = re.compile(r"\bB\d{3}\b")
_COMMENT_OR_QUOTE = re.compile(r"""#|'''|\"\"\"|'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*\"""")

_lock = threading.Lock()
_VISIT_ALL = False  # tests set this to compare with visiting every node as Bandit does


class _Everything(frozenset):  # type: ignore[type-arg]
    def __contains__(self, item: object) -> bool:
        return True


_ALL_TYPES: frozenset[str] = _Everything()
_test_sets: dict[bool, Any] = {}
try:
    from bandit.plugins.trojansource import BIDI_CHARACTERS as _BIDI
except ImportError:  # pragma: no cover - older Bandit
    _BIDI = ("\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200f")
_BIDI_RE = re.compile("[" + "".join(_BIDI) + "]")


def _tests(with_trojansource: bool = True) -> Any:
    """Bandit's full default test set (every plugin and blacklist), built once.

    The trojan-source check (B613) re-reads and re-decodes the whole source on every run; when
    the source holds no bidirectional control character it cannot fire, so it is left out.
    """
    with _lock:
        if with_trojansource not in _test_sets:
            conf = b_config.BanditConfig()
            profile = {} if with_trojansource else {"exclude": ["B613"]}
            _test_sets[with_trojansource] = b_test_set.BanditTestSet(conf, profile)
    return _test_sets[with_trojansource]


@lru_cache(maxsize=4096)
def _import_names(statement: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Names one import statement adds, and its aliases, as BanditNodeVisitor.visit_Import(From) records them."""
    imports: list[str] = []
    aliases: list[tuple[str, str]] = []
    try:
        tree = ast.parse(statement)
    except SyntaxError:
        return (), ()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and node.module is None):
            for alias in node.names:
                if alias.asname:
                    aliases.append((alias.asname, alias.name))
                imports.append(alias.name)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                aliases.append((alias.asname or alias.name, f"{node.module}.{alias.name}"))
                imports.append(f"{node.module}.{alias.name}")
    return tuple(imports), tuple(aliases)


def import_context(statements: tuple[str, ...]) -> tuple[set[str], dict[str, str]]:
    """Bandit's import bookkeeping (imported names, alias -> qualified name) for import statements in order.

    A segment starts with the file's imports already known instead of re-visiting (and re-checking)
    them on every suggestion; each statement is parsed once per process.
    """
    imports: set[str] = set()
    aliases: dict[str, str] = {}
    for statement in statements:
        names, pairs = _import_names(statement)
        imports.update(names)
        aliases.update(pairs)
    return imports, aliases


@dataclass
class BanditIssue:
    """One Bandit result in segment coordinates (1-based lines, 0-based character columns)."""

    test_id: str
    test_name: str
    severity: str
    confidence: str
    cwe: int | None
    text: str
    line: int
    col: int
    end_line: int
    end_col: int
    reported_line: int  # the line Bandit itself reports (a keyword's line, say), within line..end_line


class _RecordingTester(b_tester.BanditTester):  # type: ignore[misc]
    """Keeps the node each result was found on, which Bandit itself forgets."""

    def run_tests(self, raw_context: dict, checktype: str) -> dict:
        before = len(self.results)
        scores = super().run_tests(raw_context, checktype)
        for result in self.results[before:]:
            result._protege_node = raw_context.get("node")
        return scores

    def _get_nosecs_from_contexts(self, context: dict, test_result: Any = None) -> set[str] | None:
        # Bandit asks this after every test on every node, walking the node's line range each time; with
        # no ``# nosec`` comment in the source the answer is always None (a third of the screen's time).
        if not self.nosec_lines:
            return None
        return super()._get_nosecs_from_contexts(context, test_result)  # type: ignore[no-any-return]


def _comment_col(line: str) -> int:
    """Column of the line's comment (``#`` outside strings), or -1."""
    pos = 0
    while True:
        m = _COMMENT_OR_QUOTE.search(line, pos)
        if m is None:
            return -1
        if m.group() == "#":
            return m.start()
        pos = m.end()


def _waived_tests(comment: str) -> set[str] | None:
    """Bandit's own reading of a ``# nosec`` comment: None if none, an empty set waives every test."""
    if not _NOSEC.search(comment):
        return None
    try:  # Bandit's parser also maps plugin names (``# nosec: hardcoded_password_string``) to ids
        from bandit.core.manager import _parse_nosec_comment

        return set(_parse_nosec_comment(comment) or set())
    except Exception:  # a private helper: fall back to ids only if it ever changes
        m = _NOSEC.search(comment)
        return set(_TEST_ID.findall(m.group("tests") or "")) if m else None


class _FocusedVisitor(b_node_visitor.BanditNodeVisitor):  # type: ignore[misc]
    """Bandit's visitor, skipping statements wholly outside ``focus`` (1-based segment lines).

    Findings outside the suggestion are discarded anyway; not visiting them is what keeps a
    suggestion inside a 300-line method cheap. Skipped statements still get their parent and
    sibling links, which some checks follow upwards from the nodes they do visit.
    """

    focus: tuple[int, int] | None = None
    tree: ast.Module | None = None
    active: frozenset[str] = frozenset()  # node types with a test or a visit_ method (see _active_types)

    def process(self, data: str) -> dict:
        """Bandit's process(), reusing the tree the screen already parsed (a second parse costs as much)."""
        self.generic_visit(self.tree if self.tree is not None else ast.parse(data))
        # Checks on the whole source rather than the AST (trojan source).
        self.context = {"file_data": self.fdata, "filename": self.fname, "lineno": 0, "linerange": [0, 1],
                        "col_offset": 0}
        self.update_scores(self.tester.run_tests(self.context, "File"))
        return self.scores

    def _in_focus(self, node: ast.AST) -> bool:
        if self.focus is None or not isinstance(node, (ast.stmt, ast.ExceptHandler)):
            return True
        return node.lineno <= self.focus[1] and (node.end_lineno or node.lineno) >= self.focus[0]

    def generic_visit(self, node: ast.AST) -> None:
        for _, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            for idx, child in enumerate(children):
                if not isinstance(child, ast.AST):
                    continue
                child._bandit_parent = node  # type: ignore[attr-defined]
                child._bandit_sibling = (  # type: ignore[attr-defined]
                    children[idx + 1] if isinstance(value, list) and idx + 1 < len(children) else None
                )
                if not self._in_focus(child):
                    continue
                if type(child).__name__ not in self.active:
                    # No test and no bookkeeping for this node type (Name, Load, BinOp, ...: most of a tree):
                    # Bandit would build a context for it and find no test to run. Its children still are.
                    self.generic_visit(child)
                elif self.pre_visit(child):
                    self.visit(child)
                    self.generic_visit(child)
                    self.post_visit(child)


@lru_cache(maxsize=2)
def _active_types(with_trojansource: bool) -> frozenset[str]:
    """Node types Bandit does anything for: those with tests, and those its visitor has a visit_ method for.

    Str and Bytes tests run on Constant nodes (Bandit's visit_Constant dispatches them).
    """
    names = {name for name in _tests(with_trojansource).tests if name != "File"}
    names |= {m[len("visit_"):] for m in dir(b_node_visitor.BanditNodeVisitor) if m.startswith("visit_")}
    if names & {"Str", "Bytes"}:
        names.add("Constant")
    return frozenset(names)


def parse_nosec(lines: list[str], allowed: Callable[[int, int], bool] | None = None) -> dict[int, set[str]]:
    """Bandit's ``# nosec`` waivers by 1-based line: an empty set waives every test on the line.

    ``allowed(index, comment_col)`` False ignores a waiver (the screen ignores waivers a suggestion wrote).
    """
    waivers: dict[int, set[str]] = {}
    for i, line in enumerate(lines):
        if "nosec" not in line.lower():
            continue
        col = _comment_col(line)
        if col < 0 or (allowed is not None and not allowed(i, col)):
            continue
        tests = _waived_tests(line[col:])
        if tests is not None:
            waivers[i + 1] = tests
    return waivers


def _char_col(line: str, byte_col: int) -> int:
    """AST columns count UTF-8 bytes; editors and our findings count characters."""
    if byte_col <= 0 or line.isascii():
        return max(byte_col, 0)
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def _span(result: Any, lines: list[str]) -> tuple[int, int, int, int]:
    """(line, col, end_line, end_col) of what an issue is about, 1-based lines, byte columns."""
    node: Any = getattr(result, "_protege_node", None)
    line = int(result.lineno or 1)
    col = max(int(result.col_offset or 0), 0)
    if not isinstance(node, ast.AST) or not hasattr(node, "lineno"):
        # File-level checks (trojan source): the reported line.
        return line, col, line, len(lines[line - 1].encode("utf-8")) if 0 < line <= len(lines) else col
    start = min((line, col), (node.lineno, getattr(node, "col_offset", 0)))
    body = getattr(node, "body", None)
    if isinstance(body, list) and body and not isinstance(node, ast.ExceptHandler):
        # A compound statement's finding is about its header (decorators, defaults, context
        # managers), not about every line of its body.
        first = body[0]
        return start[0], start[1], first.lineno, first.col_offset
    end_line = getattr(node, "end_lineno", None) or node.lineno
    end_col = getattr(node, "end_col_offset", None) or 0
    return start[0], start[1], end_line, end_col


def run_bandit(source: str, nosec: dict[int, set[str]] | None = None,
               imports: tuple[str, ...] = (), focus: tuple[int, int] | None = None,
               tree: ast.Module | None = None) -> list[BanditIssue]:
    """Every issue Bandit's default checks find in ``source`` (which must parse).

    ``imports`` are import statements preceding ``source`` in its file: their names and aliases are
    known to the checks (``sp.call(..., shell=True)`` after ``import subprocess as sp``), but the
    imports themselves are not checked again. With ``focus`` (1-based first and last line), only
    statements overlapping those lines are checked. ``tree`` is ``source`` already parsed.
    """
    metrics = b_metrics.Metrics()
    metrics.begin(_FNAME)
    with_trojansource = bool(_BIDI_RE.search(source))
    tests = _tests(with_trojansource=with_trojansource)
    visitor = _FocusedVisitor(
        _FNAME, io.BytesIO(source.encode("utf-8")), b_meta_ast.BanditMetaAst(), tests, False, nosec or {}, metrics
    )
    visitor.focus = focus
    visitor.tree = tree
    visitor.active = _active_types(with_trojansource) if not _VISIT_ALL else _ALL_TYPES
    visitor.tester = _RecordingTester(visitor.testset, False, nosec or {}, metrics)
    if imports:
        names, aliases = import_context(tuple(imports))
        visitor.imports.update(names)
        visitor.import_aliases.update(aliases)
    visitor.process(source)
    lines = source.split("\n")
    issues = []
    for result in visitor.tester.results:
        line, col, end_line, end_col = _span(result, lines)
        text_at = lines[line - 1] if 0 < line <= len(lines) else ""
        end_text = lines[end_line - 1] if 0 < end_line <= len(lines) else ""
        cwe = getattr(getattr(result, "cwe", None), "id", None)
        issues.append(
            BanditIssue(
                test_id=result.test_id,
                test_name=result.test,
                severity=result.severity,
                confidence=result.confidence,
                cwe=int(cwe) if cwe else None,
                text=result.text,
                line=line,
                col=_char_col(text_at, col),
                end_line=end_line,
                end_col=_char_col(end_text, end_col),
                reported_line=int(result.lineno or line),
            )
        )
    return issues
