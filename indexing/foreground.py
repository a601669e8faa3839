"""Interactive work first: background indexing steps aside while a completion or an explanation runs.

The language server indexes in the same process as the model. Indexing is Python-heavy (tree-sitter
bookkeeping, the Bandit screen) and a decoding step re-takes the GIL between its ops, so a completion
made during an index update waited on the indexer's thread again and again: p50 81 ms alone, ~1 s
while the workspace indexed (measured on 2 cores, ~10M model, int8). Requests mark themselves
``active()``; the indexer calls ``wait_idle()`` between files and between embedding batches and
resumes when no request is in flight, or after ``max_wait_s`` so that constant typing cannot stall
an index forever.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

BACKGROUND_NICENESS = 10


class Foreground:
    def __init__(self) -> None:
        self._active = 0
        self._cond = threading.Condition()

    @contextmanager
    def active(self) -> Iterator[None]:
        """Mark interactive work in flight for the duration of the block (nests, thread-safe)."""
        with self._cond:
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    self._cond.notify_all()

    @property
    def busy(self) -> bool:
        return self._active > 0

    def wait_idle(self, max_wait_s: float = 5.0) -> bool:
        """Block while interactive work is in flight (at most ``max_wait_s``); True if it had to wait."""
        with self._cond:
            if not self._active:
                return False
            self._cond.wait_for(lambda: not self._active, timeout=max_wait_s)
            return True


FOREGROUND = Foreground()


def lower_thread_priority(niceness: int = BACKGROUND_NICENESS) -> None:
    """Lower the calling thread's CPU priority (Linux: per thread); a no-op where unsupported.

    Only for threads that do background work for their whole life (index and embedding workers):
    an unprivileged thread cannot raise its priority again.
    """
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, max(current, niceness))
    except (AttributeError, OSError):
        pass
