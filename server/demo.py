"""``protege demo``: show the server working from a terminal.

It indexes a repository (when the index is available), starts ``protege serve`` as a real
subprocess, talks to it as an LSP client over stdio, asks for completions at real positions in
real files and prints each suggestion with its latency, then says how to connect an editor.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any


def pick_positions(path: Path, limit: int) -> list[tuple[int, int, str]]:
    """(line, character, label) cursor positions: inside function bodies and after assignments."""
    lines = path.read_text(encoding="utf-8").split("\n")
    out: list[tuple[int, int, str]] = []
    for i, ln in enumerate(lines):
        s = ln.strip()
        if len(out) >= limit:
            break
        if s.startswith("return ") and len(s) > 12:
            col = len(ln) - len(ln.lstrip()) + len("return ")
            out.append((i, col, "mid-line after 'return '"))
        elif " = " in s and not s.startswith(("#", '"')) and s.endswith(")") and "(" in s:
            col = ln.index("(") + 1
            out.append((i, col, "inside call arguments"))
    return out


async def run_demo(files: list[Path], model: str | None, per_file: int, workspace: Path) -> int:
    # Imported here: `protege --help` builds every subcommand's parser and must not pay for the LSP types.
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("protege-demo", "0.1.0")
    messages: list[str] = []

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def show(params: types.ShowMessageParams) -> None:
        messages.append(params.message)
        print(f"  [server] {params.message}")

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def log_message(params: types.LogMessageParams) -> None:
        pass  # the server also logs to stderr; the demo prints only results

    cmd = [sys.executable, "-m", "server.cli", "serve"]
    if model:
        cmd += ["--model", model]
    await client.start_io(*cmd)
    t0 = time.perf_counter()
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(),
        root_uri=workspace.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name=workspace.name)],
        initialization_options={"debounceMs": 0},
    ))
    client.initialized(types.InitializedParams())
    print(f"server initialized in {(time.perf_counter() - t0) * 1000:.0f} ms")
    latencies: list[float] = []
    try:
        for f in files:
            text = f.read_text(encoding="utf-8")
            uri = f.resolve().as_uri()
            client.text_document_did_open(types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
            for line, col, label in pick_positions(f, per_file):
                t = time.perf_counter()
                try:
                    res = await client.text_document_inline_completion_async(types.InlineCompletionParams(
                        text_document=types.TextDocumentIdentifier(uri=uri),
                        position=types.Position(line=line, character=col),
                        context=types.InlineCompletionContext(
                            trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
                except Exception as exc:
                    print(f"{f.name}:{line + 1}:{col + 1}  error: {exc}")
                    return 1
                ms = (time.perf_counter() - t) * 1000
                latencies.append(ms)
                items = res.items if isinstance(res, types.InlineCompletionList) else []
                shown = items[0].insert_text if items else ""
                before = text.split("\n")[line][:col].strip()
                print(f"{f.name}:{line + 1}:{col + 1}  ({label}, {ms:.0f} ms)\n    {before} ⟨{shown!s}⟩")
        status: Any = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="protege.status", arguments=[]))
    finally:
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()
    if latencies:
        latencies.sort()
        p50 = latencies[len(latencies) // 2]
        print(f"\n{len(latencies)} completions, p50 {p50:.0f} ms, max {latencies[-1]:.0f} ms "
              f"(first includes model warm-up); model: {status['model']['path']} "
              f"({status['model']['parameters']:,} parameters)")
    print("\nConnect an editor:\n"
          "  VS Code: install editors/vscode (see README, 'Editors').\n"
          "  Neovim:  add editors/nvim to runtimepath and call vim.lsp.enable('protege').\n"
          "  Any LSP client: run `protege serve` (stdio) or `protege serve --tcp 127.0.0.1:2087`.")
    return 0


def _demo(args: argparse.Namespace) -> int:
    workspace = Path(args.workspace).resolve()
    files = [Path(f) for f in args.files] or [workspace / "server" / "postprocess.py",
                                             workspace / "server" / "scheduler.py"]
    files = [f for f in files if f.is_file()]
    if not files:
        print("protege demo: no Python files to complete in; pass some FILES", file=sys.stderr)
        return 2
    if not args.no_index and importlib.util.find_spec("indexing.api") is not None:
        from indexing.api import RepoIndex

        t = time.perf_counter()
        index = RepoIndex.open(workspace)
        stats = index.update()
        index.close()
        print(f"indexed {workspace} in {time.perf_counter() - t:.1f} s: {stats}")
    return asyncio.run(run_demo(files, args.model, args.per_file, workspace))


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="index a repository and drive `protege serve` through a real LSP client")
    p.add_argument("files", nargs="*", help="Python files to complete in (default: two of Protege's own)")
    p.add_argument("--workspace", default=".", help="repository to index and serve (default: .)")
    p.add_argument("--model", help="model directory (default: the shipped starter student)")
    p.add_argument("--per-file", type=int, default=3)
    p.add_argument("--no-index", action="store_true", help="skip indexing")
    p.set_defaults(func=_demo)
