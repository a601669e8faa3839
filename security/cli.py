"""``protege screen``: screen a file, or a suggestion at a position in it, and print one JSON object.

Exit codes: 0 when the verdict is allow, annotate or unscreened; 1 when it is block; 2 for bad
input (missing file, bad position, a suggestion without a position, a bad policy file).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from security.languages import SCREENED

LOG = logging.getLogger(__name__)

_LANGUAGE_BY_SUFFIX = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".jsx": "javascriptreact", ".ts": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".tsx": "typescriptreact",
}


def register(subparsers: Any) -> None:
    """Add the ``screen`` subcommand."""
    p = subparsers.add_parser(
        "screen",
        help="screen a file or a suggestion for insecure patterns and secrets (JSON on stdout)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="the document (screened whole unless --position and --suggestion-file are given)")
    p.add_argument("--position", metavar="LINE:COL", help="0-based line and column where the suggestion is inserted")
    p.add_argument("--suggestion-file", metavar="S", help="file holding the suggestion text")
    p.add_argument("--language", metavar="L",
                   help=f"LSP language id (default: from the file's extension); screened: {', '.join(SCREENED)}")
    p.add_argument("--policy", metavar="JSON", help="policy file (camelCase or snake_case keys), e.g. {\"blockSeverity\": \"MEDIUM\"}")
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"protege screen: {message}", file=sys.stderr)
    return 2


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{what} {path!r} does not exist") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path!r} is not UTF-8 text") from None
    except OSError as err:
        raise ValueError(f"cannot read {what} {path!r}: {err.strerror}") from None


def _position(text: str) -> tuple[int, int]:
    try:
        line_s, col_s = text.split(":")
        line, col = int(line_s), int(col_s)
    except ValueError:
        raise ValueError(f"--position must be LINE:COL with 0-based integers, not {text!r}") from None
    if line < 0 or col < 0:
        raise ValueError(f"--position must be 0-based non-negative integers, not {text!r}")
    return line, col


def run(args: argparse.Namespace) -> int:
    """Screen and print the JSON verdict; the exit code says whether the suggestion is blocked."""
    from security.advice import advice_for
    from security.policy import Policy
    from security.screen import screen_suggestion, screen_text

    if (args.position is None) != (args.suggestion_file is None):
        return _fail("--position and --suggestion-file go together: give both, or neither to screen the whole file")
    try:
        document = _read(args.file, "file")
        policy = Policy.from_dict(json.loads(_read(args.policy, "policy file"))) if args.policy else None
        language = args.language or _LANGUAGE_BY_SUFFIX.get(Path(args.file).suffix.lower(), "plaintext")
        if args.position is not None:
            line, col = _position(args.position)
            suggestion = _read(args.suggestion_file, "suggestion file")
            result = screen_suggestion(document, line, col, suggestion, language, policy)
        else:
            result = screen_text(document, language, policy)
    except json.JSONDecodeError as err:
        return _fail(f"the policy file is not valid JSON: {err}")
    except ValueError as err:
        return _fail(str(err))
    out = result.to_dict()
    out["file"] = args.file
    for finding in out["findings"]:
        advice = advice_for(finding["test_id"])
        finding["advice"] = None if advice is None else {"title": advice.title, "safe_idiom": advice.safe_idiom}
    print(json.dumps(out, indent=None))
    return 1 if result.verdict == "block" else 0
