"""Near-duplicate files by MinHash over normalised lines, confirmed by exact Jaccard.

A file is a near-duplicate when at least ``threshold`` of the distinct lines it shares with an earlier
kept file (Jaccard of their line sets) are the same: copied modules with a few edits, older copies of a
package's helpers, generated siblings. The first file of each group is kept, so the order of the input
(roots in recipe order) decides which copy survives.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

_PRIME = 4294967311  # the first prime above 2**32: (a * h + b) % p stays below 2**64 for 32-bit a, h
_MIN_LINE = 8


def line_set(text: str) -> set[int]:
    """crc32 of each distinct stripped line that carries content (blank lines and lone brackets don't)."""
    out: set[int] = set()
    for line in text.splitlines():
        s = line.strip()
        if len(s) >= _MIN_LINE:
            out.add(zlib.crc32(s.encode("utf-8", "replace")))
    return out


def signatures(sets: Sequence[set[int]], num_perm: int = 64, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**32 - 1, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 2**32 - 1, size=num_perm, dtype=np.uint64)
    sig = np.full((len(sets), num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    for i, s in enumerate(sets):
        if s:
            h = np.fromiter(s, dtype=np.uint64, count=len(s))
            sig[i] = ((h[:, None] * a[None, :] + b[None, :]) % _PRIME).min(axis=0)
    return sig


def near_duplicate_keys(items: Sequence[tuple[str, str]], threshold: float = 0.8, bands: int = 16,
                        rows: int = 4, min_lines: int = 5) -> set[str]:
    """Keys of the files (``(key, text)`` in order) that near-duplicate an earlier kept file."""
    sets = [line_set(t) for _, t in items]
    sig = signatures(sets, num_perm=bands * rows)
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    drop: set[str] = set()
    for i, (key, _) in enumerate(items):
        s = sets[i]
        if len(s) < min_lines:
            continue
        keys = [sig[i, band * rows:(band + 1) * rows].tobytes() for band in range(bands)]
        checked: set[int] = set()
        dup = False
        for band, k in enumerate(keys):
            for j in buckets[band].get(k, ()):
                if j in checked:
                    continue
                checked.add(j)
                other = sets[j]
                inter = len(s & other)
                if inter and inter / (len(s) + len(other) - inter) >= threshold:
                    dup = True
                    break
            if dup:
                break
        if dup:
            drop.add(key)
            continue
        for band, k in enumerate(keys):
            buckets[band].setdefault(k, []).append(i)
    return drop
