"""Benchmark: token healing on held-out lines cut mid-word and at word boundaries (quality and latency).

Lines of pure-Python packages installed beside us (not in the stdlib training corpus) are cut at
random points; the model completes the line remainder with and without healing, in the
prefix-suffix-middle layout the server uses and in suffix-prefix-middle (where the prefix ends the
prompt). Reports exact match and edit similarity per cut kind, healing's own cost per request,
and how much of the previous prompt the KV cache keeps while the user types forward.

    python bench/bench_healing.py [--model DIR] [--per-kind 150] [--out bench/results/healing.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import DynamicCache  # noqa: E402

from distill_code.fim import FimTemplate, template_for  # noqa: E402
from distill_code.metrics import edit_similarity, exact_match  # noqa: E402
from distill_code.modeling import load_causal_lm  # noqa: E402
from server.healing import SuffixPlan, TokenHealer, VocabIndex  # noqa: E402

STARTER = ROOT / "distill_code" / "starter" / "student"
_WORD = re.compile(r"\w")
PREFIX_TOKENS, SUFFIX_TOKENS = 320, 96  # the starter models train on 512-token blocks


@dataclass
class Case:
    path: str
    prefix: str  # document text before the cursor
    suffix: str  # document text after the hidden span
    target: str  # the hidden text the model should produce
    kind: str
    fitted: tuple[str, str] = ("", "")


def held_out_files(packages: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in packages:
        root = Path(importlib.import_module(name).__file__ or "").parent
        for p in sorted(root.rglob("*.py")):
            rel = p.relative_to(root.parent)
            if any(part in {"tests", "test", "testing"} for part in rel.parts) or p.name.startswith("test_"):
                continue
            text = p.read_text(encoding="utf-8", errors="replace")
            if 2_000 <= len(text) <= 200_000:
                out.append((str(rel), text))
    return out


def _is_mid_word(line: str, cut: int) -> bool:
    return bool(_WORD.match(line[cut - 1]) and _WORD.match(line[cut]))


def sample_cases(files: list[tuple[str, str]], per_kind: int, rng: random.Random) -> list[Case]:
    """``per_kind`` line-remainder cases per kind (mid_word, boundary) and mid-word infills."""
    lines: list[tuple[int, int, int]] = []  # (file, line start offset, line index)
    for fi, (_, text) in enumerate(files):
        offset = 0
        for li, line in enumerate(text.split("\n")):
            body = line.strip()
            if 12 <= len(body) <= 100 and not body.startswith(("#", '"', "'")):
                lines.append((fi, offset, li))
            offset += len(line) + 1
    rng.shuffle(lines)
    want = {"mid_word": per_kind, "boundary": per_kind, "infill_mid_word": per_kind // 2}
    cases: list[Case] = []
    for fi, start, _ in lines:
        path, text = files[fi]
        end = text.index("\n", start) if "\n" in text[start:] else len(text)
        line = text[start:end].rstrip()
        indent = len(line) - len(line.lstrip())
        cuts = list(range(indent + 1, len(line)))
        kind = min(want, key=lambda k: (want[k] <= 0, -want[k]))
        if want[kind] <= 0:
            break
        if kind == "infill_mid_word":
            # Hide a span that ends inside a word: the suffix then starts with the word's remainder.
            ends = [c for c in cuts if _is_mid_word(line, c)]
            if not ends:
                continue
            b = rng.choice(ends)
            a = rng.randrange(max(indent, b - 24), b)
            cases.append(Case(path, text[: start + a], line[b:] + text[end:], line[a:b], kind))
        else:
            pool = [c for c in cuts if _is_mid_word(line, c) == (kind == "mid_word")]
            if not pool:
                continue
            c = rng.choice(pool)
            cases.append(Case(path, text[: start + c], text[end:], line[c:], kind))
        want[kind] -= 1
    return cases


def fit(tok: Any, prefix: str, suffix: str) -> tuple[str, str]:
    """Prefix tail (whole lines) and suffix head (whole lines) within the token budgets."""
    head, _, cur = prefix.rpartition("\n")
    before = head.split("\n")[-200:] if head else []
    budget = PREFIX_TOKENS - len(tok(cur, add_special_tokens=False)["input_ids"])
    keep = 0
    if before:
        # One batched call; +1 per line for its newline (an estimate that errs on the short side).
        for n in reversed([len(x) + 1 for x in tok(before, add_special_tokens=False)["input_ids"]]):
            if n > budget:
                break
            budget -= n
            keep += 1
    kept = [*before[len(before) - keep:], cur] if keep else [cur]
    after = suffix.split("\n")[:40]
    room, n_keep = SUFFIX_TOKENS, 0
    for n in [len(x) + 1 for x in tok(after, add_special_tokens=False)["input_ids"]]:
        if n > room and n_keep:
            break
        room -= n
        n_keep += 1
    return "\n".join(kept), "\n".join(after[:n_keep])


@torch.inference_mode()
def complete(model: Any, tok: Any, healer: TokenHealer, stop_ids: set[int], prompt: str, removed: str,
             max_new: int, suffix_plan: SuffixPlan | None = None) -> tuple[str, float, int]:
    """Greedy single-line completion; returns (text, seconds spent on healing constraints, tokens)."""
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    cache = DynamicCache()
    logits = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True).logits[0, -1]
    remaining, gen, heal_s = removed, [], 0.0
    text = ""
    for _ in range(max_new):
        if remaining:
            t0 = time.perf_counter()
            allowed = healer.allowed_tokens(remaining)
            nxt = int(allowed[int(torch.argmax(logits[allowed]))]) if len(allowed) else int(torch.argmax(logits))
            remaining = healer.advance(remaining, nxt) if len(allowed) else ""
            heal_s += time.perf_counter() - t0
        else:
            nxt = int(torch.argmax(logits))
        if nxt in stop_ids:
            break
        gen.append(nxt)
        text = healer.decode(gen)
        body = text[len(removed):] if text.startswith(removed) else text
        if not remaining and ("\n" in body or (suffix_plan is not None and suffix_plan.reached(body))):
            break
        logits = model(input_ids=torch.tensor([[nxt]]), past_key_values=cache, use_cache=True).logits[0, -1]
    t0 = time.perf_counter()
    if removed:
        text = healer.strip(text, removed)
    heal_s += time.perf_counter() - t0
    return text.split("\n", 1)[0], heal_s, len(gen)


def _ms(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"mean_ms": round(1000 * statistics.fmean(xs), 3), "p50_ms": round(1000 * xs[len(xs) // 2], 3),
            "p95_ms": round(1000 * xs[int(len(xs) * 0.95)], 3)}


def run_variant(model: Any, tok: Any, template: FimTemplate, healer: TokenHealer | None, layout: str,
                cases: list[Case], max_new: int, stop_ids: set[int], plain: TokenHealer,
                memo: dict[Any, Any], heal_suffix: bool = False,
                dump: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    per_kind: dict[str, dict[str, list[float]]] = {}
    for case in cases:
        prefix, suffix = case.fitted
        t0 = time.perf_counter()
        plan_s = 0.0
        removed = ""
        splan: SuffixPlan | None = None
        if healer is not None:
            plan = healer.plan_prefix(prefix)
            prefix, removed = plan.prefix, plan.removed
            if heal_suffix:
                splan = healer.plan_suffix(suffix, prefix + removed)
                suffix = splan.suffix
            plan_s = time.perf_counter() - t0
        prompt = template.psm(prefix, suffix) if layout == "psm" else template.spm(prefix, suffix)
        # Greedy decoding is deterministic: a request identical to one already run (healing found
        # nothing to back off) reuses its output and its measured time instead of decoding again.
        key = (prompt, removed, splan)
        if key not in memo:
            t1 = time.perf_counter()
            done = complete(model, tok, healer or plain, stop_ids, prompt, removed, max_new, splan)
            memo[key] = (*done, time.perf_counter() - t1)
        text, heal_s, n_tok, decode_s = memo[key]
        if splan is not None:
            text = splan.trim(text)
        total = plan_s + decode_s
        row = per_kind.setdefault(case.kind, {k: [] for k in ("em", "es", "total", "heal", "tokens", "healed")})
        row["em"].append(exact_match(text, case.target))
        row["es"].append(edit_similarity(text, case.target))
        row["total"].append(total)
        row["heal"].append(plan_s + heal_s)
        row["tokens"].append(n_tok)
        row["healed"].append(float(bool(removed) or bool(splan and splan.removed)))
        if dump is not None:
            dump.append({"layout": layout, "variant": "off" if healer is None else "heal", "kind": case.kind,
                         "path": case.path, "prefix_tail": case.fitted[0][-60:], "removed": removed,
                         "target": case.target, "prediction": text})
    out: dict[str, Any] = {}
    for kind, row in per_kind.items():
        out[kind] = {"n": len(row["em"]), "exact_match": round(statistics.fmean(row["em"]), 4),
                     "edit_similarity": round(statistics.fmean(row["es"]), 4),
                     "healed_fraction": round(statistics.fmean(row["healed"]), 3),
                     "generated_tokens_mean": round(statistics.fmean(row["tokens"]), 2),
                     "request": _ms(row["total"]), "healing_overhead": _ms(row["heal"])}
    return out


def kv_reuse(tok: Any, template: FimTemplate, healer: TokenHealer | None, files: list[tuple[str, str]],
             rng: random.Random, n: int = 60) -> float:
    """Mean share of the previous prompt's tokens kept when the user types one more character mid-word."""
    shares: list[float] = []
    while len(shares) < n:
        _, text = files[rng.randrange(len(files))]
        m = re.compile(r"[A-Za-z_]\w{5,}").search(text, rng.randrange(len(text)))
        if not m:
            continue
        prev: list[int] | None = None
        for c in range(m.start() + 2, m.end()):
            prefix, suffix = fit(tok, text[:c], text[m.end():])
            if healer is not None:
                prefix = healer.plan_prefix(prefix).prefix
            ids = tok(template.psm(prefix, suffix), add_special_tokens=False)["input_ids"]
            if prev is not None:
                common = next((i for i, (a, b) in enumerate(zip(prev, ids, strict=False)) if a != b),
                              min(len(prev), len(ids)))
                shares.append(common / len(prev))
            prev = ids
    return round(statistics.fmean(shares), 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(STARTER), help="Hugging Face model directory (default: the starter student)")
    ap.add_argument("--packages", default="networkx,tqdm,pathspec", help="held-out source: installed packages")
    ap.add_argument("--per-kind", type=int, default=150)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--layouts", default="psm,spm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dump", default="", help="also write every prediction to this JSONL file")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "healing.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_causal_lm(args.model)
    template = template_for("auto", set(tok.get_vocab()))
    stop_ids = {i for s in template.stop_strings() if (i := tok.convert_tokens_to_ids(s)) is not None}
    stop_ids |= {tok.eos_token_id} if tok.eos_token_id is not None else set()

    t0 = time.perf_counter()
    VocabIndex(tok)  # cold build, bypassing the shared cache
    index_build_s = time.perf_counter() - t0
    healer, healer_nows = TokenHealer(tok), TokenHealer(tok, heal_whitespace=False)
    files = held_out_files(args.packages.split(","))
    rng = random.Random(args.seed)
    cases = sample_cases(files, args.per_kind, rng)
    for c in cases:
        c.fitted = fit(tok, c.prefix, c.suffix)
    line_cases = [c for c in cases if c.kind != "infill_mid_word"]
    infill = [c for c in cases if c.kind == "infill_mid_word"]
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
          f"{len(files)} held-out files, {len(line_cases)} line cases, {len(infill)} infill cases", flush=True)

    results: dict[str, Any] = {}
    memo: dict[Any, Any] = {}
    dump: list[dict[str, Any]] | None = [] if args.dump else None
    for layout in args.layouts.split(","):
        results[layout] = {}
        for name, h in (("off", None), ("heal", healer), ("heal_no_whitespace", healer_nows)):
            t = time.perf_counter()
            results[layout][name] = run_variant(model, tok, template, h, layout, line_cases,
                                                args.max_new_tokens, stop_ids, healer, memo, dump=dump)
            print(f"{layout:4s} {name:19s} {time.perf_counter() - t:6.1f}s  "
                  + "  ".join(f"{k}: EM {v['exact_match']:.3f} ES {v['edit_similarity']:.3f}"
                              for k, v in results[layout][name].items()), flush=True)
    infill_res: dict[str, Any] = {}
    for name, h, sfx in (("off", None, False), ("heal_prefix", healer, False), ("heal_prefix_suffix", healer, True)):
        infill_res[name] = run_variant(model, tok, template, h, "psm", infill, args.max_new_tokens, stop_ids,
                                       healer, memo, heal_suffix=sfx).get("infill_mid_word", {})
        print(f"psm  infill {name:19s} EM {infill_res[name].get('exact_match', 0):.3f} "
              f"ES {infill_res[name].get('edit_similarity', 0):.3f}", flush=True)
    reuse = {"off": kv_reuse(tok, template, None, files, random.Random(1)),
             "heal": kv_reuse(tok, template, healer, files, random.Random(1))}
    ratios = {layout: {kind: {"edit_similarity_heal_over_off": round(
        results[layout]["heal"][kind]["edit_similarity"] / max(1e-9, results[layout]["off"][kind]["edit_similarity"]), 3)}
        for kind in results[layout]["off"]} for layout in results}
    report = {
        "model": Path(args.model).name if Path(args.model) == STARTER else args.model,
        "model_is_starter_student": Path(args.model).resolve() == STARTER.resolve(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tok), "template": template.family,
        "held_out_packages": args.packages.split(","), "held_out_files": len(files),
        "per_kind": args.per_kind, "seed": args.seed, "max_new_tokens": args.max_new_tokens,
        "threads": torch.get_num_threads(), "index_build_ms": round(index_build_s * 1000, 1),
        "line_remainder": results, "ratios": ratios, "infill_mid_word_psm": infill_res,
        "kv_reuse_typing_forward_share": reuse,
        "command": "python bench/bench_healing.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    if dump is not None:
        Path(args.dump).write_text("".join(json.dumps(r) + "\n" for r in dump))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"index build {report['index_build_ms']} ms; KV reuse typing forward: off {reuse['off']}, "
          f"heal {reuse['heal']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
