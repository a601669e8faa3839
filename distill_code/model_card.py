"""Held-out line completion (FIM exact match, edit similarity, latency) and the starter models' cards.

``ship_models`` turns a finished recipe run into what the project ships: fp16 safetensors with the
tokenizer, a ``MODEL_CARD.md`` and a ``card.json`` of the measured figures per model.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from distill_code.fim import template_for
from distill_code.metrics import edit_similarity, exact_match
from distill_code.modeling import count_parameters

if TYPE_CHECKING:
    from distill_code.pretrain import Recipe


@dataclass(frozen=True)
class LineExample:
    prefix: str
    suffix: str
    line: str  # the held-out line, without its newline


def heldout_lines(texts: Sequence[str], n: int, seed: int = 0, max_prefix_chars: int = 900,
                  max_suffix_chars: int = 300) -> list[LineExample]:
    """Pick ``n`` non-trivial lines round-robin over ``texts``; context is cut at line boundaries."""
    rng = random.Random(seed)
    per_file: list[list[LineExample]] = []
    for text in texts:
        lines = text.splitlines(keepends=True)
        cands: list[LineExample] = []
        for i, line in enumerate(lines):
            s = line.strip()
            if i < 2 or not 6 <= len(s) <= 100 or s.startswith("#") or s in ('"""', "'''"):
                continue
            pre_lines: list[str] = []
            size = 0
            for prev in reversed(lines[:i]):
                if size + len(prev) > max_prefix_chars:
                    break
                pre_lines.insert(0, prev)
                size += len(prev)
            suf_lines: list[str] = []
            size = 0
            for nxt in lines[i + 1:]:
                if size + len(nxt) > max_suffix_chars:
                    break
                suf_lines.append(nxt)
                size += len(nxt)
            if pre_lines:
                cands.append(LineExample("".join(pre_lines), "".join(suf_lines), line.rstrip("\r\n")))
        rng.shuffle(cands)
        if cands:
            per_file.append(cands)
    out: list[LineExample] = []
    while len(out) < n and any(per_file):
        for cands in per_file:
            if cands and len(out) < n:
                out.append(cands.pop())
    return out


@torch.no_grad()
def complete_line(model: Any, tokenizer: Any, prefix: str, suffix: str, max_new_tokens: int = 40,
                  healer: Any = None) -> tuple[str, int]:
    """Greedy FIM completion (PSM, the serving layout) up to the end of the line; returns (text, tokens).

    With ``healer`` (a ``server.healing.TokenHealer``) the prompt is token-healed as the server does:
    byte-level BPE merges a newline with the next line's indentation ("\\n    " is one token), so a
    prefix that ends with a bare newline is out of distribution; the healer backs it off and the
    first generated tokens must reproduce it.
    """
    removed = ""
    if healer is not None:
        plan = healer.plan_prefix(prefix)
        prefix, removed = plan.prefix, plan.removed
    prompt = template_for("starcoder").psm(prefix, suffix)
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    special = set(tokenizer.all_special_ids)
    out_ids: list[int] = []
    past = None
    remaining = removed
    body = ""
    for _ in range(max_new_tokens + len(removed)):
        res = model(input_ids=ids, past_key_values=past, use_cache=True)
        past = res.past_key_values
        logits = res.logits[0, -1]
        if remaining:
            logits = healer.mask_logits(logits, remaining)
        nxt = int(logits.argmax())
        if nxt in special and not body.strip():
            # A held-out line is never empty: like the server on a blank line, take the best real token.
            logits = logits.clone()
            logits[sorted(i for i in special if i < logits.shape[-1])] = float("-inf")
            nxt = int(logits.argmax())
        if nxt in special:
            break
        if remaining:
            remaining = healer.advance(remaining, nxt)
        out_ids.append(nxt)
        text = healer.decode(out_ids) if healer is not None else tokenizer.decode(out_ids)
        body = healer.strip(text, removed) if healer is not None else text
        if not remaining and ("\n" in body.lstrip("\n") or (body.startswith("\n") and body.strip())):
            break
        ids = torch.tensor([[nxt]])
    line = body.lstrip("\n").split("\n", 1)[0]
    return line, len(out_ids)


def evaluate_lines(model: Any, tokenizer: Any, examples: Sequence[LineExample]) -> dict[str, Any]:
    """Exact match, edit similarity and latency of greedy line completion over ``examples``."""
    model.eval()
    em: list[float] = []
    es: list[float] = []
    ms: list[float] = []
    n_tok = 0
    from server.healing import TokenHealer  # the server's healing, so the card measures what is served

    healer = TokenHealer(tokenizer)
    for ex in examples:
        t0 = time.perf_counter()
        pred, k = complete_line(model, tokenizer, ex.prefix, ex.suffix, healer=healer)
        ms.append((time.perf_counter() - t0) * 1000)
        n_tok += k
        em.append(exact_match(pred, ex.line))
        es.append(edit_similarity(pred, ex.line))
    return {"lines": len(examples), "exact_match": statistics.fmean(em), "edit_similarity": statistics.fmean(es),
            "per_line_edit_similarity": es, "latency_ms_mean": statistics.fmean(ms),
            "latency_ms_p50": statistics.median(ms),
            "latency_ms_p90": sorted(ms)[int(0.9 * (len(ms) - 1))],
            "decode_tokens_per_s": n_tok / max(1e-9, sum(ms) / 1000)}


def _card_text(role: str, info: dict[str, Any]) -> str:
    ev, base = info["heldout"], info["random_init_heldout"]
    corpus = info["corpus"]
    rows = [
        ("parameters", f"{info['parameters']:,} (tied input/output embeddings)"),
        ("shape", ", ".join(f"{k}={v}" for k, v in info["shape"].items())),
        ("weights", f"safetensors, float16, {info['weights_mb']:.1f} MB"),
        ("tokens seen", f"{info['train']['tokens_seen']:,} in {info['train']['steps']:,} steps "
                        f"({info['train']['train_minutes']:.1f} min, {info['train']['tokens_per_second']:.0f} tok/s)"),
        ("validation loss", f"{info['train']['validation_loss']:.3f} nats/token (held-out files, FIM mix)"),
        ("held-out FIM exact match", f"{ev['exact_match']:.3f} (random init of this shape: {base['exact_match']:.3f})"),
        ("held-out FIM edit similarity",
         f"{ev['edit_similarity']:.3f} (random init of this shape: {base['edit_similarity']:.3f})"),
        ("latency per line (greedy, fp32, KV cache)",
         f"mean {ev['latency_ms_mean']:.0f} ms, p50 {ev['latency_ms_p50']:.0f} ms, p90 {ev['latency_ms_p90']:.0f} ms, "
         f"{ev['decode_tokens_per_s']:.0f} tok/s"),
    ]
    start = info["train"].get("initialized_from")
    if start:
        rows[3] = (rows[3][0], rows[3][1] + f", after {int(start.get('tokens', 0)):,} tokens of the model it started "
                                           f"from (`{start['path']}`, {start['layers']} layers)")
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    history = info.get("history") or []
    history_md = ""
    if history:
        lines = ["| version (recipe) | parameters | tokens seen | validation loss | held-out EM | held-out ES | "
                 "latency p50 |", "|---|---|---|---|---|---|---|"]
        for h in [*history, _history_entry(info)]:
            lines.append(f"| {h['recipe']} | {h['parameters']:,} | {h['tokens_seen']:,} | {h['validation_loss']:.3f} | "
                         f"{h['exact_match']:.3f} | {h['edit_similarity']:.3f} | {h['latency_ms_p50']:.0f} ms |")
        history_md = ("\n## History\n\nEarlier shipped versions of this model (their own held-out lines; the last "
                      "row is this one):\n\n" + "\n".join(lines) + "\n\nRows before recipes/starter-v2.toml "
                      "were decoded without token healing. To compare versions on the same lines with the same "
                      "decoding: `python bench/bench_starter.py --lines 200 --previous <git revision>`.\n")
    how = (f"pretrained{'' if start else ' from random init'} with next-token cross-entropy on fill-in-the-middle "
           "samples"
           if role == "teacher" else
           f"distilled from the starter teacher: {info['kd']}")
    if start:
        how += (f"; started from the trained weights in `{start['path']}`"
                + (f", grown from {start['layers']} to {start['grown_to']} layers (each trained layer followed by "
                   "copies of itself with zeroed output projections: the same function at the first step; "
                   "`distill_code.grow`)" if start["grown_to"] != start["layers"] else ""))
    filters = info.get("filters", "test, fixture, vendored, generated and data-table files removed, "
                                  "deduplicated by content hash")
    tok_source = info.get("tokenizer_source", "trained on the train split (`tokenizers`)")
    train_tok = corpus["totals"].get("train", {})
    val_tok = corpus["totals"].get("validation", {})
    return f"""# Protege starter {role}

A small Llama-style code model trained by Protege's own recipe (`{info['recipe']}`) on this
project's CPU, so the assistant works offline on the first run. It is a starter, not a
production code model: the figures below say how far it got on its training budget.

| | |
|---|---|
{table}

## Training

* How: {how}.
* Data: {', '.join(f"{s['name']} ({s['license']})" for s in corpus['sources'])}; {filters}, split by file.
  Train: {train_tok.get('files', 0)} files, {train_tok.get('bytes', 0):,} bytes, {train_tok.get('tokens', 0):,} tokens;
  validation: {val_tok.get('files', 0)} files, {val_tok.get('tokens', 0):,} tokens.
  Every file's path and sha256 are in `corpus_manifest.json` (corpus hash `{corpus['corpus_sha256'][:16]}`).
* Format: StarCoder-style FIM tokens (`<fim_prefix>`, `<fim_suffix>`, `<fim_middle>`, `<|endoftext|>`,
  `<file_sep>`), FIM rate {info['fim_rate']}, of which {info['spm_rate']} suffix-prefix-middle; prompts come from
  `distill_code.fim.template_for("starcoder")`, the same module the server uses.
* Tokenizer: byte-level BPE, {info['vocab_size']:,} tokens, {tok_source}.
* Loss curves: `loss.png` / `loss.json`.

## Evaluation

{ev['lines']} held-out lines from the validation files: the prompt is the PSM layout with up to 900
characters of prefix and 300 of suffix (cut at line boundaries); greedy decoding as the server decodes
(token healing of the prompt's last token, which byte-level BPE would merge with the next line's
indentation, and no empty answer for a line that is never empty) stops at the end of the line; exact match and edit similarity come from `distill_code.metrics`. Latency was measured on
this 2-core CPU {info['machine_note']}.

Reproduce: `protege pretrain --recipe {info['recipe']}` (training + this card), or only the card from
a finished run: `protege pretrain --recipe {info['recipe']} --resume --stages ship`.
{history_md}"""


def _history_entry(card: dict[str, Any]) -> dict[str, Any]:
    """The figures of one shipped card that its successor keeps in its history table."""
    train, ev = card.get("train", {}), card.get("heldout", {})
    return {"recipe": card.get("recipe", "?"), "parameters": int(card.get("parameters", 0)),
            "tokens_seen": int(train.get("tokens_seen", 0)), "validation_loss": float(train.get("validation_loss", 0.0)),
            "exact_match": float(ev.get("exact_match", 0.0)), "edit_similarity": float(ev.get("edit_similarity", 0.0)),
            "latency_ms_p50": float(ev.get("latency_ms_p50", 0.0)), "shipped_at": card.get("shipped_at")}


def ship_model(role: str, src_dir: Path, dst_dir: Path, examples: Sequence[LineExample], info: dict[str, Any],
               ) -> dict[str, Any]:
    """Export ``src_dir`` as fp16 safetensors + tokenizer into ``dst_dir``, evaluate it, write its card."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill_code.modeling import build_llama

    tok = AutoTokenizer.from_pretrained(str(src_dir))
    model: Any = AutoModelForCausalLM.from_pretrained(str(src_dir), dtype=torch.float32)
    info = dict(info)
    previous = dst_dir / "card.json"
    if previous.exists():  # the model this one replaces: its figures stay in the card's history
        try:
            old = json.loads(previous.read_text())
            info["history"] = [*old.get("history", []), _history_entry(old)]
        except (OSError, ValueError, TypeError):
            pass
    if dst_dir.exists():
        shutil.rmtree(dst_dir)
    dst_dir.mkdir(parents=True)
    model.to(torch.float16).save_pretrained(str(dst_dir), safe_serialization=True)
    tok.save_pretrained(str(dst_dir))
    # Evaluate what ships: the fp16 weights, loaded back the way the server loads them (fp32 on CPU).
    shipped = AutoModelForCausalLM.from_pretrained(str(dst_dir), dtype=torch.float32)
    info["shipped_at"] = time.strftime("%Y-%m-%d", time.gmtime())
    info["parameters"] = count_parameters(shipped)
    info["weights_mb"] = sum(f.stat().st_size for f in dst_dir.glob("*.safetensors")) / 1e6
    info["heldout"] = evaluate_lines(shipped, tok, examples)
    shape = info["shape"]
    from distill_code.modeling import LlamaShape

    baseline = build_llama(LlamaShape(**shape), vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id, seed=1)
    info["random_init_heldout"] = evaluate_lines(baseline, tok, examples)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    info["machine_note"] = (f"with {torch.get_num_threads()} torch threads while other work shared the cores "
                            f"(1-minute load average {load:.1f}), so treat absolute times as upper bounds")
    for src in ("loss.json", "loss.png"):
        if (src_dir.parent / src).exists():
            shutil.copy(src_dir.parent / src, dst_dir / src)
    (dst_dir / "MODEL_CARD.md").write_text(_card_text(role, info))
    compact = {k: v for k, v in info.items() if k not in ("corpus",)}
    for key in ("heldout", "random_init_heldout"):
        compact[key] = {k: v for k, v in info[key].items() if k != "per_line_edit_similarity"}
    (dst_dir / "card.json").write_text(json.dumps(compact, indent=1))
    return compact


def ship_models(recipe: Recipe, summary: dict[str, Any], val_texts: Sequence[str]) -> dict[str, Any]:
    """Ship the teacher and student of a finished run into ``recipe.ship_dir`` with their cards."""
    out = Path(recipe.out_dir)
    ship = Path(recipe.ship_dir) if recipe.ship_dir else out / "ship"
    ship.mkdir(parents=True, exist_ok=True)
    corpus = json.loads((out / "corpus_manifest.json").read_text())
    shutil.copy(out / "corpus_manifest.json", ship / "corpus_manifest.json")
    examples = heldout_lines(val_texts, recipe.eval_lines)
    result: dict[str, Any] = {}
    for role in ("teacher", "student"):
        src = out / role / "final"
        if role not in summary or not src.exists():
            raise FileNotFoundError(f"{src} is missing; run the {role} stage of the recipe before shipping")
        stage = getattr(recipe, role)
        info = {"recipe": f"recipes/{recipe.name}.toml", "train": summary[role], "shape": asdict(stage.shape),
                "corpus": corpus, "fim_rate": recipe.fim_rate, "spm_rate": recipe.spm_rate,
                "vocab_size": recipe.vocab_size, "seq_len": stage.seq_len,
                "kd": (f"loss = {stage.kd_alpha} x T^2 x KL(teacher || student) at T = {stage.kd_temperature} "
                       f"(distill_code.losses.forward_kl) + {1 - stage.kd_alpha:.2f} x cross-entropy"),
                "filters": ("vendored, held-out-evaluation, generated and data-table files removed"
                            + ("" if recipe.corpus.include_tests else ", test and fixture files removed")
                            + ", deduplicated by content hash"
                            + (" and near-duplicate lines (MinHash, Jaccard ≥ 0.8)" if recipe.corpus.near_duplicates
                               else "")),
                "tokenizer_source": (f"reused from `{recipe.tokenizer}` (ids stay compatible with repository memory)"
                                     if recipe.tokenizer else "trained on the train split (`tokenizers`)")}
        result[role] = ship_model(role, src, ship / role, examples, info)
    s, t = result["student"]["heldout"], result["teacher"]["heldout"]
    result["student_vs_teacher_latency"] = s["latency_ms_mean"] / max(1e-9, t["latency_ms_mean"])
    return result
