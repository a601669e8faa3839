"""A lean single-sequence decoder for Llama-family checkpoints, with a preallocated KV cache.

Serving decodes one token at a time for one editor. A generic ``transformers`` forward spends
most of that step in Python (mask construction, cache bookkeeping, config look-ups, one module
call per projection); for a 10M-parameter model that overhead is several times the arithmetic.
This module re-expresses the same network as a short loop over the model's own weights:

* q/k/v and gate/up projections are fused into one matrix each (two GEMVs per layer instead of five),
* rotary tables are precomputed for every position the cache can hold, and q/k rows are reordered so
  each rotated pair is adjacent: rotating q and k together is one complex multiply (the reordering is
  the same for q and k, so their dot products, and the output, are unchanged),
* the KV cache is one tensor per layer, written in place; cropping it is setting a length,
* attention is ``scaled_dot_product_attention`` with grouped-query heads.

It supports the architectures whose forward it reproduces exactly (Llama, Mistral without a
sliding window shorter than the cache, Qwen2 with its q/k/v biases) and says why it declines
anything else, so the engine can fall back to ``transformers``. The result is checked against
``transformers`` logits in tests/test_fastdecode.py.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_TYPES = ("llama", "mistral", "qwen2")
SUPPORTED_ROPE = ("default", "linear", "llama3")


def unsupported_reason(model: Any) -> str | None:
    """None when ``FastDecoder`` reproduces ``model`` exactly, else a short reason."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return "model has no config"
    mtype = getattr(cfg, "model_type", "")
    if mtype not in SUPPORTED_TYPES:
        return f"model type {mtype!r} is not one of {', '.join(SUPPORTED_TYPES)}"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r} is not silu"
    if getattr(cfg, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    if getattr(cfg, "mlp_bias", False):
        return "MLP biases"
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rope_type not in SUPPORTED_ROPE:
        return f"rope type {rope_type!r} (position-dependent scaling) is not supported"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return "unexpected module layout"
    for layer in inner.layers:
        attn = layer.self_attn
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if type(getattr(attn, name, None)) is not nn.Linear:
                return f"{name} is not a plain Linear (quantize after building the fast decoder)"
        if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
            return "q/k norms"
        if getattr(attn, "sliding_window", None):
            return "sliding-window attention"
    if type(getattr(model, "lm_head", None)) is not nn.Linear:
        return "lm_head is not a plain Linear"
    return None


def _fused(mods: list[nn.Linear]) -> nn.Linear:
    """One Linear computing ``cat([m(x) for m in mods], -1)``."""
    w = torch.cat([m.weight.detach() for m in mods], 0)
    has_bias = any(m.bias is not None for m in mods)
    out = nn.Linear(w.shape[1], w.shape[0], bias=has_bias, dtype=w.dtype)
    out.weight = nn.Parameter(w.clone(), requires_grad=False)
    if has_bias:
        b = torch.cat([m.bias.detach() if m.bias is not None else torch.zeros(m.out_features, dtype=w.dtype)
                       for m in mods])
        out.bias = nn.Parameter(b, requires_grad=False)
    return out


def _pairs_adjacent(rows: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Reorder each head's rows from [x0..x(h-1), xh..x(2h-1)] (rotate-half) to [x0, xh, x1, xh+1, ...]."""
    half = head_dim // 2
    order = torch.stack([torch.arange(half), torch.arange(half) + half], 1).reshape(-1)
    shape = rows.shape
    return rows.reshape(-1, head_dim, *shape[1:])[:, order].reshape(shape)


class _Layer(nn.Module):
    def __init__(self, layer: Any, head_dim: int) -> None:
        super().__init__()
        a, m = layer.self_attn, layer.mlp
        self.qkv = _fused([a.q_proj, a.k_proj, a.v_proj])
        qk = a.q_proj.out_features + a.k_proj.out_features
        with torch.no_grad():
            self.qkv.weight[:qk] = _pairs_adjacent(self.qkv.weight[:qk].clone(), head_dim)
            if self.qkv.bias is not None:
                self.qkv.bias[:qk] = _pairs_adjacent(self.qkv.bias[:qk].clone(), head_dim)
        self.o = a.o_proj
        self.gate_up = _fused([m.gate_proj, m.up_proj])
        self.down = m.down_proj
        self.ln1: torch.Tensor = layer.input_layernorm.weight.detach()
        self.ln2: torch.Tensor = layer.post_attention_layernorm.weight.detach()


class FastDecoder(nn.Module):
    """Fused weights and a KV cache that grows up to ``max_len`` positions; ``length`` are cached."""

    def __init__(self, model: Any, max_len: int) -> None:
        super().__init__()
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"fast decoder does not support this model: {reason}")
        cfg = model.config
        inner = model.model
        self.n_heads = int(cfg.num_attention_heads)
        self.n_kv = int(getattr(cfg, "num_key_value_heads", None) or self.n_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads)
        self.eps = float(cfg.rms_norm_eps)
        self.q_size = self.n_heads * self.head_dim
        self.kv_size = self.n_kv * self.head_dim
        self.inter = int(cfg.intermediate_size)
        self.max_len = int(max_len)
        self.scale = self.head_dim ** -0.5
        self.embed = inner.embed_tokens.weight.detach()
        self.layers = nn.ModuleList(_Layer(layer, self.head_dim) for layer in inner.layers)
        self.norm = inner.norm.weight.detach()
        self.lm_head = model.lm_head
        # Rotary tables exactly as the model's own rotary module computes them (inv_freq already
        # carries linear/llama3 scaling; attention_scaling multiplies cos and sin).
        rot = inner.rotary_emb
        self.inv_freq = rot.inv_freq.detach().float().clone()
        self.rope_scale = float(getattr(rot, "attention_scaling", 1.0))
        self.dtype = self.embed.dtype
        self.n_layers = len(self.layers)
        self.capacity = 0
        self.rot = self.k_cache = self.v_cache = torch.empty(0)
        self._grow(min(self.max_len, 2048))
        self.length = 0

    def _grow(self, need: int) -> None:
        """Make room for ``need`` positions (doubling, up to ``max_len``), keeping what is cached."""
        if need <= self.capacity:
            return
        if need > self.max_len:
            raise ValueError(f"sequence of {need} tokens exceeds the decoder's limit of {self.max_len}")
        cap = min(self.max_len, max(need, 2 * self.capacity))
        pos = torch.arange(cap, dtype=torch.float32)
        angles = torch.outer(pos, self.inv_freq)  # [cap, head_dim / 2]
        # Rotation by each angle (times the rope's attention scaling) as one complex number per pair.
        self.rot = torch.polar(torch.full_like(angles, self.rope_scale), angles)
        k = torch.zeros(self.n_layers, self.n_kv, cap, self.head_dim, dtype=self.dtype)
        v = torch.zeros_like(k)
        if self.capacity:
            k[:, :, : self.capacity] = self.k_cache
            v[:, :, : self.capacity] = self.v_cache
        self.k_cache, self.v_cache, self.capacity = k, v, cap

    # -- cache ---------------------------------------------------------------------------
    def reset(self) -> None:
        self.length = 0

    def crop(self, length: int) -> None:
        """Keep the first ``length`` cached positions."""
        self.length = max(0, min(self.length, length))

    # -- forward -------------------------------------------------------------------------
    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), w, self.eps)  # one kernel
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * xf.to(x.dtype)

    def _rotate(self, qk: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Rotary embedding of q and k heads together ([n, heads, head_dim], pairs adjacent), in float32."""
        n, heads, hd = qk.shape
        z = torch.view_as_complex(qk.float().reshape(n, heads, hd // 2, 2).contiguous())
        return torch.view_as_real(z * self.rot[start:end, None, :]).reshape(n, heads, hd).to(qk.dtype)

    @torch.inference_mode()
    def forward(self, ids: list[int], all_logits: bool = False) -> torch.Tensor:
        """Append ``ids`` to the cached sequence; return the logits after the last one (float32), or
        after each of them (``[len(ids), vocab]``) with ``all_logits``."""
        n = len(ids)
        start = self.length
        end = start + n
        if n == 0:
            raise ValueError("no tokens to decode")
        self._grow(end)
        x = F.embedding(torch.tensor(ids, dtype=torch.long), self.embed)  # [n, hidden]
        mask = None
        if n > 1 and start > 0:
            # Row i (absolute position start+i) sees every key up to and including itself.
            mask = torch.ones(n, end, dtype=torch.bool).tril(diagonal=start)
        hd, nh, nkv = self.head_dim, self.n_heads, self.n_kv
        for i, layer in enumerate(cast("list[_Layer]", self.layers)):
            h = self._rms(x, layer.ln1)
            qkv = layer.qkv(h)
            qk = self._rotate(qkv[:, : self.q_size + self.kv_size].view(n, nh + nkv, hd), start, end)
            q = qk[:, :nh].transpose(0, 1)
            k = qk[:, nh:].transpose(0, 1)
            v = qkv[:, self.q_size + self.kv_size:].view(n, nkv, hd).transpose(0, 1)
            self.k_cache[i, :, start:end] = k
            self.v_cache[i, :, start:end] = v
            keys = self.k_cache[i, :, :end]
            values = self.v_cache[i, :, :end]
            if n == 1:
                # One query: two small matmuls beat the fused kernel's fixed cost several times over.
                qg = q.reshape(nkv, nh // nkv, hd)
                probs = torch.softmax(torch.matmul(qg, keys.transpose(1, 2)) * self.scale, dim=-1)
                out = torch.matmul(probs, values).reshape(1, self.q_size)
            else:
                attn = F.scaled_dot_product_attention(
                    q.unsqueeze(0), keys.unsqueeze(0), values.unsqueeze(0), attn_mask=mask,
                    is_causal=(start == 0), enable_gqa=(nkv != nh))
                out = attn[0].transpose(0, 1).reshape(n, self.q_size)
            x = x + layer.o(out)
            h = self._rms(x, layer.ln2)
            gu = layer.gate_up(h)
            x = x + layer.down(F.silu(gu[:, : self.inter]) * gu[:, self.inter:])
        self.length = end
        if all_logits:
            return self.lm_head(self._rms(x, self.norm)).float()
        return self.lm_head(self._rms(x[-1:], self.norm))[0].float()


class TransformersDecoder(nn.Module):
    """The same interface over any ``transformers`` causal LM (DynamicCache), for other architectures."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.kv: Any = None
        self.length = 0

    def reset(self) -> None:
        self.kv, self.length = None, 0

    def crop(self, length: int) -> None:
        if self.kv is None or length <= 0:
            self.reset()
            return
        drop = self.kv.get_seq_length() - length
        if drop > 0:
            self.kv.crop(-drop)  # transformers 5: a negative count removes that many tokens
        self.length = min(self.length, length)

    @torch.inference_mode()
    def forward(self, ids: list[int], all_logits: bool = False) -> torch.Tensor:
        from transformers import DynamicCache

        if not ids:
            raise ValueError("no tokens to decode")
        if self.kv is None:
            self.kv = DynamicCache()
        out = self.model(input_ids=torch.tensor([ids], dtype=torch.long), past_key_values=self.kv, use_cache=True)
        self.kv = out.past_key_values
        self.length += len(ids)
        return out.logits[0].float() if all_logits else out.logits[0, -1].float()
