"""Screen policy: which findings block a suggestion, which annotate it, which are allowed.

A finding blocks when its severity and confidence both reach the block thresholds, annotates
when they reach the annotate thresholds, and is allowed otherwise; per-test overrides come
first. Defaults (the table with a reason per row is in docs/SECURITY_POLICY.md): block HIGH
severity at MEDIUM confidence or more (shell injection, disabled TLS, hard-coded provider tokens);
annotate anything from LOW severity at MEDIUM confidence; annotate the injection, code-execution,
deserialization, markup and password classes and requests without a timeout whatever Bandit's
confidence (Bandit rates SQL built by formatting LOW); never act on ``assert`` (B101), ``import
subprocess`` (B404) or subprocess without a shell (B603): ordinary code, and the safe form.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

RANKS = ("LOW", "MEDIUM", "HIGH")

# Annotated whatever Bandit's confidence: a suggestion in one of these classes is worth a look even when
# Bandit is unsure (string-built SQL is LOW confidence, any call with shell=True is LOW).
DEFAULT_ANNOTATE_TESTS = (
    "B102", "B307",                          # code execution: exec, eval
    "B602", "B604", "B605", "B606", "B607", "B609",  # shell / process injection
    "B608", "B610", "B611",                  # SQL injection (string-built SQL, Django extra/RawSQL)
    "B301", "B302", "B506", "B614",          # deserialization: pickle, marshal, yaml.load, torch.load
    "B308", "B701", "B702", "B703", "B704",  # markup injection (XSS)
    "B105", "B106", "B107",                  # hard-coded passwords
    "B113",                                  # requests without a timeout (hangs forever)
    "B201",                                  # Flask debug mode (remote code execution)
)
DEFAULT_IGNORE_TESTS = ("B101", "B404", "B603")
ACTIONS = ("allow", "annotate", "block")


def _rank(value: str, name: str) -> str:
    if not isinstance(value, str) or value.upper() not in RANKS:
        raise ValueError(f"policy option {name} must be one of LOW, MEDIUM, HIGH, not {value!r}")
    return value.upper()


def _ids(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"policy option {name} must be a list of test ids such as ['B101'], not {value!r}")
    return tuple(sorted({v.strip().upper() for v in value}))


@dataclass(frozen=True)
class Policy:
    """Thresholds by severity and confidence, plus per-test overrides (test ids like B602, SECRET, JS001)."""

    block_severity: str = "HIGH"
    block_confidence: str = "MEDIUM"
    annotate_severity: str = "LOW"
    annotate_confidence: str = "MEDIUM"
    ignore_tests: tuple[str, ...] = DEFAULT_IGNORE_TESTS
    block_tests: tuple[str, ...] = ()
    annotate_tests: tuple[str, ...] = DEFAULT_ANNOTATE_TESTS
    # A suggestion may not waive its own findings with `# nosec`; a waiver already in the file counts.
    honor_nosec_in_suggestion: bool = False
    # Check suggestions for hard-coded secrets (detect-secrets) in every language.
    check_secrets: bool = True

    def __post_init__(self) -> None:
        for name in ("block_severity", "block_confidence", "annotate_severity", "annotate_confidence"):
            object.__setattr__(self, name, _rank(getattr(self, name), name))
        for name in ("ignore_tests", "block_tests", "annotate_tests"):
            object.__setattr__(self, name, _ids(getattr(self, name), name))
        for name in ("honor_nosec_in_suggestion", "check_secrets"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"policy option {name} must be true or false, not {getattr(self, name)!r}")

    def action_for(self, test_id: str, severity: str, confidence: str) -> str:
        """``"block"``, ``"annotate"`` or ``"allow"`` for one finding."""
        test_id = test_id.upper()
        if test_id in self.block_tests:
            return "block"
        if test_id in self.ignore_tests:
            return "allow"
        sev, conf = RANKS.index(severity.upper()), RANKS.index(confidence.upper())
        if sev >= RANKS.index(self.block_severity) and conf >= RANKS.index(self.block_confidence):
            return "block"
        if test_id in self.annotate_tests:
            return "annotate"
        if sev >= RANKS.index(self.annotate_severity) and conf >= RANKS.index(self.annotate_confidence):
            return "annotate"
        return "allow"

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Policy:
        """Build from a camelCase (LSP settings) or snake_case dict; unknown or bad values raise ValueError."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ValueError(f"the security policy must be an object of options, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            snake = "".join("_" + c.lower() if c.isupper() else c for c in str(key)).lstrip("_")
            if snake not in known:
                raise ValueError(f"unknown security policy option {key!r}; known options: {', '.join(sorted(known))}")
            kwargs[snake] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """camelCase, as the editor settings spell it."""
        out: dict[str, Any] = {}
        for f in fields(self):
            parts = f.name.split("_")
            value = getattr(self, f.name)
            out[parts[0] + "".join(p.title() for p in parts[1:])] = list(value) if isinstance(value, tuple) else value
        return out
