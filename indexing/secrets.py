"""Keep secrets out of the index: find planted keys and tokens in text and mask them before chunking."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Formats with a recognisable shape; a match is masked whatever the surrounding code looks like.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private key block", re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
        re.S)),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b")),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b")),
    ("GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_\-]{20,}\b")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b")),
    ("Slack webhook", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,}")),
    ("OpenAI/Anthropic key", re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}\b")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b")),
    ("Stripe key", re.compile(r"\b(?:sk|rk|pk)_live_[0-9A-Za-z]{16,}\b")),
    ("Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
    ("JSON web token", re.compile(r"\beyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}")),
    ("password in URL", re.compile(r"(?<=://)[^/\s:@'\"]{1,64}:[^/\s@'\"]{3,128}(?=@)")),
]
# `api_key = "..."`-style assignments: only the quoted value is masked, and only when it looks random.
_ASSIGNMENT = re.compile(
    r"""(?ix)(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|password|passwd|client[_-]?secret)
        ['"]?\s*[:=]\s*['"]([^'"\s]{16,})['"]""")
MASK = "<redacted-secret>"


@dataclass(frozen=True)
class SecretFinding:
    kind: str
    line: int  # 0-based


def _looks_random(value: str) -> bool:
    classes = sum(bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]"))
    return classes >= 3 or (classes >= 2 and len(set(value)) >= 12)


def redact_secrets(text: str) -> tuple[str, list[SecretFinding]]:
    """Return ``text`` with secret values masked, and what was found (kind and line)."""
    spans: list[tuple[int, int, str]] = []
    for kind, pattern in _PATTERNS:
        for m in pattern.finditer(text):
            spans.append((m.start(), m.end(), kind))
    for m in _ASSIGNMENT.finditer(text):
        value = m.group(1)
        if MASK not in value and _looks_random(value):
            spans.append((m.start(1), m.end(1), "hard-coded credential"))
    if not spans:
        return text, []
    spans.sort()
    out: list[str] = []
    findings: list[SecretFinding] = []
    pos = 0
    for start, end, kind in spans:
        if start < pos:  # overlapping matches: the earlier one already masked this
            continue
        segment = text[start:end]
        out.append(text[pos:start])
        # Keep the line count so chunk line numbers still point at the right place.
        out.append(MASK + "\n" * segment.count("\n"))
        findings.append(SecretFinding(kind, text.count("\n", 0, start)))
        pos = end
    out.append(text[pos:])
    return "".join(out), findings
