"""On-policy distillation: the student learns from the teacher on completions it wrote itself.

Supervised KD and cross-entropy only ever show the student the reference completion's prefixes. At
serving time it decodes from its own tokens, and once it has written something the reference never
contains (a wrong name, a line too many), nothing in training told it how to go on or when to stop.
On-policy distillation (generalized KD, Agarwal et al., ICLR 2024) closes that gap: on a fraction of the
steps the student samples a completion for each prompt, the teacher scores every sampled position, and
the student minimises a divergence to the teacher's distribution there, the end-of-middle token
included -- so it learns where the teacher would have stopped, on its own drafts. The other steps stay
supervised (KD + cross-entropy on the reference), so the step count and batch size are unchanged.

Which steps are on-policy, and what is sampled, are pure functions of (seed, step): a resumed run
repeats them exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from distill_code.encoding import Encoded


def is_on_policy_step(seed: int, step: int, fraction: float) -> bool:
    """Whether ``step`` trains on the student's own samples (a seeded coin, ``fraction`` of the steps)."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    g = torch.Generator().manual_seed(seed * 1_000_003 + step * 7_919 + 17)
    return float(torch.rand((), generator=g)) < fraction


def sample_completions(model: Any, batch: Sequence[Encoded], stop_ids: set[int], max_new_tokens: int,
                       temperature: float, seed: int) -> list[Encoded]:
    """Each example's prompt followed by a completion the model samples (at ``temperature``; 0 = greedy).

    A sampled stop token (end of middle, a FIM marker) is kept as the completion's last token, so the
    teacher's view of stopping there is learnt too; otherwise sampling ends after ``max_new_tokens``.
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[Encoded] = []
    try:
        with torch.no_grad():
            for enc in batch:
                prompt = list(enc.ids[:enc.start])
                ids = torch.tensor([prompt], device=device)
                past = None
                new: list[int] = []
                for _ in range(max_new_tokens):
                    res = model(input_ids=ids, past_key_values=past, use_cache=True)
                    past = res.past_key_values
                    logits = res.logits[0, -1].float().cpu()
                    if temperature <= 0.0:
                        nxt = int(logits.argmax())
                    else:
                        probs = torch.softmax(logits / temperature, dim=-1)
                        nxt = int(torch.multinomial(probs, 1, generator=g))
                    new.append(nxt)
                    if nxt in stop_ids:
                        break
                    ids = torch.tensor([[nxt]], device=device)
                out.append(Encoded(enc.example_id, prompt + new, len(prompt)))
    finally:
        if was_training:
            model.train()
    return out
