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

    h = hashlib.sha256()
    for f in (ROOT / "distill_code" / "tiny.py", Path(__file__), ROOT / "tests" / "fixtures" / "server" / "inventory.py",
              ROOT / "server" / "prompt.py", ROOT / "server" / "healing.py"):
        h.update(f.read_bytes())
    digest = h.hexdigest()[:12]
    return ROOT / ".pytest-models" / f"{name}-{digest}"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~1M-parameter random-init Llama with a tokenizer trained here (StarCoder FIM tokens)."""
    from distill_code.tiny import build_tiny_model_dir

    cached = _model_cache("tiny")
    if cached is not None and (cached / "model.safetensors").exists():
        return cached
    return build_tiny_model_dir(cached or tmp_path_factory.mktemp("tiny-model"))


FITTED_CONTEXT_TOKENS = 256
FITTED_CORPUS = ROOT / "tests" / "fixtures" / "server" / "inventory.py"
# The lines after these are what the e2e tests ask the fitted model to complete.
FITTED_MARKERS = ("    def total(self):", "def archive(path):", "def scratch_file():", "    def add(self, name, count):")


def fitted_samples(tokenizer: object) -> list[str]:
    """The fixture corpus's lines after FITTED_MARKERS as FIM examples, rendered exactly as the server
    renders them (same prompt builder and budget, with and without token healing of the prefix)."""
    from distill_code.fim import template_for
    from server.healing import TokenHealer
    from server.prompt import PromptBuilder

    builder = PromptBuilder(tokenizer, template_for("starcoder"), FITTED_CONTEXT_TOKENS)
    healer = TokenHealer(tokenizer)
    lines = FITTED_CORPUS.read_text(encoding="utf-8").split("\n")
    out = []
    for i, ln in enumerate(lines):
        if not ln.strip() or i == 0 or lines[i - 1] not in FITTED_MARKERS:
            continue
        indent = ln[: len(ln) - len(ln.lstrip())]
        prefix = "\n".join(lines[:i] + [indent])
        for suffix in ("\n" + "\n".join(lines[i + 1:]), ""):
            plain = builder.build(prefix, suffix)
            out.append(plain.text + ln.lstrip())
            plan = healer.plan_prefix(prefix)
            if plan.removed:
                out.append(builder.build(plan.prefix, suffix).text + plan.removed + ln.lstrip())
    return out


@pytest.fixture(scope="session")
def fitted_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model overfitted on tests/fixtures/server/inventory.py: it completes each of that file's
    lines exactly, when prompted with contextTokens=FITTED_CONTEXT_TOKENS."""
    from transformers import AutoTokenizer

    from distill_code.tiny import build_tiny_model_dir, fit_tiny_on_samples

    cached = _model_cache("fitted")
    if cached is not None and (cached / "model.safetensors").exists():
        return cached
    out = build_tiny_model_dir(cached or tmp_path_factory.mktemp("fitted-model"))
    samples = fitted_samples(AutoTokenizer.from_pretrained(str(out)))
    return fit_tiny_on_samples(out, samples, steps=120, lr=3e-3)


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"shared data not found at {SHARED_DATA}; tests expect ../shared/data beside the repo")
    return SHARED_DATA


def editor_client() -> object:
    """A pytest-lsp client that, like VS Code or Neovim, accepts the server's ``client/registerCapability``
    requests (file watchers) and records them in ``client.registrations``."""
    from lsprotocol import types
    from pytest_lsp.client import make_test_lsp_client

    client = make_test_lsp_client()
    client.registrations = []  # type: ignore[attr-defined]

    @client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def on_register(params: types.RegistrationParams) -> None:
        client.registrations.extend(params.registrations)  # type: ignore[attr-defined]

    return client
