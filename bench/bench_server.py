"""Benchmark: replay a realistic editing session through the real server and report completion latency.

The user retypes function bodies of real Python files character by character (incremental
``didChange``), asking for an inline completion at word boundaries and line ends, as editors do.
Each model runs in its own ``protege serve`` subprocess driven by a real LSP client over stdio,
in the same run, so the figures compare side by side.

    python bench/bench_server.py                       # 1M test model vs ~10M model
    python bench/bench_server.py --model DIR --label starter --requests 80

Writes bench/results/server.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


OPENERS = {"(": ")", "[": "]", "{": "}"}


def bracket_pairs(text: str) -> dict[int, int]:
    """Offsets of each bracket token (not inside strings or comments) mapped to its closer's offset."""
    import io
    import tokenize

    starts = [0]
    for ln in text.split("\n"):
        starts.append(starts[-1] + len(ln) + 1)
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.OP and tok.string in "([{)]}":
            off = starts[tok.start[0] - 1] + tok.start[1]
            if tok.string in OPENERS:
                stack.append(off)
            elif stack:
                pairs[stack.pop()] = off
    return pairs


Step = tuple[str, int, bool]  # (text inserted at the cursor, characters the cursor moves over, ask after it?)


def session_events(files: list[Path], max_requests: int) -> list[tuple[Path, str, int, list[Step]]]:
    """Per function: (path, document with its body blanked, cursor line, typing steps).

    The user types each body character by character as an editor with auto-closing brackets
    records it: an opening bracket inserts its pair with the cursor between them, and typing the
    closer steps over it. Inside brackets the cursor is mid-line, so those requests get
    single-line suggestions; at the end of a line they get blocks."""
    import ast

    out = []
    budget = max_requests
    for f in files:
        text = f.read_text(encoding="utf-8")
        tree = ast.parse(text)
        pairs = bracket_pairs(text)
        funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.end_lineno
                 and 4 <= n.end_lineno - n.lineno <= 25]
        lines = text.split("\n")
        for fn in funcs[:3]:
            body_start = fn.body[0].lineno - 1
            if isinstance(fn.body[0], ast.Expr) and len(fn.body) > 1:  # keep the docstring
                body_start = fn.body[1].lineno - 1
            assert fn.end_lineno is not None
            body = "\n".join(lines[body_start:fn.end_lineno])
            head = "\n".join(lines[:body_start]) + "\n"
            tail = "\n" + "\n".join(lines[fn.end_lineno:])
            base = len(head)
            closers: set[int] = set()  # body offsets of closers the editor inserted and the user will step over
            steps: list[Step] = []
            for i, ch in enumerate(body):
                nxt = body[i + 1] if i + 1 < len(body) else "\n"
                # Editors ask after a word boundary and at the end of a line (not inside indentation).
                at_boundary = ch in " .(,=[:" and not body[: i + 1].split("\n")[-1].isspace()
                ask = budget > 0 and ch != "\n" and (at_boundary or nxt == "\n")
                if ask:
                    budget -= 1
                if i in closers:
                    steps.append(("", 1, ask))  # step over the auto-inserted closer
                elif ch in OPENERS and (base + i) in pairs and pairs[base + i] - base < len(body):
                    closers.add(pairs[base + i] - base)
                    steps.append((ch + OPENERS[ch], 1, ask))
                else:
                    steps.append((ch, len(ch), ask))
            out.append((f, head + tail, body_start, steps))
            if budget <= 0:
                return out
    return out


async def replay(model: str, files: list[Path], max_requests: int, extra: dict[str, Any]) -> dict[str, Any]:
    client = LanguageClient("protege-bench", "0.1.0")

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def log_message(params: types.LogMessageParams) -> None:
        pass  # logs also go to the server's stderr
    await client.start_io(sys.executable, "-m", "server.cli", "serve", "--model", model)
    ws = Path(tempfile.mkdtemp(prefix="protege-bench-"))
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), root_uri=ws.as_uri(),
        initialization_options={"debounceMs": 0, "index": {"enabled": False}, **extra}))
    client.initialized(types.InitializedParams())
    records: list[dict[str, Any]] = []

    async def status() -> dict[str, Any]:
        return await client.workspace_execute_command_async(  # type: ignore[no-any-return]
            types.ExecuteCommandParams(command="protege.status", arguments=[]))

    try:
        for n, (f, doc, start_line, steps) in enumerate(session_events(files, max_requests)):
            uri = (ws / f"{n}_{f.name}").as_uri()
            client.text_document_did_open(types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=doc)))
            version = 1
            cur_line, cur_char = start_line, 0
            doc_lines = doc.split("\n")
            for inserted, advance, ask in steps:
                pos = types.Position(line=cur_line, character=cur_char)
                if inserted:
                    version += 1
                    client.text_document_did_change(types.DidChangeTextDocumentParams(
                        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                        content_changes=[types.TextDocumentContentChangePartial(
                            range=types.Range(start=pos, end=pos), text=inserted)]))
                    line_text = doc_lines[cur_line]
                    new_lines = (line_text[:cur_char] + inserted + line_text[cur_char:]).split("\n")
                    doc_lines[cur_line: cur_line + 1] = new_lines
                if inserted == "\n":
                    cur_line, cur_char = cur_line + 1, 0
                else:
                    cur_char += advance  # the benchmark's files are ASCII: UTF-16 units = characters
                mode = "line" if doc_lines[cur_line][cur_char:].strip() else "block"
                if not ask:
                    continue
                before_full = await status()
                before = before_full["cache"]
                t = time.perf_counter()
                res = await client.text_document_inline_completion_async(types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri=uri),
                    position=types.Position(line=cur_line, character=cur_char),
                    context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
                ms = (time.perf_counter() - t) * 1000
                after_full = await status()
                after = after_full["cache"]
                kind = ("typed-ahead" if after["typedAheadHits"] > before["typedAheadHits"]
                        else "cache" if after["hits"] > before["hits"] else "model")
                items = res.items if isinstance(res, types.InlineCompletionList) else []
                eb, ea = before_full["engine"], after_full["engine"]
                records.append({"ms": ms, "kind": kind, "shown": bool(items), "mode": mode,
                                # what the model did for this request (zero for cache hits)
                                "prefill_tokens": (ea["prompt_tokens"] - eb["prompt_tokens"])
                                - (ea["reused_tokens"] - eb["reused_tokens"]),
                                "generated": ea["generated_tokens"] - eb["generated_tokens"],
                                "model_ms": (ea["decode_s"] - eb["decode_s"]) * 1000})
        final = await status()
    finally:
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()
    return summarize(records, final)


def summarize(records: list[dict[str, Any]], status: dict[str, Any]) -> dict[str, Any]:
    def pct(xs: list[float], q: float) -> float:
        if not xs:
            return float("nan")
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

    cold = [r["ms"] for r in records if r["kind"] == "model"]
    line = [r["ms"] for r in records if r["mode"] == "line"]
    block = [r["ms"] for r in records if r["mode"] == "block"]
    ahead = [r["ms"] for r in records if r["kind"] == "typed-ahead"]
    allms = [r["ms"] for r in records]
    eng = status["engine"]
    return {
        "requests": len(records),
        "p50_ms": pct(allms, 0.5), "p95_ms": pct(allms, 0.95),
        "line_requests": len(line), "line_p50_ms": pct(line, 0.5), "line_p95_ms": pct(line, 0.95),
        "block_p50_ms": pct(block, 0.5), "block_p95_ms": pct(block, 0.95),
        "cold_p50_ms": pct(cold, 0.5), "cold_p95_ms": pct(cold, 0.95),
        "typed_ahead_p50_ms": pct(ahead, 0.5),
        "typed_ahead_over_cold": (pct(ahead, 0.5) / pct(cold, 0.5)) if cold and ahead else None,
        "cache_hit_rate": sum(r["kind"] != "model" for r in records) / max(1, len(records)),
        "shown_rate": sum(r["shown"] for r in records) / max(1, len(records)),
        "decode_tokens_per_s": eng["generated_tokens"] / eng["decode_s"] if eng["decode_s"] else None,
        "generated_tokens_per_request": eng["generated_tokens"] / max(1, eng["requests"]),
        "draft_acceptance": (eng.get("accepted_tokens", 0) / eng["drafted_tokens"]) if eng.get("drafted_tokens")
        else None,
        "kv_reuse_share": eng["reused_tokens"] / max(1, eng["prompt_tokens"]),
        "parameters": status["model"]["parameters"],
        "mean_ms": statistics.fmean(allms) if allms else None,
        # Where the single-line tail comes from: the slowest requests, with the prompt tokens the model had to
        # prefill (not reused from the cache) and the tokens it generated.
        "slowest_line_requests": [{k: round(r[k], 1) if isinstance(r[k], float) else r[k]
                                   for k in ("ms", "model_ms", "prefill_tokens", "generated", "kind")}
                                  for r in sorted((r for r in records if r["mode"] == "line"),
                                                  key=lambda r: -r["ms"])[:6]],
    }


def build_models(out: Path) -> dict[str, Path]:
    """The 1M test model and a ~10M model, both random-init from configs with our tokenizer, and the
    shipped starter teacher (6.8M, trained: it ends lines and blocks where code does)."""
    from distill_code.tiny import SMALL_SHAPE, TINY_SHAPE, build_tiny_model_dir

    return {"tiny-1M": build_tiny_model_dir(out / "tiny", TINY_SHAPE),
            "small-10M": build_tiny_model_dir(out / "small", SMALL_SHAPE, vocab_size=8192),
            "starter-teacher-6.8M": ROOT / "distill_code" / "starter" / "teacher"}


def print_row(name: str, r: dict[str, Any]) -> None:
    print(f"{name:>34}: {r['parameters']:>10,} params | all p50 {r['p50_ms']:6.1f} p95 {r['p95_ms']:6.1f} ms"
          f" | single-line ({r['line_requests']}) p50 {r['line_p50_ms']:6.1f} p95 {r['line_p95_ms']:6.1f} ms"
          f" | block p50 {r['block_p50_ms']:6.1f} ms | typed-ahead/cold {r['typed_ahead_over_cold'] or float('nan'):.3f}"
          f" | hit rate {r['cache_hit_rate']:.2f} | {r['generated_tokens_per_request']:.1f} tok/req,"
          f" {r['decode_tokens_per_s'] or 0:.0f} tok/s | drafts accepted {r['draft_acceptance'] or 0:.2f}"
          f" | KV reuse {r['kv_reuse_share']:.2f}", flush=True)


# The engine before the lean decoder, prompt-lookup drafts and the SPM layout, for side-by-side ratios.
BASELINE = {"decoder": "transformers", "draftTokens": 0, "fimLayout": "psm"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="model dir (repeatable); default: built ones")
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("--requests", type=int, default=60, help="completion requests per model")
    ap.add_argument("--int8", action="store_true", help="also run each model with int8 quantization")
    ap.add_argument("--baseline", action="store_true",
                    help="also run each variant with the generic engine (transformers forward, no drafts, PSM)")
    ap.add_argument("--threads", type=int, default=0, help="server torch threads (0: torch default)")
    ap.add_argument("--set", action="append", default=[], metavar="OPTION=JSON",
                    help="an initialization option for every variant, e.g. --set contextTokens=768")
    ap.add_argument("--no-fp32", action="store_true", help="with --int8, run only the int8 variant")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "server.json"))
    args = ap.parse_args()
    files = [ROOT / "server" / "postprocess.py", ROOT / "server" / "scheduler.py", ROOT / "server" / "config.py"]
    if args.model:
        models = {(args.label[i] if i < len(args.label) else Path(m).name): Path(m) for i, m in enumerate(args.model)}
    else:
        models = build_models(Path(tempfile.mkdtemp(prefix="protege-bench-models-")))
    results: dict[str, Any] = {}
    for label, path in models.items():
        base: dict[str, Any] = {"threads": args.threads} if args.threads else {}
        for item in args.set:
            key, _, value = item.partition("=")
            base[key] = json.loads(value)
        variants: list[tuple[str, dict[str, Any]]] = [] if args.int8 and args.no_fp32 else [(label, base)]
        if args.int8:
            variants.append((label + "+int8", {**base, "quantize": "int8"}))
        for name, extra in variants:
            results[name] = r = asyncio.run(replay(str(path), files, args.requests, extra))
            print_row(name, r)
            if args.baseline:
                b = asyncio.run(replay(str(path), files, args.requests, {**extra, **BASELINE}))
                results[name + " (baseline)"] = b
                print_row(name + " (baseline)", b)
                print(f"{'':>34}  ratio to baseline: p50 {r['p50_ms'] / b['p50_ms']:.2f}, "
                      f"single-line p50 {r['line_p50_ms'] / b['line_p50_ms']:.2f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "files": [str(f.relative_to(ROOT)) for f in files],
                               "results": results}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
