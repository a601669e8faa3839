"""Repository index over LSP: ``workspace/executeCommand`` ``protege.indexWorkspace`` (with ``$/progress``
work-done progress and cancellation) and ``protege.search``; index updates on ``textDocument/didSave`` and
``workspace/didChangeWatchedFiles``. Index work runs on the server's index executor, never the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams
from pygls.uris import from_fs_path, to_fs_path

from server.features.memory import update_memory
from server.protocol import RequestFailed

if TYPE_CHECKING:
    from server.app import ProtegeServer

log = logging.getLogger("protege")
OPEN_WAIT_S = 90.0  # the index opens in the background after `initialized`, once the model is loaded


async def _index(ls: ProtegeServer) -> Any:
    deadline = time.monotonic() + OPEN_WAIT_S
    while ls.index is None and ls.index_error is None and ls.config.index.enabled and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if ls.index is None:
        reason = ls.index_error or ("disabled by the index.enabled setting" if not ls.config.index.enabled
                                    else "it is still opening; try again in a moment")
        raise RequestFailed(f"the repository index is not available: {reason}")
    return ls.index


def _paths(uris: list[str]) -> list[Path]:
    return [Path(p) for p in (to_fs_path(u) for u in uris) if p]


def _submit(ls: ProtegeServer, work: Any, what: str) -> None:
    """Run index work in the background; a busy writer (another window) or a bad file only logs."""

    def run() -> None:
        from indexing.lock import IndexLockedError

        try:
            work()
        except IndexLockedError as exc:  # another window writes the index; its watchers see the same files
            log.info("index %s left to another process: %s", what, exc)
        except Exception as exc:  # noqa: BLE001 - background updates must never take the server down
            log.warning("index %s failed: %s", what, exc)

    ls.index_executor.submit(run)


def register(ls: ProtegeServer) -> None:
    @ls.command("protege.indexWorkspace")
    async def index_workspace(*args: Any) -> dict[str, Any]:
        """Index the workspace (or ``{"paths": [uri, ...]}``), reporting ``$/progress``; cancellable."""
        opts = args[0] if args and isinstance(args[0], dict) else {}
        uris = opts.get("paths")
        if uris is not None and not (isinstance(uris, list) and all(isinstance(u, str) for u in uris)):
            raise JsonRpcInvalidParams("protege.indexWorkspace expects {\"paths\": [uri, ...]} or no argument")
        index = await _index(ls)
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        token = f"protege-index-{uuid.uuid4().hex[:8]}"
        progress = ls.work_done_progress
        try:
            await progress.create_async(token)
            reporting = True
        except Exception:  # noqa: BLE001 - a client without window.workDoneProgress: index silently
            reporting = False
        if reporting:
            progress.begin(token, types.WorkDoneProgressBegin(title="Protege: indexing", cancellable=True,
                                                              message="walking the workspace", percentage=0))
            future = progress.tokens.get(token)
            if future is not None:
                future.add_done_callback(lambda f: cancel.set() if f.cancelled() else None)
        last = [0.0]

        def on_progress(done: int, total: int, path: str) -> None:
            now = time.monotonic()
            if reporting and (now - last[0] > 0.2 or done == total):  # at most ~5 reports a second
                last[0] = now
                report = types.WorkDoneProgressReport(message=f"{done}/{total} {path}",
                                                      percentage=int(100 * done / max(1, total)))
                loop.call_soon_threadsafe(progress.report, token, report)

        paths = _paths(uris) if uris is not None else None
        try:
            stats = await loop.run_in_executor(ls.index_executor, lambda: index.update(paths, on_progress, cancel))
        except asyncio.CancelledError:  # $/cancelRequest on the command itself
            cancel.set()
            raise
        except Exception as exc:
            if reporting:
                progress.end(token, types.WorkDoneProgressEnd(message=f"failed: {exc}"))
            raise JsonRpcInternalError(f"indexing failed: {exc}") from exc
        finally:
            progress.tokens.pop(token, None)
        summary = (f"{'cancelled' if stats.cancelled else 'done'}: {stats.files_indexed} indexed, "
                   f"{stats.files_unchanged} unchanged, {stats.files_removed} removed, {stats.files_skipped} skipped")
        if reporting:
            progress.end(token, types.WorkDoneProgressEnd(message=summary))
        return asdict(stats)

    @ls.command("protege.search")
    async def search(*args: Any) -> list[dict[str, Any]]:
        """``protege.search`` with ``{"query": str, "k": int}``: ranked hits with a ``uri`` and 0-based lines."""
        opts = args[0] if args and isinstance(args[0], dict) else {}
        query, k = opts.get("query"), opts.get("k", 10)
        if not isinstance(query, str) or not query.strip() or not isinstance(k, int) or k < 1:
            raise JsonRpcInvalidParams("protege.search expects {\"query\": \"non-empty text\", \"k\": positive int}")
        index = await _index(ls)
        loop = asyncio.get_running_loop()

        def run() -> list[dict[str, Any]]:
            if not index.owns_store():
                # Another window's server owns the vector store: its hybrid search (vectors included)
                # answers over the search socket; without it, this catalog's BM25 and definitions do.
                from indexing.search_socket import query as ask_owner

                try:
                    served = ask_owner(index.cache_dir, query, min(k, 100))
                except (RuntimeError, ValueError) as exc:
                    log.info("the window owning the index could not search (%s); searching here", exc)
                    served = None
                if served is not None:
                    return served
            return [asdict(h) for h in index.search(query, k=min(k, 100))]

        hits = await loop.run_in_executor(ls.executor, run)
        root = Path(index.root)
        return [{**h, "uri": from_fs_path(str(root / h["path"]))} for h in hits]

    @ls.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(params: types.DidSaveTextDocumentParams) -> None:
        """LSP ``textDocument/didSave``: re-index the saved file (incremental; unchanged chunks keep vectors)."""
        update_memory(ls, _paths([params.text_document.uri]))
        index = ls.index
        if index is not None:
            paths = _paths([params.text_document.uri])
            _submit(ls, lambda: index.update(paths), f"update of {params.text_document.uri}")

    @ls.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def watched(params: types.DidChangeWatchedFilesParams) -> None:
        """LSP ``workspace/didChangeWatchedFiles``: index created/changed files, drop deleted ones."""
        update_memory(ls, _paths([c.uri for c in params.changes]))
        index = ls.index
        if index is None:
            return
        deleted = _paths([c.uri for c in params.changes if c.type == types.FileChangeType.Deleted])
        changed = _paths([c.uri for c in params.changes if c.type != types.FileChangeType.Deleted])

        def work() -> None:
            if deleted:
                index.remove(deleted)
            if changed:
                index.update(changed)

        _submit(ls, work, f"update of {len(params.changes)} watched file(s)")
