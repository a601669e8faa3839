"""Benchmark: does distillation on a repository's prompts beat fine-tuning, at equal compute?

On a real permissively licensed project that is not Protege — by default the source of the
installed ``click`` package (BSD-3-Clause, ~12.7k lines; not in the starter models' stdlib
pretraining corpus) — prompts are mined with tree-sitter and a held-out split of whole files
is kept. Four students are compared on it with the same steps, batch, sequence budget and
learning rate:

* ``student``: the shipped student as is;
* ``ce``: fine-tuned with cross-entropy on the reference completions only;
* ``logit``: distilled with sparse top-k logit KD (0.5 forward KL + 0.5 CE);
* ``logit+hidden``: logit KD plus hidden-state MSE through learned projections;
* with ``--memory-teacher``, ``logit+memory``: the repository ∞-gram mixed into the teacher's targets;
* with ``--on-policy F``, ``logit+on-policy`` (and ``logit+memory+on-policy``): a fraction F of the steps
  distils on completions the student samples itself, scored by the teacher (``distill_code.on_policy``).

With ``--previous-student DIR`` the student that ``--student`` would replace is evaluated on the same examples,
as is and cross-entropy tuned (``ce (previous student)``), with paired differences: the shipping decision.

``--only NAMES`` trains only the named students (and ``ce``, the baseline).

With ``--adapt-teacher-steps N`` the teacher is first fine-tuned on the training split (the CPU
starter teacher is barely stronger than the student, unlike a production teacher); the students'
compute stays equal and the adaptation's cost is reported separately.

Reported per model: held-out exact match, edit similarity, identifier F1, NLL, top-1
agreement / KL with the teacher, p50 latency, and wall time (teacher targets and training
separately). The teacher is evaluated too, for reference.

    python bench/bench_distill.py                      # shipped starter teacher -> student
    python bench/bench_distill.py --tiny --steps 4     # toy scale (random tiny models), for CI
    python bench/bench_distill.py --teacher DIR --student DIR --steps 200 --out bench/results/distill.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONDITIONS = ("ce", "logit", "logit+hidden")


def package_repo(name: str, dest: Path) -> dict[str, Any]:
    """Copy an installed package's source into ``dest``; returns what it is (name, version, license, lines)."""
    import importlib
    import importlib.metadata as md

    mod = importlib.import_module(name)
    src = Path(mod.__file__ or "").parent
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    meta = md.metadata(name)
    license_name = meta.get("License-Expression") or meta.get("License") or ""
    if not license_name:
        license_name = next((c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
                             if c.startswith("License ::")), "unknown")
    files = list(dest.rglob("*.py"))
    return {"package": name, "version": md.version(name), "license": license_name, "files": len(files),
            "lines": sum(len(p.read_text(encoding="utf-8").splitlines()) for p in files)}


def served_with_memory(model_dir: Path, workspace: Path, examples: list[Any], n: int, base: Path, budget: Any,
                       train_examples: list[Any], threads: int) -> dict[str, Any]:
    """A model as the language server serves it, in process: ``CompletionService`` with its defaults (repository
    memory on, over ``workspace`` -- the training split's files -- plus the open buffer; line or block mode
    from the cursor; post-processing and the security screen), no retrieved context. Scored against each
    held-out example's middle, with the document the prefix and suffix around it."""
    import statistics

    from distill_code.metrics import edit_similarity, exact_match
    from distill_code.recipe import write_distilled_card
    from server.config import ProtegeConfig
    from server.engine import Engine, EngineOptions
    from server.pipeline import CompletionService

    if not (model_dir / "card.json").exists():
        # As `protege distill` ships a model: the layout and sequence length it was tuned on (the server
        # reads them from card.json), and its base model's memory mix table.
        write_distilled_card(model_dir, base, budget, train_examples, [])
    engine = Engine(EngineOptions(model=str(model_dir), threads=threads))
    engine.load()
    if not engine.ready:
        raise SystemExit(f"cannot serve {model_dir}: {engine.error}")
    service = CompletionService(ProtegeConfig(), engine)
    service.ensure_memory().build(workspace)
    em, es, lat, memory_tokens = [], [], [], 0
    for ex in examples[:n]:
        line = ex.prefix.count("\n")
        col = len(ex.prefix) - (ex.prefix.rfind("\n") + 1)
        out = service.complete((workspace / ex.path).as_uri(), ex.prefix + ex.suffix, line, col, path=ex.path)
        em.append(exact_match(out.text, ex.middle))
        es.append(edit_similarity(out.text, ex.middle))
        lat.append(out.latency_ms)
        memory_tokens += out.memory_tokens
    lat.sort()
    return {"exact_match": statistics.fmean(em), "edit_similarity": statistics.fmean(es),
            "per_example_es": [round(x, 4) for x in es], "latency_p50_ms": round(lat[len(lat) // 2], 1),
            "memory_tokens": memory_tokens, "examples": len(es)}


def build_tiny_pair(work: Path) -> tuple[Path, Path]:
    from distill_code.modeling import LlamaShape
    from distill_code.tiny import build_tiny_model_dir

    teacher = build_tiny_model_dir(work / "tiny-teacher", seed=2)
    student = build_tiny_model_dir(work / "tiny-student", LlamaShape(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128),
        seed=1)
    return teacher, student


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from distill_code.encoding import Budget
    from distill_code.evaluate import EvalConfig, evaluate_dir, format_table, paired_difference
    from distill_code.mining import MiningConfig, mine_to_disk
    from distill_code.trainer import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-distill-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        teacher, student = build_tiny_pair(work)
    else:
        starter = ROOT / "distill_code" / "starter"
        teacher = Path(args.teacher) if args.teacher else starter / "teacher"
        student = Path(args.student) if args.student else starter / "student"
        for p in (teacher, student):
            if not (p / "config.json").exists():
                raise SystemExit(f"no model at {p}; pass --teacher/--student, or --tiny for toy scale")
    previous = Path(args.previous_student) if args.previous_student else None
    if previous is not None and not (previous / "config.json").exists():
        raise SystemExit(f"no model at {previous} (--previous-student)")
    repo = work / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    repo_info = package_repo(args.package, repo)
    t0 = time.perf_counter()
    ds = mine_to_disk(repo, work / "datasets", MiningConfig(use_index=False, max_per_file=args.max_per_file,
                                                            heldout_fraction=args.heldout_fraction))
    mining_s = time.perf_counter() - t0
    train_ex, heldout = ds.examples("train"), ds.fim("heldout")
    from distill_code.recipe import resolve_layout

    # The layout the server uses for the student (SPM for the starters: their PSM prompts score far lower).
    budget = Budget(max_len=args.max_len, max_middle=args.max_middle, layout=resolve_layout(args.layout, student))
    ecfg = EvalConfig(max_examples=args.eval_examples, max_new_tokens=args.max_new_tokens, budget=budget)

    results: dict[str, dict[str, Any]] = {}
    # What the server serves: the repository memory over the training split's files (held-out files removed).
    served: dict[str, dict[str, Any]] = {}
    workspace = work / "workspace"
    if args.served_memory:
        shutil.rmtree(workspace, ignore_errors=True)
        shutil.copytree(repo, workspace)
        for rel in ds.manifest["heldout_files"]:
            (workspace / rel).unlink(missing_ok=True)

    def serve(name: str, model_dir: Path, base: Path) -> None:
        if args.served_memory:
            served[name] = served_with_memory(Path(model_dir), workspace, heldout, args.eval_examples, base,
                                              budget, train_ex, args.threads)
            print(f"{name} served with memory: EM {served[name]['exact_match']:.3f} "
                  f"ES {served[name]['edit_similarity']:.3f}", file=sys.stderr)

    teacher_source = teacher.resolve()  # before any adaptation
    results["teacher"] = evaluate_dir(teacher, heldout, ecfg, teacher)
    serve("teacher", teacher, teacher)
    results["student"] = evaluate_dir(student, heldout, ecfg, teacher)
    serve("student", student, student)
    if previous is not None:
        # The student this one would replace, on the same examples: as is, and cross-entropy tuned below.
        results["previous student"] = evaluate_dir(previous, heldout, ecfg, teacher)
        serve("previous student", previous, previous)
    adaptation: dict[str, Any] | None = None
    if args.adapt_teacher_steps > 0:
        # Production teachers know far more than their students; the CPU starter teacher does not
        # (6.8M vs 1.65M). Fine-tuning it on the same training split (never the held-out files)
        # restores that relationship. Its cost is reported apart: it is paid once per repository
        # revision and shared by every student distilled from it.
        t = time.perf_counter()
        teacher_ex = train_ex
        if args.adapt_teacher_per_file:
            # More prompts per training file for the teacher (its adaptation is paid once per repository
            # revision); the held-out files are the same (the split hashes file names), the students' data too.
            tds = mine_to_disk(repo, work / "datasets-teacher", MiningConfig(
                use_index=False, max_per_file=args.adapt_teacher_per_file, heldout_fraction=args.heldout_fraction))
            if tds.manifest["heldout_files"] != ds.manifest["heldout_files"]:
                raise SystemExit("the teacher's dataset holds out other files than the students'")
            teacher_ex = tds.examples("train")
        tcfg = TrainConfig(method="ce", steps=args.adapt_teacher_steps, batch_size=args.batch_size, lr=args.lr,
                           warmup_steps=max(1, args.adapt_teacher_steps // 20), save_every=0, seed=args.seed)
        adapted = train(tcfg, teacher, teacher_ex, work / "teacher-adapted", budget=budget,
                        progress=sys.stderr.isatty())
        adaptation = {"steps": args.adapt_teacher_steps, "examples": len(teacher_ex),
                      "wall_s": round(time.perf_counter() - t, 1)}
        teacher = Path(adapted.model_dir)
        results["teacher (adapted)"] = evaluate_dir(teacher, heldout, ecfg, teacher)
        serve("teacher (adapted)", teacher, teacher_source)
        print(f"teacher adapted in {adaptation['wall_s']:.0f} s: ES {results['teacher (adapted)']['edit_similarity']:.3f}"
              f" NLL {results['teacher (adapted)']['nll']:.3f}", file=sys.stderr)
    cache = work / "targets.sqlite"
    conditions = [(m, m, "forward_kl", args.end_token, False, 0.0) for m in CONDITIONS]
    for spec in args.extra_divergences:  # "reverse_kl" or "forward_kl:teacher" (divergence:end token)
        divergence, _, end = spec.partition(":")
        conditions.append((f"logit ({spec})", "logit", divergence, end or args.end_token, False, 0.0))
    if args.memory_teacher:
        # The repository ∞-gram (other files of the training split) mixed into the teacher's targets.
        conditions.append(("logit+memory", "logit", "forward_kl", args.end_token, True, 0.0))
    if args.on_policy > 0:
        # A fraction of the steps on the student's own samples, scored by the teacher (distill_code.on_policy).
        conditions.append(("logit+on-policy", "logit", "forward_kl", args.end_token, False, args.on_policy))
        if args.memory_teacher:
            conditions.append(("logit+memory+on-policy", "logit", "forward_kl", args.end_token, True,
                               args.on_policy))
    if args.only:
        unknown = set(args.only) - {c[0] for c in conditions}
        if unknown:
            raise SystemExit(f"--only names no condition of this run: {', '.join(sorted(unknown))}")
        conditions = [c for c in conditions if c[0] in args.only or c[0] == "ce"]  # ce: the baseline, always
    runs = [(c, student) for c in conditions]
    if previous is not None:
        runs.append((("ce (previous student)", "ce", "forward_kl", args.end_token, False, 0.0), previous))
    memory_stats: dict[str, Any] = {}
    on_policy_stats: dict[str, Any] = {}
    for (name, method, divergence, end_token, memory, on_policy), init in runs:
        cfg = TrainConfig(method=method, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          warmup_steps=max(1, args.steps // 20), top_k=args.top_k, alpha=args.alpha,
                          divergence=divergence, end_token=end_token, hidden_kind=args.hidden_kind,
                          hidden_weight=args.hidden_weight, save_every=0, seed=args.seed, memory_teacher=memory,
                          on_policy=on_policy, on_policy_divergence=args.on_policy_divergence,
                          on_policy_max_new=args.max_new_tokens)
        run_dir = work / ("run-" + name.replace(" ", "").replace("(", "-").replace(")", "").replace(":", "-"))
        res = train(cfg, init, train_ex, run_dir, teacher_paths=[str(teacher)], budget=budget,
                    targets_cache=cache, progress=sys.stderr.isatty())
        ev = evaluate_dir(res.model_dir, heldout, ecfg, teacher)
        targets_s = float(res.target_stats.get("seconds", 0.0))
        ev.update({"wall_s": res.wall_s, "targets_s": targets_s, "train_s": res.wall_s - targets_s,
                   "final_loss": res.history[-1]["loss"],
                   "targets_bytes_per_token": res.target_stats.get("bytes_per_token")})
        results[name] = ev
        serve(name, res.model_dir, init)
        if memory:
            memory_stats = dict(res.target_stats.get("memory", {}))
        if on_policy:
            on_policy_stats[name] = dict(res.target_stats.get("on_policy", {}))
        print(f"{name}: EM {ev['exact_match']:.3f} ES {ev['edit_similarity']:.3f} NLL {ev['nll']:.3f} "
              f"({res.wall_s:.0f} s)", file=sys.stderr)

    def ratio(a: str, b: str, key: str) -> float | None:
        x, y = results[a][key], results[b][key]
        return round(x / y, 4) if y else None

    def es_difference(a: str, b: str, key: str = "per_example_es") -> dict[str, float]:
        d = paired_difference(results[a][key], results[b][key])
        return {k: round(v, 4) for k, v in d.items()}

    # Every student against cross-entropy, plus what each addition adds to the KD it extends. Edit similarity
    # differences on the same held-out examples come with 95% bootstrap intervals (is a gap larger than what
    # the choice of examples explains?), on the raw completions and as the server would show them.
    trained = [c[0] for c in conditions if c[0] != "ce"]
    pairs = [(name, "ce") for name in trained]
    pairs += [(a, b) for a, b in (("logit", "student"), ("logit+memory", "logit"), ("logit+on-policy", "logit"),
                                  ("logit+memory+on-policy", "logit+memory"), ("student", "previous student"),
                                  ("ce", "ce (previous student)")) if a in results and b in results]
    comparisons: dict[str, Any] = {
        f"{name}_vs_ce": {k: ratio(name, "ce", k) for k in ("exact_match", "edit_similarity", "nll", "wall_s")}
        for name in trained}
    if "logit" in results:
        comparisons["logit_vs_student"] = {k: ratio("logit", "student", k)
                                           for k in ("exact_match", "edit_similarity", "nll")}
    comparisons["edit_similarity_paired"] = {f"{a} - {b}": es_difference(a, b) for a, b in pairs}
    comparisons["edit_similarity_served_paired"] = {f"{a} - {b}": es_difference(a, b, "per_example_es_served")
                                                    for a, b in pairs}
    if served:  # the same pairs, served with the repository memory as the server does by default
        comparisons["edit_similarity_served_memory_paired"] = {
            f"{a} - {b}": {k: round(v, 4) for k, v in paired_difference(
                served[a]["per_example_es"], served[b]["per_example_es"]).items()}
            for a, b in pairs if a in served and b in served}
    keep = ("exact_match", "edit_similarity", "exact_match_served", "edit_similarity_served", "identifier_f1", "nll", "teacher_top1_agreement", "teacher_kl",
            "length_ratio_p50", "ended_by_cap", "ended_by_stop_token", "latency_p50_ms", "wall_s", "targets_s",
            "train_s", "final_loss", "targets_bytes_per_token", "examples")
    report = {
        "benchmark": "distill", "scale": "tiny" if args.tiny else "starter",
        "repo": repo_info, "dataset": {"version": ds.version, "train": len(train_ex), "heldout": len(heldout),
                                       "heldout_files": ds.manifest["heldout_files"],
                                       "split_reason": ds.manifest["split_reason"], "mining_s": round(mining_s, 2)},
        "teacher": str(teacher_source.relative_to(ROOT) if teacher_source.is_relative_to(ROOT)
                       else teacher_source.name),
        "teacher_adaptation": adaptation,
        "student": str(student.relative_to(ROOT) if student.is_relative_to(ROOT) else student.name),
        "previous_student": (str(previous.resolve().relative_to(ROOT)) if previous.resolve().is_relative_to(ROOT)
                             else previous.name) if previous is not None else None,
        "equal_compute": {"steps": args.steps, "batch_size": args.batch_size, "max_len": args.max_len, "layout": budget.layout,
                          "lr": args.lr, "top_k": args.top_k, "alpha": args.alpha,
                          "divergence": "forward_kl", "end_token": args.end_token,
                          "hidden_kind": args.hidden_kind, "hidden_weight": args.hidden_weight,
                          "extra_divergences": args.extra_divergences},
        "eval": {"examples": min(args.eval_examples, len(heldout)), "max_new_tokens": args.max_new_tokens},
        "results": {name: {k: r[k] for k in keep if k in r} for name, r in results.items()},
        "served_with_memory": {name: {k: v for k, v in r.items() if k != "per_example_es"}
                               for name, r in served.items()} or None,
        "comparisons": comparisons,
        "memory_teacher": memory_stats or None,
        "on_policy": {"fraction": args.on_policy, "divergence": args.on_policy_divergence,
                      "max_new_tokens": args.max_new_tokens, "runs": on_policy_stats} if args.on_policy else None,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpus": os.cpu_count()},
        "command": "python bench/bench_distill.py " + " ".join(_public_args(args.argv)),
    }
    print(format_table(results))
    print(json.dumps(comparisons, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _public_args(argv: list[str]) -> list[str]:
    """The command line without machine-specific paths (``--work DIR``, ``--out FILE``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--work", "--out"):
            skip = True
        else:
            out.append(a)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="toy scale: random-init tiny teacher and student")
    p.add_argument("--teacher", default="", help="teacher dir (default: distill_code/starter/teacher)")
    p.add_argument("--student", default="", help="student dir (default: distill_code/starter/student)")
    p.add_argument("--previous-student", default="",
                   help="also evaluate this student (the one --student would replace) as is and cross-entropy "
                        "tuned, with paired differences on the same examples")
    p.add_argument("--package", default="click", help="installed pure-Python package used as the repository")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--top-k", type=int, default=16)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--hidden-kind", choices=("mse", "cosine"), default="cosine",
                   help="hidden-state loss of the logit+hidden student (TrainConfig.hidden_kind)")
    p.add_argument("--hidden-weight", type=float, default=1.0)
    p.add_argument("--end-token", choices=("reference", "teacher"), default="teacher",
                   help="what the KD students learn the end-of-completion token from (TrainConfig.end_token)")
    p.add_argument("--extra-divergences", type=lambda v: [d for d in v.split(",") if d], default=[],
                   help="more logit-KD students: divergence[:end token], comma-separated "
                        "(e.g. reverse_kl,forward_kl:reference)")
    p.add_argument("--memory-teacher", action="store_true",
                   help="add a 'logit+memory' condition: the repository ∞-gram mixed into the teacher's targets")
    p.add_argument("--on-policy", type=float, default=0.0, metavar="FRACTION",
                   help="add 'logit+on-policy' (and, with --memory-teacher, 'logit+memory+on-policy'): this "
                        "fraction of the steps distils on the student's own samples (TrainConfig.on_policy)")
    p.add_argument("--on-policy-divergence", default="reverse_kl",
                   help="divergence of the on-policy steps (TrainConfig.on_policy_divergence)")
    p.add_argument("--only", type=lambda v: [c for c in v.split(",") if c], default=[],
                   help="train only these conditions (comma-separated names; ce, the baseline, always runs)")
    p.add_argument("--served-memory", action="store_true",
                   help="also serve every model in process as the language server does (repository memory on, "
                        "over the training split's files) and compare those edit similarities")
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--max-middle", type=int, default=64)
    p.add_argument("--layout", choices=("auto", "psm", "spm"), default="auto",
                   help="prompt layout for training and evaluation (auto: the student's, as the server serves it)")
    p.add_argument("--max-per-file", type=int, default=60)
    p.add_argument("--heldout-fraction", type=float, default=0.15)
    p.add_argument("--eval-examples", type=int, default=120)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--adapt-teacher-steps", type=int, default=0,
                   help="first fine-tune the teacher with cross-entropy on the training split for N steps")
    # One thread: on a shared 2-core box, token-by-token decoding with 2 threads measured 5x slower.
    p.add_argument("--adapt-teacher-per-file", type=int, default=0, metavar="N",
                   help="adapt the teacher on its own mining of the training files, up to N prompts per file "
                        "(default: the students' examples)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="", help="keep intermediate files here (default: a temp dir, removed)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "distill.json"))
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    return args


if __name__ == "__main__":
    import logging

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run(parse_args())
