"""Screen a suggestion (or a whole text) for insecure patterns and hard-coded secrets, and decide its fate.

This is the one library entry point used by the completion pipeline (every suggestion), by
distillation (teacher outputs) and by the index (insecure chunks). Python goes through Bandit's
checks in-process on the suggestion merged into its document, scoped to the enclosing function
and repaired when it is a fragment (security.pyfragment); JavaScript/TypeScript go through our
own rules (security.js_rules); every language is checked for secrets. Only findings on the
inserted text count. Code that cannot be parsed is reported as "unscreened", never as safe.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from security import js_rules, pyfragment
from security.bandit_checks import parse_nosec, run_bandit
from security.languages import JS_LANGUAGES
from security.languages import SCREENED as _SCREENED
from security.policy import ACTIONS, Policy
from security.secrets import scan_lines

LOG = logging.getLogger(__name__)

_DEFAULT_POLICY = Policy()
_PASSWORD_TESTS = frozenset({"B105", "B106", "B107"})
# Checks that fire on what a call lacks (a keyword that makes it safe). On a call the suggestion leaves
# open, the missing keyword may still come: those findings wait for the call to be closed.
_ABSENCE_TESTS = {
    "B113": ("timeout",),         # requests without a timeout
    "B701": ("autoescape",),      # jinja2 Environment without autoescape
    "B506": ("Loader",),          # yaml.load without a safe loader
    "B202": ("members", "filter"),  # tarfile extractall without a member filter
    "B614": ("weights_only",),    # torch.load without weights_only
    "B615": ("revision",),        # from_pretrained without a pinned revision
    "B504": ("ssl_version",),     # ssl.wrap_socket without a protocol version
}
_QUOTED_VALUE = re.compile(r":\s*(['\"]).*\1\s*$", re.S)


@dataclass
class Finding:
    """One insecure pattern on the inserted text; positions are 0-based in the merged document."""

    test_id: str
    severity: str
    confidence: str
    line: int
    col: int
    end_line: int
    end_col: int
    message: str
    cwe: int | None
    source: str  # "bandit" | "secrets" | "js-rules"
    action: str = "allow"  # what the policy does with it: "block" | "annotate" | "allow"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScreenResult:
    """The verdict on one suggestion or text, with the findings behind it."""

    verdict: str  # "block" | "annotate" | "allow" | "unscreened"
    findings: list[Finding] = field(default_factory=list)
    reason: str | None = None
    language: str = "python"
    # How the Python code was made parseable: "skeleton", "scope", "scope-repaired", "statement-repaired" (or "").
    scope: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "findings": [f.to_dict() for f in self.findings],
            "reason": self.reason,
            "language": self.language,
            "scope": self.scope,
        }


def screened_languages() -> dict[str, str]:
    """LSP language id -> what screens it; any other language gets the secrets check only."""
    return dict(_SCREENED)


def _overlaps(span: tuple[int, int, int, int], inserted: tuple[int, int, int, int]) -> bool:
    l0, c0, l1, c1 = span
    i0, j0, i1, j1 = inserted
    return (l0, c0) < (i1, j1) and (i0, j0) < (l1, max(c1, c0 + 1) if l1 == l0 else c1)


def _merge(document: str, line: int, character: int, suggestion: str) -> tuple[list[str], tuple[int, int, int, int]]:
    """Document lines with the suggestion inserted, and the inserted span (line, col, end_line, end_col)."""
    lines = document.split("\n")
    if not (0 <= line < len(lines)):
        raise ValueError(f"line {line} is outside the document, which has {len(lines)} lines (0-based)")
    current = lines[line].rstrip("\r")
    if not (0 <= character <= len(current)):
        raise ValueError(f"character {character} is outside line {line}, which has {len(current)} characters")
    pieces = suggestion.split("\n")
    before, after = lines[line][:character], lines[line][character:]
    if len(pieces) == 1:
        merged_line = [before + pieces[0] + after]
        end = (line, character + len(pieces[0]))
    else:
        merged_line = [before + pieces[0], *pieces[1:-1], pieces[-1] + after]
        end = (line + len(pieces) - 1, len(pieces[-1]))
    return lines[:line] + merged_line + lines[line + 1:], (line, character, end[0], end[1])


def _decide(findings: list[Finding], policy: Policy) -> str:
    for f in findings:
        f.action = policy.action_for(f.test_id, f.severity, f.confidence)
    return max((f.action for f in findings), key=ACTIONS.index, default="allow")


def _secret_findings(lines: list[str], inserted: tuple[int, int, int, int], language: str) -> list[Finding]:
    i0, _, i1, _ = inserted
    found = []
    for hit in scan_lines([(i, lines[i]) for i in range(i0, i1 + 1)], language):
        span = (hit.line, hit.col, hit.line, hit.end_col)
        if _overlaps(span, inserted):
            found.append(Finding("SECRET", hit.severity, hit.confidence, hit.line, hit.col, hit.line, hit.end_col,
                                 f"Possible hard-coded secret: {hit.secret_type}.", 798, "secrets"))
    return found


@lru_cache(maxsize=16)
def _imports_before(head: str) -> tuple[str, ...]:
    # Keyed by the text above the scope, which stays the same while the user types inside one function.
    return tuple(pyfragment.collect_imports(head, len(head)))


def _python_findings(lines: list[str], inserted: tuple[int, int, int, int], policy: Policy,
                     max_scope_lines: int | None, repair: bool, interactive: bool = True,
                     ) -> tuple[list[Finding], str | None, str]:
    i0, _, i1, _ = inserted
    scope = pyfragment.choose_scope(lines, i0, i1)
    # Imports above the scope (cached), then local imports inside it above the suggestion, which
    # the focused visit below does not walk through.
    imports = _imports_before("\n".join(lines[:scope[0]]))
    local = "\n".join(lines[scope[0]:i0])
    if "import" in local:
        imports += tuple(pyfragment.collect_imports(local, len(local)))
    # The imports are not part of the segment: Bandit learns their names up front instead.
    segment, error = pyfragment.parseable_segment(lines, i0, i1, [], scope, max_scope_lines, repair)
    if segment is None:
        how = ", even after repairing the fragment" if repair else ""
        return [], f"the Python code does not parse{how}: {error}", ""
    if segment.kind != "scope":
        LOG.debug("screened a repaired fragment (%s)", segment.kind)
    seg_lines = segment.text.split("\n")

    def waiver_counts(index: int, col: int) -> bool:
        doc_line = segment.line_map[index] if index < len(segment.line_map) else None
        if doc_line is None:
            return False
        if policy.honor_nosec_in_suggestion or not (i0 <= doc_line <= i1):
            return True
        # On a line the suggestion touches, only a comment the document already had counts.
        return (doc_line == i0 and col < inserted[1]) or (doc_line == i1 and col >= inserted[3])

    findings = []
    inserted_rows = [k + 1 for k, m in enumerate(segment.line_map) if m is not None and i0 <= m <= i1]
    focus = (inserted_rows[0], inserted_rows[-1]) if inserted_rows else None
    for issue in run_bandit(segment.text, parse_nosec(seg_lines, waiver_counts), imports, focus, segment.tree):
        start_doc = segment.line_map[issue.line - 1] if issue.line - 1 < len(segment.line_map) else None
        if start_doc is None:
            continue  # on the imports or wrappers the screen added, not on the suggestion
        end_doc = segment.line_map[issue.end_line - 1] if issue.end_line - 1 < len(segment.line_map) else None
        end = (end_doc, issue.end_col) if end_doc is not None else (inserted[2], inserted[3])
        span = (start_doc, issue.col, end[0], end[1])
        if not _overlaps(span, inserted):
            continue
        if interactive and issue.test_id in _ABSENCE_TESTS and segment.repaired:
            # Left open by the suggestion: the call's brackets are still open at the end of its last line.
            call_text = "\n".join(lines[span[0]:i1 + 1])[span[1]:]
            left_open = bool(pyfragment.lex(call_text).brackets)
            if left_open and not _has_keyword(seg_lines, segment.line_map, i1, _ABSENCE_TESTS[issue.test_id]):
                continue  # an open call: its safe keyword may be the next thing typed
        findings.append(Finding(issue.test_id, issue.severity, issue.confidence, span[0], span[1], span[2],
                                span[3], _redacted(issue.test_id, issue.text), issue.cwe, "bandit"))
    if segment.tree is not None:
        findings += _password_findings(segment, inserted, {(f.line, f.test_id) for f in findings})
    return findings, None, segment.kind


def _has_keyword(seg_lines: list[str], line_map: list[int | None], doc_line: int, names: tuple[str, ...]) -> bool:
    """Whether the segment's copy of ``doc_line`` passes one of ``names`` a real value (not the repair's ``_``)."""
    for row, mapped in enumerate(line_map):
        if mapped == doc_line and row < len(seg_lines):
            if any(re.search(rf"\b{n}\s*=\s*(?!_\b)[^\s,)]", seg_lines[row]) for n in names):
                return True
    return False


# Names that hold a password or secret (Bandit's own candidates: password, pass, passwd, pwd, secret, token).
_SECRET_NAME = re.compile(r"pas+wo?r?d|pass(phrase)?$|^pass_|pwd|token|secrete?", re.IGNORECASE)
_MIN_LITERAL = 3  # characters of literal text an f-string needs to count as hard-coded


def _literal_part(node: ast.AST) -> str | None:
    """The hard-coded text of a value: a string constant, or an f-string's literal pieces joined."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    return None


def _name_of(target: ast.AST) -> str:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
        return str(target.slice.value)
    return ""


def _password_findings(segment: pyfragment.Segment, inserted: tuple[int, int, int, int],
                       seen: set[tuple[int, str]]) -> list[Finding]:
    """Hard-coded passwords Bandit does not see: f-string values (Bandit skips them), keyword-only
    defaults, dict entries. Same ids as Bandit's (B105 assignment/dict, B106 keyword, B107 default)."""
    assert segment.tree is not None
    hits: list[tuple[str, ast.expr, str]] = []  # (test id, value node, name)
    for node in ast.walk(segment.tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                hits.append(("B105", node.value, _name_of(t)))
        elif isinstance(node, ast.keyword) and node.arg:
            hits.append(("B106", node.value, node.arg))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            positional = a.posonlyargs + a.args
            for arg, default in zip(positional[len(positional) - len(a.defaults):], a.defaults, strict=True):
                hits.append(("B107", default, arg.arg))
            for arg, kw_default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
                if kw_default is not None:
                    hits.append(("B107", kw_default, arg.arg))
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if isinstance(k, ast.Constant) and isinstance(k.value, str):
                    hits.append(("B105", v, k.value))
    found: list[Finding] = []
    for test_id, value, name in hits:
        text = _literal_part(value)
        if not name or text is None or not _SECRET_NAME.search(name):
            continue
        is_fstring = isinstance(value, ast.JoinedStr)
        if (is_fstring and len(text.strip()) < _MIN_LITERAL) or (not is_fstring and not text):
            continue
        line = value.lineno - 1
        doc = segment.line_map[line] if line < len(segment.line_map) else None
        if doc is None:
            continue
        end_row = (value.end_lineno or value.lineno) - 1
        end_doc = segment.line_map[end_row] if end_row < len(segment.line_map) else None
        span = (doc, value.col_offset, end_doc if end_doc is not None else doc, value.end_col_offset or 0)
        if not _overlaps(span, inserted) or (doc, test_id) in seen:
            continue
        seen.add((doc, test_id))
        kind = "an f-string with hard-coded text" if is_fstring else "a string literal"
        found.append(Finding(test_id, "LOW", "MEDIUM", *span,
                             f"Possible hard-coded password: {name!r} is set from {kind}.", 259, "protege"))
    return found


def _redacted(test_id: str, message: str) -> str:
    """Bandit's hard-coded password messages quote the password; diagnostics and logs must not."""
    if test_id in _PASSWORD_TESTS:
        return _QUOTED_VALUE.sub(": <redacted>", message)
    return message


def _js_findings(lines: list[str], inserted: tuple[int, int, int, int]) -> list[Finding]:
    i0, j0, i1, j1 = inserted
    block = lines[i0:i1 + 1]
    starts = [0]
    for text in block:
        starts.append(starts[-1] + len(text) + 1)
    findings = []
    context = "\n".join(lines[:i0]) if i0 else ""
    for hit in js_rules.scan("\n".join(block), context):
        def pos(offset: int) -> tuple[int, int]:
            k = max(i for i in range(len(block)) if starts[i] <= offset)
            return i0 + k, offset - starts[k]

        (l0, c0), (l1, c1) = pos(hit.start), pos(max(hit.end - 1, hit.start))
        span = (l0, c0, l1, c1 + 1)
        if _overlaps(span, inserted):
            findings.append(Finding(hit.rule.test_id, hit.severity, hit.confidence, *span, hit.rule.message,
                                    hit.rule.cwe, "js-rules"))
    return findings


# Context lines around a suggestion beyond which the screen narrows to the suggestion's own statement.
MAX_SCOPE_LINES = 400


def screen_suggestion(document: str, line: int, character: int, suggestion: str, language: str = "python",
                      policy: Policy | None = None) -> ScreenResult:
    """Screen ``suggestion`` inserted at 0-based (line, character) of ``document``; only inserted text counts.

    Raises ValueError when the position is outside the document.
    """
    return _screen(document, line, character, suggestion, language, policy, MAX_SCOPE_LINES, True, True)


def _screen(document: str, line: int, character: int, suggestion: str, language: str,
            policy: Policy | None, max_scope_lines: int | None, repair: bool,
            interactive: bool = False) -> ScreenResult:
    policy = policy or _DEFAULT_POLICY
    language = language.lower() if isinstance(language, str) else ""
    lines, inserted = _merge(document, line, character, suggestion)
    if not suggestion.strip():
        return ScreenResult("allow", [], None, language)
    findings: list[Finding] = []
    reason: str | None = None
    scope = ""
    if language == "python":
        findings, reason, scope = _python_findings(lines, inserted, policy, max_scope_lines, repair, interactive)
    elif language in JS_LANGUAGES:
        findings = _js_findings(lines, inserted)
    else:
        reason = (f"no insecure-pattern rules for language {language!r} (screened: "
                  f"{', '.join(sorted(_SCREENED))}); checked for hard-coded secrets only")
    if policy.check_secrets:
        findings += _secret_findings(lines, inserted, language)
    findings.sort(key=lambda f: (f.line, f.col, f.test_id))
    verdict = _decide(findings, policy)
    if reason is not None and verdict != "block":
        verdict = "unscreened"
    return ScreenResult(verdict, findings, reason, language, scope)


def screen_text(text: str, language: str = "python", policy: Policy | None = None,
                repair: bool = False) -> ScreenResult:
    """Screen a whole text (a file, an index chunk, a teacher output): every line counts as inserted.

    A text is taken as complete: Python that does not parse is "unscreened". ``repair=True`` treats
    it as a fragment instead (a generation cut at its token limit) and closes what it left open.
    """
    return _screen("", 0, 0, text, language, policy, None, repair)
