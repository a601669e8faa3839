"""``protege distill`` and ``protege eval``: distil a student on a repository, evaluate models on its held-out split."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    d = subparsers.add_parser("distill", help="distil the student on a repository's prompts and gate the result")
    d.add_argument("repo", nargs="?", default=".", help="repository to mine (default: the current directory)")
    d.add_argument("--recipe", help="recipe TOML (see recipes/distill-*.toml); default: built-in defaults")
    d.add_argument("--teacher", action="append", default=[], help="teacher model dir (repeat for an ensemble)")
    d.add_argument("--student", default="", help="student model dir (default: the shipped starter student)")
    d.add_argument("--method", choices=("ce", "logit", "logit+hidden"), help="override train.method")
    d.add_argument("--steps", type=int, help="override train.steps")
    d.add_argument("--lora", action="store_true", help="train LoRA adapters (merged on export)")
    d.add_argument("--out", default="", help="run directory (default: the workspace cache)")
    d.add_argument("--workspace", default="", help="workspace whose promoted model to update (default: REPO)")
    d.add_argument("--no-promote", action="store_true", help="report only; never replace the served model")
    d.add_argument("--json", action="store_true", help="print the report as one JSON object")
    d.set_defaults(func=_distill)

    e = subparsers.add_parser("eval", help="evaluate model(s) on a repository's held-out completions")
    e.add_argument("repo", nargs="?", default=".", help="repository whose held-out split to use (default: .)")
    e.add_argument("--model", action="append", required=True, help="model dir to evaluate (repeatable)")
    e.add_argument("--teacher", default="", help="teacher dir: adds top-1 agreement and KL with it")
    e.add_argument("--max-examples", type=int, default=100, help="held-out examples to use (default 100)")
    e.add_argument("--max-new-tokens", type=int, default=48)
    e.add_argument("--int8", action="store_true", help="also evaluate each model int8-quantized")
    e.add_argument("--workspace", default="", help="workspace whose mining settings to reuse (default: REPO)")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    e.set_defaults(func=_eval)


def _distill(args: argparse.Namespace) -> int:
    from distill_code.mining import MiningError
    from distill_code.modeling import ModelLoadError
    from distill_code.recipe import RecipeError, load_recipe, run_distill
    from distill_code.vocab import VocabMismatchError

    try:
        recipe = load_recipe(args.recipe)
        if args.teacher:
            recipe.teacher.paths = list(args.teacher)
        if args.student:
            recipe.student.path = args.student
        if args.method:
            recipe.train.method = args.method
        if args.steps:
            recipe.train.steps = args.steps
        if args.lora:
            recipe.train.lora = True
        if args.no_promote:
            recipe.eval.promote = False
        report = run_distill(args.repo, recipe, args.workspace or args.repo, args.out or None,
                             progress=sys.stderr.isatty())
    except (RecipeError, MiningError, ModelLoadError, VocabMismatchError, ValueError) as exc:
        print(f"protege distill: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k not in ("table", "recipe")}, default=str))
    else:
        print(f"dataset {report['dataset']}: {report['train_examples']} train / "
              f"{report['heldout_examples']} held-out examples")
        print(report["table"])
        gate = report["gate"]
        print(("PROMOTED: " if gate["promote"] and "promoted_to" in report else "not promoted: ") + gate["reason"])
        if "promoted_to" in report:
            print(f"served model for this workspace: {report['promoted_to']}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from distill_code.evaluate import EvalConfig, evaluate_model, format_table
    from distill_code.mining import MiningConfig, MiningError, load_dataset, mine_to_disk
    from distill_code.modeling import ModelLoadError, load_causal_lm
    from distill_code.vocab import VocabMismatchError
    from distill_code.workspace import datasets_dir

    try:
        root = datasets_dir(args.workspace or args.repo)
        mcfg = MiningConfig()
        try:
            # Same mining settings as the last `protege distill`: an unchanged repository then
            # gives the very held-out split the student was gated on (same dataset version).
            mcfg = MiningConfig(**load_dataset(root).manifest["config"])
        except (MiningError, TypeError, KeyError):
            pass
        ds = mine_to_disk(args.repo, root, mcfg)
        heldout = ds.fim("heldout")
        cfg = EvalConfig(max_examples=args.max_examples, max_new_tokens=args.max_new_tokens)
        teacher = load_causal_lm(args.teacher) if args.teacher else None
        results = {}
        for d in args.model:
            model, tok = load_causal_lm(d)
            results[d] = evaluate_model(model, tok, heldout, cfg, teacher)
            if args.int8:
                from distill_code.quantize import quantize_int8

                results[d + " (int8)"] = evaluate_model(quantize_int8(model), tok, heldout, cfg, teacher)
    except (MiningError, ModelLoadError, VocabMismatchError, ValueError) as exc:
        print(f"protege eval: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"repo": str(Path(args.repo).resolve()), "dataset": ds.version,
                          "heldout_examples": len(heldout), "models": results}))
    else:
        print(f"dataset {ds.version}: {len(heldout)} held-out completions "
              f"({ds.manifest.get('split_reason')} split)")
        print(format_table(results))
    return 0
