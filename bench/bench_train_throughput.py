"""Benchmark: what this machine can train (issue 16). fp32 and bf16 matmul rates, then training tokens/s
for the starter shapes (forward + backward + AdamW on random tokens), as the fraction of the fp32 rate
that a step achieves (6·N FLOPs per token). Run it alone: every figure is a rate on shared cores.

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
)


def matmul_rate(dtype: Any, n: int = 2048, reps: int = 8) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def train_rate(hidden: int, layers: int, heads: int, inter: int, seq: int, batch: int, steps: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    from distill_code.modeling import LlamaShape, build_llama, count_parameters

    model = build_llama(LlamaShape(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                   num_key_value_heads=heads, intermediate_size=inter), vocab_size=8192,
                        eos_token_id=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 8192, (batch, seq))

    def step() -> None:
        logits = model(input_ids=ids).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, 8192), ids[:, 1:].reshape(-1))
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
    print(f"matmul fp32 {fp32:.1f} GFLOP/s, bf16 {bf16:.1f} GFLOP/s ({args.threads} threads)")
    rows = {}
    for name, h, layers, heads, inter, seq, batch in SHAPES:
        r = train_rate(h, layers, heads, inter, seq, batch, args.steps)
        r.update({"seq_len": seq, "batch": batch, "fraction_of_fp32_matmul": round(r["gflops_6n"] / fp32, 3)})
        rows[name] = r
        print(f"{name:24s} {r['parameters'] / 1e6:5.2f}M params  {r['tokens_per_s']:7.0f} tok/s  "
              f"{r['gflops_6n']:5.1f} GFLOP/s ({r['fraction_of_fp32_matmul']:.0%} of fp32 matmul)  "
              f"80M tokens: {r['hours_per_80m_tokens']} h")
    out = {"threads": args.threads, "matmul_gflops": {"fp32": round(fp32, 1), "bf16": round(bf16, 1)},
           "training": rows, "machine": platform.platform(), "torch": torch.__version__,
           "cpu_flags_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else None,
           "command": "python bench/bench_train_throughput.py"}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
