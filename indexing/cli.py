"""`protege index PATH` and `protege search QUERY`: the index from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("index", help="index a workspace (incremental: only changed files are re-embedded)")
    p.add_argument("path", nargs="?", default=".", help="workspace root (default: current directory)")
    _common(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_index)

    s = subparsers.add_parser("search", help="search the index of a workspace (hybrid BM25 + vectors)")
    s.add_argument("query", help="words, identifiers or a code fragment")
    s.add_argument("--workspace", default=".", help="workspace root (default: current directory)")
    s.add_argument("-k", type=int, default=10, help="number of results (default: 10)")
    s.add_argument("--json", action="store_true", help="print results as JSON lines")
    s.add_argument("--lexical", action="store_true",
                   help="BM25 and symbols only: no embedding model is loaded (fastest without a running server)")
    s.add_argument("--no-server", action="store_true",
                   help="search in this process even when a running `protege serve` could answer")
    _common(s)
    s.set_defaults(func=cmd_search)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None, help="index cache directory (default: per workspace under "
                                                     "$XDG_CACHE_HOME/protege)")
    p.add_argument("--chroma-url", default=None, help="use a ChromaDB server (`chroma run`) at http://host:port")
    p.add_argument("--embedding-model", default=None, help="local sentence-transformers model directory")
    p.add_argument("--embed-max-tokens", type=int, default=None,
                   help="tokens of each chunk the embedding model reads (default: what the index was built with, "
                        "else 32; a change rebuilds the index)")


def _open(workspace: str, args: argparse.Namespace):  # noqa: ANN202 - RepoIndex, imported lazily
    from indexing.api import RepoIndex
    from indexing.config import IndexConfig

    if args.embed_max_tokens is not None and not 8 <= args.embed_max_tokens <= 512:
        raise SystemExit(f"protege: --embed-max-tokens must be from 8 to 512, got {args.embed_max_tokens}")
    config = IndexConfig(cache_dir=args.cache_dir, chroma_url=args.chroma_url, embedding_model=args.embedding_model,
                         embed_max_tokens=args.embed_max_tokens)
    return RepoIndex.open(workspace, config)


def cmd_index(args: argparse.Namespace) -> int:
    from indexing.lock import IndexLockedError

    if not Path(args.path).is_dir():
        print(f"protege index: {args.path} is not a directory; pass a repository root", file=sys.stderr)
        return 2
    try:
        index = _open(args.path, args)
    except Exception as exc:  # noqa: BLE001 - one sentence to the user, not a traceback
        print(f"protege index: cannot open the index: {exc}", file=sys.stderr)
        return 1
    bar = None
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="file", file=sys.stderr, dynamic_ncols=True, desc="indexing")

        def progress(done: int, total: int, path: str) -> None:
            if bar.total != total:
                bar.total = total
            bar.n = done
            bar.set_postfix_str(path[-40:], refresh=False)
            bar.refresh()

    try:
        stats = index.update(progress=progress)
    except IndexLockedError as exc:
        print(f"protege index: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("protege index: interrupted; the next run continues where this one stopped", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    status = index.status()
    index.close()
    if args.json:
        print(json.dumps({"stats": asdict(stats), "status": status}, indent=2))
    else:
        rate = stats.files_seen / stats.seconds if stats.seconds > 0 else 0.0
        print(f"indexed {stats.files_indexed} files ({stats.chunks_added} chunks; {stats.chunks_embedded} embedded, "
              f"{stats.chunks_reused} reused), {stats.files_unchanged} unchanged, {stats.files_removed} removed, "
              f"{stats.files_skipped} skipped in {stats.seconds:.1f}s ({rate:.1f} files/s)")
        print(f"index: {status['files']} files, {status['chunks']} chunks at {status['cache_dir']} "
              f"({status['store_mode']})")
        for path, reason in sorted(stats.skipped.items()):
            print(f"  skipped {path}: {reason}")
        if stats.secrets_redacted:
            print(f"  masked {stats.secrets_redacted} secret(s) before indexing (see the log for files)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    if not Path(args.workspace).is_dir():
        print(f"protege search: {args.workspace} is not a directory; pass --workspace REPO", file=sys.stderr)
        return 2
    if not args.no_server:
        from indexing.config import workspace_cache_dir
        from indexing.search_socket import query

        cache = Path(args.cache_dir).expanduser() if args.cache_dir else workspace_cache_dir(args.workspace)
        try:
            served = query(cache, args.query, args.k, vectors=not args.lexical)
        except RuntimeError as exc:
            print(f"protege search: {exc}", file=sys.stderr)
            return 1
        if served is not None:  # a running server answered, with its embedder already warm
            for d in served:
                print(json.dumps(d) if args.json else f"{d['path']}:{d['start_line'] + 1}  {d['symbol'] or d['kind']}")
            return 0
    try:
        index = _open(args.workspace, args)
    except Exception as exc:  # noqa: BLE001
        print(f"protege search: cannot open the index: {exc}", file=sys.stderr)
        return 1
    try:
        if index.status()["files"] == 0:
            print(f"protege search: the index of {index.root} is empty; run `protege index {index.root}` first",
                  file=sys.stderr)
            return 1
        hits = index.search(args.query, k=args.k, vectors=not args.lexical)
    finally:
        index.close()
    for hit in hits:
        if args.json:
            print(json.dumps(asdict(hit)))
        else:
            print(f"{hit.path}:{hit.start_line + 1}  {hit.symbol or hit.kind}")
    return 0
