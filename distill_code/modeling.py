"""Building and loading causal LMs: configs for tiny/starter models and a loader for any HF model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM
# torch and transformers are imported inside the functions: they cost seconds, and the language
# server must answer `initialize` before the model is needed.

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do."""


@dataclass
class LlamaShape:
    """Shape of a Llama-style model built from a config (random init)."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 176
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True
    rope_theta: float = 10000.0


def build_llama(shape: LlamaShape, vocab_size: int, eos_token_id: int, pad_token_id: int | None = None,
                seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised Llama causal LM of ``shape`` for ``vocab_size`` tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=shape.tie_word_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": shape.rope_theta},
        eos_token_id=eos_token_id,
        bos_token_id=None,
        pad_token_id=pad_token_id,
    )
    return LlamaForCausalLM(cfg)


def count_parameters(model: torch.nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def load_causal_lm(path: str | Path, dtype: str = "float32", allow_online: bool = False) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a local directory (or a hub id only when ``allow_online``).

    Raises ``ModelLoadError`` with a one-sentence fix when the path is missing or unreadable.
    """
    p = Path(str(path)).expanduser()
    local = p.exists()
    if not local and not allow_online:
        raise ModelLoadError(
            f"model path {str(path)!r} does not exist; pass --model DIR pointing to a Hugging Face model "
            "directory (or enable 'allowOnline' to use a hub id)"
        )
    import torch

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(p if local else path), local_files_only=not allow_online)
        model = AutoModelForCausalLM.from_pretrained(
            str(p if local else path), dtype=torch_dtype, local_files_only=not allow_online
        )
    except Exception as exc:  # transformers raises many types; the user needs one clear message
        raise ModelLoadError(f"could not load a causal LM from {str(path)!r}: {exc}") from exc
    model.eval()
    return model, tok
