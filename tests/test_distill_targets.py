"""Teacher targets with real tiny models: encoding, vocabulary alignment, the top-k cache, a vLLM-style server, data KD."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sysconfig
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from distill_code import losses as L
from distill_code.encoding import Budget, collate, encode_example, template_of
from distill_code.mining import Example, MiningConfig, mine_repository
from distill_code.modeling import LlamaShape, load_causal_lm
from distill_code.targets import (
    LocalTeacher,
    RemoteTeacher,
    TargetStore,
    compute_targets,
    generate_data,
    model_revision,
    screen_generation,
)
from distill_code.tiny import build_tiny_model_dir
from distill_code.tokenizer import train_bpe_tokenizer
from distill_code.vocab import VocabMismatchError, align_models, align_vocabularies, output_width

STDLIB = Path(sysconfig.get_paths()["stdlib"])
BUDGET = Budget(max_len=96, max_middle=24)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models on a shared 2-core box: extra intra-op threads only contend.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("student"), LlamaShape(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128),
        seed=1)


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> list[Example]:
    repo = tmp_path_factory.mktemp("repo")
    for name in ("bisect.py", "colorsys.py", "shlex.py"):
        shutil.copy(STDLIB / name, repo / name)
    exs, _ = mine_repository(repo, MiningConfig(use_index=False, max_per_file=15))
    return [e for e in exs if e.task == "fim"]


def test_encoding_marks_exactly_the_completion_and_respects_the_budget(tiny_model_dir: Path,
                                                                       examples: list[Example]) -> None:
    _, tok = load_causal_lm(tiny_model_dir)
    template = template_of(tok)
    encs = [encode_example(e, tok, template, BUDGET) for e in examples[:12]]
    assert all(len(e.ids) <= BUDGET.max_len for e in encs)
    b = collate(encs, tok.pad_token_id)
    for i, (e, ex) in enumerate(zip(encs, examples[:12], strict=True)):
        predicted = b["labels"][i][b["mask"][i]].tolist()
        assert predicted == e.ids[e.start:]
        assert predicted[-1] == tok.eos_token_id
        assert e.ids[e.start - 1] == tok.convert_tokens_to_ids("<fim_middle>")
        # Short middles survive whole: the label tokens decode to the reference completion.
        if len(tok(ex.middle)["input_ids"]) < BUDGET.max_middle - 1:
            assert tok.decode(predicted[:-1]) == ex.middle


def test_vocab_alignment_equal_sliced_and_mismatch(tiny_model_dir: Path, student_dir: Path,
                                                   tmp_path: Path) -> None:
    s_model, s_tok = load_causal_lm(student_dir)
    t_model, t_tok = load_causal_lm(tiny_model_dir)
    assert align_models(s_model, s_tok, t_model, t_tok).mode == "equal"
    # Padding rows, as Qwen2.5-Coder 7B has over 3B: sliced back to the student's width.
    t_model.resize_token_embeddings(output_width(t_model) + 64)
    al = align_models(s_model, s_tok, t_model, t_tok)
    assert al.mode == "sliced" and al.teacher_width == al.student_width + 64
    assert al.teacher_logits(torch.zeros(2, 3, al.teacher_width)).shape[-1] == al.student_width
    other = train_bpe_tokenizer(["def f(x):\n    return x + 1\n" * 50, "class A: pass\n" * 40], vocab_size=300,
                                out_dir=tmp_path / "tok")
    with pytest.raises(VocabMismatchError, match="vocabularies differ"):
        align_vocabularies(s_tok, other, output_width(s_model), len(other))
    assert align_vocabularies(s_tok, other, output_width(s_model), len(other), "uld").mode == "cross"
    with pytest.raises(VocabMismatchError, match="unknown cross-tokenizer"):
        align_vocabularies(s_tok, other, output_width(s_model), len(other), "magic")


def test_targets_are_compact_exact_and_recomputed_only_when_content_changes(
        tiny_model_dir: Path, student_dir: Path, examples: list[Example], tmp_path: Path) -> None:
    t_model, tok = load_causal_lm(tiny_model_dir)
    s_model, _ = load_causal_lm(student_dir)
    template = template_of(tok)
    encs = [encode_example(e, tok, template, BUDGET) for e in examples[:10]]
    teacher = LocalTeacher([t_model], [1.0], align_models(s_model, tok, t_model, tok),
                           model_revision(tiny_model_dir))
    store = TargetStore(tmp_path / "t.sqlite")
    k = 8
    keys, stats = compute_targets(encs, teacher, tok, store, k=k, batch_size=4, progress=False)
    assert stats.computed == 10 and stats.cached == 0
    # uint16 ids + float16 log-probs per top-k entry + a float16 tail: 34 bytes/token at k=8.
    assert stats.bytes_per_token == pytest.approx(k * 2 + k * 2 + 2)
    # The stored targets agree with the teacher's full distribution (float16 precision).
    b = collate(encs[:1], tok.pad_token_id)
    with torch.no_grad():
        full = t_model(input_ids=b["input_ids"]).logits[0][b["mask"][0]]
    got = store.get(keys[0])
    assert got is not None
    ref = L.sparse_targets_from_logits(full, k)
    assert torch.equal(got.ids, ref.ids)
    assert torch.allclose(got.logprobs, ref.logprobs, atol=2e-2)
    assert L.sparse_forward_kl(full, got).item() < 1e-3
    store.close()

    store = TargetStore(tmp_path / "t.sqlite")
    edited = [dataclasses.replace(examples[0], prefix=examples[0].prefix + "# edited\n")]
    encs2 = [encode_example(e, tok, template, BUDGET) for e in edited + examples[1:10]]
    keys2, stats2 = compute_targets(encs2, teacher, tok, store, k=k, progress=False)
    assert (stats2.computed, stats2.cached) == (1, 9)
    assert keys2[1:] == keys[1:] and keys2[0] != keys[0]
    # A different teacher revision is a different key space.
    teacher.revision = "other"
    _, stats3 = compute_targets(encs2[:2], teacher, tok, store, k=k, progress=False)
    assert stats3.computed == 2
    store.close()


def test_weighted_ensemble_mixes_probabilities(tiny_model_dir: Path, student_dir: Path,
                                               examples: list[Example]) -> None:
    t_model, tok = load_causal_lm(tiny_model_dir)
    s_model, _ = load_causal_lm(student_dir)  # same tokenizer, another shape: a second "teacher"
    al = align_models(s_model, tok, t_model, tok)
    encs = [encode_example(e, tok, template_of(tok), BUDGET) for e in examples[:2]]
    mixed = LocalTeacher([t_model, s_model], [3.0, 1.0], al, "x").completion_logprobs(encs, tok.pad_token_id)
    b = collate(encs, tok.pad_token_id)
    with torch.no_grad():
        p1 = F.softmax(t_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, -1)
        p2 = F.softmax(s_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, -1)
    expect = (0.75 * p1 + 0.25 * p2)[0][b["mask"][0]]
    assert torch.allclose(mixed[0].exp(), expect, atol=1e-5)


class _CompletionsHandler(BaseHTTPRequestHandler):
    """The subset of vLLM's /v1/completions used for scoring (echo + top logprobs), backed by a real model."""

    model: Any = None

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ids = body["prompt"]
        with torch.no_grad():
            lp = F.log_softmax(self.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        tops: list[dict[str, float] | None] = [None]
        for pos in range(1, len(ids)):
            vals, idx = lp[pos - 1].topk(body["logprobs"])
            tops.append({f"token_id:{int(i)}": float(v) for v, i in zip(vals, idx, strict=True)})
        payload = {"choices": [{"text": "", "logprobs": {"top_logprobs": tops}}]}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_remote_teacher_matches_in_process_targets(tiny_model_dir: Path, examples: list[Example],
                                                   tmp_path: Path) -> None:
    t_model, tok = load_causal_lm(tiny_model_dir)
    encs = [encode_example(e, tok, template_of(tok), BUDGET) for e in examples[:3]]
    _CompletionsHandler.model = t_model
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CompletionsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        remote = RemoteTeacher(f"http://127.0.0.1:{server.server_port}", "tiny", tok, "server:tiny")
        store = TargetStore(tmp_path / "r.sqlite")
        keys, stats = compute_targets(encs, remote, tok, store, k=4, progress=False)
        assert stats.computed == 3
        b = collate(encs[:1], tok.pad_token_id)
        with torch.no_grad():
            full = t_model(input_ids=b["input_ids"]).logits[0][b["mask"][0]]
        got = store.get(keys[0])
        assert got is not None and torch.equal(got.ids, L.sparse_targets_from_logits(full, 4).ids)
        store.close()
    finally:
        server.shutdown()
        server.server_close()
    dead = RemoteTeacher("http://127.0.0.1:9", "tiny", tok, "x", timeout_s=2)
    with pytest.raises(RuntimeError, match="did not answer"):
        dead.score(encs[0], 4)


def test_data_distillation_keeps_only_parsing_and_safe_generations(tiny_model_dir: Path,
                                                                    examples: list[Example]) -> None:
    ex = Example("x", "fim", "statement", "m.py", "python", prefix="import subprocess\n\ndef run(cmd):\n    ",
                 middle="return len(cmd)", suffix="\n")
    assert screen_generation(ex, "return len(cmd)") == (True, "ok")
    assert screen_generation(ex, "return (((") == (False, "parse")
    assert screen_generation(ex, "return subprocess.call(cmd, shell=True)") == (False, "screen:block")
    assert screen_generation(ex, "return eval(cmd)") == (False, "screen:annotate")
    assert screen_generation(ex, "   ") == (False, "empty")
    model, tok = load_causal_lm(tiny_model_dir)
    kept, outcomes = generate_data(examples[:3], model, tok, template_of(tok), BUDGET, max_new_tokens=6,
                                   progress=False)
    assert sum(outcomes.values()) == 3 and len(kept) == outcomes.get("ok", 0)
    assert all(k.kind == "teacher" and k.id.endswith("-t") for k in kept)
