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


def session_events(files: list[Path], max_requests: int) -> list[tuple[Path, str, int, list[tuple[str, bool]]]]:
    """Per function: (path, document with its body blanked, cursor line, [(typed char, ask after it?)])."""
    import ast

    out = []
    budget = max_requests
    for f in files:
        text = f.read_text(encoding="utf-8")
        tree = ast.parse(text)
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
            steps: list[tuple[str, bool]] = []
            for i, ch in enumerate(body):
                nxt = body[i + 1] if i + 1 < len(body) else "\n"
                # Editors ask after a word boundary and at the end of a line (not inside indentation).
                at_boundary = ch in " .(,=[:" and not body[: i + 1].split("\n")[-1].isspace()
                ask = budget > 0 and ch != "\n" and (at_boundary or nxt == "\n")
                if ask:
                    budget -= 1
                steps.append((ch, ask))
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
            for ch, ask in steps:
                version += 1
                pos = types.Position(line=cur_line, character=cur_char)
                client.text_document_did_change(types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                    content_changes=[types.TextDocumentContentChangePartial(
                        range=types.Range(start=pos, end=pos), text=ch)]))
                if ch == "\n":
                    cur_line, cur_char = cur_line + 1, 0
                else:
                    cur_char += 1 if ord(ch) <= 0xFFFF else 2
                if not ask:
                    continue
                before = (await status())["cache"]
                t = time.perf_counter()
                res = await client.text_document_inline_completion_async(types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri=uri),
                    position=types.Position(line=cur_line, character=cur_char),
                    context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
                ms = (time.perf_counter() - t) * 1000
                after = (await status())["cache"]
                kind = ("typed-ahead" if after["typedAheadHits"] > before["typedAheadHits"]
                        else "cache" if after["hits"] > before["hits"] else "model")
                items = res.items if isinstance(res, types.InlineCompletionList) else []
                records.append({"ms": ms, "kind": kind, "shown": bool(items)})
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
    ahead = [r["ms"] for r in records if r["kind"] == "typed-ahead"]
    allms = [r["ms"] for r in records]
    eng = status["engine"]
    return {
        "requests": len(records),
        "p50_ms": pct(allms, 0.5), "p95_ms": pct(allms, 0.95),
        "cold_p50_ms": pct(cold, 0.5), "cold_p95_ms": pct(cold, 0.95),
        "typed_ahead_p50_ms": pct(ahead, 0.5),
        "typed_ahead_over_cold": (pct(ahead, 0.5) / pct(cold, 0.5)) if cold and ahead else None,
        "cache_hit_rate": sum(r["kind"] != "model" for r in records) / max(1, len(records)),
        "shown_rate": sum(r["shown"] for r in records) / max(1, len(records)),
        "decode_tokens_per_s": eng["generated_tokens"] / eng["decode_s"] if eng["decode_s"] else None,
        "kv_reuse_share": eng["reused_tokens"] / max(1, eng["prompt_tokens"]),
        "parameters": status["model"]["parameters"],
        "mean_ms": statistics.fmean(allms) if allms else None,
    }


def build_models(out: Path) -> dict[str, Path]:
    """The 1M test model and a ~10M model, both random-init from configs with our tokenizer."""
    from distill_code.tiny import SMALL_SHAPE, TINY_SHAPE, build_tiny_model_dir

    return {"tiny-1M": build_tiny_model_dir(out / "tiny", TINY_SHAPE),
            "small-10M": build_tiny_model_dir(out / "small", SMALL_SHAPE, vocab_size=8192)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="model dir (repeatable); default: built ones")
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("--requests", type=int, default=60, help="completion requests per model")
    ap.add_argument("--int8", action="store_true", help="also run each model with int8 quantization")
    ap.add_argument("--threads", type=int, default=0, help="server torch threads (0: torch default)")
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
        variants: list[tuple[str, dict[str, Any]]] = [(label, base)]
        if args.int8:
            variants.append((label + "+int8", {**base, "quantize": "int8"}))
        for name, extra in variants:
            r = asyncio.run(replay(str(path), files, args.requests, extra))
            results[name] = r
            print(f"{name:>18}: {r['parameters']:>11,} params  p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  "
                  f"cold p50 {r['cold_p50_ms']:7.1f} ms  typed-ahead/cold {r['typed_ahead_over_cold'] or float('nan'):.3f}  "
                  f"hit rate {r['cache_hit_rate']:.2f}  decode {r['decode_tokens_per_s'] or 0:.0f} tok/s  "
                  f"KV reuse {r['kv_reuse_share']:.2f}")
    names = list(results)
    if len(names) >= 2:
        base = results[names[0]]
        for n in names[1:]:
            print(f"ratio p50 {n} / {names[0]}: {results[n]['p50_ms'] / base['p50_ms']:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "files": [str(f.relative_to(ROOT)) for f in files],
                               "results": results}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
