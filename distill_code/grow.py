"""Starting a stage from trained weights, growing the model deeper on the way (issue 16).

A run that has spent hours on a small model need not throw them away to train a larger one. A model
``k`` times deeper than a trained one is built from it exactly: every trained layer is followed by
``k - 1`` copies of itself whose two output projections (attention ``o_proj``, MLP ``down_proj``) are zero.
Each copy then adds nothing to the residual stream, so the grown model computes the trained model's
function to the last bit; the zeroed projections still receive gradients (their inputs are not zero),
so the new layers start learning at the first step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# What must match between the trained model and the one it initialises (depth may grow by a factor).
_SAME = ("hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size", "vocab_size")
_ZEROED_IN_COPIES = ("self_attn.o_proj.weight", "mlp.down_proj.weight")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


class InitError(ValueError):
    """The weights to start from are missing, unreadable, or do not fit the stage's shape."""


def grow_depth(weights: dict[str, torch.Tensor], src_layers: int, dst_layers: int) -> dict[str, torch.Tensor]:
    """``weights`` of a ``src_layers``-layer model as those of a ``dst_layers``-layer one (a multiple):
    layer ``i`` becomes layers ``i*k .. i*k + k-1``, the copies with zeroed output projections."""
    if src_layers <= 0 or dst_layers % src_layers:
        raise InitError(f"cannot grow {src_layers} layers into {dst_layers}: the new depth must be a multiple "
                        "of the trained one")
    k = dst_layers // src_layers
    out: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        m = _LAYER.match(name)
        if m is None:
            out[name] = tensor
            continue
        i, rest = int(m.group(1)), m.group(2)
        if i >= src_layers:
            raise InitError(f"weight {name!r} names layer {i} of a {src_layers}-layer model")
        for c in range(k):
            t = tensor.clone()
            if c and rest in _ZEROED_IN_COPIES:
                t.zero_()
            out[f"model.layers.{i * k + c}.{rest}"] = t
    return out


def load_weights(model: Any, weights: dict[str, torch.Tensor]) -> str:
    """Load ``weights`` into ``model`` (a tied output embedding may be absent and is re-tied); returns ""
    or, when they do not fit, what is missing and unexpected (the model is then partly loaded)."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
        return f"missing {missing[:3]}, unexpected {unexpected[:3]}"
    if getattr(model.config, "tie_word_embeddings", False):
        tie: Any = model.tie_weights
        tie()
    return ""


def init_from(model: Any, source: str | Path) -> dict[str, Any]:
    """Load the trained weights in ``source`` (``model.safetensors`` + ``config.json``: a committed
    checkpoint or a shipped model) into ``model``, growing their depth when ``model`` is deeper. Returns
    what the stage records: the source, its depth, and its training state when it has a ``state.json``."""
    from safetensors.torch import load_file

    src = Path(source)
    weights_path, config_path = src / "model.safetensors", src / "config.json"
    if not weights_path.is_file() or not config_path.is_file():
        raise InitError(f"init_from {str(source)!r} needs model.safetensors and config.json; point it at a "
                        "committed checkpoint (checkpoints/<run>/<role>) or a shipped model directory")
    try:
        src_cfg = json.loads(config_path.read_text())
        weights = {k: v.float() for k, v in load_file(str(weights_path)).items()}
    except Exception as exc:  # safetensors and json raise several types; one clear message
        raise InitError(f"init_from {str(source)!r} is unreadable: {exc}") from exc
    cfg = model.config
    wrong = [f"{k} {src_cfg.get(k)} vs {getattr(cfg, k)}" for k in _SAME if src_cfg.get(k) != getattr(cfg, k)]
    if wrong:
        raise InitError(f"init_from {str(source)!r} does not fit the stage's shape ({'; '.join(wrong)}); only "
                        "the depth may differ")
    src_layers, dst_layers = int(src_cfg.get("num_hidden_layers", 0)), int(cfg.num_hidden_layers)
    if dst_layers != src_layers:
        weights = grow_depth(weights, src_layers, dst_layers)
    mismatch = load_weights(model, weights)
    if mismatch:
        raise InitError(f"init_from {str(source)!r} does not match the model ({mismatch})")
    info: dict[str, Any] = {"path": str(source), "layers": src_layers, "grown_to": dst_layers}
    state_path = src / "state.json"
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text())["state"]
            info.update({k: state[k] for k in ("step", "tokens", "epoch", "batch") if k in state})
        except (ValueError, KeyError, TypeError):
            pass  # the weights are what matters; a state file that cannot be read only loses the bookkeeping
    return info
