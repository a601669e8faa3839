"""The trainer, evaluation, gate, promotion and int8 compression with real tiny models on CPU."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest
import torch

from distill_code.encoding import Budget
from distill_code.evaluate import (
    EvalConfig,
    as_served,
    evaluate_dir,
    evaluate_model,
    format_table,
    gate,
    paired_difference,
    promote,
)
from distill_code.mining import Example, MiningConfig, mine_repository
from distill_code.modeling import LlamaShape, load_causal_lm
from distill_code.quantize import compression_report, quantize_int8, weight_bytes
from distill_code.tiny import build_tiny_model_dir
from distill_code.trainer import TrainConfig, train
from distill_code.workspace import promoted_model_dir

STDLIB = Path(sysconfig.get_paths()["stdlib"])
BUDGET = Budget(max_len=96, max_middle=16)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared box: extra threads only contend
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("student"), LlamaShape(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128),
        seed=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Example], list[Example]]:
    repo = tmp_path_factory.mktemp("repo")
    for name in ("bisect.py", "colorsys.py", "shlex.py", "glob.py"):
        shutil.copy(STDLIB / name, repo / name)
    exs, _ = mine_repository(repo, MiningConfig(use_index=False, max_per_file=12, heldout_fraction=0.25))
    fim = [e for e in exs if e.task == "fim"]
    return [e for e in fim if e.split == "train"], [e for e in fim if e.split == "heldout"]


def _cfg(**kw: object) -> TrainConfig:
    base = dict(steps=8, batch_size=6, lr=3e-3, warmup_steps=1, top_k=8, save_every=0)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["ce", "logit", "logit+hidden"])
def test_each_method_lowers_its_loss_and_exports_a_loadable_model(method: str, student_dir: Path,
                                                                 tiny_model_dir: Path, data, tmp_path: Path) -> None:
    train_ex = data[0][:6]  # one fixed batch: the loss must fall step after step
    res = train(_cfg(method=method), student_dir, train_ex, tmp_path / "run",
                teacher_paths=[str(tiny_model_dir)], budget=BUDGET, progress=False)
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 8 and losses[-1] < 0.9 * losses[0]
    if method == "logit+hidden":
        assert res.history[-1]["hidden"] < res.history[0]["hidden"]
    if method != "ce":
        assert res.target_stats["computed"] == 6 and res.target_stats["bytes_per_token"] == 8 * 4 + 2
    model, _ = load_causal_lm(res.model_dir)
    assert not any("lora" in k or "projections" in k for k in model.state_dict())
    curves = json.loads((tmp_path / "run" / "loss_curves.json").read_text())
    assert [c["step"] for c in curves] == list(range(1, 9))
    assert (tmp_path / "run" / "loss_curves.png").stat().st_size > 1000
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_dense_reverse_kl_and_clear_errors(student_dir: Path, tiny_model_dir: Path, data, tmp_path: Path) -> None:
    # KD-weighted (alpha 0.9, not the 0.5 default) so that four steps must lower the divergence itself.
    res = train(_cfg(targets="dense", divergence="reverse_kl", steps=4, alpha=0.9), student_dir, data[0][:6], tmp_path / "d",
                teacher_paths=[str(tiny_model_dir)], budget=BUDGET, progress=False)
    assert res.history[-1]["kd"] < res.history[0]["kd"]
    with pytest.raises(ValueError, match="needs a teacher"):
        train(_cfg(), student_dir, data[0][:6], tmp_path / "e", budget=BUDGET, progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        train(_cfg(method="magic"), student_dir, data[0][:6], tmp_path / "e", budget=BUDGET, progress=False)
    with pytest.raises(ValueError, match="no FIM training examples"):
        train(_cfg(method="ce"), student_dir, [], tmp_path / "e", budget=BUDGET, progress=False)
    with pytest.raises(ValueError, match="end_token"):
        train(_cfg(end_token="model"), student_dir, data[0][:6], tmp_path / "e", budget=BUDGET, progress=False)


def test_end_token_from_the_reference_or_the_teacher(student_dir: Path, tiny_model_dir: Path, data,
                                                     tmp_path: Path) -> None:
    """Same seed, same batches: only the end-of-completion positions differ, so the first KD term does."""
    first = {}
    for end in ("reference", "teacher"):
        res = train(_cfg(targets="dense", end_token=end, steps=1), student_dir, data[0][:6], tmp_path / end,
                    teacher_paths=[str(tiny_model_dir)], budget=BUDGET, progress=False)
        first[end] = res.history[0]
    assert first["reference"]["ce"] == pytest.approx(first["teacher"]["ce"])
    assert first["reference"]["kd"] != pytest.approx(first["teacher"]["kd"], rel=1e-4)


def test_resume_reproduces_an_uninterrupted_run(student_dir: Path, tiny_model_dir: Path, data,
                                                tmp_path: Path) -> None:
    cfg = _cfg(steps=6, batch_size=4)
    full = train(cfg, student_dir, data[0][:16], tmp_path / "full", teacher_paths=[str(tiny_model_dir)],
                 budget=BUDGET, targets_cache=tmp_path / "t.sqlite", progress=False)
    part = train(cfg, student_dir, data[0][:16], tmp_path / "part", teacher_paths=[str(tiny_model_dir)],
                 budget=BUDGET, targets_cache=tmp_path / "t.sqlite", stop_after=3, progress=False)
    assert len(part.history) == 3 and (tmp_path / "part" / "checkpoint" / "trainer_state.json").exists()
    assert part.target_stats["cached"] == 16  # the shared cache already holds every target
    resumed = train(cfg, student_dir, data[0][:16], tmp_path / "part", teacher_paths=[str(tiny_model_dir)],
                    budget=BUDGET, targets_cache=tmp_path / "t.sqlite", progress=False)
    assert resumed.resumed_from == 3
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-4)
    a, _ = load_causal_lm(full.model_dir)
    b, _ = load_causal_lm(resumed.model_dir)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-5), name


def test_lora_is_merged_into_a_plain_checkpoint(student_dir: Path, tiny_model_dir: Path, data,
                                                tmp_path: Path) -> None:
    res = train(_cfg(lora=True, lora_r=4, steps=4, lr=1e-2), student_dir, data[0][:6], tmp_path / "lora",
                teacher_paths=[str(tiny_model_dir)], budget=BUDGET, progress=False)
    merged, _ = load_causal_lm(res.model_dir)
    base, _ = load_causal_lm(student_dir)
    keys = list(merged.state_dict())
    assert keys == list(base.state_dict()) and not any("lora" in k for k in keys)
    q_changed = not torch.equal(merged.state_dict()["model.layers.0.self_attn.q_proj.weight"],
                                base.state_dict()["model.layers.0.self_attn.q_proj.weight"])
    mlp_same = torch.equal(merged.state_dict()["model.layers.0.mlp.up_proj.weight"],
                           base.state_dict()["model.layers.0.mlp.up_proj.weight"])
    assert q_changed and mlp_same  # only the adapted projections moved


def test_evaluation_report_gate_and_promotion(student_dir: Path, tiny_model_dir: Path, data, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    heldout = data[1]
    cfg = EvalConfig(max_examples=6, max_new_tokens=8, budget=BUDGET)
    teacher = load_causal_lm(tiny_model_dir)
    res_t = evaluate_dir(tiny_model_dir, heldout, cfg, tiny_model_dir)
    res_s = evaluate_dir(student_dir, heldout, cfg, tiny_model_dir)
    assert res_t["teacher_top1_agreement"] == 1.0 and res_t["teacher_kl"] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 <= res_s["teacher_top1_agreement"] <= 1.0 and res_s["teacher_kl"] > 0
    for r in (res_t, res_s):
        assert r["examples"] == 6 and r["nll"] > 0 and r["latency_p50_ms"] > 0
        assert 0.0 <= r["exact_match"] <= 1.0 and 0.0 <= r["edit_similarity"] <= 1.0
        assert len(r["per_example_es"]) == 6
        assert sum(r["per_example_es"]) / 6 == pytest.approx(r["edit_similarity"], abs=1e-3)
        assert r["length_ratio_p50"] >= 0 and 0.0 <= r["ended_by_cap"] + r["ended_by_stop_token"] <= 1.0
        assert 0.0 <= r["edit_similarity_served"] <= 1.0 and len(r["per_example_es_served"]) == 6
    # A model evaluated on its own teacher-forced references: NLL matches a direct computation.
    model, tok = teacher
    again = evaluate_model(model, tok, heldout, cfg)
    assert again["nll"] == pytest.approx(res_t["nll"], rel=1e-6) and "teacher_kl" not in again
    table = format_table({"teacher": res_t, "student": res_s})
    assert table.splitlines()[0].split()[:3] == ["model", "exact_match", "edit_similarity"]

    better = {**res_s, "exact_match": res_s["exact_match"] + 0.1}
    assert gate(better, res_s).promote
    assert not gate(res_s, res_s).promote  # a tie is not an improvement
    slow = {**better, "latency_p50_ms": 10 * res_s["latency_p50_ms"]}
    d = gate(slow, res_s)
    assert not d.promote and "latency" in d.reason
    assert gate(slow, res_s, latency_budget_ms=1e9).promote

    ws = tmp_path / "ws"
    ws.mkdir()
    dest = promote(student_dir, ws, {"why": "test"})
    assert dest == promoted_model_dir(ws) and (dest / "config.json").exists()
    assert json.loads((dest / "promotion.json").read_text()) == {"why": "test"}
    promote(tiny_model_dir, ws)
    assert (dest.with_name("model.prev") / "config.json").exists()
    load_causal_lm(dest)  # what `protege serve` would load


def test_int8_compression_report(student_dir: Path, data) -> None:
    model, tok = load_causal_lm(student_dir)
    q = quantize_int8(model)
    assert any("quantized" in type(m).__module__ for m in q.modules())
    assert weight_bytes(q) < weight_bytes(model)
    rep = compression_report(model, tok, data[1], EvalConfig(max_examples=3, max_new_tokens=6, budget=BUDGET),
                             prune_amount=0.25)
    assert set(rep) == {"fp32", "int8", "pruned25+int8"}
    # int8 barely moves a model's NLL; the report shows by how much.
    assert abs(rep["int8"]["nll"] - rep["fp32"]["nll"]) < 0.1 * rep["fp32"]["nll"]


def test_cross_tokenizer_teacher_needs_uld_and_then_trains(student_dir: Path, data, tmp_path: Path) -> None:
    from distill_code.vocab import VocabMismatchError

    other = build_tiny_model_dir(tmp_path / "other-vocab", LlamaShape(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128),
        vocab_size=700, seed=3)
    with pytest.raises(VocabMismatchError, match="vocabularies differ"):
        train(_cfg(targets="dense"), student_dir, data[0][:6], tmp_path / "x", teacher_paths=[str(other)],
              budget=BUDGET, progress=False)
    with pytest.raises(ValueError, match="ULD"):
        train(_cfg(cross_tokenizer="uld"), student_dir, data[0][:6], tmp_path / "x", teacher_paths=[str(other)],
              budget=BUDGET, progress=False)
    res = train(_cfg(targets="dense", cross_tokenizer="uld", steps=6), student_dir, data[0][:6], tmp_path / "u",
                teacher_paths=[str(other)], budget=BUDGET, progress=False)
    assert res.history[-1]["kd"] < res.history[0]["kd"] and res.history[-1]["loss"] < res.history[0]["loss"]


def test_paired_difference_of_per_example_scores() -> None:
    a = [0.2, 0.5, 0.9, 0.1, 0.4]
    same = paired_difference(a, a)
    assert same == {"mean": 0.0, "ci95_low": 0.0, "ci95_high": 0.0}
    shifted = paired_difference([x + 0.1 for x in a], a)
    assert shifted["mean"] == pytest.approx(0.1) and shifted["ci95_low"] == pytest.approx(0.1)
    mixed = paired_difference([1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0])
    assert mixed["ci95_low"] < 0 < mixed["ci95_high"] and mixed["mean"] == 0.0
    with pytest.raises(ValueError):
        paired_difference(a, a[:-1])


def test_completions_are_scored_as_the_server_would_show_them() -> None:
    prefix = "def area(w, h):\n    "
    suffix = "\n\n\ndef volume(w, h, d):\n    return area(w, h) * d\n"
    ex = Example("x", "fim", "body", "geo.py", "python", prefix, "return w * h", suffix)
    # A block completion that runs on past the function: cut where it dedents.
    assert as_served("return w * h\n\ndef perimeter(w, h):\n    return 2 * (w + h)", ex) == "return w * h"
    mid_line = Example("y", "fim", "line_remainder", "geo.py", "python", "total = area(", "w, h", ") * 2\n")
    assert as_served("w, h) * 2\nprint(total)", mid_line) == "w, h"  # one line, suffix overlap dropped
    assert as_served("return w * h<|end|>junk", ex, ("<|end|>",)) == "return w * h"


def test_on_policy_steps_distil_on_the_students_own_samples(student_dir: Path, tiny_model_dir: Path, data,
                                                            tmp_path: Path) -> None:
    # Every step on-policy, greedy samples: the divergence to the teacher on the student's drafts must fall.
    res = train(_cfg(on_policy=1.0, on_policy_temperature=0.0, on_policy_max_new=8, steps=8),
                student_dir, data[0][:6], tmp_path / "op", teacher_paths=[str(tiny_model_dir)], budget=BUDGET,
                progress=False)
    kd = [h["on_policy_kd"] for h in res.history]
    assert len(kd) == 8 and "ce" not in res.history[0]  # no reference is learnt on these steps
    assert kd[-1] < 0.8 * kd[0]
    assert res.target_stats["on_policy"]["steps"] == 8 and res.target_stats["on_policy"]["sampling_s"] > 0
    for bad, match in (({"method": "ce"}, "needs a logit method"), ({"on_policy": 1.5}, "in \\[0, 1\\]"),
                       ({"on_policy_divergence": "l2"}, "unknown on_policy_divergence")):
        with pytest.raises(ValueError, match=match):
            train(_cfg(**{"on_policy": 0.5, **bad}), student_dir, data[0][:6], tmp_path / "e",
                  teacher_paths=[str(tiny_model_dir)], budget=BUDGET, progress=False)


def test_on_policy_mix_resumes_exactly(student_dir: Path, tiny_model_dir: Path, data, tmp_path: Path) -> None:
    """Which steps are on-policy and what the student samples are functions of (seed, step)."""
    cfg = _cfg(steps=6, batch_size=4, on_policy=0.5, on_policy_max_new=6)
    kw = dict(teacher_paths=[str(tiny_model_dir)], budget=BUDGET, targets_cache=tmp_path / "t.sqlite", progress=False)
    full = train(cfg, student_dir, data[0][:16], tmp_path / "full", **kw)  # type: ignore[arg-type]
    kinds = ["on_policy_kd" in h for h in full.history]
    assert any(kinds) and not all(kinds)  # a mix of on-policy and supervised steps
    train(cfg, student_dir, data[0][:16], tmp_path / "part", stop_after=3, **kw)  # type: ignore[arg-type]
    resumed = train(cfg, student_dir, data[0][:16], tmp_path / "part", **kw)  # type: ignore[arg-type]
    assert resumed.resumed_from == 3
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-4)


def test_sampled_completions_keep_the_prompt_and_end_at_a_stop(student_dir: Path, data) -> None:
    from distill_code.encoding import encode_example, template_of
    from distill_code.on_policy import is_on_policy_step, sample_completions

    model, tok = load_causal_lm(student_dir)
    model.train()
    encs = [encode_example(x, tok, template_of(tok), BUDGET) for x in data[0][:4]]
    a = sample_completions(model, encs, set(), 5, 1.0, seed=3)
    assert model.training  # the trainer's mode is restored after sampling
    assert a == sample_completions(model, encs, set(), 5, 1.0, seed=3)  # seeded: a resumed run repeats it
    assert a != sample_completions(model, encs, set(), 5, 1.0, seed=4)
    for enc, s in zip(encs, a, strict=True):
        assert s.example_id == enc.example_id and s.ids[:s.start] == enc.ids[:enc.start] and s.n_completion == 5
    # Every token a stop: one sampled token, kept, ends each completion.
    one = sample_completions(model, encs, set(range(len(tok))), 5, 1.0, seed=3)
    assert [s.n_completion for s in one] == [1] * 4
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample_completions(model, encs, set(), 0, 1.0, seed=3)
    picks = [is_on_policy_step(0, s, 0.3) for s in range(2000)]
    assert 0.25 < sum(picks) / len(picks) < 0.35 and picks == [is_on_policy_step(0, s, 0.3) for s in range(2000)]
    assert not any(is_on_policy_step(0, s, 0.0) for s in range(50)) and all(is_on_policy_step(0, s, 1.0)
                                                                             for s in range(50))
