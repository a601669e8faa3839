"""The repository memory inside the server: built when the model is ready, kept current on save and on
watched changes, on its own worker thread so a long index run never delays it (indexing/memory.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.app import ProtegeServer

log = logging.getLogger("protege")
MODEL_WAIT_S = 600.0  # the memory is in the model's tokenizer: wait for the model to load


def open_memory(ls: ProtegeServer, root: Path) -> None:
    """Load the saved memory (rebuilding it when missing or damaged), then bring it up to date."""
    if not ls.config.memory.enabled:
        return

    def work() -> None:
        if not ls.engine_ready.wait(MODEL_WAIT_S) or not ls.engine.ready:
            log.warning("repository memory not built: the model did not load")
            return
        from indexing.config import IndexConfig

        opts = ls.config.index
        cfg = IndexConfig(chroma_url=opts.chroma_url, cache_dir=opts.cache_dir)
        try:
            mem = ls.service.ensure_memory(cfg.resolved_cache_dir(root.resolve()), cfg)
            t0 = time.perf_counter()
            loaded = mem.load()
            if not loaded:
                log.info("building the repository memory (%s)", mem.stats.reason or "first start")
            stats = mem.build(root.resolve())  # tokens of unchanged files are reused from the loaded memory
            ls.memory_root = root.resolve()
            log.info("repository memory ready: %d files, %d tokens in %.2fs", stats.files, stats.tokens,
                     time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - completions go on without the workspace memory
            ls.memory_error = f"could not build the repository memory: {exc}"
            log.warning("%s; completions continue with the open buffer only", ls.memory_error)

    ls.memory_executor.submit(work)


def update_memory(ls: ProtegeServer, paths: list[Path]) -> None:
    """Re-read saved, changed, created or deleted files into the memory (in the background)."""
    root = getattr(ls, "memory_root", None)
    mem = ls.service.memory
    if root is None or mem is None or mem.shard is None or not paths:
        return
    rels = []
    for p in paths:
        try:
            rels.append(Path(p).resolve().relative_to(root).as_posix())
        except ValueError:
            continue  # outside the workspace: never memory
    if not rels:
        return

    def work() -> None:
        try:
            mem.update(root, rels)
        except Exception as exc:  # noqa: BLE001
            log.warning("repository memory update of %s failed: %s", ", ".join(rels), exc)

    ls.memory_executor.submit(work)
