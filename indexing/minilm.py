"""A small BERT encoder with mean pooling, loaded from safetensors: MiniLM without importing sentence-transformers.

Importing sentence-transformers costs tens of seconds on a busy 2-core machine, longer than indexing a small
repository; this module needs only torch, safetensors and tokenizers. It covers BERT-family checkpoints
with mean pooling (the shipped all-MiniLM-L6-v2); anything else goes through sentence-transformers.
A test checks parity with sentence-transformers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def is_supported(model_dir: Path) -> bool:
    try:
        config = json.loads((model_dir / "config.json").read_text())
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (config.get("model_type") == "bert" and pooling.get("pooling_mode_mean_tokens", False)
            and (model_dir / "tokenizer.json").exists() and (model_dir / "model.safetensors").exists()
            and config.get("position_embedding_type", "absolute") == "absolute")


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.inner = nn.Linear(hidden, inner)
        self.out = nn.Linear(inner, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)

        att = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                             attn_mask=bias)
        x = self.attn_norm(x + self.attn_out(att.transpose(1, 2).reshape(b, t, h)))
        return self.out_norm(x + self.out(F.gelu(self.inner(x))))


class BertMeanEncoder(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        hidden = config["hidden_size"]
        eps = config.get("layer_norm_eps", 1e-12)
        self.word = nn.Embedding(config["vocab_size"], hidden)
        self.position = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_type = nn.Embedding(config.get("type_vocab_size", 2), hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            _Layer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"]))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        x = self.norm(self.word(ids) + self.position(positions) + self.token_type(torch.zeros_like(ids)))
        bias = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(mask == 0, -math.inf)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        weights = mask.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


_RENAMES = {
    "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
    "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "inner", "output.dense": "out", "output.LayerNorm": "out_norm",
}


def _rename(name: str) -> str | None:
    name = name.removeprefix("bert.")
    simple = {"embeddings.word_embeddings.weight": "word.weight",
              "embeddings.position_embeddings.weight": "position.weight",
              "embeddings.token_type_embeddings.weight": "token_type.weight",
              "embeddings.LayerNorm.weight": "norm.weight", "embeddings.LayerNorm.bias": "norm.bias"}
    if name in simple:
        return simple[name]
    if name.startswith("encoder.layer."):
        rest = name[len("encoder.layer."):]
        index, _, tail = rest.partition(".")
        for old, new in _RENAMES.items():
            if tail.startswith(old + "."):
                return f"layers.{index}.{new}{tail[len(old):]}"
    return None  # pooler, position_ids: unused by mean pooling


def _traced(model: nn.Module) -> torch.jit.ScriptModule | None:
    """The encoder as a TorchScript graph, or None when tracing fails or changes the output.

    An eager forward re-takes the GIL between its ~200 ops; while another Python thread runs (the
    indexer chunks and screens the next files while a batch embeds) each re-take waits out the
    interpreter's switch interval, and the embedding ran ~3.5x slower (measured with a busy Python thread:
    eager 3.4 s -> 11.9 s, traced 2.8 s -> 3.2 s). A traced forward runs in C++ without the GIL.
    Batch size and width stay dynamic (checked below on a second shape with padding).
    """
    import warnings

    example = (torch.full((2, 8), 1000, dtype=torch.long), torch.ones((2, 8), dtype=torch.long))
    check_ids = torch.arange(1000, 1051, dtype=torch.long).view(3, 17)
    check_mask = torch.ones_like(check_ids)
    check_mask[1, 9:] = 0
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example, check_trace=False)
            same = torch.allclose(traced(check_ids, check_mask), model(check_ids, check_mask), atol=1e-5)
    except Exception:  # noqa: BLE001 - an eager forward is always correct, only slower
        return None
    return traced if same else None


class MiniLM:
    """Tokenize + encode + L2-normalise, in length-sorted batches."""

    def __init__(self, model_dir: Path, max_tokens: int = 128, quantize: bool = True) -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text())
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.max_positions = int(config["max_position_embeddings"])
        # Truncated per call (documents and queries use different lengths); the shared tokenizer stays
        # read-only after construction, so encoding from two threads is safe.
        self.tokenizer.enable_truncation(max_length=self.max_positions)
        self.tokenizer.no_padding()
        self.max_tokens = max_tokens
        sep = self.tokenizer.token_to_id("[SEP]")
        if sep is None:
            raise ValueError(f"{model_dir}: the tokenizer has no [SEP] token")
        self.sep_id: int = sep
        model = BertMeanEncoder(config)
        state = {}
        for name, tensor in load_file(str(model_dir / "model.safetensors")).items():
            new = _rename(name)
            if new is not None:
                state[new] = tensor.float()
        model.load_state_dict(state, strict=True)
        model.eval()
        if quantize:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Per-channel weight scales: cosine to fp32 ~0.98 on code chunks (per-tensor: ~0.93).
                qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
                model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear: qconfig}, dtype=torch.qint8)
        self.eager = model
        self.model: nn.Module | torch.jit.ScriptModule = _traced(model) or model
        self.dimension = int(config["hidden_size"])

    def _ids(self, texts: list[str], max_tokens: int, tail: bool = False) -> list[list[int]]:
        """Token ids of each text cut to ``max_tokens`` ([CLS] ... [SEP]): its start, or with ``tail`` its end."""
        limit = max(3, min(max_tokens, self.max_positions))
        out = []
        for enc in self.tokenizer.encode_batch(texts):
            ids = enc.ids
            if len(ids) > limit:
                ids = ids[:1] + ids[-(limit - 1):] if tail else ids[:limit - 1] + [self.sep_id]
            out.append(ids)
        return out

    def encode(self, texts: list[str], batch_size: int = 64, max_tokens: int | None = None,
               tail: bool = False) -> np.ndarray:
        encodings = self._ids(texts, max_tokens or self.max_tokens, tail)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i]))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                width = max(len(encodings[i]) for i in batch)
                # Padded in Python and converted once: a torch op per row re-takes the GIL per row, and
                # with the indexer's thread busy each re-take waits out the switch interval.
                ids = torch.tensor([encodings[i] + [0] * (width - len(encodings[i])) for i in batch])
                lengths = torch.tensor([len(encodings[i]) for i in batch])
                mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
                vecs = F.normalize(self.model(ids, mask), dim=-1)
                out[batch] = vecs.float().numpy()
        return out
