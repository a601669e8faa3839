"""The Protege language server object: shared state, logging, and the wiring of feature modules."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from indexing.foreground import lower_thread_priority
from server.config import merge_raw, parse_config
from server.engine import Engine, EngineOptions
from server.pipeline import CompletionService, stage_medians
from server.protocol import ProtegeProtocol
from server.scheduler import Supersession

log = logging.getLogger("protege")

# Each module exposes ``register(server: ProtegeServer) -> None``. Order does not matter.
FEATURE_MODULES = (
    "server.features.lifecycle",
    "server.features.inline_completion",
    "server.features.completion",
    "server.features.commands",
    "server.features.documents",
    "server.features.explain",
    "server.features.index_commands",
    "server.features.security_actions",
)

VERSION = "0.1.0"


class LspLogHandler(logging.Handler):
    """Forwards log records to the client as ``window/logMessage`` (thread-safe)."""

    LEVELS = {logging.ERROR: types.MessageType.Error, logging.WARNING: types.MessageType.Warning,
              logging.INFO: types.MessageType.Info}

    def __init__(self, server: ProtegeServer) -> None:
        super().__init__(level=logging.INFO)
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        loop = self.server.loop
        if loop is None or loop.is_closed():
            return
        msg_type = self.LEVELS.get(record.levelno, types.MessageType.Log)
        params = types.LogMessageParams(type=msg_type, message=self.format(record))
        try:
            loop.call_soon_threadsafe(self.server.window_log_message, params)
        except RuntimeError:
            pass  # loop shutting down


class ProtegeServer(LanguageServer):
    """Language server with Protege's state: config, engine, completion service, index."""

    def __init__(self, model: str | None = None, overrides: dict[str, Any] | None = None) -> None:
        super().__init__("protege", VERSION, protocol_cls=ProtegeProtocol)
        self.cli_overrides: dict[str, Any] = dict(overrides or {})
        if model:
            self.cli_overrides["model"] = model
        self.raw_options: dict[str, Any] = {}
        self.config, _ = parse_config(self.cli_overrides)
        self.engine = Engine(self._engine_options())
        self.service = CompletionService(self.config, self.engine)
        self.supersession = Supersession()
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="protege-model")
        self.index_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="protege-index",
                                                 initializer=lower_thread_priority)
        self.memory_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="protege-memory",
                                                  initializer=lower_thread_priority)
        self.memory_root: Any = None  # workspace root once the repository memory is built
        self.memory_error: str | None = None
        self.engine_ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._warned: set[str] = set()
        self.index: Any = None  # indexing.api.RepoIndex once opened
        self.index_error: str | None = None
        self.search_socket: Any = None  # answers `protege search` while the index is open
        self.watchers_registered = False  # the client reports file changes through didChangeWatchedFiles
        self.annotations: dict[str, list[Any]] = {}  # uri -> findings of accepted annotated suggestions
        self.counters = {"completionRequests": 0, "superseded": 0, "cancelled": 0, "errors": 0}
        for name in FEATURE_MODULES:
            importlib.import_module(name).register(self)

    def report_server_error(self, error: Exception, source: Any) -> None:
        """A body that is not JSON is answered with a parse error (JSON-RPC -32700, id null); other
        out-of-band errors go to pygls's default (logged, shown to the user)."""
        protocol = self.protocol
        if isinstance(protocol, ProtegeProtocol) and protocol.answer_unparseable(error):
            return
        super().report_server_error(error, source)

    # -- configuration -------------------------------------------------------------------
    def _engine_options(self) -> EngineOptions:
        c = self.config
        return EngineOptions(model=c.model, family=c.family, dtype=c.dtype, quantize=c.quantize,
                             allow_online=c.allow_online, threads=c.threads, decoder=c.decoder,
                             draft_tokens=c.draft_tokens)

    def apply_options(self, raw: dict[str, Any] | None, source: str) -> None:
        """Merge wire options (init options or workspace settings) and reload what changed."""
        merged = merge_raw(merge_raw(self.raw_options, raw or {}), self.cli_overrides)
        cfg, warnings = parse_config(merged)
        for w in warnings:
            self.warn_once(f"config:{w}", f"Protege: {w} (from {source})")
        self.raw_options = merge_raw(self.raw_options, raw or {})
        old = self.config
        self.config = cfg
        self.service.reconfigure(cfg)
        engine_changed = (old.model, old.family, old.dtype, old.quantize, old.allow_online, old.threads,
                          old.decoder, old.draft_tokens) != (cfg.model, cfg.family, cfg.dtype, cfg.quantize,
                                                             cfg.allow_online, cfg.threads, cfg.decoder,
                                                             cfg.draft_tokens)
        if self.engine.state == "unloaded":
            self.engine.options = self._engine_options()
        elif engine_changed:
            self.engine = Engine(self._engine_options())
            self.service.engine = self.engine
            self.start_engine()

    def start_engine(self) -> None:
        """Load the model in a background thread; report a failure once via showMessage."""
        self.engine_ready.clear()
        if not self.config.model and self.engine.state == "unloaded":
            promoted = self._promoted_model()
            if promoted is not None:
                log.info("using this workspace's promoted student: %s", promoted)
                self.engine.options.model = str(promoted)
        engine = self.engine

        def load() -> None:
            engine.load()
            self.engine_ready.set()
            if engine.state == "error":
                self.warn_once(f"model:{engine.error}", f"Protege: {engine.error}", types.MessageType.Error)
            else:
                log.info("model ready: %s (%s parameters)", engine.model_path, f"{engine.parameters():,}")

        threading.Thread(target=load, name="protege-load", daemon=True).start()

    def stop_work(self) -> None:
        """Cancel decodes in flight, drop queued work and close the index (idempotent)."""
        self.supersession.cancel_all()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.index_executor.shutdown(wait=False, cancel_futures=True)
        self.memory_executor.shutdown(wait=False, cancel_futures=True)
        for attr, what in (("search_socket", "the search socket"), ("index", "the index")):
            resource = getattr(self, attr)
            if resource is None:
                continue
            try:
                resource.close()
            except Exception as exc:  # closing must never block the exit
                log.warning("closing %s failed: %s", what, exc)
            setattr(self, attr, None)

    @staticmethod
    def exit_soon(code: int, grace_s: float = 2.0) -> None:
        """Exit the process after ``grace_s`` even if a worker thread is still busy (e.g. loading)."""
        import os

        def hard_exit() -> None:
            sys.stderr.flush()
            os._exit(code)

        timer = threading.Timer(grace_s, hard_exit)
        timer.daemon = True
        timer.start()

    def _promoted_model(self) -> Any:
        """The student `protege distill` promoted for this workspace, if there is one."""
        from distill_code.workspace import served_promoted_model
        from server.features.workspace_index import workspace_root

        root = workspace_root(self)
        if root is None:
            return None
        return served_promoted_model(root)

    # -- messages ------------------------------------------------------------------------
    def warn_once(self, key: str, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        """Show ``message`` to the user once per ``key`` (thread-safe); always log it."""
        log.warning(message)
        if key in self._warned:
            return
        self._warned.add(key)
        params = types.ShowMessageParams(type=kind, message=message)
        if self.loop is not None and not self.loop.is_closed():
            try:
                if threading.current_thread() is threading.main_thread():
                    self.window_show_message(params)
                else:
                    self.loop.call_soon_threadsafe(self.window_show_message, params)
            except RuntimeError:
                pass

    def status(self) -> dict[str, Any]:
        """What the status command reports."""
        from server.config import to_wire

        e = self.engine
        return {
            "version": VERSION,
            "model": {"path": e.model_path, "state": e.state, "error": e.error,
                      "family": e.template.family if e.template else None,
                      "parameters": e.parameters(), "dtype": self.config.dtype, "quantize": self.config.quantize,
                      "decoder": e.decoder_name, "fimLayout": self.service.layout(),
                      "promptContext": self.service.prompt_context() if e.ready else None,
                      "contextTokens": e.prompt_budget(self.config.context_tokens)},
            "engine": dict(e.stats),
            "cache": self.service.cache.stats(),
            "screening": {"enabled": self.config.screening.enabled, **self.service.screen_stats},
            "index": {**(self.index.status() if self.index is not None else {"state": "closed",
                                                                            "error": self.index_error}),
                      "watchers": self.watchers_registered},
            "memory": self._memory_status(),
            "requests": dict(self.counters),
            # Median ms per stage of the recent model requests: context retrieval, prompt building, the
            # memory hook, decoding, post-processing, the security screen.
            "latency": stage_medians(self.service.stage_history),
            "config": to_wire(self.config),
        }

    def _memory_status(self) -> dict[str, Any]:
        mem = self.service.memory
        out: dict[str, Any] = {"enabled": self.config.memory.enabled, "error": self.memory_error,
                               "weights": self.service._mix.source if self.service._mix is not None else None}
        if mem is not None:
            out.update(mem.status())
            out["workspace"] = str(self.memory_root) if self.memory_root is not None else None
        return out


def create_server(model: str | None = None, overrides: dict[str, Any] | None = None) -> ProtegeServer:
    return ProtegeServer(model=model, overrides=overrides)
