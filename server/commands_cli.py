"""Server-side subcommands: ``serve``, ``complete`` and ``status``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

SWITCH_INTERVAL_S = 0.001  # GIL hand-over interval in the server process (Python default: 0.005)


def _serve(args: argparse.Namespace) -> int:
    from server.app import create_server

    overrides: dict[str, Any] = {}
    if args.dtype:
        overrides["dtype"] = args.dtype
    if args.quantize:
        overrides["quantize"] = args.quantize
    server = create_server(model=args.model, overrides=overrides)
    from server.app import LspLogHandler

    # Our own loggers only: third-party plugin noise (e.g. Bandit's optional formatters) stays on stderr.
    handler = LspLogHandler(server)
    for name in ("protege", "server", "indexing", "security", "distill_code"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    # Model, retrieval and index threads share the GIL: a decoding thread waiting for it after each op
    # waited up to the default 5 ms switch interval while an index update ran Python (completion p50
    # 979 ms -> 514 ms with 0.5 ms, before indexing stepped aside for requests; see indexing/foreground.py).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if args.tcp and args.stdio:
        print("protege: choose one of --stdio and --tcp", file=sys.stderr)
        return 2
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        if not port.isdigit():
            print(f"protege: --tcp expects HOST:PORT, got {args.tcp!r}", file=sys.stderr)
            return 2
        server.start_tcp(host or "127.0.0.1", int(port))
    else:
        server.start_io()
    # The client went away (exit, or EOF on stdin): do not wait on busy worker threads.
    server.stop_work()
    server.exit_soon(0, grace_s=1.0)
    return 0


def _complete(args: argparse.Namespace) -> int:
    """Complete at FILE:LINE:COL in-process (1-based line and column, as editors show them)."""
    from server.config import parse_config
    from server.engine import Engine
    from server.pipeline import CompletionService, PositionError
    from server.screening import make_screen

    try:
        file_, line_s, col_s = args.location.rsplit(":", 2)
        line, col = int(line_s) - 1, int(col_s) - 1
    except ValueError:
        print(f"protege: expected FILE:LINE:COL (1-based), got {args.location!r}", file=sys.stderr)
        return 2
    path = Path(file_).resolve()  # a relative path is relative to the current directory
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"protege: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    raw: dict[str, Any] = {"debounceMs": 0}
    workspace = Path(args.workspace).resolve() if args.workspace else _repository_root(path)
    if args.model:
        raw["model"] = args.model
    elif workspace is not None:  # as `protege serve` does: the student `protege distill` promoted for it
        from distill_code.workspace import served_promoted_model

        promoted = served_promoted_model(workspace)
        if promoted is not None:
            raw["model"] = str(promoted)
    if args.quantize:
        raw["quantize"] = args.quantize
    cfg, warnings = parse_config(raw)
    for w in warnings:
        print(f"protege: {w}", file=sys.stderr)
    engine = Engine(_engine_opts(cfg))
    engine.load()
    if not engine.ready:
        print(f"protege: {engine.error}", file=sys.stderr)
        return 1
    screen, problem = make_screen(cfg)
    service = CompletionService(cfg, engine, screen=screen)
    rel = None
    if workspace is not None and cfg.memory.enabled:
        rel = _memory_for(service, workspace, path)
    try:
        out = service.complete(path.as_uri(), text, line, col, language=_language_of(path), path=rel)
    except PositionError as exc:
        print(f"protege: bad position: {exc}", file=sys.stderr)
        return 2
    result = {"suggestion": out.text, "model": engine.model_path, "latency_ms": round(out.latency_ms, 1), "mode": out.mode,
              "sources": out.sources, "memory_tokens": out.memory_tokens,
              "tokens": out.generated_tokens, "blocked": out.blocked,
              "screen": out.screen.to_dict() if out.screen is not None and hasattr(out.screen, "to_dict") else None}
    if args.json:
        print(json.dumps(result))
    else:
        print(out.text)
        print(f"-- {out.latency_ms:.0f} ms, {out.generated_tokens} tokens, {out.mode} mode", file=sys.stderr)
    return 0


def _repository_root(path: Path) -> Path | None:
    """The nearest folder above ``path`` holding a ``.git``: the workspace whose memory a completion uses."""
    for parent in path.parents:
        if (parent / ".git").exists():
            return parent
    return None


def _memory_for(service: Any, workspace: Path, path: Path) -> str | None:
    """Load (or build and save) the workspace's repository memory; the file's workspace-relative path."""
    from indexing.config import IndexConfig

    cfg = IndexConfig()
    try:
        mem = service.ensure_memory(cfg.resolved_cache_dir(workspace), cfg)
        if not mem.load():
            print(f"protege: building the repository memory of {workspace} ({mem.stats.reason})", file=sys.stderr)
        mem.build(workspace)
    except Exception as exc:  # noqa: BLE001 - the completion goes on with the open file as memory
        print(f"protege: repository memory unavailable ({exc}); completing without it", file=sys.stderr)
        return None
    try:
        return path.relative_to(workspace).as_posix()
    except ValueError:
        return None


def _engine_opts(cfg: Any) -> Any:
    from server.engine import EngineOptions

    return EngineOptions(model=cfg.model, family=cfg.family, dtype=cfg.dtype, quantize=cfg.quantize,
                         allow_online=cfg.allow_online, threads=cfg.threads, decoder=cfg.decoder,
                         draft_tokens=cfg.draft_tokens)


def _language_of(path: Path) -> str:
    return {".py": "python", ".js": "javascript", ".ts": "typescript", ".jsx": "javascriptreact",
            ".tsx": "typescriptreact", ".go": "go", ".rs": "rust", ".java": "java"}.get(path.suffix, "plaintext")


def _status(args: argparse.Namespace) -> int:
    """Offline status: which model would load, what is installed, index state for a workspace."""
    from server.engine import default_model_path

    info: dict[str, Any] = {"default_model": str(default_model_path()),
                            "default_model_present": default_model_path().exists()}
    try:
        from indexing.api import RepoIndex

        idx = RepoIndex.open(Path(args.workspace))
        info["index"] = idx.status()
        from indexing.memory_status import saved_status

        info["memory"] = saved_status(idx.cache_dir)
        idx.close()
    except Exception as exc:  # status must always answer
        info["index"] = {"error": str(exc)}
    from security.languages import SCREENED

    info["screened_languages"] = dict(SCREENED)
    print(json.dumps(info, indent=1, default=str))
    return 0


def register(sub: Any) -> None:
    from server import demo

    demo.register(sub)
    st = sub.add_parser("status", help="show the default model, index and screening state as JSON")
    st.add_argument("--workspace", default=".")
    st.set_defaults(func=_status)

    p = sub.add_parser("serve", help="run the language server (stdio by default)")
    p.add_argument("--model", help="model directory, or starter:student / starter:teacher (default: the shipped starter student)")
    p.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio")
    # vscode-languageclient (TransportKind.stdio) and other clients append --stdio: accept it, it is the default.
    p.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (the default)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"])
    p.add_argument("--quantize", choices=["none", "int8"])
    p.set_defaults(func=_serve)

    c = sub.add_parser("complete", help="print a completion for FILE:LINE:COL (1-based)")
    c.add_argument("location", metavar="FILE:LINE:COL")
    c.add_argument("--model", help="model directory or starter:student / starter:teacher (default: the workspace's "
                                   "promoted student, else the shipped starter student)")
    c.add_argument("--quantize", choices=["none", "int8"])
    c.add_argument("--json", action="store_true")
    c.add_argument("--workspace", help="repository whose memory and promoted student to use (default: the nearest "
                                       "folder with .git)")
    c.set_defaults(func=_complete)
