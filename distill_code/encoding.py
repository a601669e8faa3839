"""Mined examples -> token ids with a completion mask, built through the shared FIM template.

Training, teacher scoring and evaluation all encode through here, so the three agree on
where the completion starts and on how the prefix / suffix / context are cut to budget.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distill_code.fim import FimTemplate, template_for
from distill_code.mining import Example


@dataclass
class Encoded:
    """``ids`` = prompt + completion (+ eos); the completion is ``ids[start:]``."""

    example_id: str
    ids: list[int]
    start: int

    @property
    def n_completion(self) -> int:
        return len(self.ids) - self.start

    def content_hash(self) -> str:
        return hashlib.sha256(b"".join(i.to_bytes(4, "little") for i in self.ids)
                              + self.start.to_bytes(4, "little")).hexdigest()


@dataclass
class Budget:
    """Token budgets of one training / evaluation sequence."""

    max_len: int = 384
    max_middle: int = 96
    suffix_share: float = 0.25  # of what is left after the middle
    context_share: float = 0.25
    # Prompt layout: "psm" (prefix-suffix-middle), "spm" (suffix-prefix-middle, what the server uses for models
    # pretrained on it), "auto": the student's layout (``protege distill`` resolves it from its card.json;
    # elsewhere "auto" is "psm").
    layout: str = "auto"


def template_of(tokenizer: Any, family: str = "auto") -> FimTemplate:
    return template_for(family, set(tokenizer.get_vocab()))


def _special(tokenizer: Any, token: str) -> int:
    idx = tokenizer.convert_tokens_to_ids(token)
    if idx is None or idx == getattr(tokenizer, "unk_token_id", None):
        raise ValueError(f"the tokenizer has no {token!r} token; pick the right FIM family in the recipe")
    return int(idx)


def encode_prompt(ex: Example, tokenizer: Any, template: FimTemplate, budget: Budget,
                  reserve: int) -> list[int]:
    """FIM prompt ids (``budget.layout``: prefix-suffix-middle unless "spm") with ``reserve`` tokens left for
    the completion. The SPM order matches ``FimTemplate.spm``: context, <prefix><suffix> suffix <middle> prefix."""
    tok = tokenizer
    room = budget.max_len - reserve - 3
    ctx_ids = tok(ex.context, add_special_tokens=False)["input_ids"] if ex.context else []
    n_ctx = int(room * budget.context_share) if room > 0 else 0
    ctx_ids = ctx_ids[-n_ctx:] if ctx_ids and n_ctx > 0 else []
    room -= len(ctx_ids)
    suf = tok(ex.suffix, add_special_tokens=False)["input_ids"][: max(0, int(room * budget.suffix_share))]
    room -= len(suf)
    pre = tok(ex.prefix, add_special_tokens=False)["input_ids"]
    pre = pre[-room:] if room > 0 else []
    if budget.layout == "spm":
        return (ctx_ids + [_special(tok, template.prefix), _special(tok, template.suffix)] + suf
                + [_special(tok, template.middle)] + pre)
    return (ctx_ids + [_special(tok, template.prefix)] + pre + [_special(tok, template.suffix)] + suf
            + [_special(tok, template.middle)])


def encode_example(ex: Example, tokenizer: Any, template: FimTemplate, budget: Budget | None = None) -> Encoded:
    """Encode a FIM example for training or scoring: prompt then middle then eos."""
    budget = budget or Budget()
    mid = tokenizer(ex.middle, add_special_tokens=False)["input_ids"][: budget.max_middle - 1]
    mid = mid + [_special(tokenizer, template.eos)]
    prompt = encode_prompt(ex, tokenizer, template, budget, reserve=len(mid))
    return Encoded(ex.id, prompt + mid, len(prompt))


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, shifted ``labels`` and the completion ``mask``.

    ``mask[b, t]`` is true where position ``t`` predicts a completion token ``labels[b, t]``.
    """
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.bool)
    for b, e in enumerate(batch):
        ids[b, : len(e.ids)] = torch.tensor(e.ids)
        attn[b, : len(e.ids)] = 1
        mask[b, e.start - 1: len(e.ids) - 1] = True
    labels = torch.full_like(ids, pad_id)
    labels[:, :-1] = ids[:, 1:]
    return {"input_ids": ids, "attention_mask": attn, "labels": labels, "mask": mask}


def resolve_layout(layout: str, student_dir: str | Path) -> str:
    """``budget.layout``: "auto" trains in the layout the server will use for the student -- "spm" when its
    card says it was pretrained on it (``spm_rate`` >= 0.25, as the server decides), else "psm". Tuning the
    SPM-served starter on PSM prompts alone left it useless in either layout (served EM 0.005 on click)."""
    if layout in ("psm", "spm"):
        return layout
    if layout != "auto":
        raise ValueError(f"budget.layout must be 'auto', 'psm' or 'spm', got {layout!r}")
    try:
        rate = float(read_card(student_dir).get("spm_rate") or 0.0)
    except (TypeError, ValueError):
        rate = 0.0
    return "spm" if rate >= 0.25 else "psm"


def read_card(model_dir: str | Path) -> dict[str, Any]:
    """A Protege model's ``card.json`` (figures and training facts), or {} when absent or unreadable."""
    try:
        card = json.loads((Path(model_dir) / "card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}
