"""Benchmark: soak (issue 18, item 3). A real server over stdio gets completion requests at a fixed rate
(default 10/s for 10 minutes) over real files -- each request types one more character into one of a few
open documents, as an editor would -- plus a hover, a code lens request and a save now and then. Every
`--sample-s` seconds it records the server's RSS and the latency percentiles of the last window.
Loopback only (stdio), bounded: it stops at `--minutes`.

Targets: RSS growth ≤ 50 MB over the run, 0 errors, latency p95 stable (last window within 1.5x of the
first). Writes JSON and a PNG of RSS and p50/p95 over time.

    python bench/bench_soak.py [--rate 10] [--minutes 10] [--out bench/results/soak.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from rawlsp import RawClient  # noqa: E402

FILES = ("textwrap.py", "json/decoder.py", "csv.py", "string.py")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=10.0, help="completion requests per second")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--sample-s", type=float, default=15.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = ap.parse_args()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    client = RawClient()
    client.initialize({"memory": {"enabled": False}})
    docs = []
    for i, rel in enumerate(FILES):
        text = (stdlib / rel).read_text(encoding="utf-8")
        lines = text.split("\n")
        # Type into the middle of the file: a copy of it under a fake URI, so the real one is untouched.
        uri = f"file:///tmp/protege-soak/{i}-{Path(rel).name}"
        cut = len(lines) // 2
        head = "\n".join(lines[:cut]) + "\n    "
        docs.append({"uri": uri, "head": head, "tail": "\n" + "\n".join(lines[cut:]), "typed": "", "version": 1})
        client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                "text": head + "\n" + "\n".join(lines[cut:])}})
    # Warm-up: the model loads on the first request; the soak measures steady serving, not start-up.
    first = docs[0]["head"]
    client.request("warm", "textDocument/inlineCompletion",
                   {"textDocument": {"uri": docs[0]["uri"]},
                    "position": {"line": first.count("\n"), "character": len(first) - (first.rfind("\n") + 1)},
                    "context": {"triggerKind": 2}})
    client.wait_for("warm", timeout=300)
    client.responses.pop("warm", None)
    word = "result = self._compute(value, options) if value is not None else default\n    "
    start = time.monotonic()
    end = start + args.minutes * 60
    interval = 1.0 / args.rate
    next_at = start
    rid = 0
    pending: dict[Any, float] = {}
    window: list[float] = []
    samples: list[dict[str, float]] = []
    errors: list[str] = []
    last_sample = start
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_at:
            next_at += interval
            d = docs[rid % len(docs)]
            d["typed"] += word[len(d["typed"]) % len(word)]
            if len(d["typed"]) > 400:
                d["typed"] = ""
            d["version"] += 1
            text = d["head"] + d["typed"] + d["tail"]
            client.notify("textDocument/didChange", {"textDocument": {"uri": d["uri"], "version": d["version"]},
                                                     "contentChanges": [{"text": text}]})
            before = d["head"] + d["typed"]
            line = before.count("\n")
            col = len(before) - (before.rfind("\n") + 1)
            rid += 1
            client.request(rid, "textDocument/inlineCompletion",
                           {"textDocument": {"uri": d["uri"]}, "position": {"line": line, "character": col},
                            "context": {"triggerKind": 2}})
            pending[rid] = time.monotonic()
            if rid % 50 == 0:
                client.request(f"h{rid}", "textDocument/hover", {"textDocument": {"uri": d["uri"]},
                                                                 "position": {"line": line, "character": 5}})
            if rid % 200 == 0:
                client.notify("textDocument/didSave", {"textDocument": {"uri": d["uri"]}})
        client.drain(0.002)
        for k in list(pending):
            if k in client.responses:
                resp = client.responses.pop(k)
                window.append((time.monotonic() - pending.pop(k)) * 1000)
                if "error" in resp and resp["error"].get("code") != -32800:  # cancelled is normal
                    errors.append(str(resp["error"])[:200])
        for k in [k for k in client.responses if isinstance(k, str) and k.startswith("h")]:
            resp = client.responses.pop(k)
            if "error" in resp:
                errors.append(str(resp["error"])[:200])
        if time.monotonic() - last_sample >= args.sample_s:
            last_sample = time.monotonic()
            samples.append({"t_s": round(last_sample - start, 1), "rss_mb": round(rss_mb(client.proc.pid), 1),
                            "p50_ms": round(pct(window, 0.5), 1), "p95_ms": round(pct(window, 0.95), 1),
                            "answered": len(window), "in_flight": len(pending)})
            print(json.dumps(samples[-1]), flush=True)
            window = []
        if client.proc.poll() is not None:
            errors.append("server exited")
            break
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        client.drain(0.05)
        for k in list(pending):
            if k in client.responses:
                client.responses.pop(k)
                pending.pop(k)
    code = client.close()
    rss = [s["rss_mb"] for s in samples]
    p95 = [s["p95_ms"] for s in samples if s["answered"]]
    summary = {"rate_per_s": args.rate, "minutes": args.minutes, "requests": rid, "errors": len(errors),
               "error_examples": errors[:5], "unanswered": len(pending), "exit_code": code,
               "rss_start_mb": rss[0] if rss else None, "rss_end_mb": rss[-1] if rss else None,
               "rss_growth_mb": round(rss[-1] - rss[0], 1) if len(rss) > 1 else None,
               "p95_first_ms": p95[0] if p95 else None, "p95_last_ms": p95[-1] if p95 else None,
               "p95_median_ms": statistics.median(p95) if p95 else None, "samples": samples,
               "machine": platform.platform(), "python": platform.python_version(),
               "command": "python bench/bench_soak.py " + " ".join(sys.argv[1:])}
    out = Path(args.out)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ts = [s["t_s"] / 60 for s in samples]
        ax.plot(ts, rss, "-", label="RSS (MB)")
        ax.set_xlabel("minutes")
        ax.set_ylabel("RSS (MB)")
        ax2 = ax.twinx()
        ax2.plot(ts, [s["p50_ms"] for s in samples], "g--", label="p50 (ms)")
        ax2.plot(ts, [s["p95_ms"] for s in samples], "r:", label="p95 (ms)")
        ax2.set_ylabel("latency (ms)")
        fig.legend(loc="upper left")
        ax.set_title(f"soak: {args.rate:g} completions/s for {args.minutes:g} min")
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=110)
    except ImportError:
        pass
    print(json.dumps({k: v for k, v in summary.items() if k != "samples"}, indent=1))
    ok = not errors and not pending and (summary["rss_growth_mb"] or 0) <= 50
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
