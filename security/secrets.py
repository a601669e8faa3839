"""Hard-coded secrets in suggestions, found with detect-secrets' detectors and heuristic filters.

detect-secrets' ad-hoc ``scan_line`` runs every plugin in "eager" mode through its dependency
injection machinery (1-10 ms a line, and it flags plain words). The screen instead calls the
detectors directly on the suggestion's lines only, and applies detect-secrets' own filters for
UUIDs, sequences, templates and indirect references. A secret's value never leaves this module:
findings carry its type and position only.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.filters import heuristic
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString
from detect_secrets.plugins.keyword import KeywordDetector

LOG = logging.getLogger(__name__)

# A public IP address in code is configuration, not a credential.
_SKIPPED_DETECTORS = frozenset({"IPPublicDetector"})
# File names only tell detect-secrets' keyword detector which assignment syntax to expect.
_FILENAME_FOR_LANGUAGE = {
    "python": "suggestion.py",
    "javascript": "suggestion.js",
    "javascriptreact": "suggestion.js",
    "typescript": "suggestion.js",
    "typescriptreact": "suggestion.js",
}
_QUOTES = ("'", '"', "`")

_lock = threading.Lock()
_detectors: list[tuple[Any, str, str]] | None = None  # (plugin, severity, confidence)


def _all_detectors() -> list[tuple[Any, str, str]]:
    global _detectors
    with _lock:
        if _detectors is None:
            found: list[tuple[Any, str, str]] = []
            classes: list[Any] = list(get_mapping_from_secret_type_to_class().values())
            for cls in classes:
                if cls.__name__ in _SKIPPED_DETECTORS or not issubclass(cls, RegexBasedDetector):
                    continue
                found.append((cls(), "HIGH", "HIGH"))  # a provider's token format: almost surely real
            found.append((KeywordDetector(), "MEDIUM", "MEDIUM"))
            found.append((Base64HighEntropyString(), "MEDIUM", "LOW"))
            found.append((HexHighEntropyString(), "MEDIUM", "LOW"))
            _detectors = found
    return _detectors


@dataclass
class SecretHit:
    """A likely secret on one line: its type and character span, never its value."""

    secret_type: str
    line: int
    col: int
    end_col: int
    severity: str
    confidence: str


def _filtered(secret: str, line: str, plugin: Any) -> bool:
    """detect-secrets' own heuristics for values that look secret but are not."""
    return bool(
        heuristic.is_sequential_string(secret)
        or heuristic.is_potential_uuid(secret)
        or heuristic.is_likely_id_string(secret, line, plugin)
        or heuristic.is_templated_secret(secret)
        or heuristic.is_prefixed_with_dollar_sign(secret)
        or heuristic.is_not_alphanumeric_string(secret)
    )


def _token_end(text: str, end: int) -> int:
    """Some detectors return only a token's prefix group (``ghp``): extend the span over the whole token."""
    while end < len(text) and (text[end].isalnum() or text[end] in "_-+/="):
        end += 1
    return end


def scan_lines(lines: list[tuple[int, str]], language: str = "python") -> list[SecretHit]:
    """Secrets on the given (line number, text) pairs; each type is reported once per span."""
    filename = _FILENAME_FOR_LANGUAGE.get(language, "suggestion.txt")
    hits: list[SecretHit] = []
    for number, text in lines:
        if not text.strip():
            continue
        quoted = any(q in text for q in _QUOTES)
        seen: set[tuple[int, int]] = set()
        indirect: bool | None = None
        for plugin, severity, confidence in _all_detectors():
            # Keyword and entropy detectors only ever match quoted values in code; a provider
            # detector only when one of its patterns matches. Skipping the rest keeps a line ~50 us.
            if isinstance(plugin, RegexBasedDetector):
                if not any(p.search(text) for p in plugin.denylist):
                    continue
            elif not quoted:
                continue
            if indirect is None:
                indirect = bool(heuristic.is_indirect_reference(text))
            if indirect:
                break
            try:
                found = plugin.analyze_line(filename=filename, line=text, line_number=number)
            except Exception as err:  # a detector bug must not take the screen down
                LOG.warning("detect-secrets %s failed on a line: %s", type(plugin).__name__, err)
                continue
            for secret in found:
                value = secret.secret_value or ""
                if not value or _filtered(value, text, plugin):
                    continue
                col = text.find(value)
                span = (col, _token_end(text, col + len(value))) if col >= 0 else (0, len(text))
                if span in seen:
                    continue  # the same value found by a weaker detector too
                seen.add(span)
                hits.append(SecretHit(secret.type, number, span[0], span[1], severity, confidence))
    return hits
