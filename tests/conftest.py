"""Shared fixtures: tiny real models built from configs, paths to shared data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# No hub access in tests, ever.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def _model_cache(name: str) -> Path | None:
    """With PROTEGE_TEST_CACHE=1 (local runs only), built test models are reused across runs."""
    if os.environ.get("PROTEGE_TEST_CACHE") != "1":
        return None
    import hashlib

    digest = hashlib.sha256((ROOT / "distill_code" / "tiny.py").read_bytes()).hexdigest()[:12]
    return ROOT / ".pytest-models" / f"{name}-{digest}"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~1M-parameter random-init Llama with a tokenizer trained here (StarCoder FIM tokens)."""
    from distill_code.tiny import build_tiny_model_dir

    cached = _model_cache("tiny")
    if cached is not None and (cached / "model.safetensors").exists():
        return cached
    return build_tiny_model_dir(cached or tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def fitted_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model overfitted on two of our own modules, so it answers with code-like text."""
    from distill_code.tiny import build_tiny_model_dir, fit_tiny

    cached = _model_cache("fitted")
    if cached is not None and (cached / "model.safetensors").exists():
        return cached
    out = build_tiny_model_dir(cached or tmp_path_factory.mktemp("fitted-model"))
    texts = [(ROOT / "server" / n).read_text(encoding="utf-8") for n in ("postprocess.py", "scheduler.py")]
    return fit_tiny(out, texts, steps=60, seq_len=96)


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"shared data not found at {SHARED_DATA}; tests expect ../shared/data beside the repo")
    return SHARED_DATA
