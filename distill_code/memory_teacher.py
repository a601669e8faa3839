"""The repository's ∞-gram as a member of the teacher ensemble (issue 15, item 3).

For every completion token of a training example the neural teacher's distribution is mixed with the
∞-gram's next-token distribution over the *other* files of the repository (the example's own file is
left out of the suffix array's counts, or the answer would leak into its own target):
``p = (1 - λ) · p_teacher + λ · p_memory``, λ from the fitted table the server decodes with (match length
bucket × sparse/dense × teacher confident or not, ``distill_code.memory_mix``). The student then learns,
in its weights, what repository memory adds at serving time. The end-of-middle token is the teacher's
alone: the ∞-gram knows what follows in the file, not where a completion ends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from distill_code.encoding import Encoded
from distill_code.memory_mix import MixWeights, mix
from distill_code.mining import Example
from distill_code.targets import LocalTeacher

MAX_QUERY_TOKENS = 64  # longer matches are all in the last bucket anyway


@dataclass
class MemoryStats:
    tokens_scored: int = 0
    tokens_mixed: int = 0
    mean_lambda: float = 0.0


def repository_texts(examples: Sequence[Example]) -> dict[str, str]:
    """Each file's text as the examples mined from it reconstruct it (prefix + middle + suffix)."""
    out: dict[str, str] = {}
    for ex in examples:
        if ex.task != "fim":
            continue
        text = ex.prefix + ex.middle + ex.suffix
        if len(text) > len(out.get(ex.path, "")):
            out[ex.path] = text
    return out


def build_shard(texts: dict[str, str], tokenizer: Any) -> Any:
    from indexing.memory import Shard

    paths = sorted(texts)
    ids = tokenizer([texts[p] for p in paths], add_special_tokens=False)["input_ids"] if paths else []
    return Shard.from_token_lists(
        (p, hashlib.sha256(texts[p].encode("utf-8")).hexdigest(), t) for p, t in zip(paths, ids, strict=True))


class MemoryTeacher(LocalTeacher):
    """A ``LocalTeacher`` whose distributions are mixed with the leave-own-file-out ∞-gram."""

    def __init__(self, base: LocalTeacher, shard: Any, paths: dict[str, str], weights: MixWeights,
                 fim_ids: tuple[int, int, int]) -> None:
        digest = hashlib.sha256(shard.tokens.tobytes()).hexdigest()[:12]
        super().__init__(base.models, base.weights, base.alignment,
                         f"{base.revision}+mem:{digest}:{weights.source}", base.device)
        self.shard = shard
        self.paths = paths  # example id -> repository path of the file it was mined from
        self.mix_weights = weights
        self.fim_prefix, self.fim_suffix, self.fim_middle = fim_ids
        self.stats = MemoryStats()
        self._lam_sum = 0.0

    def left_context(self, enc: Encoded) -> list[int]:
        """The file's tokens before the completion: the FIM prefix (PSM or SPM layout), else the prompt."""
        prompt = enc.ids[:enc.start]
        try:
            p0 = len(prompt) - 1 - prompt[::-1].index(self.fim_prefix)
        except ValueError:
            return list(prompt)
        if p0 + 1 < len(prompt) and prompt[p0 + 1] == self.fim_suffix:  # SPM: ... <mid> prefix
            try:
                m = prompt.index(self.fim_middle, p0)
            except ValueError:
                return []
            return list(prompt[m + 1:])
        try:
            p1 = prompt.index(self.fim_suffix, p0)
        except ValueError:
            return list(prompt[p0 + 1:])
        return list(prompt[p0 + 1:p1])

    def completion_logprobs(self, batch: list[Encoded], pad_id: int) -> list[torch.Tensor]:
        from indexing.memory import query_shards

        dists = super().completion_logprobs(batch, pad_id)
        out = []
        for enc, lp in zip(batch, dists, strict=True):
            span = self.shard.span_of(self.paths.get(enc.example_id, ""))
            exclude = {0: (span.start, span.start + span.length)} if span is not None else None
            left = self.left_context(enc)
            probs = lp.exp()
            rows = []
            n = enc.n_completion
            for j in range(n):
                p = probs[j]
                self.stats.tokens_scored += 1
                if j < n - 1:  # the final row predicts the end of the middle: the teacher's alone
                    ctx = (left + enc.ids[enc.start:enc.start + j])[-MAX_QUERY_TOKENS:]
                    m = query_shards([self.shard], ctx, exclude)
                    if m.length > 0 and m.next_counts:
                        lam = self.mix_weights.weight(m.length, m.sparse, float(p.max()))
                        if lam > 0:
                            p = mix(p, m.next_counts, lam)
                            self.stats.tokens_mixed += 1
                            self._lam_sum += lam
                rows.append(p)
            out.append(torch.log(torch.stack(rows).clamp_min(1e-30)))
        if self.stats.tokens_mixed:
            self.stats.mean_lambda = self._lam_sum / self.stats.tokens_mixed
        return out
