"""The training corpus's ∞-gram as a member of the teacher (issue 16): a non-parametric memory of the
files the teacher trained on, mixed into its next-token distribution the way the server mixes repository
memory (``distill_code.memory_mix``).

The memory holds the corpus's *train* split only, so validation text is scored against files it never
contains; validation is split by file and near-duplicates were removed before the split, so what the
memory can recall is what other files of the same packages really share (imports, idioms, API names),
not the validation file itself.

Scoring is causal, as the model's own validation loss: the prediction at position ``t`` of a block sees
``block[:t + 1]`` only. The ∞-gram is queried with the *document-order* left context of that position: in
a PSM example (``<fim_prefix> pre <fim_suffix> suf <fim_middle> mid``) the middle continues the prefix,
not the suffix that precedes it in the stream; elsewhere the context runs back to the last sentinel
(sentinels never occur in corpus text, so no match could cross one anyway).

The λ table is fitted by likelihood on some validation blocks and scored on the others (``cross_fitted``:
two folds, each scored with the table fitted on the other), so the reported loss is held out from the
fit as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from distill_code.memory_mix import MixWeights, Observation, fit_weights

MAX_QUERY_TOKENS = 48  # indexing.memory.MAX_CONTEXT: a query never looks further back
BACKOFF = 2  # shorter match lengths kept besides the longest, for the learnt gate
PROJECT_BACKOFF = 1  # the same for the memory of the position's own project (package) only


@dataclass(frozen=True)
class Sentinels:
    prefix: int
    suffix: int
    middle: int
    eos: int

    @classmethod
    def of(cls, tokenizer: Any, family: str = "starcoder") -> Sentinels:
        from distill_code.fim import template_for

        t = template_for(family)
        ids = [tokenizer.convert_tokens_to_ids(s) for s in (t.prefix, t.suffix, t.middle, t.eos)]
        return cls(*ids)


def train_shard(tokens: np.ndarray, ranges: Sequence[tuple[int, int]]) -> Any:
    """One suffix array over the train files (``ranges`` into ``tokens``, one per file)."""
    from indexing.memory import Shard

    return Shard.from_token_lists((f"file:{i}", "", tokens[a:b]) for i, (a, b) in enumerate(ranges))


def project_of(path: str) -> str:
    """A corpus file's project: its root's label (``numpy-2.4.6/numpy/linalg/...`` -> ``numpy-2.4.6``)."""
    return path.split("/", 1)[0]


def project_shards(tokens: np.ndarray, offsets: np.ndarray, validation: np.ndarray,
                   projects: Sequence[str]) -> tuple[list[Any], np.ndarray]:
    """One shard per project over its train files, and for every corpus file the index of its project's
    shard (-1: the project has no train files)."""
    names = sorted(set(projects))
    ranges: dict[str, list[tuple[int, int]]] = {n: [] for n in names}
    for i, name in enumerate(projects):
        if not validation[i]:
            ranges[name].append((int(offsets[i]), int(offsets[i + 1])))
    shards: list[Any] = []
    index: dict[str, int] = {}
    for name in names:
        if ranges[name]:
            index[name] = len(shards)
            shards.append(train_shard(tokens, ranges[name]))
    return shards, np.array([index.get(n, -1) for n in projects], dtype=np.int64)


def document_contexts(block: Sequence[int], s: Sentinels, limit: int = MAX_QUERY_TOKENS) -> list[list[int]]:
    """For each position ``t`` of ``block``, the last ``limit`` tokens of its document-order left context,
    built from ``block[:t + 1]`` only (causal)."""
    out: list[list[int]] = []
    ctx: list[int] = []
    prefix: list[int] = []  # the current PSM example's prefix, for its middle
    state = "text"  # text | prefix | suffix | middle
    spm = False
    prev = -1
    for tok in block:
        tok = int(tok)
        if tok == s.prefix:
            state, ctx, prefix, spm = "prefix", [], [], False
        elif tok == s.suffix:
            spm = state == "prefix" and prev == s.prefix  # <fim_prefix><fim_suffix>: the SPM layout
            state, ctx = "suffix", []
        elif tok == s.middle:
            ctx = [] if spm else list(prefix[-limit:])
            state = "middle"
        elif tok == s.eos:
            state, ctx, prefix = "text", [], []
        else:
            ctx.append(tok)
            if state == "prefix":
                prefix.append(tok)
            if len(ctx) > 4 * limit:
                del ctx[:-limit]
        prev = tok
        out.append(ctx[-limit:])
    return out


@dataclass
class Position:
    """One predicted position of a validation block: the model's probability of the true next token and
    its top probability; the corpus memory's and the block-so-far memory's match and probability."""

    p_model: float
    model_top: float
    buffer: Observation
    # The corpus memory at its longest match and at the next BACKOFF shorter lengths:
    # (length, occurrences, probability of the true token, every occurrence followed by one token).
    orders: tuple[tuple[int, int, float, bool], ...] = ()
    # The same from the train files of the position's own project (the package its file belongs to): what
    # repository memory is at serving time. Empty when unknown.
    project: tuple[tuple[int, int, float, bool], ...] = ()

    def corpus_on(self, base: float) -> Observation:
        """The corpus memory's longest match as an observation mixed into ``base`` (the model's
        probability of the true token, or a mixture already containing it)."""
        if not self.orders:
            return Observation(0, False, base, 0.0, self.model_top)
        length, _, p_mem, sparse = self.orders[0]
        return Observation(length, sparse, base, p_mem, self.model_top)


def buffer_matches(row: np.ndarray, limit: int = MAX_QUERY_TOKENS) -> list[tuple[int, dict[int, int]]]:
    """For each position ``t``: the longest suffix of ``row[:t + 1]`` that also ends at an earlier position
    ``j < t``, as (length, next-token counts over those ``j``). The open buffer's memory, in the stream's
    order, by the longest-common-suffix recurrence (no index needed for a few hundred tokens)."""
    n = len(row)
    out: list[tuple[int, dict[int, int]]] = []
    prev = np.zeros(0, dtype=np.int32)
    for t in range(n):
        cur = np.zeros(t, dtype=np.int32)
        if t:
            eq = row[:t] == row[t]
            cur[0] = int(eq[0])
            if t > 1:
                cur[1:] = np.where(eq[1:], np.minimum(prev[: t - 1] + 1, limit), 0)
        best = int(cur.max()) if t else 0
        if best > 0:
            nxt = row[np.flatnonzero(cur == best) + 1]
            uniq, counts = np.unique(nxt, return_counts=True)
            out.append((best, dict(zip(uniq.tolist(), counts.tolist(), strict=True))))
        else:
            out.append((0, {}))
        prev = cur
    return out


def _observation(length: int, counts: dict[int, int], true: int, p_model: float, top: float) -> Observation:
    if length <= 0 or not counts:
        return Observation(0, False, p_model, 0.0, top)
    return Observation(length, len(counts) == 1, p_model, counts.get(true, 0) / sum(counts.values()), top)


def corpus_orders(shard: Any, context: Sequence[int], true: int,
                  backoff: int = BACKOFF) -> tuple[tuple[int, int, float, bool], ...]:
    """The corpus memory's answer at its longest usable match (what ``query_shards`` returns) and at up to
    ``backoff`` shorter lengths: (length, occurrences, probability of ``true``, sparse) each."""
    out: list[tuple[int, int, float, bool]] = []
    for length, lo, hi in reversed(shard.ranges(context)):
        if length == 0 or len(out) > backoff:
            break
        _, ids, est = shard.next_tokens(lo, hi)
        if len(ids) == 0:
            continue  # every occurrence ends its file: back off, as query_shards does
        hits = int(np.count_nonzero(ids == true))
        out.append((length, est, hits / len(ids), bool((ids == ids[0]).all())))
    return tuple(out)


@torch.no_grad()
def observe(model: Any, blocks: torch.Tensor, shard: Any, s: Sentinels, batch_size: int = 8,
            projects: Sequence[Any] = (), block_projects: np.ndarray | None = None) -> list[list[Position]]:
    """Per block, one ``Position`` per predicted token. ``block_projects[b, t]`` indexes ``projects`` (the
    project shards) for the token at ``t`` of block ``b`` (-1: none)."""
    model.eval()
    out: list[list[Position]] = []
    for i in range(0, len(blocks), batch_size):
        ids = blocks[i:i + batch_size]
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
        for b in range(ids.shape[0]):
            row = ids[b].tolist()
            ctxs = document_contexts(row, s)
            buf = buffer_matches(np.asarray(row))
            lp = logp[b]
            top = lp.max(dim=-1).values.exp().tolist()
            p_true = lp[torch.arange(len(row) - 1), ids[b, 1:]].exp().tolist()
            positions: list[Position] = []
            for t in range(len(row) - 1):
                nxt = row[t + 1]
                orders = corpus_orders(shard, ctxs[t], nxt) if ctxs[t] else ()
                own: tuple[tuple[int, int, float, bool], ...] = ()
                if block_projects is not None and ctxs[t]:
                    k = int(block_projects[i + b, t])
                    if k >= 0:
                        own = corpus_orders(projects[k], ctxs[t], nxt, PROJECT_BACKOFF)
                positions.append(Position(p_true[t], top[t],
                                          _observation(buf[t][0], buf[t][1], nxt, p_true[t], top[t]), orders, own))
            out.append(positions)
    return out


def _mixed(o: Observation, w: MixWeights) -> float:
    lam = w.weight(o.length, o.sparse, o.model_top)
    return (1 - lam) * o.p_model + lam * o.p_memory


def _nll(ps: Sequence[float]) -> float:
    return -sum(math.log(max(p, 1e-30)) for p in ps) / max(1, len(ps))


def corpus_after(positions: Sequence[Position], buffer_w: MixWeights | None) -> list[Observation]:
    """The corpus memory's observations mixed into the model (``buffer_w`` None) or into the model already
    mixed with the buffer memory."""
    return [p.corpus_on(_mixed(p.buffer, buffer_w) if buffer_w is not None else p.p_model) for p in positions]


@dataclass
class Fitted:
    buffer: MixWeights
    corpus: MixWeights

    def probability(self, p: Position) -> float:
        return _mixed(p.corpus_on(_mixed(p.buffer, self.buffer)), self.corpus)


def fit(positions: Sequence[Position]) -> Fitted:
    """The buffer table on the model, then the corpus table on the model mixed with the buffer."""
    bw = fit_weights(p.buffer for p in positions)
    return Fitted(bw, fit_weights(corpus_after(positions, bw)))


def cross_fitted(per_block: Sequence[Sequence[Position]], folds: int = 2) -> dict[str, Any]:
    """Model-only and mixture losses over all blocks, each fold scored with tables fitted on the others:
    the corpus memory alone, the buffer memory alone, and both (buffer first, then corpus)."""
    flat = [p for blk in per_block for p in blk]
    scores: dict[str, list[float]] = {"corpus": [], "buffer": [], "both": []}
    for f in range(folds):
        fit_on = [p for j, blk in enumerate(per_block) if j % folds != f for p in blk]
        held = [p for j, blk in enumerate(per_block) if j % folds == f for p in blk]
        cw = fit_weights(corpus_after(fit_on, None))
        scores["corpus"].extend(_mixed(o, cw) for o in corpus_after(held, None))
        bw = fit_weights(p.buffer for p in fit_on)
        scores["buffer"].extend(_mixed(p.buffer, bw) for p in held)
        both = fit(fit_on)
        scores["both"].extend(both.probability(p) for p in held)
    lengths = np.array([p.orders[0][0] for p in flat if p.orders])
    return {
        "positions": len(flat),
        "model_loss": _nll([p.p_model for p in flat]),
        "corpus_mixture_loss": _nll(scores["corpus"]),
        "buffer_mixture_loss": _nll(scores["buffer"]),
        "mixture_loss": _nll(scores["both"]),
        "corpus_matched_fraction": len(lengths) / max(1, len(flat)),
        "corpus_match_length_p50": float(np.median(lengths)) if len(lengths) else 0.0,
        "buffer_matched_fraction": sum(p.buffer.length > 0 for p in flat) / max(1, len(flat)),
        "gate_mixture_loss": cross_fitted_gate(per_block, folds),
    }


# ---------------------------------------------------------------------------------------------- learnt gate
# A softmax gate over experts -- the model, the corpus memory at its longest match and at BACKOFF shorter
# lengths, the buffer memory -- from categorical features of the position (match length and occurrence
# buckets, sparse or not, the model's top probability). Fitted by likelihood like the tables, but the
# experts it mixes include the shorter matches, whose counts are larger and estimates smoother.
_TOP_EDGES = (0.1, 0.3, 0.5, 0.8)
_COUNT_EDGES = (2, 4, 16, 128, 1024)


def _bin(x: float, edges: Sequence[float]) -> int:
    return sum(x >= e for e in edges)


def _groups(p: Position) -> list[tuple[tuple[tuple[int, int, float, bool], ...], int]]:
    """The memory experts' answers by group, each with its number of orders."""
    return [(p.orders, BACKOFF + 1), (p.project, PROJECT_BACKOFF + 1)]


_NL, _NC = 10, len(_COUNT_EDGES) + 1  # length buckets + "no match"; occurrence bins
_ORDER_FEATURES = _NL + _NC + 2


def _features(p: Position) -> list[int]:
    """Indices of the active one-hot features (each group offset into one vector of ``N_FEATURES``)."""
    from distill_code.memory_mix import bucket

    feats = [_bin(p.model_top, _TOP_EDGES)]
    off = len(_TOP_EDGES) + 1
    for orders, n in _groups(p):
        for k in range(n):
            if k < len(orders):
                length, count, _, sparse = orders[k]
                feats += [off + 1 + bucket(length), off + _NL + _bin(count, _COUNT_EDGES), off + _NL + _NC + int(sparse)]
            else:
                feats.append(off)  # no match at this order
            off += _ORDER_FEATURES
    b = p.buffer
    feats += [off + (1 + bucket(b.length) if b.length > 0 else 0), off + _NL + int(b.sparse)]
    return feats


N_EXPERTS = 1 + (BACKOFF + 1) + (PROJECT_BACKOFF + 1) + 1  # model, corpus orders, project orders, buffer
N_FEATURES = len(_TOP_EDGES) + 1 + (BACKOFF + 1 + PROJECT_BACKOFF + 1) * _ORDER_FEATURES + _NL + 2


def _expert_probs(p: Position) -> list[float]:
    out = [p.p_model]
    for orders, n in _groups(p):
        out += [o[2] for o in orders[:n]] + [0.0] * (n - len(orders[:n]))
    return out + [p.buffer.p_memory]


def _available(p: Position) -> list[bool]:
    out = [True]
    for orders, n in _groups(p):
        out += [k < len(orders) for k in range(n)]
    return out + [p.buffer.length > 0]


@dataclass
class Gate:
    weight: torch.Tensor  # (N_FEATURES, N_EXPERTS)

    def _tensors(self, positions: Sequence[Position]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.zeros(len(positions), N_FEATURES)
        for i, p in enumerate(positions):
            x[i, _features(p)] = 1.0
        probs = torch.tensor([_expert_probs(p) for p in positions], dtype=torch.float32)
        avail = torch.tensor([_available(p) for p in positions])
        return x, probs, avail

    @staticmethod
    def _log_likelihood(w: torch.Tensor, x: torch.Tensor, probs: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
        logits = (x @ w).masked_fill(~avail, -1e9)
        log_g = torch.log_softmax(logits, dim=-1)
        return torch.logsumexp(log_g + torch.log(probs.clamp_min(1e-30)), dim=-1)

    @classmethod
    def fit(cls, positions: Sequence[Position], steps: int = 300, lr: float = 0.1) -> Gate:
        x, probs, avail = cls(torch.zeros(0))._tensors(positions)
        w = torch.zeros(N_FEATURES, N_EXPERTS, requires_grad=True)
        opt = torch.optim.Adam([w], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss = -cls._log_likelihood(w, x, probs, avail).mean() + 1e-4 * (w ** 2).sum()
            loss.backward()
            opt.step()
        return cls(w.detach())

    def loss(self, positions: Sequence[Position]) -> float:
        x, probs, avail = self._tensors(positions)
        return float(-self._log_likelihood(self.weight, x, probs, avail).mean())


def cross_fitted_gate(per_block: Sequence[Sequence[Position]], folds: int = 2) -> float:
    """Mean NLL with the learnt gate, each fold scored with the gate fitted on the others."""
    total, n = 0.0, 0
    for f in range(folds):
        fit_on = [p for j, blk in enumerate(per_block) if j % folds != f for p in blk]
        held = [p for j, blk in enumerate(per_block) if j % folds == f for p in blk]
        total += Gate.fit(fit_on).loss(held) * len(held)
        n += len(held)
    return total / max(1, n)
