"""Held-out evaluation of students (and the teacher), the comparison report and the promotion gate.

Metrics per model on the held-out FIM examples: exact match, edit similarity and identifier
F1 of greedy completions (``distill_code.metrics``), teacher-forced NLL per completion token,
top-1 agreement and KL with the teacher on the same tokens, and completion latency. A
candidate is promoted (copied to ``promoted_model_dir(workspace)``, which ``protege serve``
loads) only when it beats the current student on the held-out split within the latency budget.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from distill_code import losses as L
from distill_code.encoding import Budget, collate, encode_example, encode_prompt, resolve_layout, template_of
from distill_code.fim import FimTemplate
from distill_code.metrics import edit_similarity, exact_match, identifier_f1
from distill_code.mining import Example
from distill_code.modeling import load_causal_lm
from distill_code.vocab import align_models
from distill_code.workspace import promoted_model_dir

log = logging.getLogger(__name__)
LINE_KINDS = ("statement", "line_remainder", "arguments")
REPORT_KEYS = ("exact_match", "edit_similarity", "identifier_f1", "nll", "teacher_top1_agreement",
               "teacher_kl", "length_ratio_p50", "ended_by_cap", "latency_p50_ms", "latency_p90_ms")


@dataclass
class EvalConfig:
    max_examples: int = 200
    max_new_tokens: int = 48
    batch_size: int = 8
    budget: Budget = field(default_factory=Budget)


def greedy_complete(model: Any, tokenizer: Any, template: FimTemplate, ex: Example, budget: Budget,
                    max_new_tokens: int) -> str:
    """Greedy completion with a KV cache; line kinds stop at the first newline, as the server's line mode does."""
    return _greedy(model, tokenizer, template, ex, budget, max_new_tokens)[0]


def as_served(completion: str, ex: Example, stops: tuple[str, ...] = ()) -> str:
    """``completion`` as the language server would show it at the example's cursor."""
    from server.postprocess import CursorContext, postprocess

    return postprocess(completion, CursorContext.at(ex.prefix, ex.suffix), stops)


def _greedy(model: Any, tokenizer: Any, template: FimTemplate, ex: Example, budget: Budget,
            max_new_tokens: int) -> tuple[str, str]:
    """The completion and why it ended: "stop" (end-of-middle token), "newline" (line kinds) or "cap"."""
    prompt = encode_prompt(ex, tokenizer, template, budget, reserve=max_new_tokens)
    stop_ids = {i for i in (tokenizer.convert_tokens_to_ids(s) for s in template.stop_strings()) if i is not None}
    line_mode = ex.kind in LINE_KINDS
    ids = torch.tensor([prompt])
    past = None
    out_ids: list[int] = []
    text = ""
    reason = "cap"
    with torch.no_grad():
        for _ in range(max_new_tokens):
            out = model(input_ids=ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = int(out.logits[0, -1].argmax())
            if nxt in stop_ids:
                reason = "stop"
                break
            out_ids.append(nxt)
            text = tokenizer.decode(out_ids, skip_special_tokens=False)
            if line_mode and "\n" in text:
                text = text.split("\n", 1)[0]
                reason = "newline"
                break
            ids = torch.tensor([[nxt]])
    for s in template.stop_strings():
        if s in text:
            text = text.split(s, 1)[0]
            reason = "stop"
    return text, reason


def evaluate_model(model: Any, tokenizer: Any, examples: list[Example], cfg: EvalConfig | None = None,
                   teacher: tuple[Any, Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Metrics of one loaded model on held-out FIM ``examples`` (the first ``max_examples``)."""
    cfg = cfg or EvalConfig()
    template = template_of(tokenizer)
    exs = [e for e in examples if e.task == "fim"][: cfg.max_examples]
    if not exs:
        raise ValueError("no held-out FIM examples to evaluate on; mine a repository first")
    model.eval()
    em, es, f1, lat, ratio, reasons, em_served, es_served = [], [], [], [], [], [], [], []
    stops = template.stop_strings()
    for ex in tqdm(exs, desc="eval", disable=not progress, leave=False):
        t0 = time.perf_counter()
        pred, reason = _greedy(model, tokenizer, template, ex, cfg.budget, cfg.max_new_tokens)
        lat.append((time.perf_counter() - t0) * 1000)
        em.append(exact_match(pred, ex.middle))
        es.append(edit_similarity(pred, ex.middle))
        f1.append(identifier_f1(pred, ex.middle))
        ratio.append(len(pred) / max(1, len(ex.middle)))
        reasons.append(reason)
        served = as_served(pred, ex, stops)
        em_served.append(exact_match(served, ex.middle))
        es_served.append(edit_similarity(served, ex.middle))
    res: dict[str, Any] = {
        "examples": len(exs), "exact_match": statistics.fmean(em), "edit_similarity": statistics.fmean(es),
        "identifier_f1": statistics.fmean(f1), "latency_p50_ms": statistics.median(lat),
        "latency_p90_ms": sorted(lat)[int(0.9 * (len(lat) - 1))],
        # Where completions end: the length of each against its reference (median; 1.0 = as long),
        # and the share cut by the token cap or ended by the model's end-of-middle token.
        "length_ratio_p50": statistics.median(ratio),
        "ended_by_cap": reasons.count("cap") / len(reasons),
        "ended_by_stop_token": reasons.count("stop") / len(reasons),
        "per_example_es": [round(x, 4) for x in es],  # for paired comparisons
        # The same completions after the server's post-processing (one line mid-line, a block cut where
        # it dedents, suffix overlap and repetition removed): what an editor would show.
        "exact_match_served": statistics.fmean(em_served), "edit_similarity_served": statistics.fmean(es_served),
        "per_example_es_served": [round(x, 4) for x in es_served],
    }
    res.update(_teacher_forced(model, tokenizer, template, exs, cfg, teacher))
    return res


def _teacher_forced(model: Any, tokenizer: Any, template: FimTemplate, exs: list[Example], cfg: EvalConfig,
                    teacher: tuple[Any, Any] | None) -> dict[str, float]:
    """NLL per completion token, and top-1 agreement / KL(teacher || model) when a teacher is given."""
    enc = [encode_example(e, tokenizer, template, cfg.budget) for e in exs]
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    alignment = None
    if teacher is not None:
        alignment = align_models(model, tokenizer, teacher[0], teacher[1])
    nll_sum, n_tok, agree, kl_sum = 0.0, 0, 0, 0.0
    with torch.no_grad():
        for lo in range(0, len(enc), cfg.batch_size):
            b = collate(enc[lo: lo + cfg.batch_size], pad)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
            sel = logits[b["mask"]]
            labels = b["labels"][b["mask"]]
            nll_sum += float(F.cross_entropy(sel, labels, reduction="sum"))
            n_tok += int(labels.numel())
            if teacher is not None and alignment is not None:
                t_logits = teacher[0](input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
                t_sel = alignment.teacher_logits(t_logits)[b["mask"]]
                agree += int((t_sel.argmax(-1) == sel.argmax(-1)).sum())
                kl_sum += float(L.forward_kl(sel, t_sel)) * labels.numel()
    out = {"nll": nll_sum / max(1, n_tok), "completion_tokens": float(n_tok)}
    if teacher is not None:
        out["teacher_top1_agreement"] = agree / max(1, n_tok)
        out["teacher_kl"] = kl_sum / max(1, n_tok)
    return out


def evaluate_dir(model_dir: str | Path, examples: list[Example], cfg: EvalConfig | None = None,
                 teacher_dir: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """``evaluate_model`` for a model directory (and an optional teacher directory). A budget whose layout is
    "auto" is evaluated in the layout the server would use for this model (``resolve_layout``)."""
    cfg = cfg or EvalConfig()
    if cfg.budget.layout == "auto":
        cfg = dataclasses.replace(cfg, budget=dataclasses.replace(cfg.budget,
                                                                  layout=resolve_layout("auto", model_dir)))
    model, tok = load_causal_lm(model_dir)
    teacher = load_causal_lm(teacher_dir) if teacher_dir else None
    res = evaluate_model(model, tok, examples, cfg, teacher, progress)
    res["model"] = str(model_dir)
    return res


# ------------------------------------------------------------------------ report and gate


def paired_difference(a: list[float], b: list[float], resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` over the same examples, with a 95% bootstrap interval (resampling examples)."""
    if len(a) != len(b) or not a:
        raise ValueError("paired scores need the same, non-empty examples")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(resamples))
    return {"mean": statistics.fmean(diffs), "ci95_low": means[int(0.025 * resamples)],
            "ci95_high": means[int(0.975 * resamples) - 1]}


def score(metrics: dict[str, Any]) -> float:
    """One number to rank students: the mean of exact match and edit similarity."""
    return 0.5 * (float(metrics["exact_match"]) + float(metrics["edit_similarity"]))


@dataclass
class GateDecision:
    promote: bool
    reason: str
    candidate_score: float
    current_score: float
    latency_budget_ms: float


def gate(candidate: dict[str, Any], current: dict[str, Any], latency_budget_ms: float | None = None,
         min_gain: float = 0.0) -> GateDecision:
    """Promote only when the candidate beats the current student and stays within the latency budget.

    Without an explicit budget the candidate may be at most 1.5x slower (p50) than the current student.
    """
    budget = latency_budget_ms if latency_budget_ms is not None else 1.5 * float(current["latency_p50_ms"])
    c, p = score(candidate), score(current)
    if c <= p + min_gain:
        return GateDecision(False, f"score {c:.4f} does not beat the current student's {p:.4f}", c, p, budget)
    if float(candidate["latency_p50_ms"]) > budget:
        return GateDecision(False, f"p50 latency {candidate['latency_p50_ms']:.1f} ms exceeds the budget "
                                   f"{budget:.1f} ms", c, p, budget)
    return GateDecision(True, f"score {c:.4f} beats {p:.4f} within {budget:.1f} ms", c, p, budget)


def promote(candidate_dir: str | Path, workspace: str | Path, report: dict[str, Any] | None = None) -> Path:
    """Copy the candidate to ``promoted_model_dir(workspace)`` atomically, keeping the previous one as ``.prev``."""
    dest = promoted_model_dir(workspace)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".incoming")
    if tmp.exists():
        shutil.rmtree(tmp)  # a copy a crash interrupted: never served, start it over
    shutil.copytree(candidate_dir, tmp)
    if report is not None:
        (tmp / "promotion.json").write_text(json.dumps(report, indent=1, default=str))
    prev = dest.with_name(dest.name + ".prev")
    if dest.exists():
        if prev.exists():
            shutil.rmtree(prev)
        dest.rename(prev)
    # A crash here leaves only model.prev (the old model, whole): served_promoted_model() falls back to it.
    tmp.rename(dest)
    log.info("promoted %s to %s", candidate_dir, dest)
    return dest


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A plain-text table, one row per model, of the report metrics that are present."""
    keys = [k for k in REPORT_KEYS if any(k in r for r in results.values())]
    head = ["model", *keys]
    rows = [[name] + [f"{r[k]:.4f}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k in keys]
            for name, r in results.items()]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=False)) for line in [head, *rows]]
    return "\n".join(lines)
