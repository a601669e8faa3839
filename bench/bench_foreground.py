"""Benchmark: completion latency while the repository index updates in the same process.

The language server runs the model and the indexer in one process. Three conditions, side by side in
one run, on the same prompts:

* ``alone``: completions with nothing else running;
* ``during index, no yielding``: while a full index of a stdlib sample runs on another thread with
  Python's default 5 ms GIL switch interval and the indexer never stepping aside (before this change);
* ``during index, Protege``: the same, as the server runs it: requests mark themselves active and the
  indexer waits between files and embedding batches (indexing/foreground.py), index threads run at
  lower CPU priority, and the switch interval is 1 ms (server/commands_cli.py).

    python bench/bench_foreground.py [--model DIR] [--files 120] [--requests 16]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def percentiles(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    return {"p50_ms": round(statistics.median(s), 1), "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))], 1),
            "max_ms": round(s[-1], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "distill_code" / "starter" / "teacher"))
    ap.add_argument("--files", type=int, default=120, help="stdlib files indexed in the background")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "foreground.json"))
    args = ap.parse_args()

    from bench_index import SKIP, copy_tree, sample

    import indexing.indexer as indexer_mod
    from indexing import IndexConfig, RepoIndex
    from indexing.foreground import FOREGROUND, lower_thread_priority
    from indexing.walk import walk_workspace
    from server.commands_cli import SWITCH_INTERVAL_S
    from server.engine import Engine, EngineOptions

    engine = Engine(EngineOptions(model=args.model, quantize="int8"))
    engine.load()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    text = (stdlib / "json" / "decoder.py").read_text()
    rng = random.Random(0)
    prompts = []
    for _ in range(args.requests):
        cut = rng.randint(500, len(text) - 10)
        prompts.append(engine.tokenizer.encode(text[max(0, cut - 1500):cut]))

    def completions() -> list[float]:
        lat = []
        for p in prompts:
            t = time.perf_counter()
            engine.generate(p, 24, mode="line")
            lat.append((time.perf_counter() - t) * 1000)
        return lat

    tmp = Path(tempfile.mkdtemp(prefix="protege-bench-fg-"))
    rels = sample(sorted(e.rel for e in walk_workspace(stdlib, SKIP) if e.rel.endswith(".py")), args.files)
    ws = tmp / "ws"
    copy_tree(stdlib, ws, rels)
    completions()  # warm: first-call costs are not what this measures
    result: dict[str, Any] = {"model": Path(args.model).name, "parameters": engine.parameters(),
                              "background_files": len(rels), "requests": len(prompts), "cpu_count": os.cpu_count(),
                              "load_average_at_start": os.getloadavg(), "conditions": {}}
    result["conditions"]["alone"] = percentiles(completions())
    print("alone", result["conditions"]["alone"], file=sys.stderr)

    real_wait, real_lower = FOREGROUND.wait_idle, indexer_mod.lower_thread_priority
    for n, (name, protege) in enumerate((("during index, no yielding", False), ("during index, Protege", True))):
        if protege:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        else:
            sys.setswitchinterval(0.005)
            FOREGROUND.wait_idle = lambda max_wait_s=5.0: False  # type: ignore[method-assign]
            indexer_mod.lower_thread_priority = lambda niceness=10: None  # type: ignore[assignment]
        index = RepoIndex.open(ws, IndexConfig(cache_dir=str(tmp / f"cache{n}")))
        index.warm_up()
        cancel = threading.Event()
        done: list[int] = []

        def background(index: RepoIndex = index, cancel: threading.Event = cancel, protege: bool = protege,
                       done: list[int] = done) -> None:
            if protege:
                lower_thread_priority()  # as the server's index executor thread
            stats = index.update(cancel=cancel)
            done.append(stats.files_indexed)

        thread = threading.Thread(target=background, name="bench-index")
        thread.start()
        time.sleep(3.0)  # embedding under way
        lat = completions()
        still_running = thread.is_alive()
        cancel.set()
        thread.join()
        index.close()
        FOREGROUND.wait_idle, indexer_mod.lower_thread_priority = real_wait, real_lower  # type: ignore[method-assign]
        sys.setswitchinterval(0.005)
        result["conditions"][name] = {**percentiles(lat), "index_still_running_at_the_end": still_running,
                                      "files_indexed_before_cancel": done[0] if done else None}
        print(name, result["conditions"][name], file=sys.stderr)
    alone = result["conditions"]["alone"]["p50_ms"]
    result["p50_ratio_vs_alone"] = {k: round(v["p50_ms"] / alone, 2) for k, v in result["conditions"].items()}
    result["command"] = "python bench/bench_foreground.py " + " ".join(sys.argv[1:])
    shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
