"""The distillation trainer: cross-entropy, logit KD (sparse cached or dense online) and hidden-state KD.

Runs on ``accelerate`` (one CPU process by default; DDP / FSDP / DeepSpeed through an
accelerate config with ``accelerate launch``), trains the full student or LoRA adapters
(merged into a plain checkpoint on export), checkpoints and resumes, and writes the loss
curves as JSON and PNG. Batches are a pure function of (seed, step), so a resumed run sees
exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm import tqdm

from distill_code import losses as L
from distill_code.encoding import Budget, Encoded, _special, collate, encode_example, template_of
from distill_code.mining import Example
from distill_code.modeling import load_causal_lm
from distill_code.on_policy import is_on_policy_step, sample_completions
from distill_code.targets import LocalTeacher, RemoteTeacher, TargetStore, compute_targets, model_revision
from distill_code.vocab import align_models

log = logging.getLogger(__name__)
METHODS = ("ce", "logit", "logit+hidden")


@dataclass
class TrainConfig:
    """One training run; every field has a default that works on a laptop CPU."""

    method: str = "logit"  # "ce" | "logit" | "logit+hidden"
    divergence: str = "forward_kl"  # see distill_code.losses.DIVERGENCES
    targets: str = "sparse"  # "sparse": cached top-k + tail; "dense": full teacher logits online
    top_k: int = 16
    temperature: float = 1.0
    beta: float = 0.5  # generalized JSD only
    # KD weight; 1 - alpha goes to cross-entropy. 0.5 as in recipes/distill-cpu.toml: at 0.9 the starter student
    # copied the unadapted starter teacher's early endings (served ES 0.079 -> 0.010 on click; 0.5: 0.153).
    alpha: float = 0.5
    # Where the reference completion ends (its end-of-middle token) the student learns from the
    # teacher's distribution like every other token ("teacher") or from the reference ("reference").
    # Measured (bench/results/distill_10m_teacher.json): no change in where KD students stop.
    end_token: str = "teacher"
    hidden_weight: float = 1.0
    # "cosine" (1 - cos through the projection) is bounded; "mse" grows with the teacher's residual-stream
    # magnitude: with the ~10M teacher it was ~20x the logit loss and the logit+hidden student lost
    # 0.5 NLL to it (5.118 vs cosine 4.613; bench/results/distill_10m_teacher.json, --hidden-kind).
    hidden_kind: str = "cosine"
    cross_tokenizer: str | None = None  # "uld" to allow teachers with another tokenizer
    # Mix the repository's ∞-gram (the other files of the training split; the example's own file left
    # out) into the teacher's targets, with the serving mix table (distill_code.memory_teacher).
    memory_teacher: bool = False
    # On-policy distillation (distill_code.on_policy): this fraction of the steps trains on completions the
    # student samples itself (at ``on_policy_temperature``, up to ``on_policy_max_new`` tokens), every
    # sampled position scored by the teacher online, with ``on_policy_divergence``; the rest stay supervised.
    on_policy: float = 0.0
    on_policy_divergence: str = "reverse_kl"
    on_policy_temperature: float = 1.0
    on_policy_max_new: int = 32
    include_explain: bool = True  # also train on (code -> docstring/comment) pairs in the explain layout
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 5
    steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = 50
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16" (accelerate)
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.divergence not in L.DIVERGENCES:
            raise ValueError(f"unknown divergence {self.divergence!r}; choose one of {', '.join(L.DIVERGENCES)}")
        if self.end_token not in ("reference", "teacher"):
            raise ValueError(f"end_token must be 'reference' or 'teacher', got {self.end_token!r}")
        if self.targets not in ("sparse", "dense"):
            raise ValueError(f"targets must be 'sparse' or 'dense', got {self.targets!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        if self.memory_teacher and (self.method == "ce" or self.targets != "sparse"):
            raise ValueError("memory_teacher mixes the ∞-gram into cached teacher targets: it needs a logit "
                             "method with targets = \"sparse\"")
        if not 0.0 <= self.on_policy <= 1.0:
            raise ValueError(f"on_policy is the fraction of on-policy steps, in [0, 1]; got {self.on_policy}")
        if self.on_policy > 0:
            if self.method == "ce":
                raise ValueError("on_policy distils from the teacher on the student's samples: it needs a logit method")
            if self.on_policy_divergence not in L.DIVERGENCES:
                raise ValueError(f"unknown on_policy_divergence {self.on_policy_divergence!r}; choose one of "
                                 f"{', '.join(L.DIVERGENCES)}")
            if self.on_policy_max_new < 1 or self.on_policy_temperature < 0:
                raise ValueError("on_policy_max_new must be at least 1 and on_policy_temperature at least 0")


@dataclass
class TrainResult:
    model_dir: Path
    history: list[dict[str, float]]
    wall_s: float
    target_stats: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Indices of the batch at ``step``: epochs are seeded permutations, so any step can be recomputed."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return perm[pos * batch_size: (pos + 1) * batch_size] or perm[:batch_size]


def _lr_lambda(warmup: int, total: int):  # type: ignore[no-untyped-def]
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def write_curves(history: list[dict[str, float]], out_dir: Path, title: str = "") -> None:
    """Loss curves as ``loss_curves.json`` and ``loss_curves.png``."""
    (out_dir / "loss_curves.json").write_text(json.dumps(history))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    keys = sorted({k for h in history for k in h if k != "step" and k != "lr"})
    for k in keys:
        pts = [(h["step"], h[k]) for h in history if k in h]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "loss_curves.png", dpi=100)
    plt.close(fig)


def train(cfg: TrainConfig, student_path: str | Path, examples: list[Example], out_dir: str | Path,
          teacher_paths: list[str] | None = None, teacher_weights: list[float] | None = None,
          budget: Budget | None = None, targets_cache: str | Path | None = None, resume: bool = True,
          teacher_server: tuple[str, str] | None = None, stop_after: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train the student at ``student_path`` on the FIM ``examples``; the result lands in ``out_dir/model``.

    ``teacher_server`` = (base URL, model name) of an OpenAI-compatible server scores the targets
    instead of in-process teachers (sparse logit KD only). ``stop_after`` ends the session at that
    step with a checkpoint (time-boxed runs); calling again with ``resume`` continues the same schedule.
    """
    cfg.validate()
    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    budget = budget or Budget()
    acc = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
    set_seed(cfg.seed)
    student, tok = load_causal_lm(student_path)
    template = template_of(tok)
    tasks = ("fim", "explain") if cfg.include_explain else ("fim",)
    encoded = [e for e in (encode_example(x, tok, template, budget) for x in examples if x.task in tasks)
               if e.n_completion > 0]
    if not encoded:
        raise ValueError("no FIM training examples to train on; mine a repository with source files first")
    pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    # The token encode_example appends to every completion.
    end_id = _special(tok, template.eos) if cfg.end_token == "reference" else None

    teacher: LocalTeacher | None = None
    memory_teacher: Any = None
    sparse: dict[str, L.SparseTargets] = {}
    target_stats: dict[str, Any] = {}
    need_teacher = cfg.method != "ce"
    cross: dict[str, Any] | None = None
    if cfg.on_policy > 0 and teacher_server is not None:
        raise ValueError("on_policy needs an in-process teacher: a teacher server scores cached targets only")
    if need_teacher and teacher_server is not None:
        if cfg.method != "logit" or cfg.targets != "sparse":
            raise ValueError("a teacher server provides sparse logit targets only; use method = \"logit\", "
                             "targets = \"sparse\"")
        remote = RemoteTeacher(teacher_server[0], teacher_server[1], tok, f"server:{teacher_server[1]}")
        sparse, target_stats = _sparse_targets(cfg, encoded, remote, tok, targets_cache or out / "targets.sqlite",
                                               pad_id, progress)
    elif need_teacher:
        if not teacher_paths:
            raise ValueError(f"method {cfg.method!r} needs a teacher; set teacher.paths in the recipe")
        # Teachers only run forward: half precision on accelerators halves their memory.
        t_dtype = "bfloat16" if cfg.mixed_precision == "bf16" and acc.device.type != "cpu" else "float32"
        loaded = [load_causal_lm(p, dtype=t_dtype) for p in teacher_paths]
        for m, _ in loaded:
            m.to(acc.device)
        alignment = align_models(student, tok, loaded[0][0], loaded[0][1], cfg.cross_tokenizer)
        if not alignment.token_level:
            if cfg.method != "logit" or cfg.targets != "dense" or len(loaded) > 1:
                raise ValueError("a teacher with another tokenizer (ULD) needs method = \"logit\", "
                                 "targets = \"dense\" and a single teacher")
            # The teacher reads each example through its own tokenizer and FIM template.
            t_tok = loaded[0][1]
            t_template = template_of(t_tok)
            by_id = {x.id: x for x in examples}
            cross = {"pad": int(t_tok.pad_token_id if t_tok.pad_token_id is not None else t_tok.eos_token_id),
                     "enc": {e.example_id: encode_example(by_id[e.example_id], t_tok, t_template, budget)
                             for e in encoded}}
        if cfg.on_policy > 0 and not alignment.token_level:
            raise ValueError("on_policy needs a teacher sharing the student's vocabulary")
        for m, t in loaded[1:]:
            if align_models(student, tok, m, t).mode != alignment.mode:
                raise ValueError("all ensemble teachers must share one vocabulary")
        teacher = LocalTeacher([m for m, _ in loaded], teacher_weights or [1.0] * len(loaded), alignment,
                               "+".join(model_revision(p) for p in teacher_paths), device=str(acc.device))
        if cfg.memory_teacher:
            if not alignment.token_level:
                raise ValueError("memory_teacher needs a teacher sharing the student's vocabulary")
            from distill_code.memory_mix import load_weights
            from distill_code.memory_teacher import MemoryTeacher, build_shard, repository_texts

            weights, warning = load_weights(Path(student_path))
            if warning:
                log.warning("%s", warning)
            fim_ids = (_special(tok, template.prefix), _special(tok, template.suffix), _special(tok, template.middle))
            memory_teacher = MemoryTeacher(teacher, build_shard(repository_texts(examples), tok),
                                           {x.id: x.path for x in examples}, weights, fim_ids)
            teacher = memory_teacher
        if cfg.targets == "sparse":
            sparse, target_stats = _sparse_targets(cfg, encoded, teacher, tok, targets_cache or out / "targets.sqlite",
                                                   pad_id, progress)
            if memory_teacher is not None:
                target_stats["memory"] = asdict(memory_teacher.stats)

    hidden_loss: L.HiddenStateLoss | None = None
    if cfg.method == "logit+hidden":
        assert teacher is not None
        t_model = teacher.models[0]
        hidden_loss = L.HiddenStateLoss(
            student.config.hidden_size, t_model.config.hidden_size,
            L.default_layer_map(student.config.num_hidden_layers, t_model.config.num_hidden_layers),
            cfg.hidden_kind)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        student = get_peft_model(student, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                     lora_dropout=cfg.lora_dropout,
                                                     target_modules=cfg.lora_targets, task_type="CAUSAL_LM"))
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    if hidden_loss is not None:
        params += list(hidden_loss.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup_steps, cfg.steps))
    if hidden_loss is not None:
        student, hidden_loss, optimizer, scheduler = acc.prepare(student, hidden_loss, optimizer, scheduler)
    else:
        student, optimizer, scheduler = acc.prepare(student, optimizer, scheduler)

    ckpt = out / "checkpoint"
    history: list[dict[str, float]] = []
    start_step = 0
    _recover_dir(ckpt, "trainer_state.json")
    _recover_dir(out / "model", "config.json")
    if resume and (ckpt / "trainer_state.json").exists():
        acc.load_state(str(ckpt))
        state = json.loads((ckpt / "trainer_state.json").read_text())
        start_step, history = int(state["step"]), list(state["history"])
        log.info("resuming from step %d", start_step)

    end_step = min(cfg.steps, stop_after) if stop_after else cfg.steps
    stop_ids = {i for i in (tok.convert_tokens_to_ids(t) for t in template.stop_strings())
                if i is not None and i != tok.unk_token_id}
    on_policy_s = 0.0
    bar = tqdm(range(start_step, end_step), desc=f"train {cfg.method}", disable=not progress, leave=False)
    for step in bar:
        batch_enc: list[Encoded] = [encoded[i] for i in _batch_indices(len(encoded), cfg.batch_size, cfg.seed, step)]
        on_policy = is_on_policy_step(cfg.seed, step, cfg.on_policy)
        if on_policy:
            t_sample = time.perf_counter()
            batch_enc = sample_completions(acc.unwrap_model(student), batch_enc, stop_ids, cfg.on_policy_max_new,
                                           cfg.on_policy_temperature, seed=cfg.seed * 1_000_003 + step)
            on_policy_s += time.perf_counter() - t_sample
        b = {k: v.to(acc.device) for k, v in collate(batch_enc, pad_id).items()}
        with acc.accumulate(student):
            if on_policy:
                assert teacher is not None
                parts = _on_policy_losses(cfg, student, teacher, b, batch_enc, pad_id)
            else:
                parts = _step_losses(cfg, student, teacher, hidden_loss, b, batch_enc, sparse, pad_id, cross,
                                     end_id)
            acc.backward(parts["loss"])
            if acc.sync_gradients and cfg.max_grad_norm:
                acc.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        rec = {"step": step + 1, "lr": scheduler.get_last_lr()[0], **{k: float(v.detach()) for k, v in parts.items()}}
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}")
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            _save_checkpoint(acc, ckpt, step + 1, history)
    bar.close()
    if end_step < cfg.steps:
        _save_checkpoint(acc, ckpt, end_step, history)

    acc.wait_for_everyone()
    model_dir = out / "model"
    if acc.is_main_process:
        final = acc.unwrap_model(student)
        if cfg.lora:
            final = final.merge_and_unload()  # a plain checkpoint: serving needs no peft
        # Written aside and renamed into place: a kill -9 mid-save leaves no half model at ``model``.
        partial = out / "model.partial"
        shutil.rmtree(partial, ignore_errors=True)
        final.save_pretrained(str(partial))
        tok.save_pretrained(str(partial))
        _swap_into_place(partial, model_dir)
        write_curves(history, out, title=f"{cfg.method} ({cfg.divergence}, T={cfg.temperature})")
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
        if ckpt.exists() and end_step == cfg.steps:  # complete: a later run in this dir must not resume it
            shutil.rmtree(ckpt)
    if cfg.on_policy > 0:
        target_stats["on_policy"] = {"steps": sum(is_on_policy_step(cfg.seed, s, cfg.on_policy)
                                                  for s in range(start_step, end_step)),
                                     "sampling_s": round(on_policy_s, 2)}
    return TrainResult(model_dir, history, time.perf_counter() - t_start, target_stats, start_step)


def _sparse_targets(cfg: TrainConfig, encoded: list[Encoded], teacher: LocalTeacher | RemoteTeacher, tok: Any,
                    cache: str | Path, pad_id: int, progress: bool) -> tuple[dict[str, L.SparseTargets], dict[str, Any]]:
    """Targets of the examples this run's supervised batches will actually visit (batches, and which steps are
    on-policy, are known in advance; on-policy steps are scored online on the student's samples)."""
    visited = sorted({i for s in range(cfg.steps) if not is_on_policy_step(cfg.seed, s, cfg.on_policy)
                      for i in _batch_indices(len(encoded), cfg.batch_size, cfg.seed, s)})
    used = [encoded[i] for i in visited]
    store = TargetStore(cache)
    keys, stats = compute_targets(used, teacher, tok, store, k=cfg.top_k, pad_id=pad_id, progress=progress)
    sparse: dict[str, L.SparseTargets] = {}
    for e, key in zip(used, keys, strict=True):
        got = store.get(key)
        assert got is not None
        sparse[e.example_id] = got
    store.close()
    return sparse, {**asdict(stats), "bytes_per_token": stats.bytes_per_token}


def _save_checkpoint(acc: Accelerator, ckpt: Path, step: int, history: list[dict[str, float]]) -> None:
    """Write the checkpoint beside the current one and swap it in, so that a kill -9 at any moment leaves
    one complete checkpoint: the previous one or this one (never new weights under an old step count)."""
    partial = ckpt.with_name(ckpt.name + ".partial")
    if acc.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(partial), safe_serialization=False)
    if acc.is_main_process:
        (partial / "trainer_state.json").write_text(json.dumps({"step": step, "history": history}))
        _swap_into_place(partial, ckpt)


def _swap_into_place(new: Path, target: Path) -> None:
    """Replace ``target`` by the complete directory ``new``: target -> target.old, new -> target, drop
    the old. A crash between the renames leaves only ``target.old``, which ``_recover_dir`` puts back."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _recover_dir(target: Path, marker: str) -> None:
    """After a crash: put back a ``target`` that a swap left at ``.old`` (when it holds ``marker``, i.e.
    is complete); drop a half-written ``.partial``."""
    old = target.with_name(target.name + ".old")
    if not target.exists() and (old / marker).exists():
        log.warning("a previous run stopped while replacing %s; using the earlier one", target)
        old.rename(target)
    for leftover in (target.with_name(target.name + ".partial"), old):
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)


def _kd_with_end(at_end: torch.Tensor | None, kd: Any, selected: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if at_end is None:
        return kd(None)
    return L.reference_at(at_end, kd, selected, labels)


def _on_policy_losses(cfg: TrainConfig, student: Any, teacher: LocalTeacher, b: dict[str, torch.Tensor],
                      batch_enc: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """The divergence to the teacher on the student's own sampled completions (no reference to learn from)."""
    out = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    selected = out.logits[b["mask"]]
    t_log = torch.cat(teacher.completion_logprobs(batch_enc, pad_id)).to(selected.device)
    kd = L.divergence(cfg.on_policy_divergence, selected, t_log, None, cfg.temperature, cfg.beta)
    return {"loss": kd, "on_policy_kd": kd.detach()}


def _step_losses(cfg: TrainConfig, student: Any, teacher: LocalTeacher | None,
                 hidden_loss: Any, b: dict[str, torch.Tensor], batch_enc: list[Encoded],
                 sparse: dict[str, L.SparseTargets], pad_id: int,
                 cross: dict[str, Any] | None = None, end_id: int | None = None) -> dict[str, torch.Tensor]:
    want_hidden = hidden_loss is not None
    out = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=want_hidden)
    mask = b["mask"]
    ce = L.masked_cross_entropy(out.logits, b["labels"], mask)
    if cfg.method == "ce":
        return {"loss": ce, "ce": ce.detach()}
    selected = out.logits[mask]  # (N, V): completion positions only, in batch order
    labels = b["labels"][mask]
    # Positions whose reference token ends the completion: learnt from the reference (cross-entropy).
    at_end = labels == end_id if end_id is not None and cross is None else None
    t_out = None
    if want_hidden:
        assert teacher is not None
        with torch.no_grad():
            t_out = teacher.models[0](input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                      output_hidden_states=want_hidden)
    if cross is not None:
        assert teacher is not None
        tb = collate([cross["enc"][e.example_id] for e in batch_enc], cross["pad"])
        with torch.no_grad():
            t_logits = teacher.models[0](input_ids=tb["input_ids"].to(mask.device),
                                         attention_mask=tb["attention_mask"].to(mask.device)).logits
        kd = L.uld_loss(out.logits, t_logits, mask, tb["mask"].to(mask.device), cfg.temperature)
    elif cfg.targets == "sparse":
        tg = [sparse[e.example_id] for e in batch_enc]
        targets = L.SparseTargets(torch.cat([t.ids for t in tg]).to(selected.device),
                                  torch.cat([t.logprobs for t in tg]).to(selected.device),
                                  torch.cat([t.tail for t in tg]).to(selected.device))
        kd = _kd_with_end(at_end, lambda m: L.sparse_divergence(cfg.divergence, selected, targets, m,
                                                                 cfg.temperature, cfg.beta), selected, labels)
    else:
        # Log-probabilities are valid logits; this path mixes ensembles and slices vocabularies.
        assert teacher is not None
        t_logits = torch.cat(teacher.completion_logprobs(batch_enc, pad_id)).to(selected.device)
        kd = _kd_with_end(at_end, lambda m: L.divergence(cfg.divergence, selected, t_logits, m, cfg.temperature,
                                                          cfg.beta), selected, labels)
    loss = L.mix_with_ce(kd, ce, cfg.alpha)
    parts = {"ce": ce.detach(), "kd": kd.detach()}
    if want_hidden:
        assert t_out is not None
        hid = hidden_loss(out.hidden_states, t_out.hidden_states, b["attention_mask"].bool())
        loss = loss + cfg.hidden_weight * hid
        parts["hidden"] = hid.detach()
    parts["loss"] = loss
    return parts
