"""Lifecycle: ``initialize`` options, ``initialized`` (settings, model load), configuration changes, close."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from server.protocol import ProtegeProtocol
from server.screening import make_screen

if TYPE_CHECKING:
    from server.app import ProtegeServer

log = logging.getLogger("protege")


def _supports_configuration(ls: ProtegeServer) -> bool:
    ws = ls.client_capabilities.workspace
    return bool(ws and ws.configuration)


async def pull_configuration(ls: ProtegeServer) -> None:
    """Fetch the ``protege`` section of the client's settings (``workspace/configuration``)."""
    if not _supports_configuration(ls):
        return
    try:
        items = await asyncio.wait_for(
            ls.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section="protege")])
            ),
            timeout=5,
        )
    except Exception as exc:  # a client that fails here must not stop completions
        log.warning("workspace/configuration failed (%s); keeping current settings", exc)
        return
    raw = items[0] if items else None
    if raw is None:
        return
    if not isinstance(raw, dict):
        ls.warn_once("config:section", f"Protege: the 'protege' settings must be an object, got {raw!r}; ignored")
        return
    ls.apply_options(raw, "workspace settings")


def refresh_screen(ls: ProtegeServer) -> None:
    screen, problem = make_screen(ls.config)
    if problem:
        ls.warn_once(f"screen:{problem}", f"Protege: {problem}")
    ls.service.screen = screen


WATCHER_ID = "protege-index-watcher"


async def register_file_watchers(ls: ProtegeServer) -> None:
    """Ask the client to report file changes (``workspace/didChangeWatchedFiles``) when it can register
    watchers dynamically and the index is on: edits made outside the editor reach the index too."""
    from server.features.workspace_index import workspace_root

    ws = ls.client_capabilities.workspace
    watched = ws.did_change_watched_files if ws is not None else None
    if not ls.config.index.enabled or workspace_root(ls) is None or watched is None or not watched.dynamic_registration:
        return
    options = types.DidChangeWatchedFilesRegistrationOptions(watchers=[types.FileSystemWatcher(glob_pattern="**/*")])
    try:
        await ls.client_register_capability_async(types.RegistrationParams(registrations=[types.Registration(
            id=WATCHER_ID, method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES, register_options=options)]))
        ls.watchers_registered = True
    except Exception as exc:  # the index still updates on didSave
        log.warning("could not register file watchers (%s); the index updates on save only", exc)


def register(ls: ProtegeServer) -> None:
    @ls.feature(types.INITIALIZE)
    def on_initialize(params: types.InitializeParams) -> None:
        """LSP ``initialize``: read typed initialization options."""
        ls.loop = asyncio.get_event_loop()
        raw: Any = params.initialization_options
        if raw is not None and not isinstance(raw, dict):
            ls.warn_once("config:init", f"Protege: initializationOptions must be an object, got {raw!r}; ignored")
            raw = None
        ls.apply_options(raw, "initializationOptions")

    @ls.feature(types.INITIALIZED)
    async def on_initialized(params: types.InitializedParams) -> None:
        """LSP ``initialized``: pull workspace settings, then load the model off the event loop."""
        await pull_configuration(ls)
        refresh_screen(ls)
        ls.start_engine()
        from server.features import workspace_index
        from server.features.memory import open_memory

        workspace_index.open_index(ls)
        root = workspace_index.workspace_root(ls)
        if root is not None:
            open_memory(ls, root)
        await register_file_watchers(ls)

    @ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def on_configuration(params: types.DidChangeConfigurationParams) -> None:
        """LSP ``workspace/didChangeConfiguration``: re-read settings."""
        settings = params.settings
        if isinstance(settings, dict) and isinstance(settings.get("protege"), dict):
            ls.apply_options(settings["protege"], "didChangeConfiguration")
        else:
            await pull_configuration(ls)
        refresh_screen(ls)

    @ls.feature(types.SHUTDOWN)
    def on_shutdown(*args: Any) -> None:
        """LSP ``shutdown``: stop decodes in flight and release the index's writer lock."""
        ls.stop_work()
        if isinstance(ls.protocol, ProtegeProtocol):
            ls.protocol.cancel_pending_requests()

    @ls.feature(types.EXIT)
    def on_exit(*args: Any) -> None:
        """LSP ``exit``: pygls exits after this; a worker stuck in a slow call must not hold the process."""
        ls.stop_work()
        ls.exit_soon(0)

    @ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def on_close(params: types.DidCloseTextDocumentParams) -> None:
        """LSP ``textDocument/didClose``: forget cached suggestions for the document."""
        ls.service.cache.clear(params.text_document.uri)
        ls.annotations.pop(params.text_document.uri, None)
