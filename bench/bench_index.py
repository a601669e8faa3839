"""Benchmark the repository index on the running CPython's standard library (~1,800 .py files, ~31 MB).

Figures: chunking alone (files/s, chunks; beside LlamaIndex's CodeSplitter when /tmp/peer-venv has it),
full index with embeddings (files/s, chunks/s), no-change re-index (files/s), one-file update latency,
search and completion-context latency p50/p95, repo map time, and retrieval quality:

  held-out call sites — for a seeded sample of calls ``name(`` whose callee has exactly one definition,
  in another file, (a) completion context with the cursor just after ``name(``: is the callee's
  definition among the first 5 snippets? (b) search with the 3 lines before the call (callee name not
  shown): is the callee's defining chunk in the top 5? (a) is what completions get; (b) is a hard,
  mostly-semantic task that shows what vectors + BM25 recover without the name.

  code search — for a seeded sample of functions with a docstring, the docstring is removed from the
  indexed copy and its first paragraph becomes the query (CodeSearchNet-style): is the function's chunk
  in the top 5 of hybrid search, of vectors alone, of BM25 alone? (MRR too.) This is the task the
  embedding settings are chosen on.

``--pipeline-baseline`` indexes the same files first through the previous pipeline (eager encoder, one
embedding worker) and records the ratio. ``--baseline`` indexes the same files a second time with the previous embedding settings (fp32, 128
tokens, the path in the embedded text) and reports both full-index speeds and code-search qualities
side by side.

Usage: python bench/bench_index.py [--root DIR] [--limit N] [--out bench/results/index.json]
The stdlib is copied to a temporary directory first (the one-file update edits files).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexing import IndexConfig, RepoIndex  # noqa: E402
from indexing.chunker import ChunkLimits, chunk_file  # noqa: E402
from indexing.languages import language_for  # noqa: E402
from indexing.walk import read_text_checked, walk_workspace  # noqa: E402

SKIP = ["site-packages/", "__pycache__/"]
PEER_SCRIPT = r"""
import json, sys, time
from llama_index.core.node_parser import CodeSplitter
files = json.load(open(sys.argv[1]))
splitter = CodeSplitter(language="python")
t = time.perf_counter(); chunks = 0; failed = 0
for path in files:
    try:
        text = open(path, encoding="utf-8").read()
    except UnicodeDecodeError:
        failed += 1  # not UTF-8: the same files our walker skips
        continue
    try:
        chunks += len(splitter.split_text(text))
    except Exception:
        failed += 1  # CodeSplitter raises on files tree-sitter reports errors for
dt = time.perf_counter() - t
print(json.dumps({"files": len(files), "chunks": chunks, "failed": failed, "seconds": dt}))
"""


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def copy_tree(src: Path, dest: Path, rels: list[str]) -> None:
    for rel in rels:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dest / rel)


def sample(rels: list[str], limit: int | None) -> list[str]:
    """An evenly spaced sample (every k-th file), so a small run still spans the whole stdlib."""
    if not limit or limit >= len(rels):
        return rels
    step = len(rels) / limit
    return [rels[int(i * step)] for i in range(limit)]


def bench_chunking(ws: Path, rels: list[str], cfg: IndexConfig) -> dict:
    limits = ChunkLimits(cfg.chunk_max_chars, cfg.chunk_merge_below_chars, cfg.window_lines, cfg.window_overlap)
    texts = []
    for rel in rels:
        p = ws / rel
        text, _ = read_text_checked(p, p.stat().st_size, cfg.max_file_bytes, cfg.max_line_chars)
        if text is not None:
            texts.append((rel, text))
    t = time.perf_counter()
    chunks = 0
    for rel, text in texts:
        chunks += len(chunk_file(text, language_for(rel), rel, limits).chunks)
    dt = time.perf_counter() - t
    return {"files": len(texts), "chunks": chunks, "seconds": round(dt, 2), "files_per_s": round(len(texts) / dt, 1)}


def bench_peer(ws: Path, rels: list[str]) -> dict | None:
    py = Path("/tmp/peer-venv/bin/python")
    if not py.exists():
        return None
    listing = ws.parent / "files.json"
    listing.write_text(json.dumps([str(ws / r) for r in rels]))
    done = subprocess.run([str(py), "-c", PEER_SCRIPT, str(listing)], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["files_per_s"] = round(out["files"] / out["seconds"], 1)
    return out


def strip_docstrings(ws: Path, rels: list[str], n: int, seed: int = 0) -> list[tuple[str, int, str]]:
    """Remove the docstrings of up to ``n`` sampled functions from the copy; (path, def line 0-based, query)."""
    candidates: list[tuple[str, int, int, int, str]] = []  # rel, def line, doc start, doc end (1-based), query
    for rel in rels:
        try:
            tree = ast.parse((ws / rel).read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or len(node.body) < 2:
                continue
            doc = ast.get_docstring(node)
            first = node.body[0]
            if not doc or len(doc) < 20 or first.end_lineno is None or first.lineno <= node.lineno:
                continue
            query = " ".join(doc.strip().split("\n\n")[0].split())[:200]
            candidates.append((rel, node.lineno, first.lineno, first.end_lineno, query))
    random.Random(seed).shuffle(candidates)
    chosen = candidates[:n]
    by_file: dict[str, list[tuple[int, int, int, str]]] = {}
    for rel, line, start, end, query in chosen:
        by_file.setdefault(rel, []).append((line, start, end, query))
    out = []
    for rel, items in by_file.items():
        lines = (ws / rel).read_text(encoding="utf-8").split("\n")
        for _, start, end, _ in sorted(items, key=lambda x: -x[1]):
            del lines[start - 1:end]  # the docstring statement (the body keeps at least one more)
        (ws / rel).write_text("\n".join(lines), encoding="utf-8")
        for line, _, _, query in items:
            removed_above = sum(e - s + 1 for _, s, e, _ in items if e < line)
            out.append((rel, line - 1 - removed_above, query))
    return out


def code_search(index: RepoIndex, tasks: list[tuple[str, int, str]]) -> dict:
    """Docstring -> function retrieval: recall@5 and MRR@10 for hybrid search, vectors alone and BM25 alone."""
    from indexing.lexical import query_terms

    def rank(hits: list[tuple[str, int, int]], path: str, line: int) -> int | None:
        for i, (p, start, end) in enumerate(hits):
            if p == path and start <= line <= end:
                return i
        return None

    ranks: dict[str, list[int | None]] = {"hybrid": [], "vectors": [], "bm25": []}
    retriever = index._retriever
    for path, line, query in tasks:
        hybrid = [(h.path, h.start_line, h.end_line) for h in index.search(query, k=10)]
        vec_ids = retriever.vector_ids(query, 10)
        lex_ids = [cid for cid, _ in index.catalog.lexical(query_terms(query), 10)]
        for key, got in (("hybrid", hybrid), ("vectors", vec_ids), ("bm25", lex_ids)):
            if key != "hybrid":
                rows = index.catalog.chunks_by_ids(got)  # type: ignore[arg-type]
                got = [(rows[c].path, rows[c].start_line, rows[c].end_line) for c in got if c in rows]
            ranks[key].append(rank(got, path, line))  # type: ignore[arg-type]
    n = max(1, len(tasks))
    out: dict = {"queries": len(tasks)}
    for key, rs in ranks.items():
        out[f"{key}_recall_at_5"] = round(sum(r is not None and r < 5 for r in rs) / n, 3)
        out[f"{key}_mrr_at_10"] = round(sum(1 / (r + 1) for r in rs if r is not None) / n, 3)
    return out


def call_sites(index: RepoIndex, n: int, seed: int = 0) -> list[tuple[str, int, str, str, int]]:
    """(path, line, name, def_path, def_line) for calls whose callee is defined once, elsewhere."""
    defs: dict[str, list[tuple[str, int]]] = {}
    calls: list[tuple[str, int, str]] = []
    for path, symbol, role, kind, line, _ in index.catalog.all_tags():
        if role == "def":
            defs.setdefault(symbol, []).append((path, line))
        elif kind == "call":
            calls.append((path, line, symbol))
    usable = [(p, ln, s, *defs[s][0]) for p, ln, s in calls
              if len(defs.get(s, [])) == 1 and defs[s][0][0] != p and len(s) > 3]
    random.Random(seed).shuffle(usable)
    return usable[:n]


def quality(index: RepoIndex, ws: Path, sites: list[tuple[str, int, str, str, int]]) -> dict:
    ctx_hits = search_hits = 0
    ctx_ms: list[float] = []
    search_ms: list[float] = []
    for path, line, name, def_path, def_line in sites:
        lines = (ws / path).read_text(encoding="utf-8").split("\n")
        col = lines[line].find(name + "(")
        if col < 0:
            col = lines[line].find(name)
        cursor = col + len(name) + 1
        prefix_lines = lines[:line] + [lines[line][:cursor]]
        text = "\n".join(prefix_lines + lines[line + 1:])
        t = time.perf_counter()
        snippets = index.completion_context(path, text, line, cursor)
        ctx_ms.append((time.perf_counter() - t) * 1000)
        target = index.catalog.chunk_at(def_path, def_line)
        ctx_hits += target is not None and any(
            s.path == def_path and target.start_line <= s.start_line <= target.end_line for s in snippets[:5])
        query = "\n".join(lines[max(0, line - 3):line])
        t = time.perf_counter()
        hits = index.search(query or lines[line].replace(name, ""), k=5)
        search_ms.append((time.perf_counter() - t) * 1000)
        search_hits += any(h.path == def_path and h.start_line <= def_line <= h.end_line for h in hits)
    n = max(1, len(sites))
    return {"sites": len(sites), "context_recall_at_5": round(ctx_hits / n, 3),
            "query_embedding_ms_moving_average": round(index._retriever.encode_ms or 0.0, 1),
            "search_recall_at_5_name_hidden": round(search_hits / n, 3),
            "completion_context_ms_p50": round(pct(ctx_ms, 0.5), 2), "completion_context_ms_p95": round(pct(ctx_ms, 0.95), 2),
            "search_ms_p50": round(pct(search_ms, 0.5), 2), "search_ms_p95": round(pct(search_ms, 0.95), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=sysconfig.get_paths()["stdlib"])
    ap.add_argument("--limit", type=int, default=None,
                    help="index an evenly spaced sample of N files (chunking still covers all)")
    ap.add_argument("--sites", type=int, default=200)
    ap.add_argument("--search-queries", type=int, default=200, help="docstring -> code search tasks")
    ap.add_argument("--embed-max-tokens", type=int, default=None, help="override the default document length")
    ap.add_argument("--pipeline-baseline", action="store_true",
                    help="also index with the previous pipeline (eager encoder, one embedding worker)")
    ap.add_argument("--baseline", action="store_true",
                    help="also index with the previous embedding settings (fp32, 128 tokens, path in the text)")
    ap.add_argument("--no-chunking", action="store_true", help="skip the whole-stdlib chunking comparison")
    ap.add_argument("--chunking-only", action="store_true",
                    help="only chunking of the whole stdlib, ours then LlamaIndex CodeSplitter, back to back")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "index.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="protege-bench-index-"))
    src = Path(args.root)
    all_rels = sorted(e.rel for e in walk_workspace(src, SKIP) if e.rel.endswith(".py"))
    rels = sample(all_rels, args.limit)
    ws = tmp / "stdlib"
    copy_tree(src, ws, rels)
    search_tasks = strip_docstrings(ws, rels, args.search_queries)
    size_mb = sum((ws / r).stat().st_size for r in rels) / 1e6
    # The workspaces hold only the copied .py files, so the default walk applies unchanged.
    cfg = IndexConfig(cache_dir=str(tmp / "cache"), use_security_screen=True)
    if args.embed_max_tokens:
        cfg.embed_max_tokens = args.embed_max_tokens
    result: dict = {"workspace": f"CPython {sys.version.split()[0]} stdlib (.py only)",
                    "stdlib_files": len(all_rels), "indexed_files": len(rels),
                    "indexed_sample": "all" if len(rels) == len(all_rels) else f"every {len(all_rels) / len(rels):.1f}th file",
                    "indexed_megabytes": round(size_mb, 1), "cpu_count": os.cpu_count(),
                    "load_average_at_start": os.getloadavg()}
    print(f"{len(rels)} of {len(all_rels)} files, {size_mb:.1f} MB", file=sys.stderr)

    if args.no_chunking:
        return run_index(args, result, ws, rels, cfg, tmp, Path(args.out), search_tasks)
    # Chunking alone always covers the whole stdlib (cheap: no model), beside the peer on the same files.
    full_ws = tmp / "stdlib-all"
    copy_tree(src, full_ws, all_rels)
    result["chunking_full_stdlib"] = bench_chunking(full_ws, all_rels, cfg)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(result, indent=2) + "\n")

    print("chunking", result["chunking_full_stdlib"], file=sys.stderr)
    save()
    peer = bench_peer(full_ws, all_rels)
    result["peer_llamaindex_codesplitter"] = peer or "not installed (/tmp/peer-venv); absolute figures only"
    if isinstance(peer, dict) and "files_per_s" in peer:
        result["chunking_full_stdlib"]["ratio_vs_llamaindex_files_per_s"] = round(
            result["chunking_full_stdlib"]["files_per_s"] / peer["files_per_s"], 2)
    print("peer", peer, file=sys.stderr)
    save()
    if args.chunking_only:
        shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps(result, indent=2))
        return 0
    return run_index(args, result, ws, rels, cfg, tmp, out, search_tasks)


def embedding_label(cfg: IndexConfig) -> str:
    return f"MiniLM-L6 {'int8' if cfg.embed_quantize else 'fp32'}, {cfg.embed_max_tokens} tokens, in-house encoder"


def full_index(index: RepoIndex, label: str) -> dict:
    t = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int, path: str) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"  {label}: {done}/{total} files, {time.perf_counter() - t:.0f}s", file=sys.stderr, flush=True)

    full = index.update(progress=progress)
    full_s = time.perf_counter() - t
    return {"seconds": round(full_s, 1), "files_per_s": round(full.files_seen / full_s, 2),
            "chunks": full.chunks_added, "chunks_embedded": full.chunks_embedded,
            "chunks_per_s": round(full.chunks_added / full_s, 1),
            "skipped": full.files_skipped, "secrets_masked": full.secrets_redacted,
            "embedding": embedding_label(index.config)}


def previous_settings(ws: Path, tmp: Path, search_tasks: list[tuple[str, int, str]]) -> dict:
    """The same files indexed with the embedding settings used before (fp32, 128 tokens, path in the text)."""
    from indexing import indexer

    current = indexer.embed_input

    def with_path(path: str, chunk: indexer.Chunk) -> str:
        head = f"{chunk.symbol} ({chunk.kind}) in {path}" if chunk.symbol else f"{chunk.kind} in {path}"
        return f"{head}\n{chunk.text}"

    indexer.embed_input = with_path  # type: ignore[assignment]
    try:
        cfg = IndexConfig(cache_dir=str(tmp / "cache-previous"), embed_max_tokens=128, embed_quantize=False,
                          query_max_tokens=128)
        index = RepoIndex.open(ws, cfg)
        out = {"full_index": full_index(index, "previous")}
        index.warm_up()
        out["code_search"] = code_search(index, search_tasks)
        index.close()
    finally:
        indexer.embed_input = current
    return out


def previous_pipeline(ws: Path, tmp: Path) -> dict:
    """The same files and embedding settings through the previous pipeline: an eager (untraced) encoder
    and one embedding worker. The eager forward re-takes the GIL between ops while the indexing thread
    runs Python, which is what the traced encoder and the second worker remove."""
    from indexing import api, minilm

    traced = minilm._traced
    minilm._traced = lambda model: None  # type: ignore[assignment]
    api._EMBEDDERS.clear()  # the model is shared per process: load an eager one for this run only
    try:
        index = RepoIndex.open(ws, IndexConfig(cache_dir=str(tmp / "cache-pipeline"), embed_workers=1))
        out = full_index(index, "previous pipeline")
        index.close()
    finally:
        minilm._traced = traced  # type: ignore[assignment]
        api._EMBEDDERS.clear()
    return out


def run_index(args: argparse.Namespace, result: dict, ws: Path, rels: list[str], cfg: IndexConfig, tmp: Path,
              out: Path, search_tasks: list[tuple[str, int, str]]) -> int:
    """Full index, no-change re-index, one-file updates, retrieval quality and latency, repo map."""
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(result, indent=2) + "\n")

    if args.pipeline_baseline:  # first: imports and first-call costs land on the baseline, not on ours
        result["previous_pipeline"] = previous_pipeline(ws, tmp)
        print("previous pipeline", result["previous_pipeline"], file=sys.stderr)
        save()
    if args.baseline:  # first, so the default settings' run is not the one that pays for imports
        result["previous_settings"] = previous_settings(ws, tmp, search_tasks)
        print("previous settings", result["previous_settings"], file=sys.stderr)
        save()
    index = RepoIndex.open(ws, cfg)
    result["full_index"] = full_index(index, "index")
    if "previous_pipeline" in result:
        result["full_index"]["files_per_s_ratio_vs_previous_pipeline"] = round(
            result["full_index"]["files_per_s"] / result["previous_pipeline"]["files_per_s"], 2)
    print("full", result["full_index"], file=sys.stderr)
    save()

    t = time.perf_counter()
    again = index.update()
    dt = time.perf_counter() - t
    result["no_change_reindex"] = {"seconds": round(dt, 3), "files_per_s": round(again.files_seen / dt, 1)}

    one_ms, one_ws_ms = [], []
    for i, rel in enumerate(rels[:: max(1, len(rels) // 5)][:5]):
        with (ws / rel).open("a") as f:
            f.write(f"\n\ndef protege_bench_added_{i}(value):\n    return value * {i}\n")
        t = time.perf_counter()
        index.update([ws / rel])
        one_ms.append((time.perf_counter() - t) * 1000)
        with (ws / rel).open("a") as f:
            f.write(f"\n# touched {i}\n")
        t = time.perf_counter()
        index.update()
        one_ws_ms.append((time.perf_counter() - t) * 1000)
    result["one_file_update"] = {"ms_median_update_paths": round(statistics.median(one_ms), 1),
                                 "ms_max_update_paths": round(max(one_ms), 1),
                                 "ms_median_whole_workspace_rescan": round(statistics.median(one_ws_ms), 1)}
    print("one-file", result["one_file_update"], file=sys.stderr)
    save()

    index.warm_up()
    sites = call_sites(index, args.sites)
    result["retrieval"] = quality(index, ws, sites)
    print("retrieval", result["retrieval"], file=sys.stderr)
    result["code_search"] = code_search(index, search_tasks)
    print("code search", result["code_search"], file=sys.stderr)
    if "previous_settings" in result:
        prev = result["previous_settings"]
        result["vs_previous_settings"] = {
            "full_index_speedup": round(result["full_index"]["files_per_s"] / prev["full_index"]["files_per_s"], 2),
            "hybrid_mrr_ratio": round(result["code_search"]["hybrid_mrr_at_10"]
                                      / max(prev["code_search"]["hybrid_mrr_at_10"], 1e-9), 3),
            "vectors_mrr_ratio": round(result["code_search"]["vectors_mrr_at_10"]
                                       / max(prev["code_search"]["vectors_mrr_at_10"], 1e-9), 3)}
    save()

    t = time.perf_counter()
    map_text = index.repo_map(1024)
    cold = time.perf_counter() - t
    index._map_cache.clear()
    t = time.perf_counter()
    index.repo_map(1024)
    result["repo_map"] = {"seconds_first": round(cold, 2), "seconds_again_uncached": round(time.perf_counter() - t, 2),
                          "chars": len(map_text), "lines": map_text.count("\n")}
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["load_average_at_end"] = os.getloadavg()
    index.close()
    shutil.rmtree(tmp, ignore_errors=True)
    save()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
