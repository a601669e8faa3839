"""``textDocument/inlineCompletion`` (LSP 3.18): the primary completion path (ghost text)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams

from distill_code.modeling import ModelLoadError
from server.pipeline import Outcome, PositionError

if TYPE_CHECKING:
    from server.app import ProtegeServer

log = logging.getLogger("protege")

# How long a request waits for the model to finish loading before answering with an error.
MODEL_WAIT_S = 120.0
MAX_DOCUMENT_CHARS = 2_000_000


class ModelUnavailable(JsonRpcInternalError):
    """No usable model: the message says why and how to fix it."""


async def run_completion(ls: ProtegeServer, uri: str, position: types.Position) -> Outcome | None:
    """Shared by inline completion and the completion fallback. None means superseded/cancelled."""
    ls.counters["completionRequests"] += 1
    try:
        doc = ls.workspace.get_text_document(uri)
        text = doc.source
    except Exception as exc:
        raise JsonRpcInvalidParams(f"unknown document {uri}: open it (textDocument/didOpen) first") from exc
    if not getattr(doc, "version", None) and uri not in ls.workspace.text_documents:
        raise JsonRpcInvalidParams(f"unknown document {uri}: open it (textDocument/didOpen) first")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise JsonRpcInvalidParams(
            f"document is too large to complete ({len(text):,} characters > {MAX_DOCUMENT_CHARS:,})")
    if "\x00" in text[:8192]:
        raise JsonRpcInvalidParams("document looks binary (NUL bytes); no completions for binary content")
    seq, cancel = ls.supersession.begin(uri)
    try:
        return await _complete_latest(ls, uri, doc, text, position, seq, cancel)
    except asyncio.CancelledError:
        cancel.set()  # $/cancelRequest (while debouncing, waiting for the model or decoding): stop between tokens
        ls.counters["cancelled"] += 1
        raise
    except PositionError as exc:
        raise JsonRpcInvalidParams(f"bad position: {exc}") from exc
    except ModelLoadError as exc:
        raise ModelUnavailable(str(exc)) from exc


async def _complete_latest(ls: ProtegeServer, uri: str, doc: Any, text: str, position: types.Position, seq: int,
                           cancel: threading.Event) -> Outcome | None:
    """Debounce, wait for the model, decode off the event loop; None when a newer request took over."""
    if not await ls.supersession.debounce(uri, seq, ls.config.debounce_ms):
        ls.counters["superseded"] += 1
        return None
    if not ls.engine_ready.is_set():
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, ls.engine_ready.wait, MODEL_WAIT_S)
    if not ls.engine.ready:
        raise ModelUnavailable(ls.engine.error or "the model is still loading; try again shortly")
    loop = asyncio.get_running_loop()
    language = doc.language_id or "python"
    fut = loop.run_in_executor(ls.executor, ls.service.complete, uri, text, position.line,
                               position.character, language, cancel, None)
    outcome = await fut
    if outcome.cancelled or not ls.supersession.is_latest(uri, seq):
        ls.counters["superseded"] += 1
        return None
    return outcome


def annotation_command(outcome: Outcome, uri: str, position: types.Position) -> types.Command | None:
    """A command the client runs on acceptance: it publishes the findings of an annotated suggestion and
    carries where copied spans came from (``sources``: workspace path, 1-based line, tokens)."""
    screen: Any = outcome.screen
    findings = (screen.findings if screen is not None and getattr(screen, "verdict", "") == "annotate" else None) or []
    if not findings and not outcome.sources:
        return None
    title = "Protege: security findings" if findings else "Protege: from " + ", ".join(
        f"{s['path']}:{s['line']}" for s in outcome.sources)
    return types.Command(
        title=title,
        command="protege.suggestionAccepted",
        arguments=[{"uri": uri, "line": position.line, "character": position.character,
                    "text": outcome.text, "findings": [f.to_dict() for f in findings],
                    "sources": outcome.sources}],
    )


def register(ls: ProtegeServer) -> None:
    @ls.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(params: types.InlineCompletionParams) -> types.InlineCompletionList | None:
        """LSP ``textDocument/inlineCompletion``."""
        uri = params.text_document.uri
        outcome = await run_completion(ls, uri, params.position)
        if outcome is None or not outcome.text:
            return types.InlineCompletionList(items=[])
        pos = params.position
        item = types.InlineCompletionItem(
            insert_text=outcome.text,
            range=types.Range(start=pos, end=pos),
            command=annotation_command(outcome, uri, pos),
        )
        return types.InlineCompletionList(items=[item])
