"""Benchmark: CLI start-up and search end to end (issue 18, item 7). Times, over a few runs each,
`protege --help`, `protege status`, and `protege search` on a small repository (click's sources,
indexed once): answered by a running `protege serve`, in process lexically (--lexical), and in process
with vectors (--no-server). Targets: --help and status ≤ 0.5 s, search ≤ 1.5 s.

    python bench/bench_cli.py [--runs 5] [--out bench/results/cli.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from rawlsp import RawClient  # noqa: E402


def timed(cmd: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-500:]}")
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cli.json"))
    args = ap.parse_args()
    import click

    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        ws = work / "click"
        shutil.copytree(Path(click.__file__).parent, ws / "src" / "click")
        subprocess.run(["git", "init", "-q", str(ws)], check=True)
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}
        protege = [sys.executable, "-m", "server.cli"]
        subprocess.run([*protege, "index", str(ws), "--no-progress"], check=True, env=env, cwd=ROOT,
                       capture_output=True)
        query = ["search", "parse command line options", "--workspace", str(ws)]
        results = {
            "help": timed([*protege, "--help"], args.runs, env),
            "status": timed([*protege, "status", "--workspace", str(ws)], args.runs, env),
            "search_lexical_in_process": timed([*protege, *query, "--lexical", "--no-server"], args.runs, env),
            "search_vectors_in_process": timed([*protege, *query, "--no-server"], max(2, args.runs // 2), env),
        }
        client = RawClient(env={"XDG_CACHE_HOME": str(work / "cache")})
        client.initialize({"memory": {"enabled": False}}, root=ws)
        sock = next((work / "cache").rglob("search.sock"), None)
        deadline = time.monotonic() + 120
        while sock is None and time.monotonic() < deadline:
            client.drain(0.5)
            sock = next((work / "cache").rglob("search.sock"), None)
        try:
            results["search_served_by_running_server"] = timed([*protege, *query], args.runs, env)
        finally:
            client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    targets = {"help": 0.5, "status": 0.5, "search_served_by_running_server": 1.5, "search_lexical_in_process": 1.5}
    out = {"results": results, "targets_s": targets,
           "met": {k: results[k]["median_s"] <= v for k, v in targets.items() if k in results},
           "repository": "click (installed package sources)", "command": "python bench/bench_cli.py"}
    for k, r in results.items():
        print(f"{k:36s} median {r['median_s']:.2f} s (min {r['min_s']:.2f}, max {r['max_s']:.2f})")
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
