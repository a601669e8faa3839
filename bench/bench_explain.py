"""Benchmark: explanations on real code (click's documented functions, installed beside us).

For each documented function: the latency of the grounded facts alone (tree-sitter outline, in-file
callers/callees, Bandit screen; no index), the latency of the generated summary, and how close the
summary comes to the function's real docstring (which the prompt leaves out) next to a trivial
baseline (the function's name split into words). Figures are printed and written as JSON.

    python bench/bench_explain.py [--model DIR] [--n 40] [--max-tokens 32] [--threads N]
        [--out bench/results/explain.json]

Without --model a tiny random-init model is built in a temporary directory (latency only: its text
means nothing). Speed is reported here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_code.metrics import edit_similarity  # noqa: E402
from server.explain import ExplainContext, ExplainRequest, explain  # noqa: E402
from server.explain_code import first_sentence, outline  # noqa: E402


def documented_functions(n: int) -> list[tuple[Path, str, int, str]]:
    """(file, text, name line, docstring first sentence) for up to ``n`` documented functions of click."""
    import click

    out = []
    for path in sorted(Path(click.__file__).parent.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for d in outline(text, "python").definitions:
            if d.kind in ("function", "method") and d.docstring and d.end_line - d.start_line >= 4:
                out.append((path, text, d.name_line, first_sentence(d.docstring)))
    step = max(1, len(out) // n)
    return out[::step][:n]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: a tiny random-init model)")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); on a shared, "
                                                           "busy machine 1 avoids thread-spin stalls")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "explain.json"))
    args = ap.parse_args()

    from server.engine import Engine, EngineOptions

    tmp = None
    model = args.model
    if model is None:
        from distill_code.tiny import build_tiny_model_dir

        tmp = tempfile.TemporaryDirectory()
        model = str(build_tiny_model_dir(Path(tmp.name)))
    engine = Engine(EngineOptions(model=model, threads=args.threads))
    engine.load()
    if not engine.ready:
        print(f"bench_explain: {engine.error}", file=sys.stderr)
        return 1
    cases = documented_functions(args.n)
    facts_ms, summary_ms, tokens, sim_model, sim_base, n_facts = [], [], [], [], [], []
    for path, text, line, doc in cases:
        req = ExplainRequest(uri=path.as_uri(), path=path.name, text=text, language_id="python", start_line=line,
                             start_char=0, end_line=line, end_char=0, max_new_tokens=args.max_tokens, summary=False)
        t0 = time.perf_counter()
        facts_only = explain(req, ExplainContext())
        facts_ms.append((time.perf_counter() - t0) * 1000)
        n_facts.append(len(facts_only.facts))
        req.summary = True
        t0 = time.perf_counter()
        full = explain(req, ExplainContext(engine=engine))
        summary_ms.append((time.perf_counter() - t0) * 1000 - facts_ms[-1])
        text_out = full.summary.text if full.summary else ""
        tokens.append(full.summary.tokens if full.summary else 0)
        sim_model.append(edit_similarity(text_out, doc))
        name = full.symbol or ""
        sim_base.append(edit_similarity(" ".join(name.strip("_").split("_")).capitalize() + ".", doc))
    result: dict[str, Any] = {
        "model": model if args.model else "tiny random-init (latency only)",
        "functions": len(cases),
        "max_new_tokens": args.max_tokens,
        "threads": args.threads or "torch default",
        "load_average_1min": round(os.getloadavg()[0], 1),
        "facts_per_explanation": round(statistics.mean(n_facts), 1),
        "facts_ms": {"p50": round(pct(facts_ms, 0.5), 1), "p90": round(pct(facts_ms, 0.9), 1)},
        "summary_ms": {"p50": round(pct(summary_ms, 0.5), 1), "p90": round(pct(summary_ms, 0.9), 1)},
        "summary_tokens_mean": round(statistics.mean(tokens), 1),
        "docstring_edit_similarity": {"model": round(statistics.mean(sim_model), 3),
                                      "name_baseline": round(statistics.mean(sim_base), 3)},
    }
    result["ratios"] = {
        "summary_over_facts_p50": round(result["summary_ms"]["p50"] / max(result["facts_ms"]["p50"], 1e-9), 2),
        "model_over_baseline_similarity": round(result["docstring_edit_similarity"]["model"]
                                                / max(result["docstring_edit_similarity"]["name_baseline"], 1e-9),
                                                2),
    }
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
