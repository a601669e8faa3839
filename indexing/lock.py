"""Single-writer lock: an exclusive flock on a file in the cache dir, so two editor windows never interleave writes."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path


class IndexLockedError(RuntimeError):
    pass


class WriterLock:
    """Held while updating; released on close or when the process dies (the kernel drops flocks)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free now; False (and nothing held) if another holder has it."""
        try:
            self.acquire(0.0)
        except IndexLockedError:
            return False
        return True

    def holder(self) -> str:
        """The pid written by the current holder, or "unknown"."""
        try:
            return self.path.read_text(encoding="ascii", errors="replace").strip() or "unknown"
        except OSError:
            return "unknown"

    def acquire(self, timeout_s: float = 0.0) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                    os.close(fd)
                    raise IndexLockedError(
                        f"another process (pid {holder}) is updating the index at {self.path.parent}; "
                        "try again when it finishes") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
