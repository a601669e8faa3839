"""Request handling for completions: per-document supersession, debounce, and the typed-ahead LRU cache."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class CacheEntry:
    prefix: str  # document text before the cursor when the suggestion was made (tail only)
    suffix_head: str  # the start of the text after the cursor
    suggestion: str


class SuggestionCache:
    """LRU of suggestions with typed-ahead reuse.

    A later request whose prefix extends a cached prefix by exactly the characters the user
    typed, which the cached suggestion starts with, is answered with the rest of that suggestion.
    """

    # Only the tail of the prefix is kept: enough to tell positions apart, cheap to compare.
    PREFIX_TAIL = 2000
    SUFFIX_HEAD = 200

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, int], CacheEntry] = OrderedDict()
        self._per_uri: dict[str, list[tuple[str, int]]] = {}
        self.hits = 0
        self.typed_ahead_hits = 0
        self.misses = 0
        self._n = 0

    def put(self, uri: str, prefix: str, suffix: str, suggestion: str) -> None:
        if self.capacity <= 0 or not suggestion:
            return
        self._n += 1
        key = (uri, self._n)
        self._entries[key] = CacheEntry(prefix[-self.PREFIX_TAIL:], suffix[: self.SUFFIX_HEAD], suggestion)
        self._per_uri.setdefault(uri, []).append(key)
        while len(self._entries) > self.capacity:
            old, _ = self._entries.popitem(last=False)
            keys = self._per_uri.get(old[0], [])
            if old in keys:
                keys.remove(old)

    def get(self, uri: str, prefix: str, suffix: str) -> tuple[str, str] | None:
        """(continuation, "cache" | "typed-ahead") for this position, or None."""
        tail = prefix[-self.PREFIX_TAIL:]
        head = suffix[: self.SUFFIX_HEAD]
        for key in reversed(self._per_uri.get(uri, [])):
            e = self._entries.get(key)
            if e is None or e.suffix_head != head:
                continue
            if tail == e.prefix:
                self._entries.move_to_end(key)
                self.hits += 1
                return e.suggestion, "cache"
            # Typed ahead: compare on the un-truncated overlap of the two tails.
            typed = _typed_since(e.prefix, tail)
            if typed is not None and typed and e.suggestion.startswith(typed) and len(typed) < len(e.suggestion):
                self._entries.move_to_end(key)
                self.hits += 1
                self.typed_ahead_hits += 1
                return e.suggestion[len(typed):], "typed-ahead"
        self.misses += 1
        return None

    def clear(self, uri: str | None = None) -> None:
        if uri is None:
            self._entries.clear()
            self._per_uri.clear()
            return
        for key in self._per_uri.pop(uri, []):
            self._entries.pop(key, None)

    def stats(self) -> dict[str, int | float]:
        total = self.hits + self.misses
        return {"entries": len(self._entries), "hits": self.hits, "typedAheadHits": self.typed_ahead_hits,
                "misses": self.misses, "hitRate": (self.hits / total) if total else 0.0}


def _typed_since(old_tail: str, new_tail: str) -> str | None:
    """Characters appended to the document prefix since ``old_tail`` (None if it is not an extension)."""
    # Both are tails of at most PREFIX_TAIL chars; the new one may have dropped its first chars.
    for drop in range(0, 64):
        base = old_tail[drop:]
        if new_tail.startswith(base):
            return new_tail[len(base):]
        if len(new_tail) < SuggestionCache.PREFIX_TAIL:
            break  # no truncation happened, so the first try was the only valid alignment
    return None


class Supersession:
    """Tracks the newest completion request per document, so older ones stop early."""

    def __init__(self) -> None:
        self._latest: dict[str, int] = {}
        self._events: dict[str, threading.Event] = {}
        self._n = 0

    def begin(self, uri: str) -> tuple[int, threading.Event]:
        """Register a new request for ``uri``; the previous one's event is set (it is superseded)."""
        self._n += 1
        old = self._events.get(uri)
        if old is not None:
            old.set()
        ev = threading.Event()
        self._latest[uri] = self._n
        self._events[uri] = ev
        return self._n, ev

    def cancel_all(self) -> None:
        for ev in self._events.values():
            ev.set()

    def is_latest(self, uri: str, seq: int) -> bool:
        return self._latest.get(uri) == seq

    async def debounce(self, uri: str, seq: int, delay_ms: int) -> bool:
        """Wait ``delay_ms``; True if this request is still the newest for its document."""
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        return self.is_latest(uri, seq)
