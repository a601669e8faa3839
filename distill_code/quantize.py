"""Compression after distillation: int8 dynamic quantization (and optional magnitude pruning) with re-evaluation.

The report shows what compression costs: the same held-out metrics before and after, the
weight bytes and the latency. int8 dynamic quantization is what the serving engine applies
with ``quantize = "int8"``, so the figures here are the ones users get.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from typing import Any

import torch

from distill_code.evaluate import EvalConfig, evaluate_model
from distill_code.mining import Example

log = logging.getLogger(__name__)


def weight_bytes(model: torch.nn.Module) -> int:
    """Serialized size of the model's state dict (what a quantized model would take on disk)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` dynamically quantized to int8 (CPU inference)."""
    base = copy.deepcopy(model).float().eval()
    with warnings.catch_warnings():
        # torch.ao is deprecated in favour of torchao, which is not a dependency; the server uses the same call.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(base, {torch.nn.Linear}, dtype=torch.qint8)


def prune_linear(model: torch.nn.Module, amount: float) -> torch.nn.Module:
    """A copy of ``model`` with the ``amount`` fraction of output rows of each MLP projection zeroed by L2 norm.

    Structured (whole rows), so a later export could drop them; the lm head is left alone.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"prune amount must be in [0, 1), got {amount}")
    pruned = copy.deepcopy(model).eval()
    import torch.nn.utils.prune as prune

    for name, mod in pruned.named_modules():
        if isinstance(mod, torch.nn.Linear) and ("mlp" in name) and amount > 0:
            prune.ln_structured(mod, "weight", amount=amount, n=2, dim=0)
            prune.remove(mod, "weight")
    return pruned


def compression_report(model: Any, tokenizer: Any, examples: list[Example], cfg: EvalConfig | None = None,
                       prune_amount: float = 0.0, teacher: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Held-out metrics of the fp32 model, its int8 copy and (optionally) a pruned int8 copy."""
    report: dict[str, Any] = {}
    fp32 = model.float().eval()
    report["fp32"] = {**evaluate_model(fp32, tokenizer, examples, cfg, teacher), "weight_bytes": weight_bytes(fp32)}
    q = quantize_int8(fp32)
    report["int8"] = {**evaluate_model(q, tokenizer, examples, cfg, teacher), "weight_bytes": weight_bytes(q)}
    if prune_amount > 0:
        pq = quantize_int8(prune_linear(fp32, prune_amount))
        report[f"pruned{int(prune_amount * 100)}+int8"] = {**evaluate_model(pq, tokenizer, examples, cfg, teacher),
                                                           "weight_bytes": weight_bytes(pq)}
    for name, r in report.items():
        log.info("%s: exact match %.3f, edit similarity %.3f, %d bytes", name, r["exact_match"],
                 r["edit_similarity"], r["weight_bytes"])
    return report
