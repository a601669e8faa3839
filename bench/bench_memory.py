"""Benchmark: repository memory (∞-gram) on held-out files of real repositories, served through the LSP server.

For each repository (an installed pure-Python package this project was not trained on): a fifth of its
files are held out, the rest are the workspace (indexed as ``protege index`` does, memory built by the
server); each sampled held-out line is cut at a random point and the served first line is compared
with the rest of that line. Three conditions, side by side in one run:

* ``student``: the server with ``memory.enabled = false`` (what users had before),
* ``memory``: the ∞-gram alone (greedy from the memory's distribution until no match or end of line),
* ``mixture_greedy``: the memory mixed in, line search off (``search.candidates = 1``),
* ``mixture``: the server with its defaults (the memory mixed into every decoding step, line search on).

Also: memory build time and size per 1M tokens, query cost, and a save's update time. ``--fit`` fits
the mixture weights on *other* repositories (never the evaluated ones) and writes them beside the model,
then the mixture's ``stop_below`` (decoding stops before a token less likely than that): the threshold
that maximises exact match of in-process served completions on those repositories; ``--fit-stop`` fits
only the threshold, keeping the model's tables.

    python bench/bench_memory.py                                   # click + pyparsing, 200 lines each
    python bench/bench_memory.py --fit --fit-repos httpx typer tenacity
    python bench/bench_memory.py --fit-stop
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# -- repositories and cases ---------------------------------------------------------------------------
def split_repo(package: str, work: Path, seed: int) -> tuple[Path, list[tuple[str, str]], dict[str, Any]]:
    """Copy an installed package into ``work``; hold out a fifth of its .py files (returned, not on disk)."""
    from bench.bench_distill import package_repo

    repo = work / package
    if repo.exists():
        shutil.rmtree(repo)
    info = package_repo(package, repo)
    files = sorted(p for p in repo.rglob("*.py") if p.stat().st_size > 200)
    rng = random.Random(seed)
    held = sorted(rng.sample(files, max(1, len(files) // 5)))
    out = []
    for p in held:
        out.append((p.relative_to(repo).as_posix(), p.read_text(encoding="utf-8")))
        p.unlink()
    info["heldout_files"] = [r for r, _ in out]
    return repo, out, info


def cut_cases(heldout: list[tuple[str, str]], n: int, seed: int) -> list[dict[str, Any]]:
    """Lines of held-out files cut at a random point after their indentation; target: the rest of the line."""
    rng = random.Random(seed)
    pool = []
    for rel, text in heldout:
        lines = text.split("\n")
        for i, ln in enumerate(lines):
            s = ln.strip()
            if len(s) < 6 or s.startswith("#") or s.startswith(('"""', "'''")):
                continue
            pool.append((rel, i))
    rng.shuffle(pool)
    texts = dict(heldout)
    cases = []
    for rel, i in pool[:n]:
        ln = texts[rel].split("\n")[i]
        indent = len(ln) - len(ln.lstrip())
        col = rng.randint(indent, len(ln.rstrip()) - 1)
        cases.append({"path": rel, "line": i, "col": col, "target": ln[col:].rstrip()})
    return cases


def first_line(text: str) -> str:
    return text.split("\n", 1)[0].rstrip()


def score(preds: list[str], cases: list[dict[str, Any]]) -> dict[str, float]:
    from distill_code.metrics import edit_similarity

    em = [float(first_line(p) == c["target"]) for p, c in zip(preds, cases, strict=True)]
    es = [edit_similarity(first_line(p), c["target"]) for p, c in zip(preds, cases, strict=True)]
    return {"exact_match": round(statistics.fmean(em), 4), "edit_similarity": round(statistics.fmean(es), 4),
            "n": len(cases)}


# -- the memory alone and its costs -------------------------------------------------------------------
def memory_alone(engine: Any, repo: Path, heldout: list[tuple[str, str]], cases: list[dict[str, Any]],
                 max_tokens: int = 24) -> tuple[list[str], dict[str, Any]]:
    """Greedy decoding from the ∞-gram alone (workspace + open buffer), as served prompts see it."""
    from indexing.memory import RepoMemory
    from server.pipeline import MEMORY_TAIL_CHARS, tokenizer_id

    tok = engine.tokenizer

    def encode(texts: list[str]) -> list[list[int]]:
        return [list(x) for x in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []

    mem = RepoMemory(encode, tokenizer_id(tok))
    t0 = time.perf_counter()
    stats = mem.build(repo)
    build_s = time.perf_counter() - t0
    texts = dict(heldout)
    preds, query_ms = [], []
    for c in cases:
        doc = texts[c["path"]]
        lines = doc.split("\n")
        prefix = "\n".join(lines[: c["line"]] + [lines[c["line"]][: c["col"]]])
        tail = prefix[-MEMORY_TAIL_CHARS:]
        if len(prefix) > MEMORY_TAIL_CHARS and "\n" in tail:
            tail = tail[tail.index("\n"):]
        buffer = mem.buffer_shard(doc, c["line"])
        ids = list(tok(tail, add_special_tokens=False)["input_ids"])
        # Token healing, as the server does: back off the last (maybe partial) token and accept only
        # continuations that re-spell it.
        removed = tok.decode(ids[-1:]) if ids else ""
        ctx = ids[:-1]
        out: list[int] = []
        for _ in range(max_tokens):
            t = time.perf_counter()
            m = mem.query(ctx + out, buffer)
            query_ms.append((time.perf_counter() - t) * 1000)
            done = tok.decode(out)
            best = None
            for cand, _n in sorted(m.next_counts.items(), key=lambda kv: -kv[1]):
                piece = done + tok.decode([cand])
                if piece.startswith(removed) or removed.startswith(piece):
                    best = cand
                    break
            if best is None:
                break
            out.append(best)
            if "\n" in tok.decode(out)[len(removed):]:
                break
        text = tok.decode(out)
        text = text[len(removed):] if text.startswith(removed) else ""
        preds.append(text.split("\n", 1)[0])
    per_m = 1e6 / max(1, stats.tokens)
    return preds, {"files": stats.files, "tokens": stats.tokens, "build_s": round(build_s, 3),
                   "build_s_per_1m_tokens": round(build_s * per_m, 3), "mb": round(stats.bytes / 1e6, 2),
                   "mb_per_1m_tokens": round(stats.bytes / 1e6 * per_m, 2),
                   "query_ms_p50": round(statistics.median(query_ms), 4) if query_ms else None,
                   "query_ms_p95": round(sorted(query_ms)[int(0.95 * (len(query_ms) - 1))], 4) if query_ms else None,
                   "queries": len(query_ms)}


def save_update_ms(engine: Any, repo: Path, n: int = 5) -> dict[str, Any]:
    """How long a save takes to reach the memory: re-read one file, rebuild, swap (the server's path)."""
    from indexing.memory import RepoMemory
    from server.pipeline import tokenizer_id

    tok = engine.tokenizer
    mem = RepoMemory(lambda ts: [list(x) for x in tok(ts, add_special_tokens=False)["input_ids"]] if ts else [],
                     tokenizer_id(tok))
    mem.build(repo)
    files = sorted(repo.rglob("*.py"))[:n]
    times = []
    for p in files:
        original = p.read_text(encoding="utf-8")
        p.write_text(original + "\n\ndef memory_bench_marker():\n    return 'fresh'\n", encoding="utf-8")
        t = time.perf_counter()
        mem.update(repo, [p.relative_to(repo).as_posix()])
        times.append((time.perf_counter() - t) * 1000)
        found = mem.query(list(tok("def memory_bench_marker():\n    return", add_special_tokens=False)["input_ids"]))
        p.write_text(original, encoding="utf-8")
        mem.update(repo, [p.relative_to(repo).as_posix()])
        if found.length < 4:
            raise SystemExit(f"the memory did not pick up the save of {p}")
    return {"update_ms_median": round(statistics.median(times), 1), "update_ms_max": round(max(times), 1),
            "saves": len(times)}


# -- through the real server --------------------------------------------------------------------------
async def served(repo: Path, heldout: list[tuple[str, str]], cases: list[dict[str, Any]], memory: bool,
                 cache_dir: Path, model: str | None, context_chars: int | None = None,
                 candidates: int | None = None) -> tuple[list[str], list[float], dict[str, Any]]:
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("protege-bench-memory", "0.1.0")
    cmd = [sys.executable, "-m", "server.cli", "serve"] + (["--model", model] if model else [])
    await client.start_io(*cmd)
    index: dict[str, Any] = {"cacheDir": str(cache_dir)}
    if context_chars is not None:
        index["maxContextChars"] = context_chars
    opts: dict[str, Any] = {"debounceMs": 0, "memory": {"enabled": memory}, "index": index}
    if candidates is not None:
        opts["search"] = {"candidates": candidates}
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), root_uri=repo.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=repo.as_uri(), name=repo.name)],
        initialization_options=opts))
    client.initialized(types.InitializedParams())
    status: Any = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # model loaded, index open, memory built (when on)
        status = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="protege.status", arguments=[]))
        ready = status["model"]["state"] == "ready" and status["index"].get("files") is not None
        if ready and (not memory or status["memory"].get("workspace")):
            break
        await asyncio.sleep(0.5)
    texts = dict(heldout)
    preds, lat = [], []
    opened: set[str] = set()
    try:
        for c in cases:
            uri = (repo / c["path"]).as_uri()
            if uri not in opened:
                client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=texts[c["path"]])))
                opened.add(uri)
            # The document as the user has it: the cut line ends at the cursor (the rest is what we predict).
            lines = texts[c["path"]].split("\n")
            doc = "\n".join(lines[: c["line"]] + [lines[c["line"]][: c["col"]]] + lines[c["line"] + 1:])
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=len(lat) + 2),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=doc)]))
            t = time.perf_counter()
            res = await client.text_document_inline_completion_async(types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=c["line"], character=c["col"]),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
            lat.append((time.perf_counter() - t) * 1000)
            items = res.items if isinstance(res, types.InlineCompletionList) else []
            preds.append(items[0].insert_text if items and isinstance(items[0].insert_text, str) else "")
        status = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="protege.status", arguments=[]))
    finally:
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()
    return preds, lat, status


def portable(info: dict[str, Any]) -> dict[str, Any]:
    """The server's memory status without this machine's paths (the work dir is temporary; the weights file
    is named relative to the project)."""
    out = {k: v for k, v in info.items() if k != "workspace"}
    w = out.get("weights")
    if isinstance(w, str) and Path(w).is_absolute() and Path(w).is_relative_to(ROOT):
        out["weights"] = str(Path(w).relative_to(ROOT))
    return out


def latency(lat: list[float]) -> dict[str, float]:
    s = sorted(lat[1:] or lat)  # the first request pays for warm-up
    return {"p50_ms": round(s[len(s) // 2], 1), "p95_ms": round(s[int(0.95 * (len(s) - 1))], 1)}


def index_repo(repo: Path, cache_dir: Path) -> dict[str, Any]:
    from indexing.api import RepoIndex
    from indexing.config import IndexConfig

    with RepoIndex.open(repo, IndexConfig(cache_dir=str(cache_dir))) as idx:
        st = idx.update()
    return {"files": st.files_indexed, "seconds": round(st.seconds, 1)}


# -- fitting the mixture ------------------------------------------------------------------------------
def observations(engine: Any, repo: Path, heldout: list[tuple[str, str]], n_lines: int, seed: int) -> list[Any]:
    """Teacher-forced served prompts: per gold token of a held-out line remainder, the model's and the
    memory's probability of it and the match it got."""
    import torch

    from distill_code.memory_mix import Observation
    from server.config import ProtegeConfig
    from server.pipeline import MEMORY_TAIL_CHARS, CompletionService

    service = CompletionService(ProtegeConfig(), engine)
    mem = service.ensure_memory()
    mem.build(repo)
    tok = engine.tokenizer
    rng = random.Random(seed)
    out: list[Observation] = []
    texts = dict(heldout)
    for c in cut_cases(heldout, n_lines, seed):
        doc = texts[c["path"]]
        lines = doc.split("\n")
        line = lines[c["line"]]
        # Cut at a token boundary of the line so that prompt and gold tokens are the file's own tokens.
        enc = tok(line, add_special_tokens=False, return_offsets_mapping=True)
        starts = [a for a, _ in enc["offset_mapping"] if a > len(line) - len(line.lstrip())]
        if not starts:
            continue
        col = rng.choice(starts)
        prefix = "\n".join(lines[: c["line"]] + [line[:col]])
        suffix = "\n".join([""] + lines[c["line"] + 1:])
        prompt = service.builder.build(prefix, suffix, [])
        gold = list(tok(line[col:] + "\n", add_special_tokens=False)["input_ids"])[:16]
        tail = prompt.prefix[-MEMORY_TAIL_CHARS:]
        if len(prompt.prefix) > MEMORY_TAIL_CHARS and "\n" in tail:
            tail = tail[tail.index("\n"):]
        ctx = list(tok(tail, add_special_tokens=False)["input_ids"])
        buffer = mem.buffer_shard(doc, c["line"])
        with torch.inference_mode():
            engine._runner.reset()
            rows = engine._runner(prompt.ids + gold[:-1], all_logits=True)[len(prompt.ids) - 1:]
            probs = torch.softmax(rows.float(), -1)
        engine._kv_ids = []
        for i, g in enumerate(gold):
            m = mem.query(ctx + gold[:i], buffer)
            if m.length == 0:
                continue
            dist = m.distribution()
            out.append(Observation(m.length, m.sparse, float(probs[i, g]) if g < probs.shape[1] else 0.0,
                                   dist.get(g, 0.0), float(probs[i].max())))
    engine._runner.reset()
    return out


def stop_cases(engine: Any, repo: Path, heldout: list[tuple[str, str]], n_lines: int, seed: int,
               weights: Any) -> list[tuple[str, list[float], list[int], int, str]]:
    """In-process served completions (memory on, never stopping early) of held-out line remainders, with
    each generated token's probability: what ``fit_stop`` needs to choose ``stop_below``."""
    from dataclasses import replace

    from server.config import ProtegeConfig
    from server.pipeline import CompletionService

    service = CompletionService(ProtegeConfig(), engine)
    mem = service.ensure_memory()
    mem.build(repo)
    service._mix = replace(weights, stop_below=0.0)
    texts = dict(heldout)
    out = []
    for c in cut_cases(heldout, n_lines, seed):
        lines = texts[c["path"]].split("\n")
        doc = "\n".join(lines[: c["line"]] + [lines[c["line"]][: c["col"]]] + lines[c["line"] + 1:])
        outcome = service.complete((repo / c["path"]).as_uri(), doc, c["line"], c["col"], path=c["path"])
        gen = outcome.generation
        if gen is None:  # a cache hit or an empty prompt: nothing to cut
            out.append((outcome.text, [], [], 0, c["target"]))
            continue
        # The suggestion is the generated text after post-processing, which only shortens its end.
        ends = [min(e, len(outcome.text)) for e in gen.token_ends]
        out.append((outcome.text, gen.token_probs, ends, gen.first_free, c["target"]))
    return out


def exact_match(preds: list[str], targets: list[str]) -> float:
    return statistics.fmean(float(first_line(p) == t) for p, t in zip(preds, targets, strict=True))


# -- main ---------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from server.engine import Engine, EngineOptions, default_model_path

    torch.set_num_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or str(default_model_path())
    engine = Engine(EngineOptions(model=model))
    engine.load()
    if not engine.ready:
        raise SystemExit(engine.error)
    report: dict[str, Any] = {"model": str(Path(model).relative_to(ROOT)) if Path(model).is_relative_to(ROOT)
                              else model, "seed": args.seed, "lines_per_repo": args.lines,
                              "context_chars": args.context_chars, "repos": {}}
    if args.fit:
        from distill_code.memory_mix import fit_weights

        obs: list[Any] = []
        for pkg in args.fit_repos:
            repo, heldout, _ = split_repo(pkg, work / "fit", args.seed)
            obs.extend(observations(engine, repo, heldout, args.fit_lines, args.seed))
        weights = fit_weights(obs, fitted_on={"repos": args.fit_repos, "lines_per_repo": args.fit_lines})
    if args.fit or args.fit_stop:
        from dataclasses import replace

        from distill_code.memory_mix import fit_stop, load_weights

        if not args.fit:
            weights, _ = load_weights(Path(model))
        rows: list[Any] = []
        for pkg in args.fit_repos:
            repo, heldout, _ = split_repo(pkg, work / "fit", args.seed)
            rows.extend(stop_cases(engine, repo, heldout, args.fit_lines, args.seed, weights))
        stop, by_threshold = fit_stop(rows, exact_match)
        weights = replace(weights, stop_below=stop, fitted_on={**weights.fitted_on, "stop_below_exact_match": {
            str(t): round(v, 4) for t, v in by_threshold.items()}})
        print(f"stop_below fitted on {args.fit_repos} ({len(rows)} lines): {stop} "
              f"(exact match {by_threshold[0.0]:.3f} without, {by_threshold[stop]:.3f} with)")
        path = weights.save(Path(model))
        report["fit"] = {"path": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
                         **weights.to_dict()}
        print(f"{'fitted mixture weights' if args.fit else 'kept the mixture tables'} on {args.fit_repos} -> {path}")
        for name, table in weights.to_dict().items():
            if isinstance(table, list) and name != "length_edges":
                print(f"  {name:17s}", table)
    for pkg in args.repos:
        repo, heldout, info = split_repo(pkg, work / "eval", args.seed)
        cases = cut_cases(heldout, args.lines, args.seed)
        cache = work / "cache" / pkg
        shutil.rmtree(cache, ignore_errors=True)
        info["index"] = index_repo(repo, cache)
        mem_preds, mem_info = memory_alone(engine, repo, heldout, cases)
        upd = save_update_ms(engine, repo)
        row: dict[str, Any] = {"repo": info, "memory_build": mem_info, "save_update": upd,
                               "memory": score(mem_preds, cases)}
        for name, on, cands in (("student", False, None), ("mixture_greedy", True, 1), ("mixture", True, None)):
            preds, lat, status = asyncio.run(served(repo, heldout, cases, on, cache, args.model,
                                                          args.context_chars, cands))
            row[name] = {**score(preds, cases), **latency(lat), "stages_ms_p50": status.get("latency")}
            if on:
                row[name]["server_memory"] = portable(status.get("memory") or {})
                row["examples"] = [{**c, "mixture": first_line(p), "memory": first_line(m)}
                                   for c, p, m in list(zip(cases, preds, mem_preds, strict=True))[:12]]
        report["repos"][pkg] = row
        print(f"\n{pkg} {info['version']} ({info['files']} files, {len(heldout)} held out, {len(cases)} lines)")
        for name in ("student", "memory", "mixture_greedy", "mixture"):
            r = row[name]
            lat_s = f"  p50 {r['p50_ms']:.0f} / p95 {r['p95_ms']:.0f} ms" if "p50_ms" in r else ""
            print(f"  {name:8s} EM {r['exact_match']:.3f}  ES {r['edit_similarity']:.3f}{lat_s}")
            if r.get("stages_ms_p50"):
                print("           stage p50 ms: " + ", ".join(f"{k} {v}" for k, v in r["stages_ms_p50"].items()
                                                         if k != "requests"))
        print(f"  memory: {mem_info['tokens']:,} tokens, build {mem_info['build_s_per_1m_tokens']:.2f} s/1M tokens, "
              f"{mem_info['mb_per_1m_tokens']:.1f} MB/1M, query p50 {mem_info['query_ms_p50']} ms; "
              f"save -> memory {upd['update_ms_median']} ms median")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repos", nargs="+", default=["click", "pyparsing"], help="installed packages to evaluate on")
    p.add_argument("--lines", type=int, default=200, help="held-out lines per repository")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="model directory (default: the shipped starter student)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fit", action="store_true", help="fit the mixture weights first and save them beside the model")
    p.add_argument("--fit-stop", action="store_true", help="fit only stop_below (keep the model's mixture tables)")
    p.add_argument("--fit-repos", nargs="+", default=["httpx", "typer", "tenacity"])
    p.add_argument("--fit-lines", type=int, default=300)
    p.add_argument("--context-chars", type=int, default=None,
                   help="the server's index.maxContextChars (retrieved context per completion; 0: none)")
    p.add_argument("--work", default=None, help="keep the work directory here")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "memory.json"))
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
