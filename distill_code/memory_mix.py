"""Mixing the repository memory (∞-gram) into a model's next-token distribution.

``p = (1 - λ) · p_model + λ · p_memory``, where λ depends on how much the memory's answer can be
trusted: the length of the longest matching suffix, whether every occurrence was followed by the
same token ("sparse", as in the infini-gram paper) or not ("dense"), and whether the model itself is
confident (top probability ≥ ``CONFIDENT``): a model that knows the answer should not be overruled by
a short match, while a weak one should follow even short matches. The λ table is fitted on held-out
files (``fit_weights``: the λ per bucket that maximises the likelihood of the true next tokens) and
stored beside the model as ``memory_mix.json``; serving and the distiller's teacher ensemble both read
it from here, so they mix the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE_NAME = "memory_mix.json"
# Match-length buckets: [1], [2], [3], [4,5], [6,7], [8,11], [12,15], [16,23], [24,+).
LENGTH_EDGES: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24)
GRID = tuple(i / 40 for i in range(40)) + (0.99,)

# Used when a model ships no fitted table: the starter student's table (bench/bench_memory.py --fit, fitted on
# held-out files of httpx, typer and tenacity -- never on the repositories the benchmark reports); a fitted
# memory_mix.json beside the model replaces it (distilled students copy their base student's).
DEFAULT_SPARSE = (0.1, 0.3, 0.425, 0.6, 0.7, 0.725, 0.8, 0.875, 0.925)
DEFAULT_DENSE = (0.175, 0.25, 0.4, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5)
# When the model is confident, a short match must not overrule it; long matches still copy.
DEFAULT_SPARSE_CONFIDENT = (0.0, 0.1, 0.225, 0.35, 0.35, 0.35, 0.35, 0.425, 0.425)
DEFAULT_DENSE_CONFIDENT = (0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2)
CONFIDENT = 0.5  # the model's top probability at or above which the "confident" tables apply
TABLES = ("sparse", "dense", "sparse_confident", "dense_confident")
DEFAULTS = dict(zip(TABLES, (DEFAULT_SPARSE, DEFAULT_DENSE, DEFAULT_SPARSE_CONFIDENT, DEFAULT_DENSE_CONFIDENT),
                    strict=True))


def bucket(length: int) -> int:
    """Index of ``length`` in ``LENGTH_EDGES`` (lengths ≥ 1)."""
    b = 0
    for i, edge in enumerate(LENGTH_EDGES):
        if length >= edge:
            b = i
    return b


@dataclass
class MixWeights:
    sparse: tuple[float, ...] = DEFAULT_SPARSE
    dense: tuple[float, ...] = DEFAULT_DENSE
    sparse_confident: tuple[float, ...] = DEFAULT_SPARSE_CONFIDENT
    dense_confident: tuple[float, ...] = DEFAULT_DENSE_CONFIDENT
    source: str = "default"
    fitted_on: dict[str, Any] = field(default_factory=dict)
    # Decoding stops before a token whose mixed probability is below this (after the first token of the
    # suggestion): an unsure tail is more often wrong than right, and a shorter suggestion that is right
    # is worth more than a longer one that is not. 0 never stops; fitted with the tables (``fit_stop``).
    stop_below: float = 0.0

    def weight(self, length: int, sparse: bool, model_top: float = 0.0) -> float:
        """λ for a match of ``length`` tokens; ``model_top`` is the model's own top probability."""
        if length <= 0:
            return 0.0
        name = ("sparse" if sparse else "dense") + ("_confident" if model_top >= CONFIDENT else "")
        table = getattr(self, name)
        return float(table[min(bucket(length), len(table) - 1)])

    def to_dict(self) -> dict[str, Any]:
        return {"length_edges": list(LENGTH_EDGES), "confident": CONFIDENT,
                **{name: list(getattr(self, name)) for name in TABLES}, "stop_below": self.stop_below,
                "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str) -> MixWeights:
        """Parse a table (missing tables take the defaults); raises ``ValueError`` naming what is wrong."""
        if not isinstance(raw, dict):
            raise ValueError("memory mix weights must be an object with 'sparse' and 'dense' lists")
        out = []
        for key in TABLES:
            values = raw.get(key, list(DEFAULTS[key]))
            if (not isinstance(values, list) or len(values) != len(LENGTH_EDGES)
                    or not all(isinstance(v, int | float) and 0.0 <= v <= 1.0 for v in values)):
                raise ValueError(f"memory mix '{key}' must be {len(LENGTH_EDGES)} numbers in [0, 1] "
                                 f"(one per match-length bucket {list(LENGTH_EDGES)})")
            out.append(tuple(float(v) for v in values))
        fitted = raw.get("fitted_on")
        stop = raw.get("stop_below", 0.0)
        if isinstance(stop, bool) or not isinstance(stop, int | float) or not 0.0 <= stop < 1.0:
            raise ValueError("memory mix 'stop_below' must be a number in [0, 1)")
        return cls(out[0], out[1], out[2], out[3], source=source, fitted_on=fitted if isinstance(fitted, dict) else {},
                   stop_below=float(stop))

    def save(self, model_dir: Path) -> Path:
        path = model_dir / FILE_NAME
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path


def load_weights(model_dir: Path | None, override: dict[str, Any] | None = None) -> tuple[MixWeights, str | None]:
    """The mix table: the configuration's override, else the model's ``memory_mix.json``, else the default.
    Returns it with a warning when a table was unusable (the next one in that order is used)."""
    warning = None
    if override:
        try:
            return MixWeights.from_dict(override, "configuration"), None
        except ValueError as exc:
            warning = f"{exc}; using the model's table"
    if model_dir is not None and (model_dir / FILE_NAME).exists():
        path = model_dir / FILE_NAME
        try:
            return MixWeights.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path)), warning
        except (OSError, ValueError) as exc:
            warning = f"{path} is unusable ({exc}); using the default memory mix"
    return MixWeights(), warning


def mix(model_probs: Any, next_counts: dict[int, int], lam: float) -> Any:
    """``(1 - lam) · model_probs + lam · memory`` for a 1-D torch tensor of probabilities (a new tensor).
    Token ids outside the model's output are ignored."""
    import torch

    out = model_probs * (1.0 - lam)
    total = sum(next_counts.values())
    if total <= 0 or lam <= 0.0:
        return model_probs
    vocab = int(model_probs.shape[-1])
    ids = [t for t in next_counts if 0 <= t < vocab]
    if not ids:
        return model_probs
    idx = torch.tensor(ids, dtype=torch.long)
    val = torch.tensor([next_counts[t] / total for t in ids], dtype=out.dtype)
    out.index_add_(0, idx, val * lam)
    return out


@dataclass
class Observation:
    """One position of held-out text: the match it got and both parts' probability of the true token."""

    length: int
    sparse: bool
    p_model: float
    p_memory: float
    model_top: float = 0.0  # the model's top probability at this position


def fit_weights(observations: Iterable[Observation], min_count: int = 20,
                fitted_on: dict[str, Any] | None = None) -> MixWeights:
    """Per (sparse, length bucket): the λ on ``GRID`` maximising Σ log((1-λ)·p_model + λ·p_memory).
    Buckets with fewer than ``min_count`` observations take their neighbour's value (or the default)."""
    groups: dict[tuple[str, int], list[Observation]] = {}
    for o in observations:
        if o.length > 0:
            name = ("sparse" if o.sparse else "dense") + ("_confident" if o.model_top >= CONFIDENT else "")
            groups.setdefault((name, bucket(o.length)), []).append(o)
    tables: list[tuple[float, ...]] = []
    for name in TABLES:
        values: list[float | None] = []
        for b in range(len(LENGTH_EDGES)):
            obs = groups.get((name, b), [])
            values.append(_best_lambda(obs) if len(obs) >= min_count else None)
        tables.append(_fill(values, DEFAULTS[name]))
    counts = {f"{n}:{LENGTH_EDGES[b]}": len(v) for (n, b), v in sorted(groups.items())}
    return MixWeights(tables[0], tables[1], tables[2], tables[3], source="fitted",
                      fitted_on={**(fitted_on or {}), "observations": counts})


def _best_lambda(obs: Sequence[Observation]) -> float:
    best, best_ll = 0.0, -math.inf
    for lam in GRID:
        ll = sum(math.log(max((1 - lam) * o.p_model + lam * o.p_memory, 1e-12)) for o in obs)
        if ll > best_ll:
            best, best_ll = lam, ll
    return best


def _fill(values: list[float | None], default: Sequence[float]) -> tuple[float, ...]:
    """Missing buckets copy the nearest fitted shorter bucket, else the nearest longer one, else the default;
    the table is made non-decreasing in length (a longer match is never trusted less)."""
    out: list[float] = []
    for i, v in enumerate(values):
        if v is None:
            shorter = [x for x in values[:i] if x is not None]
            longer = [x for x in values[i + 1:] if x is not None]
            v = shorter[-1] if shorter else (longer[0] if longer else default[i])
        out.append(v)
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1])
    return tuple(out)


STOP_GRID = (0.0, 0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def cut_unsure(text: str, probs: Sequence[float], ends: Sequence[int], first_free: int, threshold: float) -> str:
    """``text`` as decoding with ``stop_below=threshold`` would have left it: cut before the first token
    (past the first free one) whose probability is below the threshold. ``ends[i]`` is where token ``i``
    ends in ``text``; tokens before ``first_free`` were forced (token healing) and never stop."""
    if threshold <= 0.0:
        return text
    for i in range(first_free + 1, len(probs)):
        if probs[i] < threshold:
            return text[:max(0, ends[i - 1])]
    return text


def fit_stop(cases: Iterable[tuple[str, Sequence[float], Sequence[int], int, str]],
             score: Any, min_gain: float = 0.005) -> tuple[float, dict[float, float]]:
    """The ``stop_below`` that maximises ``score(predictions, targets)`` (exact match, say) over ``cases``
    of (suggestion, token probabilities, token ends, first free token, target); returns it with the score
    of every threshold tried. Ties go to the smaller threshold (stopping less), and a threshold must beat
    never stopping by ``min_gain`` (a one-case gain is noise, and stopping costs the user the tail)."""
    rows = list(cases)
    scores: dict[float, float] = {}
    for t in STOP_GRID:
        preds = [cut_unsure(text, probs, ends, first, t) for text, probs, ends, first, _ in rows]
        scores[t] = float(score(preds, [target for *_, target in rows]))
    best = max(STOP_GRID, key=lambda t: (scores[t], -t))
    if scores[best] < scores[0.0] + min_gain:
        best = 0.0
    return best, scores
