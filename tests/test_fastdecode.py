"""The lean decoder reproduces transformers' logits exactly, across prefill, decode, crop and growth."""

from __future__ import annotations

import pytest
import torch

from server.fastdecode import FastDecoder, TransformersDecoder, unsupported_reason


def _llama(**kw: object) -> object:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=96, max_position_embeddings=512, tie_word_embeddings=True)
    cfg.update(kw)
    return LlamaForCausalLM(LlamaConfig(**cfg)).eval()


def _qwen2() -> object:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    cfg = Qwen2Config(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=1, intermediate_size=96, max_position_embeddings=512,
                      tie_word_embeddings=False)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # random-init biases are zero; make them matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    return model


def _reference(model: object, ids: list[int]) -> object:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0]  # type: ignore[operator]


@pytest.mark.parametrize("make", [
    lambda: _llama(),
    lambda: _llama(num_key_value_heads=4, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                            "rope_theta": 10000.0}),
    _qwen2,
], ids=["llama-gqa", "llama-mha-linear-rope", "qwen2-bias-gqa"])
def test_matches_transformers_through_prefill_decode_crop(make: object) -> None:
    model = make()  # type: ignore[operator]
    assert unsupported_reason(model) is None
    ids = [int(i) for i in torch.randint(3, 299, (120,), generator=torch.Generator().manual_seed(2))]
    ref = _reference(model, ids)
    fast = FastDecoder(model, max_len=512)
    tol = dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast(ids[:50]), ref[49], **tol)  # cold prefill (causal)
    torch.testing.assert_close(fast(ids[50:70]), ref[69], **tol)  # chunk after a cached prefix (masked)
    for j in range(70, 80):  # one token at a time
        out = fast([ids[j]])
    torch.testing.assert_close(out, ref[79], **tol)
    rows = fast(ids[80:89], all_logits=True)  # a token and its drafts: every position's logits
    torch.testing.assert_close(rows, ref[80:89], **tol)
    fast.crop(80)
    assert fast.length == 80
    fast.crop(30)  # the user edited: keep the common prefix, recompute the rest
    torch.testing.assert_close(fast(ids[30:120]), ref[119], **tol)
    fast.reset()
    torch.testing.assert_close(fast(ids[:10]), ref[9], **tol)


def test_cache_grows_past_its_first_allocation_and_stops_at_the_limit() -> None:
    model = _llama(max_position_embeddings=4096)
    ids = [int(i) for i in torch.randint(3, 299, (2300,), generator=torch.Generator().manual_seed(3))]
    fast = FastDecoder(model, max_len=2400)
    assert fast.capacity == 2048
    fast(ids[:2000])
    out = fast(ids[2000:2300])  # crosses 2048: the cache grows and keeps what it held
    assert fast.capacity == 2400
    torch.testing.assert_close(out, _reference(model, ids)[-1], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="exceeds"):
        fast([5] * 200)
    assert fast.length == 2300  # the failed call changed nothing


def test_declines_what_it_cannot_reproduce() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2))
    assert "gpt2" in (unsupported_reason(gpt2) or "")
    with pytest.raises(ValueError, match="does not support"):
        FastDecoder(gpt2, max_len=64)
    assert "rope" in (unsupported_reason(_llama(rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                                 "rope_theta": 10000.0})) or "")
    quantized = torch.ao.quantization.quantize_dynamic(_llama(), {torch.nn.Linear}, dtype=torch.qint8)
    assert "plain Linear" in (unsupported_reason(quantized) or "")


def test_int8_fast_decoder_stays_close_and_transformers_decoder_matches() -> None:
    model = _llama()
    ids = list(range(5, 65))
    ref = _reference(model, ids)
    q = torch.ao.quantization.quantize_dynamic(FastDecoder(model, max_len=256), {torch.nn.Linear},
                                               dtype=torch.qint8)
    out = q(ids)
    assert int(out.argmax()) == int(ref[-1].argmax())
    assert float((out - ref[-1]).abs().max()) < 0.1 * float(ref[-1].abs().max()) + 0.05
    hf = TransformersDecoder(model)
    hf(ids[:40])
    hf.crop(20)
    torch.testing.assert_close(hf(ids[20:]), ref[-1], atol=1e-5, rtol=1e-5)
