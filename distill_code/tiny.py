"""Tiny random-init models with a freshly trained tokenizer, for tests and CI (no downloads)."""

from __future__ import annotations

import sysconfig
from dataclasses import asdict
from pathlib import Path

from distill_code.modeling import LlamaShape, build_llama, count_parameters
from distill_code.tokenizer import train_bpe_tokenizer

# ~1M parameters with a 1,024-token vocabulary: small enough to build in seconds on CPU.
TINY_SHAPE = LlamaShape(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=352)
# ~10M parameters: the benchmark's "realistic" size.
SMALL_SHAPE = LlamaShape(hidden_size=320, num_hidden_layers=6, num_attention_heads=5, num_key_value_heads=5,
                         intermediate_size=864)


def stdlib_sample(n_files: int = 40, max_bytes: int = 400_000) -> list[str]:
    """Text of a deterministic sample of the running CPython's standard library."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    out: list[str] = []
    size = 0
    for p in files[:: max(1, len(files) // n_files)]:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        out.append(text)
        size += len(text)
        if size >= max_bytes:
            break
    return out


def build_tiny_model_dir(out_dir: str | Path, shape: LlamaShape = TINY_SHAPE, vocab_size: int = 1024,
                         seed: int = 0) -> Path:
    """Train a tokenizer on a stdlib sample and save a random-init Llama beside it in ``out_dir``."""
    out = Path(out_dir)
    tok = train_bpe_tokenizer(stdlib_sample(), vocab_size=vocab_size, out_dir=out)
    model = build_llama(shape, vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id, seed=seed)
    model.save_pretrained(str(out))
    (out / "protege_shape.json").write_text(
        __import__("json").dumps({"shape": asdict(shape), "parameters": count_parameters(model)}, indent=1)
    )
    return out
