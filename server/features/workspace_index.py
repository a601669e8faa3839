"""The workspace's repository index inside the server: opening it and feeding completion context."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pygls.uris import to_fs_path

from server.prompt import ContextItem

if TYPE_CHECKING:
    from server.app import ProtegeServer

log = logging.getLogger("protege")


def workspace_root(ls: ProtegeServer) -> Path | None:
    root = ls.workspace.root_path
    if root:
        return Path(root)
    folders = list(ls.workspace.folders.values())
    if folders:
        p = to_fs_path(folders[0].uri)
        return Path(p) if p else None
    return None


def relative_path(ls: ProtegeServer, uri: str) -> str:
    """Workspace-relative path of ``uri`` (the index's key), or the URI itself when outside it."""
    fs = to_fs_path(uri)
    root = workspace_root(ls)
    if fs and root:
        try:
            return Path(fs).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return fs
    return fs or uri


MODEL_FIRST_WAIT_S = 60.0


def open_index(ls: ProtegeServer) -> None:
    """Open the index in the background and install the completion-context provider."""
    if not ls.config.index.enabled:
        ls.service.context_provider = None
        return
    root = workspace_root(ls)
    if root is None:
        ls.index_error = "no workspace folder: repository context is off"
        return
    if importlib.util.find_spec("indexing.api") is None:
        ls.index_error = "the indexing package is not installed"
        log.warning("repository index unavailable: %s", ls.index_error)
        return

    def work() -> None:
        # The model first: both loads are CPU-bound (torch and ChromaDB imports, the embedding model) and
        # the first completion needs the model, not the index; on 2 cores, loading both at once made the
        # model ready ~2x later (seen in the VS Code e2e run). The engine sets engine_ready on error too.
        ls.engine_ready.wait(timeout=MODEL_FIRST_WAIT_S)
        from indexing.api import RepoIndex
        from indexing.config import IndexConfig
        from indexing.lock import IndexLockedError

        opts = ls.config.index
        try:
            index = RepoIndex.open(root, IndexConfig(chroma_url=opts.chroma_url, cache_dir=opts.cache_dir,
                                                       embed_max_tokens=opts.embed_max_tokens))
        except Exception as exc:  # a corrupt or locked index must not stop completions
            ls.index_error = f"could not open the index: {exc}"
            ls.warn_once(f"index:{exc}", f"Protege: {ls.index_error}; completions continue without it")
            return
        ls.index, ls.index_error = index, None
        max_chars = opts.max_context_chars

        def provider(path: str, text: str, line: int, character: int) -> list[ContextItem]:
            rel = relative_path(ls, path) if "://" in path else path
            return [ContextItem(path=s.path, text=s.text, score=s.score)
                    for s in index.completion_context(rel, text, line, character, max_chars=max_chars)]

        ls.service.context_provider = provider
        if opts.auto_index:
            try:
                index.update()
            except IndexLockedError as exc:  # another window owns the index and keeps it current
                log.info("not indexing at start-up: %s", exc)
        try:
            # Until the embedder is warm, completion context uses definitions and BM25 only.
            index.warm_up()
        except Exception as exc:
            log.warning("could not warm up the index's embedder (%s); context stays lexical", exc)
        log.info("repository index open at %s", root)
        _serve_searches(ls, index)

    ls.index_executor.submit(work)


def _serve_searches(ls: ProtegeServer, index: Any) -> None:
    """Answer `protege search` for this workspace over a Unix socket in the index's cache dir."""
    from dataclasses import asdict

    from indexing.search_socket import SearchSocket, socket_path

    def search(query: str, k: int, vectors: bool) -> list[dict[str, Any]]:
        # Reads run on the socket's thread, as the LSP search command's do (the catalog allows it; writes
        # stay on the index thread), so a search never waits behind an index update.
        return [asdict(h) for h in index.search(query, k, vectors)]

    if not index.owns_store():  # the owner's server answers, with vectors
        log.info("not serving `protege search` for %s: another process owns its vector store", index.root)
        return
    try:
        ls.search_socket = SearchSocket(socket_path(index.cache_dir), search).start()
    except OSError as exc:  # another window's server has it, or the path is too long for a socket
        log.info("not serving `protege search` for %s: %s", index.root, exc)
