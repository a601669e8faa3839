"""The distillation benchmark runs end to end at toy scale and writes a complete, comparable report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_bench_distill_tiny_writes_every_condition(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_distill", ROOT / "bench" / "bench_distill.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "distill.json"
    before = torch.get_num_threads()
    try:
        bench.run(bench.parse_args(["--tiny", "--steps", "3", "--batch-size", "4", "--eval-examples", "4",
                                    "--max-new-tokens", "6", "--max-len", "96", "--max-middle", "16",
                                    "--max-per-file", "8", "--threads", "1", "--work", str(tmp_path / "w"),
                                    "--extra-divergences", "reverse_kl,forward_kl:reference", "--memory-teacher",
                                    "--out", str(out)]))
    finally:
        torch.set_num_threads(before)
    report = json.loads(out.read_text())
    assert report["repo"]["package"] == "click" and report["repo"]["lines"] >= 5000
    assert "BSD" in report["repo"]["license"]
    assert set(report["results"]) == {"teacher", "student", "ce", "logit", "logit+hidden", "logit (reverse_kl)",
                                      "logit (forward_kl:reference)", "logit+memory"}
    assert report["memory_teacher"]["tokens_scored"] > 0
    for name in ("ce", "logit", "logit+hidden", "logit (reverse_kl)", "logit (forward_kl:reference)"):
        r = report["results"][name]
        assert {"exact_match", "edit_similarity", "nll", "wall_s", "train_s", "length_ratio_p50", "ended_by_cap"} <= set(r)
    paired = report["comparisons"]["edit_similarity_paired"]
    assert set(paired) == {"logit - ce", "logit+hidden - ce", "logit - student", "logit (reverse_kl) - ce",
                           "logit (forward_kl:reference) - ce", "logit+memory - ce", "logit+memory - logit"}
    for d in [*paired.values(), *report["comparisons"]["edit_similarity_served_paired"].values()]:
        assert d["ci95_low"] <= d["mean"] <= d["ci95_high"]
    assert set(report["comparisons"]["edit_similarity_served_paired"]) == set(paired)
    assert report["comparisons"]["logit (reverse_kl)_vs_ce"]["nll"] > 0
    # The first KD run computes the targets; the next reuses the cache.
    assert report["results"]["logit"]["targets_s"] > report["results"]["logit+hidden"]["targets_s"]
    assert report["comparisons"]["logit_vs_ce"]["nll"] > 0
    assert report["dataset"]["heldout"] > 0 and report["equal_compute"]["steps"] == 3
