"""Completion quality metrics shared by training, evaluation, model cards and benchmarks."""

from __future__ import annotations

import difflib
import re

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the two agree after stripping surrounding whitespace, else 0.0."""
    return float(prediction.strip() == reference.strip())


def edit_similarity(prediction: str, reference: str) -> float:
    """1 - normalised Levenshtein distance, in [0, 1] (1.0 for two empty strings)."""
    a, b = prediction.strip(), reference.strip()
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    # Classic two-row DP; strings here are lines or short blocks.
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b))


def identifier_f1(prediction: str, reference: str) -> float:
    """F1 over the multiset of identifiers in prediction vs reference (1.0 when both have none)."""
    p, r = _IDENT.findall(prediction), _IDENT.findall(reference)
    if not p and not r:
        return 1.0
    if not p or not r:
        return 0.0
    sm = difflib.SequenceMatcher(a=p, b=r, autojunk=False)
    common = sum(block.size for block in sm.get_matching_blocks())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)
