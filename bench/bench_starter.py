"""Benchmark: the shipped starter student vs teacher (and random-init models of each shape) on held-out lines.

Greedy FIM line completion on lines from the corpus manifest's validation files (read from this
interpreter's stdlib, sha256-checked): exact match, edit similarity, latency per line and decode
tokens/s, printed side by side with the student/teacher ratios; JSON goes to bench/results/.

    python bench/bench_starter.py                    # 60 lines, 2 threads
    python bench/bench_starter.py --lines 200 --threads 1 --out bench/results/starter.json
    python bench/bench_starter.py --lines 200 --previous 3ed8fa7   # and the starters shipped at that commit
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_code.model_card import evaluate_lines, heldout_lines  # noqa: E402
from distill_code.modeling import LlamaShape, build_llama, load_causal_lm  # noqa: E402
from distill_code.starter import STARTER_DIR, default_model_dir  # noqa: E402


def validation_texts() -> list[str]:
    manifest = json.loads((STARTER_DIR / "corpus_manifest.json").read_text())
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for f in manifest["files"]:
        p = stdlib / f["path"].split("/", 1)[1]
        if f["split"] == "validation" and p.exists():
            text = p.read_text(encoding="utf-8")
            if hashlib.sha256(text.encode("utf-8")).hexdigest() == f["sha256"]:
                out.append(text)
    return out


def export_previous(rev: str, dest: Path) -> dict[str, Path]:
    """The starter models as committed at git revision ``rev``, written under ``dest`` (role -> directory)."""
    out = {}
    for role in ("student", "teacher"):
        d = dest / role
        d.mkdir(parents=True)
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "generation_config.json", "special_tokens_map.json"):
            blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:distill_code/starter/{role}/{name}"],
                                  capture_output=True)
            if blob.returncode == 0:
                (d / name).write_bytes(blob.stdout)
        if not (d / "model.safetensors").exists():
            raise SystemExit(f"no starter {role} at git revision {rev}")
        out[role] = d
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--previous", default=None, metavar="REV",
                    help="also evaluate the starters committed at this git revision, on the same lines")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "starter.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    examples = heldout_lines(validation_texts(), args.lines)
    rows: dict[str, dict] = {}
    for role in ("student", "teacher"):
        model, tok = load_causal_lm(default_model_dir(role))
        c = model.config
        rows[role] = evaluate_lines(model, tok, examples)
        rand = build_llama(LlamaShape(c.hidden_size, c.num_hidden_layers, c.num_attention_heads,
                                      c.num_key_value_heads, c.intermediate_size), c.vocab_size, tok.eos_token_id,
                           tok.pad_token_id, seed=1)
        rows[f"random-{role}"] = evaluate_lines(rand, tok, examples)
    if args.previous:
        with tempfile.TemporaryDirectory() as tmp:
            for role, d in export_previous(args.previous, Path(tmp)).items():
                model, tok = load_causal_lm(d)
                rows[f"{role}@{args.previous[:7]}"] = evaluate_lines(model, tok, examples)
    for r in rows.values():
        r.pop("per_line_edit_similarity")
    ratios = {"student_over_teacher_latency_mean": rows["student"]["latency_ms_mean"] / rows["teacher"]["latency_ms_mean"],
              "student_over_teacher_edit_similarity": rows["student"]["edit_similarity"]
              / max(1e-9, rows["teacher"]["edit_similarity"])}
    print(f"{'model':16} {'EM':>6} {'ES':>6} {'ms/line':>8} {'p50':>7} {'tok/s':>7}")
    for name, r in rows.items():
        print(f"{name:16} {r['exact_match']:6.3f} {r['edit_similarity']:6.3f} {r['latency_ms_mean']:8.0f} "
              f"{r['latency_ms_p50']:7.0f} {r['decode_tokens_per_s']:7.1f}")
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    result = {"lines": len(examples), "threads": args.threads, "previous": args.previous, "machine": platform.processor() or platform.machine(),
              "load_average_1m": os.getloadavg()[0], "models": rows, "ratios": ratios}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
