"""Token healing on real tokenizers: byte-level BPE (the starter's kind) and a SentencePiece-style Unigram."""

from __future__ import annotations

import json
import random
import re
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from distill_code.fim import STARCODER_SPECIAL_TOKENS
from distill_code.modeling import build_llama
from distill_code.tiny import TINY_SHAPE, stdlib_sample
from distill_code.tokenizer import train_bpe_tokenizer
from server.healing import SuffixPlan, TokenHealer, vocab_index

STARTER = Path(__file__).resolve().parents[1] / "distill_code" / "starter" / "student"
# Non-ASCII identifiers and strings: byte-level tokens then hold partial UTF-8 characters.
UNICODE_SNIPPET = 'def grüße(näme):\n    """Grüße für Zoë — ok ✓."""\n    return f"héllo {näme} 日本"\n'


def _held_out_code() -> str:
    root = Path(sysconfig.get_paths()["stdlib"])
    return (root / "textwrap.py").read_text(encoding="utf-8")[:12_000] + "\n" + UNICODE_SNIPPET


def _unigram_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A SentencePiece-style Unigram (Metaspace "▁", byte fallback), trained here."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.UnigramTrainer(  # type: ignore[call-arg]  # the stub lacks seed_size etc.
        vocab_size=600, special_tokens=["<unk>"], unk_token="<unk>", seed_size=5000, n_sub_iterations=1,
        max_piece_length=8, shrinking_factor=0.5, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # The trainer cannot add byte-fallback pieces, so rebuild the model with them (as Llama does).
    spec = json.loads(tok.to_str())["model"]
    vocab = [(p, s) for p, s in spec["vocab"]]
    have = {p for p, _ in vocab}
    floor = min(s for _, s in vocab) - 1.0
    vocab += [(f"<0x{b:02X}>", floor) for b in range(256) if f"<0x{b:02X}>" not in have]
    full = Tokenizer(models.Unigram(vocab, unk_id=spec["unk_id"], byte_fallback=True))
    full.pre_tokenizer = tok.pre_tokenizer
    full.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first"),
                                      decoders.ByteFallback(), decoders.Fuse()])
    full.add_special_tokens(list(STARCODER_SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(tokenizer_object=full, eos_token="<|endoftext|>", unk_token="<unk>",
                                   pad_token="<fim_pad>", clean_up_tokenization_spaces=False)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return stdlib_sample(n_files=8, max_bytes=80_000)


@pytest.fixture(scope="module")
def bpe(corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    return train_bpe_tokenizer(corpus, vocab_size=1024, out_dir=tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def unigram(corpus: list[str]) -> Any:
    return _unigram_tokenizer(corpus)


@pytest.fixture(scope="module", params=["bpe", "unigram", "starter"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    if request.param == "starter":
        if not (STARTER / "tokenizer.json").exists():
            pytest.fail("the shipped starter student's tokenizer is missing from distill_code/starter/student")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(STARTER), local_files_only=True)
    return request.getfixturevalue(request.param)


_ORACLE: dict[int, list[bytes | None]] = {}


def _oracle_bytes(tok: Any) -> list[bytes | None]:
    """Token bytes computed independently of server.healing: in-context decode, else the byte tables."""
    if id(tok) in _ORACLE:
        return _ORACLE[id(tok)]
    special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    anchor = tok.convert_tokens_to_ids("a")
    base = tok.decode([anchor])
    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    out: list[bytes | None] = []
    for i in range(len(tok)):
        text = tok.decode([anchor, i])
        piece = tok.convert_ids_to_tokens(i)
        if i in special:
            out.append(None)
        elif "\ufffd" not in text:
            out.append(text[len(base):].encode() or None)
        elif m := re.fullmatch(r"<0x([0-9A-F]{2})>", piece):
            out.append(bytes([int(m.group(1), 16)]))
        else:
            out.append(bytes(to_byte[c] for c in piece))
    _ORACLE[id(tok)] = out
    return out


def _decode_after(tok: Any, ids: list[int]) -> str:
    """Text of ``ids`` as they decode mid-sequence (SentencePiece drops a leading space at the start)."""
    anchor = tok.convert_tokens_to_ids("a")
    return str(tok.decode([anchor, *ids]))[len(tok.decode([anchor])):]


def test_token_bytes_match_an_independent_oracle(tokenizer: Any) -> None:
    assert vocab_index(tokenizer).token_bytes == _oracle_bytes(tokenizer)


def test_token_bytes_reassemble_real_code(tokenizer: Any) -> None:
    index = vocab_index(tokenizer)
    text = _held_out_code()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    joined = b"".join(index.token_bytes[i] or b"" for i in ids)
    # SentencePiece prepends one "▁" to the first word; nothing else may differ.
    assert joined in (text.encode(), b" " + text.encode())
    partial = [b for b in index.token_bytes if b is not None and _invalid_utf8(b)]
    assert partial, "the snippet's non-ASCII text should use tokens holding partial UTF-8 characters"


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_index_is_built_once_per_tokenizer(bpe: Any, unigram: Any) -> None:
    first = TokenHealer(bpe)
    assert TokenHealer(bpe).index is first.index
    assert TokenHealer(unigram).index is not first.index


def _cuts(text: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    points = sorted(rng.sample(range(1, len(text)), n))
    return [text[:p] for p in points]


def test_healed_prefix_ends_on_a_token_boundary(tokenizer: Any) -> None:
    healer = TokenHealer(tokenizer)
    text = _held_out_code()[-4000:]  # the whole prefix is re-tokenized per cut: keep it short
    healed = 0
    for prefix in _cuts(text, 120, seed=1) + ["x = self.resu", "if a =", "def f():\n    ", "print(grü"]:
        plan = healer.plan_prefix(prefix)
        assert plan.prefix + plan.removed == prefix
        assert plan.backed_off <= healer.max_tokens
        full = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        kept = tokenizer(plan.prefix, add_special_tokens=False)["input_ids"] if plan.prefix else []
        # The kept prompt is the original prompt minus its last tokens: the KV cache stays valid.
        assert kept == full[: len(full) - plan.backed_off]
        if plan.removed:
            healed += 1
            # What was removed can be regenerated token by token.
            assert len(healer.allowed_tokens(plan.removed)) > 0
        else:
            assert plan.backed_off == 0
    assert healed > 30


def test_mid_word_prefix_backs_off_the_split_word(tokenizer: Any) -> None:
    healer = TokenHealer(tokenizer)
    plan = healer.plan_prefix("    value = self.resu")
    assert plan.removed and " self.resu".endswith(plan.removed)
    assert plan.prefix.startswith("    value = self.") and plan.prefix + plan.removed == "    value = self.resu"


def test_whitespace_ends_are_left_alone_when_asked(tokenizer: Any) -> None:
    healer = TokenHealer(tokenizer, heal_whitespace=False)
    for prefix in ["def f():\n    ", "return ", "x = 1\n"]:
        assert healer.plan_prefix(prefix).removed == ""
    # The same prefixes do heal by default, because " x" or "\n    " are single tokens.
    assert any(TokenHealer(tokenizer).plan_prefix(p).removed for p in ["def f():\n    ", "return "])


def test_plan_is_deterministic_and_local(bpe: Any) -> None:
    healer = TokenHealer(bpe)
    head = _held_out_code()[:5000]
    a = healer.plan_prefix(head + "obj.attri")
    b = healer.plan_prefix(head + "obj.attri")
    assert a == b
    # Typing forward changes nothing before the current word: the prompt keeps its start.
    c = healer.plan_prefix(head + "obj.attrib")
    assert c.prefix.startswith(head + "obj.")


def _brute_force(tokenizer: Any, remaining: str) -> set[int]:
    want = remaining.encode("utf-8", "surrogateescape")
    return {i for i, b in enumerate(_oracle_bytes(tokenizer)) if b and (want.startswith(b) or b.startswith(want))}


def test_constraint_admits_exactly_the_consistent_tokens(tokenizer: Any) -> None:
    healer = TokenHealer(tokenizer)
    oracle = _oracle_bytes(tokenizer)
    samples = ["resu", "\n    ", " ", "(", "==", "self", "é", "ße", "日本", "\udca9", "zzzq", "_"]
    for prefix in _cuts(_held_out_code(), 60, seed=2):
        removed = healer.plan_prefix(prefix).removed
        if removed:
            samples.append(removed)
    for remaining in samples:
        want = remaining.encode("utf-8", "surrogateescape")
        expected = {i for i, b in enumerate(oracle) if b and (want.startswith(b) or b.startswith(want))}
        got = healer.allowed_tokens(remaining)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.long
        assert set(got.tolist()) == expected, remaining
    special = set(tokenizer.all_special_ids)
    assert not special & set(healer.allowed_tokens("<").tolist())


_TEXT = st.text(alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyz_ ().,:=\n\t\"'0123456789éß日✓")),
                min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(remaining=_TEXT, data=st.data())
def test_any_constrained_path_reproduces_the_typed_text(bpe: Any, unigram: Any, remaining: str,
                                                         data: st.DataObject) -> None:
    for tok in (bpe, unigram):
        healer = TokenHealer(tok)
        assert set(healer.allowed_tokens(remaining).tolist()) == _brute_force(tok, remaining)
        left, ids = remaining, []
        # Whatever consistent token a model picks at each step, the typed text comes out first.
        while left:
            allowed = healer.allowed_tokens(left).tolist()
            assert allowed, left
            choice = data.draw(st.sampled_from(allowed))
            ids.append(choice)
            nxt = healer.advance(left, choice)
            assert len(nxt.encode("utf-8", "surrogateescape")) < len(left.encode("utf-8", "surrogateescape"))
            left = nxt
        produced = b"".join(healer.index.token_bytes[i] or b"" for i in ids)
        assert produced.startswith(remaining.encode())
        text = _decode_after(tok, ids)
        assert healer.decode(ids) == text
        assert text.startswith(remaining)
        assert healer.strip(text, remaining) == text[len(remaining):]


def test_advance_rejects_an_inconsistent_token(bpe: Any) -> None:
    healer = TokenHealer(bpe)
    bad = next(i for i, b in enumerate(healer.index.token_bytes) if b and not b.startswith(b"r")
               and not b"resu".startswith(b))
    with pytest.raises(ValueError, match="not consistent"):
        healer.advance("resu", bad)
    with pytest.raises(TypeError, match="prefix must be a str"):
        healer.plan_prefix(b"abc")  # type: ignore[arg-type]


def test_mask_logits_keeps_only_allowed(bpe: Any) -> None:
    healer = TokenHealer(bpe)
    logits = torch.randn(len(bpe) + 8)  # models often pad the vocabulary
    masked = healer.mask_logits(logits, "resu")
    finite = set(torch.nonzero(torch.isfinite(masked)).flatten().tolist())
    assert finite == set(healer.allowed_tokens("resu").tolist())
    assert torch.equal(healer.mask_logits(logits, ""), logits)


def test_strip_never_repeats_typed_characters(bpe: Any) -> None:
    healer = TokenHealer(bpe)
    assert healer.strip("result = 1", "resu") == "lt = 1"
    assert healer.strip("res", "resu") == ""  # stopped early: nothing new
    assert healer.strip("other", "resu") == ""  # not a continuation of what was typed


def _greedy(model: Any, healer: TokenHealer, ids: list[int], removed: str, steps: int) -> list[int]:
    out: list[int] = []
    remaining = removed
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            if remaining:
                logits = healer.mask_logits(logits, remaining)
            nxt = int(torch.argmax(logits))
            if remaining:
                remaining = healer.advance(remaining, nxt)
            out.append(nxt)
    return out


def test_healed_decoding_with_a_real_model_inserts_only_new_text(bpe: Any) -> None:
    """Through a real (tiny, random) model and the FIM template: the document gets exactly the new text."""
    from distill_code.fim import template_for

    model = build_llama(TINY_SHAPE, vocab_size=len(bpe), eos_token_id=bpe.eos_token_id, seed=3).eval()
    healer = TokenHealer(bpe)
    template = template_for("starcoder")
    for prefix, suffix in [("    value = self.resu", "\n    return value\n"), ("if x =", " y:\n"),
                           ("    return näm", "\n")]:
        plan = healer.plan_prefix(prefix)
        assert plan.removed
        prompt = bpe(template.psm(plan.prefix, suffix), add_special_tokens=False)["input_ids"]
        gen = _greedy(model, healer, list(prompt), plan.removed, steps=8)
        text = bpe.decode(gen)
        completion = healer.strip(text, plan.removed)
        assert text.startswith(plan.removed)
        assert plan.prefix + text == prefix + completion


def test_suffix_plan_moves_the_word_remainder(bpe: Any) -> None:
    healer = TokenHealer(bpe)
    plan = healer.plan_suffix("value(x)\n    return y\n", prefix="    z = get_")
    assert plan == SuffixPlan("(x)\n    return y\n", "value")
    # At a word boundary nothing moves.
    assert healer.plan_suffix("value(x)", prefix="z = ").removed == ""
    assert healer.plan_suffix("(x)", prefix="z = get").removed == ""
    # Inside an operator the tokenizer joins across the cursor: "==" is one token.
    op = healer.plan_suffix("= y:\n", prefix="if x =")
    assert op.removed == "=" and op.suffix == " y:\n"
    # Only the current line's word moves, and blobs stay where they are.
    assert healer.plan_suffix("abc\ndef", prefix="x").removed == "abc"
    assert healer.plan_suffix("a" * 200, prefix="x").removed == ""
    assert healer.plan_suffix("lue(x)").removed == "lue"


def test_suffix_trim_cuts_the_recreated_remainder() -> None:
    plan = SuffixPlan("(x)\n", "value")
    assert plan.trim("user_value(x)") == "user_"
    assert plan.trim("user_value") == "user_"
    assert plan.trim("user_values_value(") == "user_values_"  # "values" is another word
    assert plan.trim("other(x)") == "other(x)"
    assert not plan.reached("user_value") and plan.reached("user_value(")
    assert SuffixPlan("x", "").trim("abc") == "abc"


@settings(max_examples=80, deadline=None)
@given(head=st.text(alphabet="abc_(). ", max_size=10), tail=st.text(alphabet="()., :\n", max_size=6),
       word=st.text(alphabet="abcxyz_", min_size=1, max_size=6))
def test_suffix_trim_property(head: str, tail: str, word: str) -> None:
    plan = SuffixPlan(tail, word)
    generated = head + word + tail
    trimmed = plan.trim(generated)
    # The cut is where the remainder is re-created (at the latest where we put it), never elsewhere.
    assert generated.startswith(trimmed) and len(trimmed) <= len(head)
    assert generated[len(trimmed):].startswith(word)
