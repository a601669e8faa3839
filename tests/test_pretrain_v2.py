"""Starter v2 training pieces: wheel corpus roots, near-duplicate and vendored filters, the token cache with
token-level FIM, exact resume, and resuming a fresh clone from the committed bf16 checkpoint."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_code.corpus import CorpusConfig, CorpusError, collect_corpus, resolve_root
from distill_code.corpus_fetch import fetched_root
from distill_code.modeling import LlamaShape, build_llama
from distill_code.near_dup import near_duplicate_keys
from distill_code.pretrain import StageConfig, load_recipe, train_stage
from distill_code.token_data import TokenBlocks, TokenCorpus, chunk_ranges, newline_table

ROOT = Path(__file__).resolve().parents[1]
STARTER_TOKENIZER = ROOT / "distill_code" / "starter" / "student"


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(STARTER_TOKENIZER))


def _module(n: int, name: str = "thing") -> str:
    body = "".join(f"def {name}_{i}(value, scale={i}):\n    result = value * scale + {i * 7}\n    return result\n\n"
                   for i in range(n))
    return f'"""Helpers for {name}."""\n\nimport math\n\n\n{body}'


def test_near_duplicates_keep_the_first_copy_and_unrelated_files() -> None:
    original = _module(30)
    edited = original.replace("value * scale + 14", "value * scale - 14")  # one line of 90 changed
    unrelated = _module(30, name="other").replace("value", "item").replace("scale", "factor")
    drop = near_duplicate_keys([("a.py", original), ("b.py", edited), ("c.py", unrelated)])
    assert drop == {"b.py"}
    # Order decides which copy survives.
    assert near_duplicate_keys([("b.py", edited), ("a.py", original)]) == {"a.py"}
    # Half the file rewritten is no longer a near-duplicate.
    half = _module(15) + _module(15, name="else")
    assert near_duplicate_keys([("a.py", original), ("h.py", half)]) == set()


def _wheel(path: Path, files: dict[str, str], meta: str) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr("toypkg-1.2.dist-info/METADATA", meta)
    return path


def test_pypi_root_unpacks_a_cached_wheel_with_its_license_and_filters_vendored_code(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    body = _module(12)
    _wheel(cache / "wheels" / "toypkg-1.2-py3-none-any.whl", {
        "toypkg/__init__.py": body,
        "toypkg/core.py": _module(12, "core"),
        "toypkg/_vendor/six.py": _module(12, "six"),          # a bundled copy of another project
        "toypkg/compat/click/core.py": _module(12, "click"),  # an evaluation repository, renamed in
        "toypkg/tests/test_core.py": _module(12, "check"),
        "toypkg/data.bin": "not python",
    }, "Metadata-Version: 2.4\nName: toypkg\nVersion: 1.2\nLicense-Expression: BSD-3-Clause\n")
    src, source = fetched_root("toypkg==1.2", cache)  # found in the cache: no download
    assert source == {"name": "toypkg 1.2", "license": "BSD-3-Clause"}
    assert (src / "toypkg" / "core.py").read_text() == _module(12, "core")
    assert not (src / "toypkg" / "data.bin").exists()

    cfg = CorpusConfig(roots=["pypi:toypkg==1.2"], cache_dir=str(cache), validation_fraction=0.0)
    entries, texts = collect_corpus(cfg)
    assert sorted(e.path for e in entries) == ["toypkg-1.2/toypkg/__init__.py", "toypkg-1.2/toypkg/core.py"]
    assert texts["toypkg-1.2/toypkg/__init__.py"] == body
    with_tests = collect_corpus(CorpusConfig(roots=["pypi:toypkg==1.2"], cache_dir=str(cache), include_tests=True,
                                             validation_fraction=0.0))[0]
    assert "toypkg-1.2/toypkg/tests/test_core.py" in {e.path for e in with_tests}

    with pytest.raises(CorpusError, match="pin one version"):
        resolve_root("pypi:toypkg", str(cache))


def test_token_cache_is_reused_and_fim_examples_rebuild_their_chunk(tok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = CorpusConfig(max_files=40, validation_fraction=0.1)
    entries, texts = collect_corpus(cfg)
    corpus = TokenCorpus.build(entries, texts, tok, tmp_path / "tokens", "digest-1")
    assert corpus.tokens.dtype == np.uint16
    first = entries[0]
    assert corpus.tokens[corpus.offsets[0]:corpus.offsets[1]].tolist() == tok(texts[first.path],
                                                                              add_special_tokens=False)["input_ids"]
    # Same corpus and tokenizer: loaded, not tokenised again (a changed file would change the digest).
    (tmp_path / "tokens" / "tokens.npy").touch()
    again = TokenCorpus.build(entries, texts, tok, tmp_path / "tokens", "digest-1")
    assert np.array_equal(again.tokens, corpus.tokens) and again.offsets.tolist() == corpus.offsets.tolist()
    assert json.loads((tmp_path / "tokens" / "meta.json").read_text())["corpus_sha256"] == "digest-1"

    blocks = TokenBlocks(corpus, "train", tok, seq_len=128, batch_size=2, fim_rate=0.7, spm_rate=0.5, seed=3)
    assert (blocks.chunks[:, 1] - blocks.chunks[:, 0]).max() <= 125  # first token + at most seq_len - 4
    a, b = blocks.epoch_stream(0), blocks.epoch_stream(0)
    assert np.array_equal(a, b) and not np.array_equal(a, blocks.epoch_stream(1))
    # Split the stream at eos and undo FIM: every example is exactly one chunk, each chunk once.
    eos, pre, suf, mid = blocks.eos, blocks.fim_prefix, blocks.fim_suffix, blocks.fim_middle
    examples = np.split(a, np.flatnonzero(a == eos) + 1)[:-1]
    rebuilt, n_fim, n_spm = [], 0, 0
    for ex in examples:
        ex = ex[:-1].tolist()
        if ex and ex[0] == pre:
            n_fim += 1
            if ex[1] == suf:  # SPM: <pre><suf> suffix <mid> prefix middle
                n_spm += 1
                s_end = ex.index(mid)
                suffix, rest = ex[2:s_end], ex[s_end + 1:]
                rebuilt.append(("spm", rest + suffix, None))
            else:  # PSM: <pre> prefix <suf> suffix <mid> middle
                p_end, s_end = ex.index(suf), ex.index(mid)
                rebuilt.append(("psm", ex[1:p_end] + ex[s_end + 1:] + ex[p_end + 1:s_end], None))
        else:
            rebuilt.append(("plain", ex, None))
    chunk_set = {tuple(corpus.tokens[s:e].tolist()) for s, e in blocks.chunks}
    assert len(examples) == len(blocks.chunks)
    for _kind, toks, _ in rebuilt:
        assert tuple(toks) in chunk_set
    assert 0.5 < n_fim / len(examples) < 0.9 and 0 < n_spm < n_fim


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=300), st.integers(4, 40))
def test_chunks_cover_each_file_exactly_and_cut_after_line_ends(kinds: list[int], max_len: int) -> None:
    tokens = np.array(kinds, dtype=np.uint16)
    is_newline = np.array([False, False, True, False])
    ranges = [(0, len(tokens) // 2), (len(tokens) // 2, len(tokens))]
    chunks = chunk_ranges(tokens, ranges, is_newline, max_len)
    covered = [i for s, e in chunks for i in range(s, e)]
    assert covered == list(range(len(tokens)))
    ends = {b for _, b in ranges}
    for s, e in chunks:
        assert 0 < e - s <= max_len + 1  # its first token and at most max_len more
        assert any(a <= s and e <= b for a, b in ranges)
        if e not in ends:  # cut inside a file: after the last line end in reach, else after max_len tokens
            reach = tokens[s + 1:s + max_len + 1]
            if is_newline[reach].any():
                assert is_newline[tokens[e - 1]] and not is_newline[tokens[e:s + max_len + 1]].any()
            else:
                assert e - s == max_len


def test_newline_table_marks_line_breaks(tok) -> None:  # type: ignore[no-untyped-def]
    table = newline_table(tok)
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    word = tok("return", add_special_tokens=False)["input_ids"]
    assert table[nl].all() and not table[word].any()


def _tiny(seed: int = 0):  # type: ignore[no-untyped-def]
    shape = LlamaShape(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                       intermediate_size=64)
    return build_llama(shape, vocab_size=8192, eos_token_id=0, seed=seed)


@pytest.fixture(scope="module")
def token_blocks(tok, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    entries, texts = collect_corpus(CorpusConfig(max_files=25, validation_fraction=0.1))
    corpus = TokenCorpus.build(entries, texts, tok, tmp_path_factory.mktemp("tok"), "d")
    train = TokenBlocks(corpus, "train", tok, 64, 2, 0.5, 0.5, seed=1)
    val = TokenBlocks(corpus, "validation", tok, 64, 2, 0.5, 0.5, seed=12345).fixed_blocks(4)
    return train, val


def test_a_stopped_run_resumes_to_the_same_weights(token_blocks, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, val = token_blocks
    cfg = StageConfig(seq_len=64, batch_size=2, lr=3e-3, warmup_steps=3, max_tokens=64 * 2 * 12, eval_every=5,
                      eval_blocks=4, bf16=False, checkpoint_minutes=100)
    straight = _tiny()
    s1 = train_stage(straight, cfg, train, val, tmp_path / "a", resume=False)
    assert s1["steps"] == 12

    stopped = _tiny()
    s2 = train_stage(stopped, cfg, train, val, tmp_path / "b", resume=False, stop_after_steps=5,
                     commit_dir=tmp_path / "commit")
    assert s2["stopped"] and s2["steps"] == 5
    resumed = _tiny(seed=99)  # different init: everything must come from the checkpoint
    s3 = train_stage(resumed, cfg, train, val, tmp_path / "b", resume=True)
    assert s3["steps"] == 12 and s3["tokens_seen"] == s1["tokens_seen"]
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q), name

    # A fresh clone has only the committed bf16 weights and state: it resumes from them, re-warming Adam.
    state = json.loads((tmp_path / "commit" / "state.json").read_text())
    assert state["state"]["step"] == 5
    clone = _tiny(seed=7)
    s4 = train_stage(clone, cfg, train, val, tmp_path / "clone", resume=True, commit_dir=tmp_path / "commit")
    assert s4["steps"] == 12 and s4["tokens_seen"] == s1["tokens_seen"]
    history = json.loads((tmp_path / "clone" / "loss.json").read_text())
    assert history["val"][0]["step"] == 0 and history["val"][-1]["step"] == 12
    # bf16 rounding and a fresh optimizer: close to, not equal to, the straight run.
    assert abs(s4["validation_loss"] - s1["validation_loss"]) < 0.5


def test_committed_checkpoint_of_another_shape_is_a_clear_error(token_blocks, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from distill_code.pretrain import RecipeError, export_committed

    train, val = token_blocks
    other = build_llama(LlamaShape(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                   intermediate_size=64), vocab_size=8192, eos_token_id=0)
    export_committed(other, {"step": 3, "tokens": 10, "epoch": 0, "batch": 3, "elapsed": 1.0},
                     {"train": [], "val": []}, tmp_path / "commit")
    cfg = StageConfig(seq_len=64, batch_size=2, max_tokens=256, bf16=False)
    with pytest.raises((RecipeError, RuntimeError)):
        train_stage(_tiny(), cfg, train, val, tmp_path / "s", resume=True, commit_dir=tmp_path / "commit")


def test_v2_recipe_loads_and_pins_every_package() -> None:
    recipe = load_recipe(ROOT / "recipes" / "starter-v2.toml")
    assert recipe.data == "tokens" and recipe.tokenizer and recipe.commit_dir
    pinned = [r for r in recipe.corpus.roots if r.startswith("pypi:")]
    assert pinned and all("==" in r for r in pinned)
    # Student at least 4x fewer parameters than the teacher.
    t, s = build_llama(recipe.teacher.shape, 8192, 0), build_llama(recipe.student.shape, 8192, 0)
    n = [sum(p.numel() for p in m.parameters()) for m in (t, s)]
    assert n[0] >= 4 * n[1]


def test_student_stage_distils_from_the_committed_teacher_in_a_fresh_clone(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from distill_code.pretrain import RecipeError, _finished_teacher, export_committed

    recipe = load_recipe(ROOT / "recipes" / "starter-v2.toml")
    recipe.commit_dir = str(tmp_path / "commit")
    recipe.teacher.max_tokens = 1000
    out = tmp_path / "run"  # a fresh clone: no run directory, so no teacher/final
    with pytest.raises(RecipeError, match="needs a finished teacher"):
        _finished_teacher(recipe, out)
    teacher = _tiny(seed=3)
    half = {"step": 3, "tokens": 600, "epoch": 0, "batch": 3, "elapsed": 1.0}
    export_committed(teacher, half, {"train": [], "val": []}, tmp_path / "commit" / "teacher")
    with pytest.raises(RecipeError):  # stopped half way: distilling from it would be a silent downgrade
        _finished_teacher(recipe, out)
    export_committed(teacher, {**half, "tokens": 1024}, {"train": [], "val": []}, tmp_path / "commit" / "teacher")
    src = _finished_teacher(recipe, out)
    assert src == tmp_path / "commit" / "teacher"
    loaded = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    ids = torch.tensor([[5, 9, 200, 31]])
    with torch.no_grad():
        diff = (loaded(ids).logits - teacher(ids).logits).abs().max().item()
    assert diff < 0.05  # the bf16 copy of the same weights
    # A run directory with the fp32 final teacher wins over the committed copy.
    teacher.save_pretrained(str(out / "teacher" / "final"))
    assert _finished_teacher(recipe, out) == out / "teacher" / "final"


def test_ship_stage_restores_a_finished_stage_from_its_committed_checkpoint(tok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A fresh clone that trained only the student still ships both: the teacher comes back from its commit.
    from transformers import AutoModelForCausalLM

    from distill_code.pretrain import _restore_finished_stage, export_committed

    recipe = load_recipe(ROOT / "recipes" / "starter-v2.toml")
    recipe.commit_dir = str(tmp_path / "commit")
    recipe.teacher.shape = LlamaShape(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=2, intermediate_size=64)
    recipe.teacher.max_tokens = 1000
    out = tmp_path / "run"
    assert _restore_finished_stage(recipe, out, "teacher", tok) is None  # nothing committed
    teacher = _tiny(seed=3)
    history = {"train": [{"step": 2, "tokens": 500, "loss": 6.0, "lr": 1e-3}],
               "val": [{"step": 0, "tokens": 0, "loss": 9.0}, {"step": 4, "tokens": 1024, "loss": 5.5}]}
    export_committed(teacher, {"step": 3, "tokens": 600, "epoch": 0, "batch": 3, "elapsed": 2.0}, history,
                     tmp_path / "commit" / "teacher")
    assert _restore_finished_stage(recipe, out, "teacher", tok) is None  # stopped half way: not shipped
    export_committed(teacher, {"step": 4, "tokens": 1024, "epoch": 0, "batch": 4, "elapsed": 2.0}, history,
                     tmp_path / "commit" / "teacher")
    summary = _restore_finished_stage(recipe, out, "teacher", tok)
    assert summary is not None
    assert summary["tokens_seen"] == 1024 and summary["steps"] == 4 and summary["validation_loss"] == 5.5
    assert summary["tokens_per_second"] == pytest.approx(512.0)
    assert json.loads((out / "teacher" / "loss.json").read_text()) == history
    loaded = AutoModelForCausalLM.from_pretrained(str(out / "teacher" / "final"), dtype=torch.float32)
    ids = torch.tensor([[5, 9, 200, 31]])
    with torch.no_grad():
        assert (loaded(ids).logits - teacher(ids).logits).abs().max().item() < 0.05
    assert (out / "teacher" / "final" / "tokenizer.json").exists()
