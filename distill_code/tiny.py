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


def fit_tiny_on_samples(model_dir: str | Path, samples: list[str], steps: int = 150, batch: int = 8,
                        lr: float = 1e-2, seed: int = 0) -> Path:
    """Overfit a tiny model on whole rendered samples (each a full prompt + answer), aligned at position 0.

    Tests use it to get a model that answers specific FIM prompts exactly, so the server's
    pipeline (cache, screen, post-processing) can be checked on known model output.
    """
    import random

    import torch

    from distill_code.modeling import load_causal_lm

    model, tok = load_causal_lm(model_dir)
    encoded = [list(tok(s, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id] for s in samples]
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 10) * max(0.05, 1 - i / steps))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for _ in range(steps):
        chosen = [encoded[rng.randrange(len(encoded))] for _ in range(batch)]
        width = max(len(c) for c in chosen)
        x = torch.full((batch, width), pad, dtype=torch.long)
        labels = torch.full((batch, width), -100, dtype=torch.long)
        for i, c in enumerate(chosen):
            x[i, : len(c)] = torch.tensor(c)
            labels[i, : len(c)] = torch.tensor(c)
        loss = model(input_ids=x, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    model.save_pretrained(str(model_dir))
    return Path(model_dir)
