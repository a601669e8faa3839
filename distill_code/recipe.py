"""Distillation recipes (TOML) and the end-to-end pipeline: mine, targets, train, evaluate, gate, compress.

A recipe has the sections ``[teacher] [student] [mining] [budget] [train] [eval]
[data_distillation] [compress]``; every key is optional and unknown keys are an error
(a typo must not silently fall back to a default). Empty model paths mean the shipped
starter teacher / student.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill_code.encoding import Budget, read_card, resolve_layout
from distill_code.evaluate import EvalConfig, evaluate_dir, format_table, gate, promote
from distill_code.mining import MiningConfig, mine_to_disk
from distill_code.trainer import TrainConfig, train
from distill_code.workspace import datasets_dir, runs_dir, targets_cache

log = logging.getLogger(__name__)
STARTER = Path(__file__).resolve().parent / "starter"


class RecipeError(ValueError):
    """A recipe file is missing, unreadable or has unknown keys."""


@dataclass
class TeacherSpec:
    paths: list[str] = field(default_factory=list)  # empty: the shipped starter teacher
    weights: list[float] = field(default_factory=list)  # ensemble weights (default: equal)
    server: str = ""  # OpenAI-compatible base URL (vLLM) instead of in-process teachers
    server_model: str = ""


@dataclass
class StudentSpec:
    path: str = ""  # empty: the shipped starter student


@dataclass
class EvalSpec:
    max_examples: int = 100
    max_new_tokens: int = 48
    latency_budget_ms: float | None = None
    evaluate_teacher: bool = True
    promote: bool = True


@dataclass
class DataDistillSpec:
    enabled: bool = False
    max_examples: int = 200
    max_new_tokens: int = 48


@dataclass
class CompressSpec:
    int8: bool = True
    prune: float = 0.0


@dataclass
class Recipe:
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    student: StudentSpec = field(default_factory=StudentSpec)
    mining: MiningConfig = field(default_factory=MiningConfig)
    budget: Budget = field(default_factory=Budget)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalSpec = field(default_factory=EvalSpec)
    data_distillation: DataDistillSpec = field(default_factory=DataDistillSpec)
    compress: CompressSpec = field(default_factory=CompressSpec)
    accelerate_config: str = ""  # documentation: run with `accelerate launch --config_file ...`

    def teacher_paths(self) -> list[str]:
        return self.teacher.paths or [str(_shipped("teacher"))]

    def student_path(self) -> str:
        return self.student.path or str(_shipped("student"))


def _shipped(which: str) -> Path:
    p = STARTER / which
    if not (p / "config.json").exists():
        raise RecipeError(f"the shipped starter {which} is not installed at {p}; build it with `protege pretrain` "
                          f"or set {which}.path(s) in the recipe / --{which} on the command line")
    return p


def _fill(cls: type, raw: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise RecipeError(f"unknown key(s) {unknown} in [{where}]; known keys: {sorted(known)}")
    return cls(**raw)


def load_recipe(path: str | Path | None) -> Recipe:
    """Parse a recipe TOML file (``None``: all defaults)."""
    if path is None:
        return Recipe()
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {str(path)!r}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"recipe {str(path)!r} is not valid TOML: {exc}") from exc
    sections: dict[str, type] = {"teacher": TeacherSpec, "student": StudentSpec, "mining": MiningConfig,
                                 "budget": Budget, "train": TrainConfig, "eval": EvalSpec,
                                 "data_distillation": DataDistillSpec, "compress": CompressSpec}
    unknown = sorted(set(raw) - set(sections) - {"accelerate_config"})
    if unknown:
        raise RecipeError(f"unknown section(s) {unknown} in {p.name}; known: {sorted(sections)}")
    kwargs: dict[str, Any] = {"accelerate_config": str(raw.get("accelerate_config", ""))}
    for name, cls in sections.items():
        if name in raw:
            kwargs[name] = _fill(cls, raw[name], name)
    recipe = Recipe(**kwargs)
    recipe.train.validate()
    return recipe


def run_distill(repo: str | Path, recipe: Recipe, workspace: str | Path | None = None,
                out_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """The whole pipeline on ``repo``; returns (and writes as ``report.json``) the run report."""
    t0 = time.perf_counter()
    ws = Path(workspace or repo)
    ds = mine_to_disk(repo, datasets_dir(ws), recipe.mining)
    run = Path(out_dir) if out_dir else runs_dir(ws) / time.strftime("%Y%m%d-%H%M%S")
    run.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"repo": str(Path(repo).resolve()), "dataset": ds.version,
                              "train_examples": len(ds.examples("train")), "heldout_examples": len(ds.fim("heldout")),
                              "recipe": dataclasses.asdict(recipe)}
    teacher_paths = [] if recipe.teacher.server else recipe.teacher_paths()
    student_path = recipe.student_path()
    capped = cap_budget(recipe.budget, [student_path, *teacher_paths])
    if capped is not None:
        report["budget_capped"] = capped
    try:
        recipe.budget.layout = resolve_layout(recipe.budget.layout, student_path)
    except ValueError as exc:
        raise RecipeError(str(exc)) from exc
    report["layout"] = recipe.budget.layout
    train_examples = ds.examples("train")
    if recipe.data_distillation.enabled:
        train_examples = train_examples + _data_distill(recipe, teacher_paths, ds.fim("train"), report)
    result = train(recipe.train, student_path, train_examples, run, teacher_paths=teacher_paths or None,
                   teacher_weights=recipe.teacher.weights or None, budget=recipe.budget,
                   targets_cache=targets_cache(ws),
                   teacher_server=(recipe.teacher.server, recipe.teacher.server_model) if recipe.teacher.server
                   else None, progress=progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return report  # under `accelerate launch` only rank 0 evaluates, gates and promotes
    write_distilled_card(result.model_dir, student_path, recipe.budget, train_examples, teacher_paths)
    report["train"] = {"wall_s": result.wall_s, "final_loss": result.history[-1]["loss"], "resumed_from": result.resumed_from,
                       "targets": result.target_stats, "model_dir": str(result.model_dir)}
    ecfg = EvalConfig(max_examples=recipe.eval.max_examples, max_new_tokens=recipe.eval.max_new_tokens,
                      budget=recipe.budget)
    heldout = ds.fim("heldout")
    teacher_dir = teacher_paths[0] if teacher_paths else None
    models = {"current": student_path, "candidate": str(result.model_dir)}
    if recipe.eval.evaluate_teacher and teacher_dir:
        models = {"teacher": teacher_dir, **models}
    results = {name: evaluate_dir(d, heldout, ecfg, teacher_dir, progress) for name, d in models.items()}
    report["eval"] = results
    decision = gate(results["candidate"], results["current"], recipe.eval.latency_budget_ms)
    report["gate"] = dataclasses.asdict(decision)
    if decision.promote and recipe.eval.promote:
        report["promoted_to"] = str(promote(result.model_dir, ws, {"gate": report["gate"], "eval": results}))
    if recipe.compress.int8:
        from distill_code.modeling import load_causal_lm
        from distill_code.quantize import compression_report

        model, tok = load_causal_lm(result.model_dir)
        report["compression"] = compression_report(model, tok, heldout, ecfg, recipe.compress.prune)
    report["wall_s"] = time.perf_counter() - t0
    report["table"] = format_table(results)
    (run / "report.json").write_text(json.dumps(report, indent=1, default=str))
    return report


def trained_seq_len(model_dir: str | Path) -> int | None:
    """The sequence length a Protege model was trained on (its card.json ``seq_len``), or None."""
    try:
        n = int(read_card(model_dir).get("seq_len") or 0)
    except (ValueError, TypeError):
        return None
    return n if n > 0 else None


def write_distilled_card(model_dir: str | Path, student_dir: str | Path, budget: Budget, examples: list[Any],
                         teacher_paths: list[str]) -> None:
    """What the server reads about a distilled student (``card.json``): the sequence length and layout it
    was tuned on and the share of its prompts with retrieved context; plus the base student's memory mix
    table (``memory_mix.json``), the closest fitted one (refit with ``bench/bench_memory.py --fit``)."""
    import shutil

    from distill_code.memory_mix import FILE_NAME

    out = Path(model_dir)
    base = read_card(student_dir)
    fim = [e for e in examples if getattr(e, "task", "fim") == "fim"]
    card = {"distilled_from": str(student_dir), "teachers": list(teacher_paths),
            "seq_len": min(budget.max_len, int(base.get("seq_len") or budget.max_len)),
            "spm_rate": 1.0 if budget.layout == "spm" else 0.0,
            "context_rate": round(sum(bool(getattr(e, "context", "")) for e in fim) / max(1, len(fim)), 4),
            "examples": len(examples)}
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    table = Path(student_dir) / FILE_NAME
    if table.exists() and not (out / FILE_NAME).exists():
        shutil.copyfile(table, out / FILE_NAME)


def cap_budget(budget: Budget, model_dirs: list[str]) -> dict[str, int] | None:
    """Shorten ``budget`` (in place) to the shortest sequence any of the models was trained on: positions past
    it are ones a small model never learned (the starters, trained on 256 tokens, scored NLL 4.7 instead of
    3.1 on 384-token held-out prompts and the candidate learned to end at once). Returns what changed."""
    lengths = [n for d in model_dirs if (n := trained_seq_len(d)) is not None]
    if not lengths or budget.max_len <= min(lengths):
        return None
    cap = min(lengths)
    before = {"max_len": budget.max_len, "max_middle": budget.max_middle}
    budget.max_len = cap
    budget.max_middle = min(budget.max_middle, max(8, cap // 4))
    log.warning("budget.max_len %d -> %d, max_middle %d -> %d: the models were trained on %d-token sequences "
                "(card.json)", before["max_len"], cap, before["max_middle"], budget.max_middle, cap)
    return {"max_len_from": before["max_len"], "max_len": cap, "max_middle_from": before["max_middle"],
            "max_middle": budget.max_middle}


def _data_distill(recipe: Recipe, teacher_paths: list[str], examples: list[Any],
                  report: dict[str, Any]) -> list[Any]:
    if not teacher_paths:
        raise RecipeError("data distillation needs an in-process teacher; set teacher.paths")
    from distill_code.encoding import template_of
    from distill_code.modeling import load_causal_lm
    from distill_code.targets import generate_data

    model, tok = load_causal_lm(teacher_paths[0])
    kept, outcomes = generate_data(examples[: recipe.data_distillation.max_examples], model, tok,
                                   template_of(tok), recipe.budget, recipe.data_distillation.max_new_tokens)
    report["data_distillation"] = {"kept": len(kept), "outcomes": outcomes}
    return kept
