"""Starter-model recipe: corpus -> tokenizer -> teacher pretraining (FIM) -> student logit distillation.

A recipe (TOML, see ``recipes/``) fixes every choice; ``protege pretrain --recipe FILE`` runs it.
Each stage checkpoints on a wall-clock interval and resumes from ``<out_dir>/<stage>/ckpt.pt``;
loss curves are saved as JSON and PNG beside the checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from distill_code.corpus import (
    CorpusConfig,
    collect_corpus,
    corpus_sources,
    count_tokens,
    split_texts,
    write_manifest,
)
from distill_code.losses import fused_forward_kl_ce
from distill_code.modeling import LlamaShape, build_llama, count_parameters
from distill_code.pretrain_data import PackedBlocks
from distill_code.tokenizer import train_bpe_tokenizer

log = logging.getLogger(__name__)


class RecipeError(ValueError):
    """A recipe file is missing or malformed; the message names the bad key."""


@dataclass
class StageConfig:
    """One training stage (teacher pretraining or student distillation)."""

    shape: LlamaShape = field(default_factory=LlamaShape)
    seq_len: int = 512
    batch_size: int = 8
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    max_tokens: int = 1_000_000
    max_minutes: float = 0.0  # 0: no wall-clock budget; else the schedule ends at whichever comes first
    eval_every: int = 100
    eval_blocks: int = 32
    log_every: int = 10
    checkpoint_minutes: float = 5.0
    bf16: bool = True
    seed: int = 0
    # Distillation only: loss = alpha * T^2 * KL(teacher || student) at temperature T + (1 - alpha) * CE.
    kd_temperature: float = 2.0
    kd_alpha: float = 0.9
    # Run the (frozen) teacher's forward under bf16 autocast even when the student trains in fp32:
    # ~1.6x faster on this CPU; its logits are upcast before the loss.
    teacher_bf16: bool = False
    # torch.compile the model's training forward (pays on a GPU; on this CPU the first steps compile for
    # minutes and the gain is small).
    compile: bool = False
    # Start a fresh stage from trained weights instead of random init (distill_code.grow): a directory with
    # model.safetensors and config.json (a committed checkpoint or a shipped model). A stage whose shape is
    # deeper by a whole factor grows it, function-preserving; the optimizer and the schedule start fresh.
    init_from: str = ""
    # With init_from: go on with the source run's data stream (its state.json's epoch and batch) when its
    # blocks had this stage's shape, so the first batches are the ones it saw least recently.
    init_data_position: bool = True


@dataclass
class Recipe:
    name: str = "starter"
    out_dir: str = "runs/starter"
    ship_dir: str = ""  # where the fp16 models + cards go ("" = <out_dir>/ship)
    vocab_size: int = 8192
    tokenizer_max_bytes: int = 0  # 0: train the tokenizer on the whole train split
    # A tokenizer directory (relative to the project root or absolute) to reuse instead of training one:
    # keeps a new model's ids compatible with the shipped ones (repository memory, fitted mixture weights).
    tokenizer: str = ""
    # "text": tokenise each epoch from the corpus text (small corpora); "tokens": tokenise once into a cached
    # uint16 array and apply FIM to token ids (corpora of tens of millions of tokens).
    data: str = "text"
    # A token cache that a "tokens" recipe made (its <out_dir>/tokens, with corpus_manifest.json in it or
    # beside it): train from it alone, without collecting the corpus (a machine with no network or corpus
    # sources, such as a lent GPU). Needs data = "tokens" and the tokenizer the cache was made with.
    tokens_from: str = ""
    # Where each checkpoint's bf16 weights and training state are also written (a directory under version
    # control, so a run survives the machine); "" = only the full checkpoint in out_dir.
    commit_dir: str = ""
    fim_rate: float = 0.5
    spm_rate: float = 0.5
    threads: int = 0  # 0: leave torch's default
    device: str = "cpu"  # "cpu", "cuda", or "auto" (cuda when available)
    eval_lines: int = 200
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    teacher: StageConfig = field(default_factory=StageConfig)
    student: StageConfig = field(default_factory=StageConfig)


def _fill(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RecipeError(f"unknown key(s) {unknown} in [{where}]; valid keys are {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        if k == "shape":
            kwargs[k] = _fill(LlamaShape, v, f"{where}.shape")
        elif k == "corpus":
            kwargs[k] = _fill(CorpusConfig, v, "corpus")
        elif k in ("teacher", "student"):
            kwargs[k] = _fill(StageConfig, v, k)
        else:
            kwargs[k] = v
    return cls(**kwargs)


def load_recipe(path: str | Path) -> Recipe:
    """Parse a recipe TOML file; raises ``RecipeError`` with a one-sentence fix on bad input."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe {str(path)!r} not found; pass --recipe with a file from recipes/")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"recipe {str(path)!r} is not valid TOML: {exc}") from exc
    recipe = _fill(Recipe, data, "recipe")
    assert isinstance(recipe, Recipe)
    return recipe


def apply_overrides(recipe: Recipe, assignments: list[str]) -> Recipe:
    """Set ``key=value`` pairs on a loaded recipe (``teacher.max_minutes=6``, ``student.shape.hidden_size=64``,
    ``out_dir="runs/x"``); values are TOML (a bare word is taken as a string). Raises ``RecipeError``
    naming a bad key or a value of the wrong type."""
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"override {item!r} is not key=value (e.g. teacher.max_minutes=6)")
        try:
            value: Any = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        *path, name = key.strip().split(".")
        target: Any = recipe
        for part in path:
            if not hasattr(target, "__dataclass_fields__") or part not in target.__dataclass_fields__:
                raise RecipeError(f"override {item!r}: no section {part!r} in the recipe")
            target = getattr(target, part)
        if not hasattr(target, "__dataclass_fields__") or name not in target.__dataclass_fields__:
            raise RecipeError(f"override {item!r}: no key {name!r} there")
        old = getattr(target, name)
        if hasattr(old, "__dataclass_fields__"):
            raise RecipeError(f"override {item!r}: {name!r} is a section; set one of its keys")
        if isinstance(old, bool) != isinstance(value, bool) or (
                isinstance(old, (int, float)) and not isinstance(value, (int, float))) or (
                isinstance(old, str) and not isinstance(value, str)):
            raise RecipeError(f"override {item!r}: {name!r} takes a {type(old).__name__}, got {value!r}")
        if isinstance(old, float) and isinstance(value, int):
            value = float(value)
        setattr(target, name, value)
    return recipe


# ---------------------------------------------------------------------------------------------- losses

def causal_lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1))


# ---------------------------------------------------------------------------------------------- training

def _lr(cfg: StageConfig, step: int, progress: float, rewarm_from: int | None = None) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    # Cosine on progress (tokens or wall clock, whichever budget binds), so a time-capped run still anneals.
    p = min(1.0, progress)
    lr = cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))
    if rewarm_from is not None and step - rewarm_from < cfg.warmup_steps:
        # Resumed from committed weights without optimizer state: Adam's moments start from zero again,
        # so the step size ramps up as at the start instead of jumping to the scheduled rate.
        lr *= (step - rewarm_from + 1) / cfg.warmup_steps
    return lr


def _optimizer(model: torch.nn.Module, cfg: StageConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    cuda = any(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95),
                             **({"fused": True} if cuda else {}))


@torch.no_grad()
def validation_loss(model: torch.nn.Module, blocks: torch.Tensor, bf16: bool, batch_size: int = 8) -> float:
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        ids = blocks[i:i + batch_size].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=ids).logits
        total += causal_lm_loss(logits, ids).item() * len(ids)
        n += len(ids)
    model.train()
    return total / max(1, n)


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a crash mid-save never leaves a torn checkpoint


def plot_curves(history: dict[str, list[dict[str, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("train", "-"), ("val", "o-")):
        pts = history.get(key, [])
        if pts:
            ax.plot([p["tokens"] / 1e6 for p in pts], [p["loss"] for p in pts], style, label=key, markersize=3)
    ax.set_xlabel("tokens seen (M)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if history.get("train") or history.get("val"):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class _StopSignal:
    """SIGTERM/SIGINT while training: finish the step, checkpoint, return (instead of dying mid-save)."""

    def __init__(self) -> None:
        self.raised = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("signal %d: stopping after this step and checkpointing", signum)
        self.raised = True

    def __exit__(self, *exc: Any) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)


def export_committed(model: torch.nn.Module, state: dict[str, Any], history: dict[str, Any],
                     commit_dir: Path) -> None:
    """Write the bf16 weights, config and training state that go under version control (no optimizer)."""
    from safetensors.torch import save_file

    commit_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to(device="cpu", dtype=torch.bfloat16).contiguous() for k, v in model.state_dict().items()
               if not k.endswith("lm_head.weight") or not getattr(model.config, "tie_word_embeddings", False)}
    tmp = commit_dir / "model.safetensors.tmp"
    save_file(weights, str(tmp), metadata={"step": str(state["step"]), "tokens": str(state["tokens"])})
    os.replace(tmp, commit_dir / "model.safetensors")
    config: Any = model.config
    config.to_json_file(str(commit_dir / "config.json"))
    rng = torch.get_rng_state()
    (commit_dir / "state.json").write_text(json.dumps(
        {"state": state, "history": history, "torch_rng_sha256": _sha(rng)}, indent=0) + "\n")


def _sha(t: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


def _load_committed(model: torch.nn.Module, commit_dir: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    from safetensors.torch import load_file

    path = commit_dir / "model.safetensors"
    state_path = commit_dir / "state.json"
    if not path.exists() or not state_path.exists():
        return None
    from distill_code.grow import load_weights

    mismatch = load_weights(model, {k: v.float() for k, v in load_file(str(path)).items()})
    if mismatch:
        raise RecipeError(f"committed checkpoint {path} does not match the recipe's shape ({mismatch}); fix the "
                          "shape or remove it")
    data = json.loads(state_path.read_text())
    return data["state"], data["history"]


def stage_progress(cfg: StageConfig, state: dict[str, Any]) -> float:
    """How much of its budget a stage has spent (1.0: finished): tokens, or minutes when it has a time
    budget, whichever runs out first."""
    p = state["tokens"] / cfg.max_tokens
    if cfg.max_minutes > 0:
        p = max(p, state["elapsed"] / (cfg.max_minutes * 60))
    return float(p)


def _init_note(state: dict[str, Any]) -> dict[str, Any]:
    """The stage summary's record of the weights a stage started from (nothing for a random init)."""
    return {"initialized_from": state["init_from"]} if "init_from" in state else {}


def _start_from(model: torch.nn.Module, cfg: StageConfig, state: dict[str, Any]) -> None:
    """A fresh stage's weights from ``cfg.init_from`` (grown deeper when the shape asks), recorded in ``state``
    together with the source run's data position when ``cfg.init_data_position`` and the block shape allow."""
    from distill_code.grow import InitError, init_from

    try:
        info = init_from(model, cfg.init_from)
    except InitError as exc:
        raise RecipeError(str(exc)) from exc
    state["init_from"] = info
    same_blocks = info.get("step") and info.get("tokens") == info["step"] * cfg.batch_size * cfg.seq_len
    if cfg.init_data_position and same_blocks and "epoch" in info and "batch" in info:
        state["epoch"], state["batch"] = info["epoch"], info["batch"]
    log.info("initialised from %s (%d layers -> %d; %s tokens seen there); data from epoch %d batch %d",
             info["path"], info["layers"], info["grown_to"], f"{info.get('tokens', 0):,}", state["epoch"],
             state["batch"])


def train_stage(model: torch.nn.Module, cfg: StageConfig, train: Any, val_blocks: torch.Tensor,
                stage_dir: Path, resume: bool, teacher: torch.nn.Module | None = None,
                stop_after_minutes: float = 0.0, commit_dir: Path | None = None,
                stop_after_steps: int = 0) -> dict[str, Any]:
    """Train ``model`` (CE, or KD from ``teacher`` when given) until its budget is spent; return a summary.

    ``stop_after_minutes`` (or ``stop_after_steps`` of this invocation) ends it early (checkpointed,
    schedule untouched: resume continues it); so do SIGTERM and SIGINT. ``commit_dir`` also receives bf16 weights and the state at every
    checkpoint; resuming falls back to it (optimizer re-warmed) when ``stage_dir`` has no checkpoint."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = stage_dir / "ckpt.pt"
    device = next(model.parameters()).device
    opt = _optimizer(model, cfg)
    state: dict[str, Any] = {"step": 0, "tokens": 0, "epoch": 0, "batch": 0, "elapsed": 0.0}
    history: dict[str, list[dict[str, float]]] = {"train": [], "val": []}
    committed = None
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        model.to(device)
        opt.load_state_dict(ck["optimizer"])
        state, history = ck["state"], ck["history"]
        if "torch_rng" in ck:
            torch.set_rng_state(ck["torch_rng"])
        log.info("resumed %s at step %d (%d tokens)", stage_dir.name, state["step"], state["tokens"])
    elif resume and commit_dir is not None and (committed := _load_committed(model, commit_dir)) is not None:
        state, history = committed
        model.to(device)
        state["rewarm_from"] = state["step"]
        log.info("resumed %s from committed bf16 weights at step %d (%d tokens); optimizer re-warmed",
                 stage_dir.name, state["step"], state["tokens"])
    else:
        if ckpt_path.exists():
            log.warning("%s exists; starting over (pass --resume to continue it)", ckpt_path)
        if cfg.init_from:
            _start_from(model, cfg, state)
            model.to(device)
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    def progress() -> float:
        return stage_progress(cfg, state)

    def checkpoint() -> None:
        _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                      "history": history, "torch_rng": torch.get_rng_state()}, ckpt_path)
        if commit_dir is not None:
            export_committed(model, state, history, commit_dir)
        (stage_dir / "loss.json").write_text(json.dumps(history))
        plot_curves(history, stage_dir / "loss.png", f"{stage_dir.name}: {count_parameters(model) / 1e6:.1f}M params")

    if not history["val"]:
        # The untrained model's loss: the reference point that shows the loss going down.
        history["val"].append({"step": 0, "tokens": 0, "loss": validation_loss(model, val_blocks, cfg.bf16)})
    model.train()
    # The compiled forward shares the module's parameters; checkpoints and saving use the module itself.
    if cfg.compile:
        import torch._dynamo as dynamo

        dynamo.config.suppress_errors = True  # a graph that will not compile runs eagerly instead
    forward: Any = torch.compile(model) if cfg.compile else model
    t_forward: Any = torch.compile(teacher) if cfg.compile and teacher is not None else teacher
    t_session = time.monotonic()
    elapsed0 = state["elapsed"]
    step0 = state["step"]
    last_ckpt = time.monotonic()
    # The smoothed loss stays on the device: reading it every step would wait for the GPU every step.
    smooth: torch.Tensor | None = None
    done = progress() >= 1.0
    stopped = False
    stop = _StopSignal()
    stop.__enter__()
    while not done and not stopped:
        for b, ids in train.batches(state["epoch"], state["batch"]):
            ids = ids.to(device, non_blocking=True)
            lr = _lr(cfg, state["step"], progress(), state.get("rewarm_from"))
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = forward(input_ids=ids).logits
                if teacher is not None:
                    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                         enabled=cfg.bf16 or cfg.teacher_bf16):
                        t_logits = t_forward(input_ids=ids).logits
                    # One fused loss: the composed KL + CE graph cost more than the student's own step.
                    loss, _, ce = fused_forward_kl_ce(logits[:, :-1], t_logits[:, :-1], ids[:, 1:],
                                                      cfg.kd_alpha, cfg.kd_temperature)
                else:
                    ce = causal_lm_loss(logits, ids)
                    loss = ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            state["step"] += 1
            state["tokens"] += ids.numel()
            state["batch"] = b + 1
            state["elapsed"] = elapsed0 + time.monotonic() - t_session
            ce_d = ce.detach().float()
            smooth = ce_d if smooth is None else 0.9 * smooth + 0.1 * ce_d
            if state["step"] % cfg.log_every == 0:
                smooth_v = float(smooth.item())
                history["train"].append({"step": state["step"], "tokens": state["tokens"], "loss": smooth_v,
                                         "lr": lr})
                log.info("%s step %d tokens %.2fM ce %.3f loss %.3f lr %.2e %.0f tok/s", stage_dir.name,
                         state["step"], state["tokens"] / 1e6, smooth_v, loss.item(), lr,
                         state["tokens"] / max(1e-9, state["elapsed"]))
            done = progress() >= 1.0
            if state["step"] % cfg.eval_every == 0 or done:
                vl = validation_loss(model, val_blocks, cfg.bf16)
                history["val"].append({"step": state["step"], "tokens": state["tokens"], "loss": vl})
                log.info("%s step %d val loss %.4f", stage_dir.name, state["step"], vl)
            stopped = (stop.raised or (stop_after_minutes > 0
                                       and time.monotonic() - t_session > stop_after_minutes * 60)
                       or (stop_after_steps > 0 and state["step"] - step0 >= stop_after_steps))
            if done or stopped or time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60:
                checkpoint()
                last_ckpt = time.monotonic()
            if done or stopped:
                break
        else:
            state["epoch"] += 1
            state["batch"] = 0
    stop.__exit__()
    if stopped and not done:
        log.info("%s stopped at step %d (%d tokens); resume to continue", stage_dir.name, state["step"],
                 state["tokens"])
        return {"parameters": count_parameters(model), "tokens_seen": state["tokens"], "steps": state["step"],
                "stopped": True, "validation_loss": history["val"][-1]["loss"],
                **_init_note(state)}
    if not history["val"] or history["val"][-1]["step"] != state["step"]:
        history["val"].append({"step": state["step"], "tokens": state["tokens"],
                               "loss": validation_loss(model, val_blocks, cfg.bf16)})
    checkpoint()
    return {"parameters": count_parameters(model), "tokens_seen": state["tokens"], "steps": state["step"],
            "epochs_completed": state["epoch"],
            "train_minutes": state["elapsed"] / 60, "validation_loss": history["val"][-1]["loss"],
            "tokens_per_second": state["tokens"] / max(1e-9, state["elapsed"]),
            **_init_note(state)}


# ---------------------------------------------------------------------------------------------- the recipe

def prepare_data(recipe: Recipe, resume: bool) -> tuple[Any, Any, list[str]]:
    """Build the corpus manifest and the tokenizer (reused on resume); return (tokenizer, train, validation
    texts). ``train`` is the train texts, or the whole ``TokenCorpus`` when the recipe's data is "tokens"."""
    from transformers import AutoTokenizer

    out = Path(recipe.out_dir)
    tok_dir = out / "tokenizer"
    if recipe.tokens_from:
        return _prepare_from_tokens(recipe, out, tok_dir)
    entries, texts = collect_corpus(recipe.corpus)
    train_texts = split_texts(entries, texts, "train")
    val_texts = split_texts(entries, texts, "validation")
    if recipe.tokenizer:
        tok = _recipe_tokenizer(recipe, tok_dir)
    elif resume and (tok_dir / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(str(tok_dir))
    else:
        sample = train_texts
        if recipe.tokenizer_max_bytes:
            sample, size = [], 0
            for t in train_texts:
                sample.append(t)
                size += len(t)
                if size >= recipe.tokenizer_max_bytes:
                    break
        tok = train_bpe_tokenizer(sample, vocab_size=recipe.vocab_size, out_dir=tok_dir)
    if recipe.data == "tokens":
        import hashlib

        from distill_code.token_data import TokenCorpus

        digest = hashlib.sha256("".join(e.sha256 for e in entries).encode()).hexdigest()
        corpus = TokenCorpus.build(entries, texts, tok, out / "tokens", digest)
        write_manifest(entries, out / "corpus_manifest.json", corpus_sources(recipe.corpus))
        return tok, corpus, val_texts
    count_tokens(entries, texts, tok)
    write_manifest(entries, out / "corpus_manifest.json", corpus_sources(recipe.corpus))
    return tok, train_texts, val_texts


def _recipe_tokenizer(recipe: Recipe, tok_dir: Path) -> Any:
    """The recipe's own tokenizer directory, loaded and saved under the run's ``tok_dir``."""
    from transformers import AutoTokenizer

    src = Path(recipe.tokenizer)
    if not src.is_absolute():
        src = Path(__file__).resolve().parent.parent / src
    if not (src / "tokenizer.json").is_file():
        raise RecipeError(f"recipe's tokenizer {recipe.tokenizer!r} has no tokenizer.json; fix 'tokenizer'")
    tok = AutoTokenizer.from_pretrained(str(src))
    tok.save_pretrained(str(tok_dir))
    return tok


def _prepare_from_tokens(recipe: Recipe, out: Path, tok_dir: Path) -> tuple[Any, Any, list[str]]:
    """``prepare_data`` for ``tokens_from``: the cache alone, its manifest copied, validation files decoded."""
    import shutil

    from distill_code.token_data import TokenCorpus

    if recipe.data != "tokens" or not recipe.tokenizer:
        raise RecipeError("'tokens_from' needs data = \"tokens\" and 'tokenizer' (the one the cache was made "
                          "with)")
    tok = _recipe_tokenizer(recipe, tok_dir)
    cache = Path(recipe.tokens_from)
    try:
        corpus = TokenCorpus.load(cache, tok)
    except ValueError as exc:
        raise RecipeError(str(exc)) from exc
    manifest = next((m for m in (cache / "corpus_manifest.json", cache.parent / "corpus_manifest.json")
                     if m.is_file()), None)
    if manifest is None:
        raise RecipeError(f"no corpus_manifest.json in or beside {cache}; copy the one its recipe wrote there")
    out.mkdir(parents=True, exist_ok=True)
    if manifest.resolve() != (out / "corpus_manifest.json").resolve():
        shutil.copy(manifest, out / "corpus_manifest.json")
    return tok, corpus, corpus.texts(tok, "validation")


def _finished_teacher(recipe: Recipe, out: Path) -> Path:
    """The teacher the student stage distils from: ``out/teacher/final``, or, in a fresh checkout where the
    run directory is gone, the committed bf16 teacher once its state shows its budget (tokens or minutes) spent."""
    final = out / "teacher" / "final"
    if (final / "config.json").exists():
        return final
    if recipe.commit_dir:
        committed = Path(recipe.commit_dir) / "teacher"
        try:
            state = json.loads((committed / "state.json").read_text())["state"]
            finished = stage_progress(recipe.teacher, state) >= 1.0
        except (OSError, ValueError, KeyError, TypeError):
            finished = False
        if finished and (committed / "model.safetensors").exists():
            log.info("student stage: %s is missing; distilling from the committed teacher %s (bf16, %d tokens)",
                     final, committed, state["tokens"])
            return committed
    raise RecipeError(f"the student stage needs a finished teacher: {final} is missing (run the teacher stage "
                      "to its budget first)")


def _restore_finished_stage(recipe: Recipe, out: Path, role: str, tok: Any) -> dict[str, Any] | None:
    """In a fresh checkout, rebuild ``out/<role>/final`` (and its curves) from the committed bf16 checkpoint
    of a stage that saw its whole token budget, and return that stage's summary; None when there is none."""
    if not recipe.commit_dir:
        return None
    committed = Path(recipe.commit_dir) / role
    cfg: StageConfig = getattr(recipe, role)
    model: Any = build_llama(cfg.shape, vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, seed=cfg.seed)
    loaded = _load_committed(model, committed)
    if loaded is None:
        return None
    state, history = loaded
    if stage_progress(cfg, state) < 1.0:
        return None
    final = out / role / "final"
    model.save_pretrained(str(final))
    tok.save_pretrained(str(final))
    (out / role / "loss.json").write_text(json.dumps(history))
    plot_curves(history, out / role / "loss.png", f"{role}: {count_parameters(model) / 1e6:.1f}M params")
    val = history["val"][-1]["loss"] if history.get("val") else float("nan")
    log.info("ship: %s restored from the committed bf16 checkpoint %s (%d tokens)", role, committed, state["tokens"])
    return {"parameters": count_parameters(model), "tokens_seen": state["tokens"], "steps": state["step"],
            "epochs_completed": state.get("epoch", 0), "train_minutes": state["elapsed"] / 60,
            "validation_loss": val, "tokens_per_second": state["tokens"] / max(1e-9, state["elapsed"]),
            "restored_from": f"{committed} (bf16 weights)",
            **_init_note(state)}


def run_recipe(recipe: Recipe, resume: bool = False, stages: tuple[str, ...] = ("teacher", "student", "ship"),
               stop_after_minutes: float = 0.0) -> dict[str, Any]:
    """Run the recipe's stages; each writes under ``recipe.out_dir``. Returns the summary per stage.

    ``stop_after_minutes`` (> 0) ends this invocation after that long, checkpointed; a stage stopped early
    is reported with ``"stopped": true`` and later stages wait for a resumed run."""
    threads = torch.get_num_threads()
    try:
        return _run_stages(recipe, resume, stages, stop_after_minutes)
    finally:
        torch.set_num_threads(threads)  # the recipe's thread count is not left behind in the caller


def _run_stages(recipe: Recipe, resume: bool, stages: tuple[str, ...], stop_after_minutes: float = 0.0,
                ) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    device = recipe.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RecipeError(f"recipe asks for device {device!r} but no CUDA GPU is visible; set device = \"cpu\"")
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 work outside the bf16 autocast regions
        torch.backends.cudnn.allow_tf32 = True
    out = Path(recipe.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    tok, train_texts, val_texts = prepare_data(recipe, resume)
    summary_path = out / "summary.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {}

    def data_for(cfg: StageConfig) -> tuple[Any, torch.Tensor]:
        if recipe.data == "tokens":
            from distill_code.token_data import TokenBlocks

            blocks = TokenBlocks(train_texts, "train", tok, cfg.seq_len, cfg.batch_size, recipe.fim_rate,
                                 recipe.spm_rate, cfg.seed)
            held = TokenBlocks(train_texts, "validation", tok, cfg.seq_len, cfg.batch_size, recipe.fim_rate,
                               recipe.spm_rate, seed=12345).fixed_blocks(cfg.eval_blocks)
            return blocks, held
        train = PackedBlocks(train_texts, tok, cfg.seq_len, cfg.batch_size, recipe.fim_rate, recipe.spm_rate,
                             cfg.seed)
        val = PackedBlocks(val_texts, tok, cfg.seq_len, cfg.batch_size, recipe.fim_rate, recipe.spm_rate,
                           seed=12345).fixed_blocks(cfg.eval_blocks)
        return train, val

    for role in ("teacher", "student"):
        if role not in stages:
            continue
        cfg: StageConfig = getattr(recipe, role)
        model: Any = build_llama(cfg.shape, vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id, seed=cfg.seed)
        model.to(device)
        teacher: Any = None
        if role == "student":
            teacher = AutoModelForCausalLM.from_pretrained(str(_finished_teacher(recipe, out)), dtype=torch.float32)
            teacher.to(device)
        train, val = data_for(cfg)
        log.info("%s: %.2fM params, %d train chunks", role, count_parameters(model) / 1e6, len(train.chunks))
        t0 = time.monotonic()
        left = stop_after_minutes - (time.monotonic() - t_start) / 60 if stop_after_minutes > 0 else 0.0
        if stop_after_minutes > 0 and left <= 0:
            summary[role] = {"stopped": True}
            return summary
        result = train_stage(model, cfg, train, val, out / role, resume, teacher=teacher,
                             # > 0 whenever a budget was given: 0 would mean "no limit"
                             stop_after_minutes=(max(1e-6, left - (time.monotonic() - t0) / 60)
                                                 if stop_after_minutes > 0 else 0.0),
                             commit_dir=Path(recipe.commit_dir) / role if recipe.commit_dir else None)
        if result.get("stopped"):
            summary[role] = result
            return summary
        model.save_pretrained(str(out / role / "final"))
        tok.save_pretrained(str(out / role / "final"))
        # What the server needs to prompt it as trained (FIM layout, context length); the ship stage
        # writes the full card over it.
        (out / role / "final" / "card.json").write_text(json.dumps(
            {"recipe": recipe.name, "train": result, "fim_rate": recipe.fim_rate, "spm_rate": recipe.spm_rate,
             "seq_len": cfg.seq_len, "vocab_size": len(tok)}, indent=1) + "\n")
        summary[role] = result
        summary_path.write_text(json.dumps(summary, indent=1))
    if "ship" in stages:
        from distill_code.model_card import ship_models

        for role in ("teacher", "student"):
            if role not in summary or not (out / role / "final" / "config.json").exists():
                restored = _restore_finished_stage(recipe, out, role, tok)
                if restored is not None:
                    summary[role] = restored

        summary["ship"] = ship_models(recipe, summary, val_texts)
        summary_path.write_text(json.dumps(summary, indent=1))
    return summary
