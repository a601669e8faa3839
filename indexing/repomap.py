"""Repo map: tags (definitions and references) → file graph ranked with PageRank → the top definitions'
signatures, grouped by file, fitted to a token budget.

Deterministic across processes: nodes and edges are added in sorted order, ties are broken by name, and
nothing iterates a set or a hash-ordered container (aider's map differs between processes by hash seed).
"""

from __future__ import annotations

import math
from collections import defaultdict

import networkx as nx

CHARS_PER_TOKEN = 4  # budget estimate without a tokenizer dependency; conservative for code
# A name defined in more files than this (`__init__`, `run`, `test_*` helpers) links every file that uses it
# to every file that defines it, each edge with weight below 0.1 * sqrt(uses) / MAX_TARGETS: ~700k edges over
# the standard library (24 s per map) for a negligible share of the ranking. Such names make no edges.
MAX_TARGETS = 32


def build_repo_map(tags: list[tuple[str, str, str, str, int, str]], token_budget: int = 1024,
                   focus: list[str] | None = None) -> str:
    """``tags`` rows are (path, symbol, role, kind, line, signature), as the catalog returns them."""
    focus = focus or []
    defines: dict[str, list[str]] = defaultdict(list)  # symbol -> files defining it
    def_rows: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)  # (path, symbol) -> (line, sig)
    refs: dict[tuple[str, str], int] = defaultdict(int)  # (referencing path, symbol) -> count
    files: list[str] = []
    for path, symbol, role, _kind, line, signature in tags:
        if not files or files[-1] != path:
            files.append(path)
        if role == "def":
            if not defines[symbol] or defines[symbol][-1] != path:
                defines[symbol].append(path)
            def_rows[(path, symbol)].append((line, signature))
        else:
            refs[(path, symbol)] += 1
    files = sorted(set(files))
    focus_files = sorted(f for f in focus if f in set(files))
    focus_symbols = {f for f in focus if f not in set(files)}

    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    edge_symbols: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    edges: dict[tuple[str, str], float] = defaultdict(float)
    for (src, symbol), count in sorted(refs.items()):
        targets = defines.get(symbol)
        if not targets or len(targets) > MAX_TARGETS:
            continue
        weight = math.sqrt(count)
        if symbol.startswith("_"):
            weight *= 0.1  # private names say little about a file's role
        if len(targets) > 5:
            weight *= 0.1  # defined everywhere (``__init__``, ``run``): not a real dependency
        if symbol in focus_symbols:
            weight *= 10.0
        for dst in targets:
            if dst == src:
                continue
            w = weight / len(targets)
            edges[(src, dst)] += w
            edge_symbols[(src, dst)][symbol] = edge_symbols[(src, dst)].get(symbol, 0.0) + w
    graph.add_weighted_edges_from((src, dst, w) for (src, dst), w in sorted(edges.items()))
    if graph.number_of_nodes() == 0:
        return ""
    personalization = {f: 1.0 for f in focus_files} if focus_files else None
    rank = nx.pagerank(graph, weight="weight", personalization=personalization)

    # Spread each file's rank over the definitions its references point at.
    def_rank: dict[tuple[str, str], float] = defaultdict(float)
    out_edges: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for (src, dst), w in sorted(edges.items()):
        out_edges[src].append((dst, w))
    for src in files:
        out_weight = sum(w for _, w in out_edges[src])
        if out_weight <= 0:
            continue
        for dst, w in out_edges[src]:
            share = rank[src] * w / out_weight
            syms = edge_symbols[(src, dst)]
            total = sum(syms.values())
            for symbol in sorted(syms):
                def_rank[(dst, symbol)] += share * syms[symbol] / total
    for key in def_rows:
        def_rank[key] += rank.get(key[0], 0.0) * 0.01  # unreferenced definitions still rank by their file
        if key[1] in focus_symbols:
            def_rank[key] *= 10.0
    ranked = sorted(def_rank.items(), key=lambda kv: (-round(kv[1], 12), kv[0][0], kv[0][1]))
    budget_chars = token_budget * CHARS_PER_TOKEN

    def render(n: int) -> str:
        chosen: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for (path, symbol), _ in ranked[:n]:
            chosen[path].extend(def_rows.get((path, symbol), []))
        order = sorted(chosen, key=lambda p: (-round(rank.get(p, 0.0), 12), p))
        out = []
        for path in order:
            out.append(f"{path}:")
            for line, sig in sorted(set(chosen[path])):
                out.append(f"  {line + 1:>5}│ {sig}")
        return "\n".join(out) + ("\n" if out else "")

    lo, hi, best = 0, len(ranked), ""
    while lo <= hi:  # the largest prefix of the ranking that fits the budget
        mid = (lo + hi) // 2
        text = render(mid)
        if len(text) <= budget_chars:
            best, lo = text, mid + 1
        else:
            hi = mid - 1
    return best
