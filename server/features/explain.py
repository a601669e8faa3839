"""Explanations in the editor: the ``protege.explain`` command (``workspace/executeCommand``), the
"Explain this code" code action (``textDocument/codeAction``), a code lens above each function and
class (``textDocument/codeLens``) and a short summary on ``textDocument/hover``.

The command takes ``[{"uri", "range", "maxTokens"?}]`` or ``[uri, line]`` (0-based, LSP positions) and
returns ``{"markdown": str, "facts": [...], "summary": {...} | None, ...}`` (server/explain.py).
Work runs on the model executor; ``$/cancelRequest`` and a cancelled work-done progress stop it
between steps and between generated tokens.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcRequestCancelled
from pygls.uris import to_fs_path

from server.explain import ExplainCancelled, ExplainContext, ExplainInputError, ExplainRequest, explain
from server.explain_code import code_language, outline
from server.explain_hover import hover
from server.features.workspace_index import relative_path, workspace_root

if TYPE_CHECKING:
    from server.app import ProtegeServer

log = logging.getLogger("protege")

COMMAND = "protege.explain"
DEFAULT_SUMMARY_TOKENS = 96
MAX_SUMMARY_TOKENS = 1024
HOVER_SUMMARY_TOKENS = 32
MODEL_WAIT_S = 120.0
INDEX_WAIT_S = 30.0  # the index opens in the background once the model is loaded (workspace_index.open_index)
MAX_LENSES = 300
MAX_DOCUMENT_CHARS = 2_000_000
USAGE = ('protege.explain expects [{"uri": URI, "range": LSP range, "maxTokens"?: int}] '
         "or [URI, line] with a 0-based line")


def parse_arguments(args: tuple[Any, ...]) -> tuple[str, tuple[int, int, int, int], int]:
    """(uri, (start_line, start_char, end_line, end_char), summary token budget) from the command arguments."""
    if len(args) == 1 and isinstance(args[0], list | tuple):
        args = tuple(args[0])  # some clients wrap the argument list once more
    max_tokens = DEFAULT_SUMMARY_TOKENS
    try:
        if len(args) >= 2 and isinstance(args[0], str):
            line = args[1]
            if not isinstance(line, int) or isinstance(line, bool):
                raise TypeError
            return args[0], (line, 0, line, 0), max_tokens
        if len(args) == 1 and isinstance(args[0], dict):
            info = args[0]
            uri = info["uri"]
            if not isinstance(uri, str):
                raise TypeError
            if "maxTokens" in info:
                m = info["maxTokens"]
                if not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= MAX_SUMMARY_TOKENS:
                    raise JsonRpcInvalidParams(f"maxTokens must be an integer from 1 to {MAX_SUMMARY_TOKENS}, "
                                               f"got {m!r}")
                max_tokens = m
            if "range" in info:
                r = info["range"]
                pos = (int(r["start"]["line"]), int(r["start"]["character"]), int(r["end"]["line"]),
                       int(r["end"]["character"]))
            else:
                line = int(info["line"])
                pos = (line, int(info.get("character", 0)), line, int(info.get("character", 0)))
            return uri, pos, max_tokens
    except JsonRpcInvalidParams:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise JsonRpcInvalidParams(f"{USAGE}; got {list(args)!r}") from exc
    raise JsonRpcInvalidParams(f"{USAGE}; got {list(args)!r}")


def document_text(ls: ProtegeServer, uri: str) -> tuple[str, str | None]:
    """The open document's live text, else the file on disk; a clear error for anything else."""
    if uri in ls.workspace.text_documents:
        doc = ls.workspace.get_text_document(uri)
        text, language = doc.source, doc.language_id
    else:
        fs = to_fs_path(uri)
        if not fs or not Path(fs).is_file():
            raise JsonRpcInvalidParams(f"unknown document {uri}: open it in the editor or pass an existing file")
        try:
            text = Path(fs).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise JsonRpcInvalidParams(f"cannot read {fs}: {exc}") from exc
        language = None
    if len(text) > MAX_DOCUMENT_CHARS:
        raise JsonRpcInvalidParams(f"document is too large to explain ({len(text):,} characters > "
                                   f"{MAX_DOCUMENT_CHARS:,})")
    if "\x00" in text[:8192]:
        raise JsonRpcInvalidParams("document looks binary (NUL bytes); there is no code to explain")
    return text, language


def explain_context(ls: ProtegeServer) -> ExplainContext:
    note = ls.index_error
    if not ls.config.index.enabled:
        note = "the repository index is off (option index.enabled is false)"
    engine = ls.engine if ls.engine.ready else None
    engine_note = None if engine is not None else (ls.engine.error or "the model is still loading")
    return ExplainContext(root=workspace_root(ls), index=ls.index if ls.config.index.enabled else None,
                          index_note=note, engine=engine, engine_note=engine_note)


async def wait_for_index(ls: ProtegeServer) -> None:
    """Give a just-started server's background index opening a moment to finish."""
    deadline = time.monotonic() + INDEX_WAIT_S
    while (ls.config.index.enabled and ls.index is None and ls.index_error is None
           and workspace_root(ls) is not None and time.monotonic() < deadline):
        await asyncio.sleep(0.05)


async def wait_for_model(ls: ProtegeServer, cancel: threading.Event) -> None:
    deadline = time.monotonic() + MODEL_WAIT_S
    while not ls.engine_ready.is_set() and time.monotonic() < deadline:
        if cancel.is_set():
            raise ExplainCancelled()
        await asyncio.sleep(0.05)


def _cancel_with_request(ls: ProtegeServer, cancel: threading.Event) -> Any:
    """Set ``cancel`` when the client cancels this ``workspace/executeCommand``.

    pygls runs a command's coroutine as a separate task and cancels only the request's own future on
    ``$/cancelRequest``: without this hook the explanation would keep decoding for nobody.
    """
    futures = getattr(ls.protocol, "_request_futures", None)
    msg_id = ls.protocol.msg_id
    fut = futures.get(msg_id) if isinstance(futures, dict) and msg_id is not None else None
    if fut is None:
        log.debug("no request future for %s: explanation cancellation by $/cancelRequest unavailable", msg_id)
        return None
    fut.add_done_callback(lambda f: cancel.set() if f.cancelled() else None)
    return fut


class _Progress:
    """Work-done progress for one explanation, when the client supports server-initiated progress."""

    def __init__(self, ls: ProtegeServer, cancel: threading.Event) -> None:
        self.ls, self.cancel = ls, cancel
        self.token: str | None = None

    async def begin(self, title: str) -> None:
        window = self.ls.client_capabilities.window
        if not (window and window.work_done_progress):
            return
        token = f"protege-explain-{uuid.uuid4().hex[:12]}"
        try:
            await asyncio.wait_for(self.ls.work_done_progress.create_async(token), timeout=2.0)
        except Exception as exc:  # progress is optional: explain without it
            log.info("work-done progress unavailable (%s); explaining without it", exc)
            return
        self.token = token
        self.ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=True,
                                                                            message="starting"))
        fut = self.ls.work_done_progress.tokens.get(token)
        if fut is not None:  # window/workDoneProgress/cancel from the client
            fut.add_done_callback(lambda f: self.cancel.set() if f.cancelled() else None)

    def report(self, message: str) -> None:
        """Thread-safe: called from the executor between steps."""
        if self.token is None or self.ls.loop is None:
            return
        params = types.WorkDoneProgressReport(message=message)
        try:
            self.ls.loop.call_soon_threadsafe(self.ls.work_done_progress.report, self.token, params)
        except RuntimeError:
            pass  # loop shutting down

    def end(self, message: str) -> None:
        if self.token is not None:
            self.ls.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
            self.ls.work_done_progress.tokens.pop(self.token, None)
            self.token = None


def _position_args(uri: str, line: int, character: int = 0) -> list[dict[str, Any]]:
    pos = {"line": line, "character": character}
    return [{"uri": uri, "range": {"start": pos, "end": pos}}]


def _add_code_actions(ls: ProtegeServer,
                      provider: Callable[[types.CodeActionParams], list[types.CodeAction | types.Command]]) -> None:
    """Serve ``provider``'s actions on ``textDocument/codeAction`` beside any handler registered before.

    LSP allows one handler per method and other features (security quick fixes) offer code actions
    too: an earlier handler is wrapped so both sets of actions reach the client.
    """
    features = ls.protocol.fm.features
    earlier = features.get(types.TEXT_DOCUMENT_CODE_ACTION)
    if earlier is None:
        @ls.feature(types.TEXT_DOCUMENT_CODE_ACTION)
        def code_action(params: types.CodeActionParams) -> list[types.CodeAction | types.Command] | None:
            """``textDocument/codeAction``: "Explain this code" for the selection or the definition at the cursor."""
            return provider(params) or None
        return

    async def combined(params: types.CodeActionParams) -> list[types.CodeAction | types.Command] | None:
        """``textDocument/codeAction``: the earlier handler's actions, then "Explain this code"."""
        first = earlier(params)
        if inspect.isawaitable(first):
            first = await first
        actions = [*(first or []), *provider(params)]
        return actions or None

    features[types.TEXT_DOCUMENT_CODE_ACTION] = combined


def register(ls: ProtegeServer) -> None:
    ls.counters.setdefault("explainRequests", 0)
    ls.counters.setdefault("explainCancelled", 0)

    @ls.command(COMMAND)
    async def explain_command(*args: Any) -> dict[str, Any]:
        """``protege.explain``: Markdown explanation with grounded facts and a generated summary."""
        ls.counters["explainRequests"] += 1
        cancel = threading.Event()
        request = _cancel_with_request(ls, cancel)
        uri, (sl, sc, el, ec), max_tokens = parse_arguments(args)
        text, language_id = document_text(ls, uri)
        progress = _Progress(ls, cancel)
        req = ExplainRequest(uri=uri, path=relative_path(ls, uri), text=text, language_id=language_id,
                             start_line=sl, start_char=sc, end_line=el, end_char=ec, max_new_tokens=max_tokens,
                             prompt_tokens=ls.engine.prompt_budget(ls.config.context_tokens))
        loop = asyncio.get_running_loop()
        outcome = "done"
        try:
            await progress.begin("Protege: explaining code")
            await wait_for_index(ls)
            if not ls.engine_ready.is_set() and code_language(language_id, req.path) is not None:
                progress.report("waiting for the model to load")
                await wait_for_model(ls, cancel)
            ctx = explain_context(ls)
            result = await loop.run_in_executor(ls.executor, explain, req, ctx, cancel, progress.report)
            return result.to_dict()
        except ExplainCancelled as exc:
            outcome = "cancelled"
            ls.counters["explainCancelled"] += 1
            if request is not None and request.cancelled():
                return {"markdown": "", "cancelled": True}  # pygls already answered with RequestCancelled
            raise JsonRpcRequestCancelled("the explanation was cancelled") from exc
        except asyncio.CancelledError:
            outcome = "cancelled"
            cancel.set()
            ls.counters["explainCancelled"] += 1
            raise
        except ExplainInputError as exc:
            outcome = "bad input"
            raise JsonRpcInvalidParams(f"bad position: {exc}") from exc
        finally:
            progress.end(outcome)

    def explain_actions(params: types.CodeActionParams) -> list[types.CodeAction | types.Command]:
        uri = params.text_document.uri
        if uri not in ls.workspace.text_documents:
            return []
        doc = ls.workspace.get_text_document(uri)
        if code_language(doc.language_id, relative_path(ls, uri)) is None:
            return []
        r = params.range
        arg = {"uri": uri, "range": {"start": {"line": r.start.line, "character": r.start.character},
                                     "end": {"line": r.end.line, "character": r.end.character}}}
        # A bare Command rather than a CodeAction wrapping one: every client accepts it, and some client
        # libraries (lsprotocol's converter) mistake a CodeAction that carries a command for a Command.
        return [types.Command(title="Explain this code", command=COMMAND, arguments=[arg])]

    _add_code_actions(ls, explain_actions)

    @ls.feature(types.TEXT_DOCUMENT_CODE_LENS, types.CodeLensOptions(resolve_provider=False))
    def code_lens(params: types.CodeLensParams) -> list[types.CodeLens] | None:
        """``textDocument/codeLens``: an "Explain" lens above every function and class."""
        uri = params.text_document.uri
        if uri not in ls.workspace.text_documents:
            return None
        doc = ls.workspace.get_text_document(uri)
        language = code_language(doc.language_id, relative_path(ls, uri))
        if language is None or len(doc.source) > MAX_DOCUMENT_CHARS:
            return None
        lenses = []
        for d in outline(doc.source, language).definitions[:MAX_LENSES]:
            start = types.Position(line=d.start_line, character=0)
            lenses.append(types.CodeLens(
                range=types.Range(start=start, end=start),
                command=types.Command(title=f"Explain {d.kind}", command=COMMAND,
                                      arguments=_position_args(uri, d.name_line))))
        return lenses

    @ls.feature(types.TEXT_DOCUMENT_HOVER)
    async def on_hover(params: types.HoverParams) -> types.Hover | None:
        """``textDocument/hover``: signature, definition site and a short summary of the symbol."""
        uri = params.text_document.uri
        if uri not in ls.workspace.text_documents:
            return None
        doc = ls.workspace.get_text_document(uri)
        if len(doc.source) > MAX_DOCUMENT_CHARS:
            return None
        cancel = threading.Event()
        pos = params.position
        loop = asyncio.get_running_loop()
        try:
            info = await loop.run_in_executor(
                ls.executor, hover, doc.source, relative_path(ls, uri), uri, doc.language_id, pos.line,
                pos.character, explain_context(ls), HOVER_SUMMARY_TOKENS, min(512, ls.engine.prompt_budget(ls.config.context_tokens)),
                cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise
        except ExplainCancelled:
            return None
        if info is None:
            return None
        return types.Hover(
            contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=info.markdown),
            range=types.Range(start=types.Position(line=info.line, character=info.start_char),
                              end=types.Position(line=info.line, character=info.end_char)))
