"""A shipped model's card keeps the figures of the models it replaced (issue 16: the gain stays visible)."""

from __future__ import annotations

from typing import Any

from distill_code.model_card import _card_text, _history_entry


def _info(recipe: str, params: int, tokens: int, loss: float, es: float) -> dict[str, Any]:
    ev = {"lines": 10, "exact_match": 0.1, "edit_similarity": es, "latency_ms_mean": 50.0, "latency_ms_p50": 45.0,
          "latency_ms_p90": 60.0, "decode_tokens_per_s": 100.0}
    return {"recipe": recipe, "parameters": params, "shape": {"hidden_size": 64}, "weights_mb": 1.0,
            "train": {"tokens_seen": tokens, "steps": 10, "train_minutes": 1.0, "tokens_per_second": 1000.0,
                      "validation_loss": loss},
            "heldout": ev, "random_init_heldout": {**ev, "edit_similarity": 0.01, "exact_match": 0.0},
            "corpus": {"sources": [{"name": "CPython", "license": "PSF-2.0"}], "totals": {}, "corpus_sha256": "ab" * 32},
            "fim_rate": 0.5, "spm_rate": 0.5, "vocab_size": 8192, "kd": "kd", "machine_note": "(test)"}


def test_history_table_lists_earlier_versions_then_this_one() -> None:
    old = _info("recipes/starter-cpu.toml", 1_650_000, 940_000, 4.99, 0.16)
    new = _info("recipes/starter-v2.toml", 760_000, 40_000_000, 2.1, 0.33)
    new["history"] = [_history_entry(old)]
    text = _card_text("student", new)
    assert "## History" in text
    rows = [line for line in text.splitlines() if line.startswith("| recipes/")]
    assert rows[0].startswith("| recipes/starter-cpu.toml | 1,650,000 | 940,000 | 4.990 |")
    assert rows[1].startswith("| recipes/starter-v2.toml | 760,000 | 40,000,000 | 2.100 |")
    assert "0.160" in rows[0] and "0.330" in rows[1]
    # A first version has no history section.
    assert "## History" not in _card_text("student", old)


def test_a_grown_model_card_says_what_it_started_from() -> None:
    grown = _info("recipes/starter-v2-deep.toml", 5_031_840, 40_000_000, 2.3, 0.3)
    grown["train"]["initialized_from"] = {"path": "checkpoints/starter-v2/teacher", "layers": 6, "grown_to": 12,
                                          "tokens": 80_003_072}
    text = _card_text("teacher", grown)
    seen = next(line for line in text.splitlines() if line.startswith("| tokens seen |"))
    assert "40,000,000 in 10 steps" in seen and "after 80,003,072 tokens of the model it started from" in seen
    assert "grown from 6 to 12 layers" in text and "from random init" not in text
    plain = _card_text("teacher", _info("recipes/starter-v2.toml", 3_171_360, 80_003_072, 2.45, 0.3))
    assert "from random init" in plain and "started from" not in plain
