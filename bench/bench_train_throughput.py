"""Benchmark: what this machine can train (issue 16). fp32 and bf16 matmul rates, then training tokens/s
for the starter shapes (forward + backward + AdamW on random tokens), as the fraction of the fp32 rate
that a step achieves (6·N FLOPs per token); then the v2 student's distillation step (teacher forward +
KD/CE loss + student step) as the composed loss with an fp32 teacher against the fused loss with a bf16
teacher, interleaved in one run so the ratio survives noisy neighbours. Run it alone: every figure is a
rate on shared cores.

    python bench/bench_train_throughput.py [--threads 2] [--steps 6] [--out bench/results/train_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (name, hidden, layers, heads, intermediate, seq_len, batch)
SHAPES = (
    ("v1 teacher (6.8M)", 256, 6, 4, 688, 512, 8),
    ("v2 teacher (3.2M)", 160, 6, 5, 432, 256, 16),
    ("v2 teacher at seq 512", 160, 6, 5, 432, 512, 8),
    ("v2 student (0.76M)", 64, 4, 2, 224, 256, 16),
    ("v1 student (1.65M)", 128, 3, 4, 352, 256, 16),
    ("v2 deep teacher (5.0M)", 160, 12, 5, 432, 256, 16),
)
# bf16 autocast (and torch.compile on top) is measured for these, where the CPU has bf16 matmul.
BF16_SHAPES = ("v2 teacher (3.2M)", "v2 student (0.76M)", "v2 deep teacher (5.0M)")
COMPILED_SHAPES = ("v2 deep teacher (5.0M)",)


def matmul_rate(dtype: Any, n: int = 2048, reps: int = 8) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def train_rate(hidden: int, layers: int, heads: int, inter: int, seq: int, batch: int, steps: int,
               autocast: bool = False, compiled: bool = False) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    from distill_code.modeling import LlamaShape, build_llama, count_parameters

    model = build_llama(LlamaShape(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                   num_key_value_heads=heads, intermediate_size=inter), vocab_size=8192,
                        eos_token_id=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 8192, (batch, seq))
    forward: Any = torch.compile(model) if compiled else model  # the warm-up steps below compile it

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):  # fp32 master weights either way
            logits = forward(input_ids=ids).logits
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, 8192).float(), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - t) / steps
    n = count_parameters(model)
    tps = batch * seq / per_step
    return {"parameters": n, "tokens_per_s": round(tps, 1), "gflops_6n": round(6 * n * tps / 1e9, 2),
            "hours_per_80m_tokens": round(80e6 / tps / 3600, 1)}


def distill_rates(steps: int, rounds: int = 3) -> dict[str, Any]:
    """Tokens/s of the v2 student's KD step: composed loss + fp32 teacher vs fused loss + bf16 teacher."""
    import torch

    from distill_code.losses import forward_kl, fused_forward_kl_ce, masked_cross_entropy, mix_with_ce
    from distill_code.modeling import LlamaShape, build_llama

    def shape(h: int, layers: int, heads: int, inter: int) -> LlamaShape:
        return LlamaShape(hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                          num_key_value_heads=heads, intermediate_size=inter)

    torch.manual_seed(0)
    teacher = build_llama(shape(160, 6, 5, 432), vocab_size=8192, eos_token_id=0).eval()
    student = build_llama(shape(64, 4, 2, 224), vocab_size=8192, eos_token_id=0)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    batch, seq, alpha = 16, 256, 0.8
    ids = torch.randint(0, 8192, (batch, seq))

    def step(fused: bool) -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=fused):
            t_logits = teacher(input_ids=ids).logits
        logits = student(input_ids=ids).logits
        if fused:
            loss, _, _ = fused_forward_kl_ce(logits[:, :-1], t_logits[:, :-1], ids[:, 1:], alpha, 1.0)
        else:
            loss = mix_with_ce(forward_kl(logits[:, :-1], t_logits[:, :-1], temperature=1.0),
                               masked_cross_entropy(logits[:, :-1], ids[:, 1:]), alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times: dict[str, list[float]] = {"composed_fp32_teacher": [], "fused_bf16_teacher": []}
    for fused in (False, True):
        step(fused)  # warm-up
    for _ in range(rounds):
        for name, fused in (("composed_fp32_teacher", False), ("fused_bf16_teacher", True)):
            t = time.perf_counter()
            for _ in range(steps):
                step(fused)
            times[name].append((time.perf_counter() - t) / steps)
    best = {k: min(v) for k, v in times.items()}
    out: dict[str, Any] = {k: {"seconds_per_step": round(v, 4), "tokens_per_s": round(batch * seq / v, 1)}
                           for k, v in best.items()}
    out["speedup"] = round(best["composed_fp32_teacher"] / best["fused_bf16_teacher"], 2)
    out.update({"batch": batch, "seq_len": seq, "kd_alpha": alpha, "rounds": rounds})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_throughput.json"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    fp32 = matmul_rate(torch.float32)
    bf16 = matmul_rate(torch.bfloat16, n=512, reps=2)  # without avx512_bf16 it is ~100x slower: keep it small
    if bf16 > fp32:  # a CPU with bf16 matmul: measure it at the fp32 size
        bf16 = matmul_rate(torch.bfloat16, reps=4)
    print(f"matmul fp32 {fp32:.1f} GFLOP/s, bf16 {bf16:.1f} GFLOP/s ({args.threads} threads)")
    rows = {}
    for name, h, layers, heads, inter, seq, batch in SHAPES:
        r = train_rate(h, layers, heads, inter, seq, batch, args.steps)
        r.update({"seq_len": seq, "batch": batch, "fraction_of_fp32_matmul": round(r["gflops_6n"] / fp32, 3)})
        rows[name] = r
        print(f"{name:24s} {r['parameters'] / 1e6:5.2f}M params  {r['tokens_per_s']:7.0f} tok/s  "
              f"{r['gflops_6n']:5.1f} GFLOP/s ({r['fraction_of_fp32_matmul']:.0%} of fp32 matmul)  "
              f"80M tokens: {r['hours_per_80m_tokens']} h")
    if bf16 > fp32:  # a CPU with bf16 matmul (avx512_bf16/AMX): does autocast training pay?
        for name, h, layers, heads, inter, seq, batch in SHAPES:
            for compiled in (False, True):
                if name not in (COMPILED_SHAPES if compiled else BF16_SHAPES):
                    continue
                r = train_rate(h, layers, heads, inter, seq, batch, args.steps, autocast=True, compiled=compiled)
                base = rows[name]["tokens_per_s"]
                r.update({"seq_len": seq, "batch": batch, "autocast": "bf16", "compiled": compiled,
                          "vs_fp32": round(r["tokens_per_s"] / base, 2),
                          "fraction_of_bf16_matmul": round(r["gflops_6n"] / bf16, 3)})
                label = name + (", bf16 autocast, compiled" if compiled else ", bf16 autocast")
                rows[label] = r
                print(f"{label:48s} {r['tokens_per_s']:7.0f} tok/s  ({r['vs_fp32']}x fp32 training, "
                      f"{r['fraction_of_bf16_matmul']:.0%} of bf16 matmul)")
    kd = distill_rates(args.steps)
    print(f"v2 student KD step: composed loss + fp32 teacher {kd['composed_fp32_teacher']['tokens_per_s']:.0f} tok/s, "
          f"fused loss + bf16 teacher {kd['fused_bf16_teacher']['tokens_per_s']:.0f} tok/s ({kd['speedup']}x)")
    out = {"threads": args.threads, "matmul_gflops": {"fp32": round(fp32, 1), "bf16": round(bf16, 1)},
           "training": rows, "distillation_step": kd, "machine": platform.platform(), "torch": torch.__version__,
           "cpu_flags_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else None,
           "command": "python bench/bench_train_throughput.py"}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
