"""Benchmark: the LSP protocol fuzzer at full size (issue 18): 10,000 seeded messages against a real server
over stdio (tests/lspfuzz.py: valid, mutated and malformed messages for every registered method, random
positions, huge and binary documents, out-of-order open/change/close, cancellations, bursts), a normal
completion after every batch. Prints and writes the counts; exits non-zero on any crash, unanswered
request, hung worker or internal error.

    python bench/bench_fuzz.py [--messages 10000] [--seed 20261202] [--out bench/results/fuzz.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import lspfuzz  # noqa: E402
from rawlsp import RawClient  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--huge-bytes", type=int, default=2_000_000, help="size of the huge documents sent")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "fuzz.json"))
    args = ap.parse_args()
    client = RawClient()
    t0 = time.monotonic()
    client.initialize({"memory": {"enabled": False}})
    tally = lspfuzz.run(client, seed=args.seed, messages=args.messages, batch=args.batch,
                        huge_bytes=args.huge_bytes)
    elapsed = time.monotonic() - t0
    rss_kb = None
    try:
        status = Path(f"/proc/{client.proc.pid}/status").read_text()
        rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    except (OSError, StopIteration, ValueError):
        pass
    code = client.close()
    summary = tally.to_dict()
    summary.update({"seed": args.seed, "seconds": round(elapsed, 1), "exit_code": code,
                    "server_peak_rss_mb": round(rss_kb / 1024, 1) if rss_kb else None,
                    "machine": platform.platform(), "python": platform.python_version()})
    print(json.dumps({k: v for k, v in summary.items() if k not in ("kinds",)}, indent=1))
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    bad = (summary["crashes"] or summary["unanswered"] or summary["hung_workers"] or summary["internal_error_count"]
           or code != 0)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
