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
from dataclasses import dataclass
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

_lock = threading.Lock()
_test_set: Any = None


def _tests() -> Any:
    """Bandit's full default test set (every plugin and blacklist), built once."""
    global _test_set
    with _lock:
        if _test_set is None:
            conf = b_config.BanditConfig()
            _test_set = b_test_set.BanditTestSet(conf, {})
    return _test_set


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


class _RecordingTester(b_tester.BanditTester):  # type: ignore[misc]
    """Keeps the node each result was found on, which Bandit itself forgets."""

    def run_tests(self, raw_context: dict, checktype: str) -> dict:
        before = len(self.results)
        scores = super().run_tests(raw_context, checktype)
        for result in self.results[before:]:
            result._protege_node = raw_context.get("node")
        return scores


def parse_nosec(lines: list[str], allowed: list[bool] | None = None) -> dict[int, set[str]]:
    """Bandit's ``# nosec`` waivers by 1-based line: an empty set waives every test on the line.

    ``allowed[i]`` False ignores a waiver on line i (the screen ignores waivers a suggestion wrote).
    """
    waivers: dict[int, set[str]] = {}
    for i, line in enumerate(lines):
        if "nosec" not in line.lower() or (allowed is not None and not allowed[i]):
            continue
        m = _NOSEC.search(line)
        if m:
            waivers[i + 1] = set(_TEST_ID.findall(m.group("tests") or ""))
    return waivers


def _char_col(line: str, byte_col: int) -> int:
    """AST columns count UTF-8 bytes; editors and our findings count characters."""
    if byte_col <= 0 or line.isascii():
        return max(byte_col, 0)
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def _span(result: Any, lines: list[str]) -> tuple[int, int, int, int]:
    """(line, col, end_line, end_col) of what an issue is about, 1-based lines, byte columns."""
    node = getattr(result, "_protege_node", None)
    line = int(result.lineno or 1)
    col = max(int(result.col_offset or 0), 0)
    if not isinstance(node, ast.AST) or not hasattr(node, "lineno"):
        # File-level checks (trojan source): the reported line.
        return line, col, line, len(lines[line - 1].encode("utf-8")) if 0 < line <= len(lines) else col
    start = min((line, col), (node.lineno, node.col_offset))
    body = getattr(node, "body", None)
    if isinstance(body, list) and body and not isinstance(node, ast.ExceptHandler):
        # A compound statement's finding is about its header (decorators, defaults, context
        # managers), not about every line of its body.
        first = body[0]
        return start[0], start[1], first.lineno, first.col_offset
    end_line = node.end_lineno or node.lineno
    end_col = node.end_col_offset if node.end_col_offset is not None else 0
    return start[0], start[1], end_line, end_col


def run_bandit(source: str, nosec: dict[int, set[str]] | None = None) -> list[BanditIssue]:
    """Every issue Bandit's default checks find in ``source`` (which must parse)."""
    metrics = b_metrics.Metrics()
    metrics.begin(_FNAME)
    visitor = b_node_visitor.BanditNodeVisitor(
        _FNAME, io.BytesIO(source.encode("utf-8")), b_meta_ast.BanditMetaAst(), _tests(), False, nosec or {}, metrics
    )
    visitor.tester = _RecordingTester(visitor.testset, False, nosec or {}, metrics)
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
            )
        )
    return issues
