"""The distillation benchmark runs end to end at toy scale and writes a complete, comparable report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_distill", ROOT / "bench" / "bench_distill.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_distill_tiny_writes_every_condition(tmp_path: Path) -> None:
    bench = _bench()
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


def test_bench_distill_only_the_named_students_and_on_policy(tmp_path: Path) -> None:
    bench = _bench()
    out = tmp_path / "distill.json"
    small = ["--tiny", "--steps", "4", "--batch-size", "4", "--eval-examples", "4", "--max-new-tokens", "6",
             "--max-len", "96", "--max-middle", "16", "--max-per-file", "8", "--threads", "1"]
    before = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit, match="no condition"):
            bench.run(bench.parse_args([*small, "--only", "logit+memory", "--work", str(tmp_path / "w0")]))
        bench.run(bench.parse_args([*small, "--on-policy", "0.5", "--only", "logit+on-policy", "--served-memory",
                                    "--work", str(tmp_path / "w"), "--out", str(out)]))
    finally:
        torch.set_num_threads(before)
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"teacher", "student", "ce", "logit+on-policy"}  # ce: always, the baseline
    assert set(report["comparisons"]["edit_similarity_served_paired"]) == {"logit+on-policy - ce"}
    # Served in process with the repository memory (the training split's files), as the server does by default.
    served = report["served_with_memory"]
    assert set(served) == {"teacher", "student", "ce", "logit+on-policy"}
    assert all(r["examples"] == 4 and 0 <= r["edit_similarity"] <= 1 for r in served.values())
    assert sum(r["memory_tokens"] for r in served.values()) > 0  # the memory took part in decoding
    assert not any((tmp_path / "w" / "workspace" / rel).exists() for rel in report["dataset"]["heldout_files"])
    assert set(report["comparisons"]["edit_similarity_served_memory_paired"]) == {"logit+on-policy - ce"}
    runs = report["on_policy"]["runs"]["logit+on-policy"]
    from distill_code.on_policy import is_on_policy_step

    assert report["on_policy"]["fraction"] == 0.5
    assert runs["steps"] == sum(is_on_policy_step(0, s, 0.5) for s in range(4))


def test_bench_distill_compares_against_the_previous_student(tmp_path: Path) -> None:
    from distill_code.modeling import LlamaShape
    from distill_code.tiny import build_tiny_model_dir

    bench = _bench()
    out = tmp_path / "distill.json"
    previous = build_tiny_model_dir(tmp_path / "previous", LlamaShape(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128),
        seed=7)
    small = ["--tiny", "--steps", "3", "--batch-size", "4", "--eval-examples", "4", "--max-new-tokens", "6",
             "--max-len", "96", "--max-middle", "16", "--max-per-file", "8", "--threads", "1"]
    before = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit, match="no model at"):
            bench.run(bench.parse_args([*small, "--previous-student", str(tmp_path / "missing"),
                                        "--work", str(tmp_path / "w0")]))
        bench.run(bench.parse_args([*small, "--only", "ce", "--served-memory", "--previous-student", str(previous),
                                    "--work", str(tmp_path / "w"), "--out", str(out)]))
    finally:
        torch.set_num_threads(before)
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"teacher", "student", "previous student", "ce", "ce (previous student)"}
    assert report["previous_student"] == "previous"
    # Different weights, the same held-out examples.
    assert report["results"]["previous student"]["nll"] != report["results"]["student"]["nll"]
    assert report["results"]["previous student"]["examples"] == report["results"]["student"]["examples"] == 4
    expected = {"student - previous student", "ce - ce (previous student)"}
    for key in ("edit_similarity_paired", "edit_similarity_served_paired", "edit_similarity_served_memory_paired"):
        assert set(report["comparisons"][key]) == expected
        for d in report["comparisons"][key].values():
            assert d["ci95_low"] <= d["mean"] <= d["ci95_high"]
    assert set(report["served_with_memory"]) == set(report["results"])
