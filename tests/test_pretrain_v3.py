"""Starter v3, the run prepared for a lent GPU: training from the token cache alone (no corpus sources), stages
budgeted in minutes, recipe overrides, and scripts/gpu_starter.sh's pack -> train -> unpack round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distill_code.corpus import CorpusConfig, collect_corpus, corpus_sources, split_texts, write_manifest
from distill_code.pretrain import (
    Recipe,
    RecipeError,
    _finished_teacher,
    apply_overrides,
    load_recipe,
    prepare_data,
    run_recipe,
)
from distill_code.token_data import TokenCorpus

ROOT = Path(__file__).resolve().parents[1]
V3 = ROOT / "recipes" / "starter-v3-gpu.toml"
STARTER_TOKENIZER = ROOT / "distill_code" / "starter" / "student"
TINY = ["teacher.shape.hidden_size=32", "teacher.shape.num_hidden_layers=1", "teacher.shape.num_attention_heads=2",
        "teacher.shape.num_key_value_heads=2", "teacher.shape.intermediate_size=64",
        "student.shape.hidden_size=16", "student.shape.num_hidden_layers=1", "student.shape.intermediate_size=32",
        "teacher.seq_len=64", "student.seq_len=64", "teacher.batch_size=2", "student.batch_size=2",
        "teacher.eval_blocks=2", "student.eval_blocks=2", "teacher.compile=false", "student.compile=false",
        "teacher.bf16=false", "student.bf16=false", "teacher.warmup_steps=2", "student.warmup_steps=2",
        "device=\"cpu\"", "eval_lines=4"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A token cache for 40 stdlib files, with its manifest beside it (as a "tokens" recipe leaves them);
    returns the cache directory and the validation texts the corpus itself gives."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(STARTER_TOKENIZER))
    cfg = CorpusConfig(max_files=40, validation_fraction=0.15)
    entries, texts = collect_corpus(cfg)
    root = tmp_path_factory.mktemp("v2run")
    TokenCorpus.build(entries, texts, tok, root / "tokens", "digest-v3")
    write_manifest(entries, root / "corpus_manifest.json", corpus_sources(cfg))
    return root / "tokens", split_texts(entries, texts, "validation")


def _recipe(tmp: Path, cache_dir: Path, *extra: str) -> Recipe:
    recipe = apply_overrides(load_recipe(V3), TINY + list(extra))
    recipe.tokens_from = str(cache_dir)
    recipe.out_dir, recipe.commit_dir = str(tmp / "run"), str(tmp / "commit")
    recipe.ship_dir = str(tmp / "ship")
    # Any attempt to collect the corpus would fail: the run must not need it.
    recipe.corpus = CorpusConfig(roots=["pypi:not-installed-anywhere==0.0"], cache_dir=str(tmp / "no-cache"))
    return recipe


def test_v3_recipe_is_the_v2_corpus_a_larger_teacher_and_a_4x_smaller_student() -> None:
    from distill_code.modeling import build_llama, count_parameters

    recipe = load_recipe(V3)
    assert recipe.data == "tokens" and recipe.tokens_from == "runs/starter-v2/tokens"
    assert recipe.tokenizer == "distill_code/starter/student"  # ids stay compatible with repository memory
    assert recipe.teacher.max_minutes > 0 and recipe.student.max_minutes > 0  # ends on time, whatever the GPU
    t, s = (count_parameters(build_llama(getattr(recipe, r).shape, 8192, 0)) for r in ("teacher", "student"))
    v2 = load_recipe(ROOT / "recipes" / "starter-v2.toml")
    assert t > 3 * count_parameters(build_llama(v2.teacher.shape, 8192, 0))
    assert t >= 4 * s
    assert t * 2 + s * 2 < 30e6  # bf16 weights of both: under the ~30 MB a session may add to git history


def test_a_run_trains_and_ships_from_the_token_cache_alone_and_ends_on_time(cache: tuple[Path, list[str]],
                                                                          tmp_path: Path) -> None:
    cache_dir, corpus_val = cache
    # Budgets in minutes: both stages end by the clock, far short of their token budgets.
    recipe = _recipe(tmp_path, cache_dir, "teacher.max_minutes=0.01", "student.max_minutes=0.01")
    tok, corpus, val = prepare_data(recipe, resume=False)
    assert val == corpus_val  # the validation files decoded from the cache are the corpus's own text
    assert json.loads((tmp_path / "run" / "corpus_manifest.json").read_text()) == \
        json.loads((cache_dir.parent / "corpus_manifest.json").read_text())

    summary = run_recipe(recipe, stages=("teacher", "student", "ship"))
    for role in ("teacher", "student"):
        train = summary[role]
        assert not train.get("stopped") and 0 < train["tokens_seen"] < getattr(recipe, role).max_tokens
        assert train["train_minutes"] >= 0.01
        card = json.loads((tmp_path / "ship" / role / "card.json").read_text())
        assert card["heldout"]["lines"] == 4 and card["recipe"] == "recipes/starter-v3-gpu.toml"
        assert (tmp_path / "commit" / role / "model.safetensors").is_file()
    # A fresh clone (no run directory): the committed teacher counts as finished because its minutes are spent.
    import shutil

    shutil.rmtree(tmp_path / "run" / "teacher" / "final")
    assert _finished_teacher(recipe, tmp_path / "run") == tmp_path / "commit" / "teacher"
    recipe.teacher.max_minutes = 60.0  # the same weights against a longer budget: not finished
    with pytest.raises(RecipeError, match="needs a finished teacher"):
        _finished_teacher(recipe, tmp_path / "run")


def test_the_token_cache_alone_fails_clearly(cache: tuple[Path, list[str]], tmp_path: Path) -> None:
    import shutil

    cache_dir, _ = cache
    with pytest.raises(RecipeError, match="no readable token cache"):
        prepare_data(_recipe(tmp_path, tmp_path / "nowhere"), resume=False)
    with pytest.raises(RecipeError, match="needs data"):
        prepare_data(_recipe(tmp_path, cache_dir, 'data="text"'), resume=False)

    other = tmp_path / "v2" / "tokens"
    shutil.copytree(cache_dir, other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "tokenizer": "0123456789abcdef"}))
    with pytest.raises(RecipeError, match="made with tokenizer '0123456789abcdef'"):
        prepare_data(_recipe(tmp_path, other), resume=False)
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RecipeError, match="no corpus_manifest.json"):  # nothing to put in the model cards
        prepare_data(_recipe(tmp_path, other), resume=False)
    shutil.copy(cache_dir.parent / "corpus_manifest.json", other / "corpus_manifest.json")
    offsets = np.load(other / "offsets.npy")
    np.save(other / "offsets.npy", offsets[:-1])  # a truncated cache
    with pytest.raises(RecipeError, match="unreadable"):
        prepare_data(_recipe(tmp_path, other), resume=False)
    np.save(other / "offsets.npy", offsets)
    _, corpus, _ = prepare_data(_recipe(tmp_path, other), resume=False)  # repaired: loads
    assert len(corpus.tokens) == int(offsets[-1])


def test_overrides_set_nested_keys_and_reject_bad_ones() -> None:
    recipe = apply_overrides(load_recipe(V3), ["teacher.max_minutes=6", "student.shape.hidden_size=48",
                                               "out_dir=runs/elsewhere", "teacher.compile=false",
                                               'ship_dir="runs/x y"'])
    assert recipe.teacher.max_minutes == 6.0 and isinstance(recipe.teacher.max_minutes, float)
    assert recipe.student.shape.hidden_size == 48 and recipe.out_dir == "runs/elsewhere"
    assert recipe.teacher.compile is False and recipe.ship_dir == "runs/x y"
    for bad, match in [("teacher.nope=1", "no key 'nope'"), ("trainer.lr=1", "no section 'trainer'"),
                       ("teacher.lr=fast", "takes a float"), ("teacher.compile=1", "takes a bool"),
                       ("teacher=1", "is a section"), ("teacher.lr", "not key=value")]:
        with pytest.raises(RecipeError, match=match):
            apply_overrides(load_recipe(V3), [bad])


def test_gpu_script_packs_trains_and_unpacks_with_only_the_cache(cache: tuple[Path, list[str]],
                                                                 tmp_path: Path) -> None:
    """The one command a lent GPU runs, end to end on this CPU: the cache travels compressed, the machine
    has no corpus, the results come back in pieces under the size a returned file may have, and unpacking
    ships the cards here."""
    import shutil

    cache_dir, _ = cache
    work = tmp_path / "work"
    shutil.copytree(cache_dir, work / "runs" / "starter-v2" / "tokens")
    shutil.copy(cache_dir.parent / "corpus_manifest.json", work / "runs" / "starter-v2" / "corpus_manifest.json")
    env = {**os.environ, "WORKDIR": str(work), "PY": sys.executable, "OUT": str(tmp_path / "out")}
    script = str(ROOT / "scripts" / "gpu_starter.sh")
    subprocess.run(["bash", script, "pack"], env=env, check=True, capture_output=True, timeout=120)
    assert (work / ".carry" / "tokens" / "tokens.npy.xz").is_file()
    original = (work / "runs" / "starter-v2" / "tokens" / "tokens.npy").read_bytes()
    shutil.rmtree(work / "runs")  # the GPU machine: only the carried folder
    sets = [a for kv in TINY + ["teacher.max_minutes=0.01", "student.max_minutes=0.01"] for a in ("--set", kv)]
    run = subprocess.run(["bash", script, "train", *sets], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (work / "runs" / "starter-v2" / "tokens" / "tokens.npy").read_bytes() == original
    parts = sorted((tmp_path / "out").glob("result.tar.part-*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    assert "teacher step" in (tmp_path / "out" / "train.log").read_text()

    shutil.rmtree(work / "checkpoints")  # back here: a clone without the run's files
    shutil.rmtree(work / "runs" / "starter-v3")
    run = subprocess.run(["bash", script, "unpack", str(tmp_path / "out"), *sets], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for role in ("teacher", "student"):
        assert (work / "checkpoints" / "starter-v3" / role / "model.safetensors").is_file()
        card = json.loads((work / "runs" / "starter-v3" / "ship" / role / "card.json").read_text())
        assert card["train"]["restored_from"].startswith("checkpoints/starter-v3/")
        assert card["heldout"]["lines"] == 4
