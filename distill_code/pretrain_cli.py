"""``protege pretrain``: run a starter-model recipe (corpus, tokenizer, teacher, student, shipping)."""

from __future__ import annotations

import argparse
import json
import sys


def _run(args: argparse.Namespace) -> int:
    from distill_code.corpus import CorpusError
    from distill_code.pretrain import RecipeError, apply_overrides, load_recipe, run_recipe

    try:
        recipe = apply_overrides(load_recipe(args.recipe), args.set)
        if args.out_dir:
            recipe.out_dir = args.out_dir
        if args.ship_dir:
            recipe.ship_dir = args.ship_dir
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
        bad = [s for s in stages if s not in ("teacher", "student", "ship")]
        if bad:
            print(f"error: unknown stage(s) {bad}; use a comma-separated subset of teacher,student,ship",
                  file=sys.stderr)
            return 2
        summary = run_recipe(recipe, resume=args.resume, stages=stages, stop_after_minutes=args.for_minutes)
    except (RecipeError, CorpusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="train the starter tokenizer, teacher and student from a recipe")
    p.add_argument("--recipe", required=True, help="recipe TOML file (see recipes/)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in the recipe's out_dir")
    p.add_argument("--stages", default="teacher,student,ship",
                   help="comma-separated subset of teacher,student,ship (default: all)")
    p.add_argument("--for-minutes", type=float, default=0.0,
                   help="stop this run after about this many minutes, checkpointed (the schedule is unchanged: "
                        "--resume continues it); SIGTERM does the same at once")
    p.add_argument("--out-dir", default="", help="override the recipe's out_dir (checkpoints, curves)")
    p.add_argument("--ship-dir", default="", help="override where the fp16 models and model cards are written")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key for this run, e.g. --set teacher.max_minutes=6 (repeatable; "
                        "values are TOML)")
    p.set_defaults(func=_run)


def main(argv: list[str] | None = None) -> int:
    """``python -m distill_code.pretrain_cli ...``: the same command without the server's dependencies (a
    machine that has only torch and transformers, such as a lent GPU)."""
    import logging

    parser = argparse.ArgumentParser(prog="python -m distill_code.pretrain_cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["pretrain", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
