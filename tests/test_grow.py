"""Starting a stage from trained weights and growing it deeper (distill_code.grow): the grown model computes
the trained one's function exactly, its new layers learn from the first step, and bad sources fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill_code.grow import InitError, grow_depth, init_from
from distill_code.modeling import LlamaShape, build_llama
from distill_code.pretrain import StageConfig, export_committed


def _shape(layers: int, hidden: int = 32) -> LlamaShape:
    return LlamaShape(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                      intermediate_size=48)


def _trained(tmp: Path, layers: int = 2) -> tuple[torch.nn.Module, Path]:
    """A small model with every weight non-zero, committed the way a run commits (bf16 + state.json)."""
    model = build_llama(_shape(layers), vocab_size=128, eos_token_id=0, seed=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
            p.copy_(p.to(torch.bfloat16).float())  # what the committed bf16 file holds, exactly
    state = {"step": 40, "tokens": 40 * 2 * 16, "epoch": 1, "batch": 7, "elapsed": 3.0}
    export_committed(model, state, {"train": [], "val": [{"step": 40, "tokens": 1280, "loss": 1.5}]}, tmp / "src")
    return model, tmp / "src"


def test_a_deeper_model_starts_as_exactly_the_trained_one(tmp_path: Path) -> None:
    trained, src = _trained(tmp_path)
    grown = build_llama(_shape(6), vocab_size=128, eos_token_id=0, seed=9)
    info = init_from(grown, src)
    assert info == {"path": str(src), "layers": 2, "grown_to": 6, "step": 40, "tokens": 1280, "epoch": 1, "batch": 7}
    ids = torch.randint(0, 128, (3, 20))
    with torch.no_grad():
        want, got = trained.eval()(input_ids=ids).logits, grown.eval()(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    layers = grown.model.layers
    for i in range(6):
        src_layer = trained.model.layers[i // 3]
        copy = i % 3 != 0
        for name, p in layers[i].named_parameters():
            if copy and name in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
                assert not p.any(), name
            else:
                torch.testing.assert_close(p, dict(src_layer.named_parameters())[name], rtol=0, atol=0)
    assert grown.lm_head.weight is grown.model.embed_tokens.weight  # still tied


def test_the_new_layers_learn_from_the_first_step(tmp_path: Path) -> None:
    _, src = _trained(tmp_path)
    grown = build_llama(_shape(4), vocab_size=128, eos_token_id=0)
    init_from(grown, src)
    ids = torch.randint(0, 128, (2, 16))
    out = grown(input_ids=ids, labels=ids)
    out.loss.backward()
    copy = grown.model.layers[1]
    assert copy.self_attn.o_proj.weight.grad.abs().sum() > 0
    assert copy.mlp.down_proj.weight.grad.abs().sum() > 0


def test_same_depth_loads_as_is_and_bad_sources_fail_clearly(tmp_path: Path) -> None:
    trained, src = _trained(tmp_path)
    same = build_llama(_shape(2), vocab_size=128, eos_token_id=0, seed=5)
    assert init_from(same, src)["grown_to"] == 2
    torch.testing.assert_close(same.state_dict(), trained.state_dict(), rtol=0, atol=0)
    with pytest.raises(InitError, match="needs model.safetensors and config.json"):
        init_from(same, tmp_path / "nowhere")
    with pytest.raises(InitError, match=r"hidden_size 32 vs 48.*only the depth may differ"):
        init_from(build_llama(_shape(2, hidden=48), vocab_size=128, eos_token_id=0), src)
    with pytest.raises(InitError, match="must be a multiple"):
        init_from(build_llama(_shape(3), vocab_size=128, eos_token_id=0), src)
    (src / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InitError, match="unreadable"):
        init_from(same, src)
    with pytest.raises(InitError, match="names layer 5"):
        grow_depth({"model.layers.5.mlp.down_proj.weight": torch.zeros(2, 2)}, 2, 4)


def test_a_stage_started_from_a_committed_run_goes_on_with_its_data(tmp_path: Path) -> None:
    """train_stage with init_from: the first validation loss is the source model's, the data stream starts
    at the source's epoch and batch, and the committed state says where the weights came from."""
    from distill_code.pretrain import RecipeError, train_stage, validation_loss

    class Batches:
        chunks = [0]

        def __init__(self) -> None:
            self.asked: list[tuple[int, int]] = []

        def batches(self, epoch: int, start: int):  # noqa: ANN202 - a TokenBlocks stand-in's generator
            self.asked.append((epoch, start))
            g = torch.Generator().manual_seed(epoch)
            for b in range(start, 12):
                yield b, torch.randint(0, 128, (2, 16), generator=g)

    trained, src = _trained(tmp_path)
    val = torch.randint(0, 128, (4, 16))
    want = validation_loss(trained, val, bf16=False)
    cfg = StageConfig(shape=_shape(4), seq_len=16, batch_size=2, max_tokens=6 * 32, warmup_steps=2, eval_every=100,
                      bf16=False, init_from=str(src))
    data = Batches()
    model = build_llama(cfg.shape, vocab_size=128, eos_token_id=0)
    result = train_stage(model, cfg, data, val, tmp_path / "stage", resume=False, commit_dir=tmp_path / "commit")
    assert data.asked[0] == (1, 7)  # where the source run stopped
    assert result["initialized_from"]["tokens"] == 1280 and result["tokens_seen"] == 6 * 32
    history = json.loads((tmp_path / "commit" / "state.json").read_text())
    assert history["history"]["val"][0]["loss"] == pytest.approx(want, abs=1e-5)
    assert history["state"]["init_from"]["grown_to"] == 4

    cfg.init_data_position = False
    data = Batches()
    train_stage(build_llama(cfg.shape, vocab_size=128, eos_token_id=0), cfg, data, val, tmp_path / "s2", resume=False)
    assert data.asked[0] == (0, 0)
    cfg.init_from = str(tmp_path / "missing")
    with pytest.raises(RecipeError, match="needs model.safetensors"):
        train_stage(build_llama(cfg.shape, vocab_size=128, eos_token_id=0), cfg, data, val, tmp_path / "s3",
                    resume=False)
