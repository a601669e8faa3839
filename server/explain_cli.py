"""``protege explain FILE:LINE``: the editor's "Explain this code" from the command line (in-process, no server)."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("protege")

_LOCATION = re.compile(r"^(?P<file>.+):(?P<start>\d+)(?:-(?P<end>\d+))?$")


def parse_location(text: str) -> tuple[Path, int, int | None]:
    """FILE:LINE or FILE:START-END (1-based, inclusive) -> (path, start, end or None) 0-based.

    Raises ValueError when malformed.
    """
    m = _LOCATION.match(text)
    if not m:
        raise ValueError(f"expected FILE:LINE or FILE:START-END (1-based), got {text!r}")
    start = int(m.group("start"))
    end = int(m.group("end") or start)
    if start < 1 or end < start:
        raise ValueError(f"line numbers are 1-based and START <= END, got {text!r}")
    return Path(m.group("file")), start - 1, (end - 1) if m.group("end") else None


def open_existing_index(root: Path, cache_dir: str | None) -> tuple[Any, str | None]:
    """The workspace's index if one was built (never creates one), else None and why."""
    from indexing.config import IndexConfig

    config = IndexConfig(cache_dir=cache_dir)
    if not (config.resolved_cache_dir(root) / "catalog.sqlite3").exists():
        return None, f"the workspace {root} has no repository index"
    try:
        from indexing.api import RepoIndex

        return RepoIndex.open(root, config), None
    except Exception as exc:  # explain still answers without the index
        return None, f"the repository index of {root} could not be opened ({exc})"


def _run(args: argparse.Namespace) -> int:
    from server.explain import ExplainContext, ExplainInputError, ExplainRequest, explain

    try:
        path, start, end = parse_location(args.location)
    except ValueError as exc:
        print(f"protege: {exc}", file=sys.stderr)
        return 2
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"protege: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    if not 1 <= args.max_tokens <= 1024:
        print(f"protege: --max-tokens must be from 1 to 1024, got {args.max_tokens}", file=sys.stderr)
        return 2
    root = Path(args.workspace).expanduser().resolve()
    if not root.is_dir():
        print(f"protege: workspace {args.workspace} is not a directory", file=sys.stderr)
        return 2
    resolved = path.resolve()
    try:
        rel = resolved.relative_to(root).as_posix()
    except ValueError:
        rel = str(resolved)
    index, index_note = open_existing_index(root, args.cache_dir)
    engine, engine_note = None, None
    if args.no_summary:
        engine_note = "turned off (--no-summary)"
    else:
        from server.engine import Engine, EngineOptions

        engine = Engine(EngineOptions(model=args.model))
        engine.load()
        if not engine.ready:
            engine_note, engine = engine.error, None
    # FILE:LINE is a cursor (the definition around it is explained); START-END selects those lines whole.
    end_line, end_char = (start, 0) if end is None else (end + 1, 0)
    lines = text.split("\n")
    if end_line >= len(lines) and end is not None:
        end_line, end_char = len(lines) - 1, len(lines[-1])
    req = ExplainRequest(uri=resolved.as_uri(), path=rel, text=text, language_id=None, start_line=start,
                         start_char=0, end_line=end_line, end_char=end_char, max_new_tokens=args.max_tokens)
    ctx = ExplainContext(root=root, index=index, index_note=index_note, engine=engine, engine_note=engine_note)
    try:
        result = explain(req, ctx)
    except ExplainInputError as exc:
        print(f"protege: {exc}", file=sys.stderr)
        return 2
    finally:
        if index is not None:
            index.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(result.markdown())
    if result.error:
        print(f"protege: {result.error}", file=sys.stderr)
        return 1
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("explain", help="explain the code at FILE:LINE (or FILE:START-END) with sourced facts")
    p.add_argument("location", metavar="FILE:LINE", help="1-based line (the definition around it is explained) "
                                                         "or START-END lines")
    p.add_argument("--workspace", default=".", help="repository root, for the index (default: current directory)")
    p.add_argument("--cache-dir", default=None, help="index cache directory, when not the default")
    p.add_argument("--model", default=None, help="model directory for the summary (default: the starter student)")
    p.add_argument("--max-tokens", type=int, default=96, help="token budget of the generated summary")
    p.add_argument("--no-summary", action="store_true", help="facts only: do not load the model")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(func=_run)
