"""Knowledge-distillation losses as pure functions: KL both ways, generalized JSD, TVD, sparse top-k, hidden states.

Conventions shared by every loss here:

* ``student_logits`` / ``teacher_logits`` have shape ``(..., V)`` and are already aligned
  (position ``t`` predicts token ``t + 1``; the caller shifts once).
* ``mask`` has the leading shape ``(...)``; only positions where it is true/non-zero count,
  which is how losses are restricted to the *completion* tokens of a FIM prompt.
  ``None`` means every position counts.
* The result is the mean over counted positions (0 when none are counted, with a gradient).
* ``temperature`` softens both distributions; the loss is multiplied by ``T**2`` so that
  gradient magnitudes stay comparable across temperatures (Hinton et al., 2015).
* Sparse variants take teacher targets as the top-k token ids and log-probabilities at
  ``T = 1`` plus a tail bucket (log of the remaining probability mass) and compare the
  student on the same ``k + 1`` buckets, which is exact at ``T = 1``; at other
  temperatures the tail is treated as one pseudo-token (its inner shape is unknown).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tvd")


# ---------------------------------------------------------------------------- helpers


def masked_mean(per_position: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``per_position`` over positions where ``mask`` is set (0.0 when none are)."""
    if mask is None:
        return per_position.mean()
    m = mask.to(per_position.dtype)
    if m.shape != per_position.shape:
        raise ValueError(f"mask shape {tuple(m.shape)} does not match the loss positions {tuple(per_position.shape)}")
    # clamp keeps an all-masked batch at exactly 0 instead of nan.
    return (per_position * m).sum() / m.sum().clamp_min(1.0)


def _kl_from_logprobs(p_log: Tensor, q_log: Tensor) -> Tensor:
    """KL(p || q) summed over the last axis; positions where p is 0 contribute 0 even if q is 0."""
    p = p_log.exp()
    diff = torch.where(p > 0, p_log - q_log, torch.zeros_like(p_log))
    return (p * diff).sum(-1)


def _check_pair(student: Tensor, teacher: Tensor) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher shapes differ ({tuple(student.shape)} vs {tuple(teacher.shape)}); "
            "align the vocabularies with distill_code.vocab first"
        )


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _upcast(x: Tensor) -> Tensor:
    # float32 at least: bf16 log_softmax over a 150k vocabulary loses the tail; float64 stays.
    return x if x.dtype == torch.float64 else x.float()


def _tempered(logits: Tensor, temperature: float) -> Tensor:
    return F.log_softmax(_upcast(logits) / temperature, dim=-1)


# ------------------------------------------------------------------ per-position cores


def _forward_kl_pos(s_log: Tensor, t_log: Tensor) -> Tensor:
    return _kl_from_logprobs(t_log, s_log)


def _reverse_kl_pos(s_log: Tensor, t_log: Tensor) -> Tensor:
    return _kl_from_logprobs(s_log, t_log)


def _jsd_pos(s_log: Tensor, t_log: Tensor, beta: float) -> Tensor:
    """Generalized JSD normalised by beta(1-beta), so beta -> 0 / 1 tend to forward / reverse KL.

    With M = beta*P_teacher + (1-beta)*Q_student, JSD_beta = beta*KL(P||M) + (1-beta)*KL(Q||M)
    (TRL's weighting). Near beta = 0 it is beta*KL(P||Q) + O(beta^2), so dividing by
    beta(1-beta) gives a loss continuous in beta whose endpoints are the two KL directions.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return _forward_kl_pos(s_log, t_log)
    if beta == 1.0:
        return _reverse_kl_pos(s_log, t_log)
    m_log = torch.logsumexp(torch.stack([t_log + math.log(beta), s_log + math.log(1.0 - beta)]), dim=0)
    jsd = beta * _kl_from_logprobs(t_log, m_log) + (1.0 - beta) * _kl_from_logprobs(s_log, m_log)
    return jsd / (beta * (1.0 - beta))


def _tvd_pos(s_log: Tensor, t_log: Tensor) -> Tensor:
    return 0.5 * (t_log.exp() - s_log.exp()).abs().sum(-1)


def _divergence_pos(kind: str, s_log: Tensor, t_log: Tensor, beta: float) -> Tensor:
    if kind == "forward_kl":
        return _forward_kl_pos(s_log, t_log)
    if kind == "reverse_kl":
        return _reverse_kl_pos(s_log, t_log)
    if kind == "jsd":
        return _jsd_pos(s_log, t_log, beta)
    if kind == "tvd":
        return _tvd_pos(s_log, t_log)
    raise ValueError(f"unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")


# ---------------------------------------------------------------------- dense losses


def divergence(kind: str, student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
               temperature: float = 1.0, beta: float = 0.5, scale_by_t2: bool = True) -> Tensor:
    """Divergence ``kind`` (one of ``DIVERGENCES``) between full-vocabulary distributions."""
    _check_pair(student_logits, teacher_logits)
    _check_temperature(temperature)
    s_log = _tempered(student_logits, temperature)
    t_log = _tempered(teacher_logits.detach(), temperature)
    loss = masked_mean(_divergence_pos(kind, s_log, t_log, beta), mask)
    return loss * temperature**2 if scale_by_t2 else loss


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
               temperature: float = 1.0) -> Tensor:
    """KL(teacher || student): mean-seeking, the classic distillation loss."""
    return divergence("forward_kl", student_logits, teacher_logits, mask, temperature)


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
               temperature: float = 1.0) -> Tensor:
    """KL(student || teacher): mode-seeking (MiniLLM); suits a student too small to cover the teacher."""
    return divergence("reverse_kl", student_logits, teacher_logits, mask, temperature)


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
                    beta: float = 0.5, temperature: float = 1.0) -> Tensor:
    """Generalized Jensen-Shannon divergence (GKD), normalised so beta=0 is forward KL and beta=1 reverse KL."""
    return divergence("jsd", student_logits, teacher_logits, mask, temperature, beta=beta)


def tvd(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
        temperature: float = 1.0) -> Tensor:
    """Total variation distance, 0.5 * sum |p - q|: bounded in [0, 1] per position before T² scaling."""
    return divergence("tvd", student_logits, teacher_logits, mask, temperature)


class _FusedKdCe(torch.autograd.Function):
    """alpha * T² * KL(teacher_T || student_T) + (1 - alpha) * CE, with a hand-written gradient.

    The autograd graph of the composed loss keeps several (positions x vocabulary) float32
    tensors alive and walks them again on the way back; over an 8k vocabulary that cost the
    starter's student stage more than its own forward and backward. Here the forward builds
    the gradient once, (alpha * T * (q_T - p_T) + (1 - alpha) * (q - onehot)) / N, and backward
    only scales it.
    """

    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, labels: Tensor, alpha: float, temperature: float):  # type: ignore[override]
        n = s.size(0)
        ctx.in_dtype = s.dtype
        s = _upcast(s)
        s_log_t = F.log_softmax(s if temperature == 1.0 else s / temperature, dim=-1)
        t_log_t = F.log_softmax(_upcast(t) if temperature == 1.0 else _upcast(t) / temperature, dim=-1)
        p_t = t_log_t.exp()
        # sum p (log p - log q) as two dot products: no (positions x vocabulary) temporaries
        flat_p = p_t.view(-1)
        kl = (torch.dot(flat_p, t_log_t.view(-1)) - torch.dot(flat_p, s_log_t.view(-1))) / n * temperature**2
        del t_log_t, flat_p
        if temperature == 1.0:
            ce = -s_log_t.gather(-1, labels[:, None]).sum() / n
            # q - alpha * p - (1 - alpha) * onehot, in place over the student's log-probs
            grad = s_log_t.exp_().sub_(p_t, alpha=alpha)
        else:
            s_log = F.log_softmax(s, dim=-1)
            ce = -s_log.gather(-1, labels[:, None]).sum() / n
            grad = s_log_t.exp_().sub_(p_t).mul_(alpha * temperature).add_(s_log.exp_(), alpha=1.0 - alpha)
        del p_t
        grad.scatter_add_(-1, labels[:, None], torch.full(labels[:, None].shape, alpha - 1.0, dtype=grad.dtype,
                                                                device=grad.device))
        ctx.save_for_backward(grad.div_(n))
        ctx.mark_non_differentiable(kl, ce)
        return alpha * kl + (1.0 - alpha) * ce, kl, ce

    @staticmethod
    def backward(ctx, g_loss: Tensor, _g_kl: Tensor, _g_ce: Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad.mul_(g_loss).to(ctx.in_dtype), None, None, None, None


def fused_forward_kl_ce(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, alpha: float,
                        temperature: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """``alpha * forward_kl + (1 - alpha) * cross_entropy`` over every position, memory- and time-lean.

    Returns (loss, kd, ce); kd and ce are detached, for logging. Same value and gradient as
    ``mix_with_ce(forward_kl(s, t, temperature=T), masked_cross_entropy(s, labels), alpha)``
    without a mask (a test holds them equal).
    """
    _check_pair(student_logits, teacher_logits)
    _check_temperature(temperature)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    v = student_logits.size(-1)
    return _FusedKdCe.apply(student_logits.reshape(-1, v), teacher_logits.detach().reshape(-1, v),
                            labels.reshape(-1), float(alpha), float(temperature))


# --------------------------------------------------------------------- sparse top-k


@dataclass
class SparseTargets:
    """Teacher top-k targets: ids ``(..., k)``, log-probs ``(..., k)`` and tail log-mass ``(...)`` at T = 1."""

    ids: Tensor
    logprobs: Tensor
    tail: Tensor

    def bucket_logprobs(self) -> Tensor:
        """The teacher's ``k + 1`` bucket log-distribution: top-k then the tail."""
        return torch.cat([_upcast(self.logprobs), _upcast(self.tail).unsqueeze(-1)], dim=-1)

    def to(self, device: torch.device | str) -> SparseTargets:
        return SparseTargets(self.ids.to(device), self.logprobs.to(device), self.tail.to(device))


def tail_logmass(topk_logprobs: Tensor) -> Tensor:
    """log(1 - sum(exp(topk_logprobs))) computed stably; -inf when the top-k hold all the mass."""
    total = torch.logsumexp(_upcast(topk_logprobs), dim=-1).clamp_max(0.0)
    # log1mexp(x) = log(-expm1(x)); exact 0 maps to -inf, which the KL core handles.
    return torch.log(-torch.expm1(total))


def sparse_targets_from_logits(teacher_logits: Tensor, k: int) -> SparseTargets:
    """Top-k targets (at T = 1) of full teacher logits, as stored by ``distill_code.targets``."""
    logp = F.log_softmax(_upcast(teacher_logits), dim=-1)
    vals, ids = logp.topk(min(k, logp.shape[-1]), dim=-1)
    return SparseTargets(ids=ids, logprobs=vals, tail=tail_logmass(vals))


def student_bucket_logprobs(student_logits: Tensor, ids: Tensor) -> Tensor:
    """The student's log-probabilities on the teacher's top-k ids plus the rest as one tail bucket."""
    logits = _upcast(student_logits)
    log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
    top = logits.gather(-1, ids) - log_z
    # Tail from the logits directly (not 1 - sum) so it stays accurate when the top-k hold ~all mass.
    # A finite floor instead of -inf: logsumexp over an all -inf row has a nan gradient.
    in_topk = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, ids, True)
    rest = torch.where(in_topk, logits.detach().amin() - 1e4, logits)
    tail = torch.logsumexp(rest, dim=-1, keepdim=True) - log_z
    return torch.cat([top, tail], dim=-1)


def sparse_divergence(kind: str, student_logits: Tensor, targets: SparseTargets, mask: Tensor | None = None,
                      temperature: float = 1.0, beta: float = 0.5, scale_by_t2: bool = True) -> Tensor:
    """Divergence ``kind`` between the student and sparse teacher targets on ``k + 1`` buckets."""
    _check_temperature(temperature)
    if targets.ids.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(
            f"sparse targets cover positions {tuple(targets.ids.shape[:-1])} but the student has "
            f"{tuple(student_logits.shape[:-1])}"
        )
    if int(targets.ids.max()) >= student_logits.shape[-1] or int(targets.ids.min()) < 0:
        raise ValueError("sparse target ids fall outside the student vocabulary; align vocabularies first")
    s_b = student_bucket_logprobs(student_logits, targets.ids)
    t_b = targets.bucket_logprobs().detach()
    if temperature != 1.0:
        # Treat each bucket as a pseudo-token and re-temper; -inf buckets stay -inf.
        s_b = F.log_softmax(s_b / temperature, dim=-1)
        t_b = F.log_softmax(t_b / temperature, dim=-1)
    loss = masked_mean(_divergence_pos(kind, s_b, t_b, beta), mask)
    return loss * temperature**2 if scale_by_t2 else loss


def sparse_forward_kl(student_logits: Tensor, targets: SparseTargets, mask: Tensor | None = None,
                      temperature: float = 1.0) -> Tensor:
    """Forward KL against stored top-k + tail teacher targets."""
    return sparse_divergence("forward_kl", student_logits, targets, mask, temperature)


def sparse_reverse_kl(student_logits: Tensor, targets: SparseTargets, mask: Tensor | None = None,
                      temperature: float = 1.0) -> Tensor:
    """Reverse KL against stored top-k + tail teacher targets."""
    return sparse_divergence("reverse_kl", student_logits, targets, mask, temperature)


def sparse_generalized_jsd(student_logits: Tensor, targets: SparseTargets, mask: Tensor | None = None,
                           beta: float = 0.5, temperature: float = 1.0) -> Tensor:
    """Normalised generalized JSD against stored top-k + tail teacher targets."""
    return sparse_divergence("jsd", student_logits, targets, mask, temperature, beta=beta)


def sparse_tvd(student_logits: Tensor, targets: SparseTargets, mask: Tensor | None = None,
               temperature: float = 1.0) -> Tensor:
    """Total variation distance against stored top-k + tail teacher targets."""
    return sparse_divergence("tvd", student_logits, targets, mask, temperature)


# -------------------------------------------------------------- cross-entropy, mixing


def masked_cross_entropy(student_logits: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Token cross-entropy of aligned logits ``(..., V)`` against ``labels`` ``(...)``, masked."""
    ce = F.cross_entropy(_upcast(student_logits).reshape(-1, student_logits.shape[-1]), labels.reshape(-1),
                         reduction="none").reshape(labels.shape)
    return masked_mean(ce, mask)


def reference_at(positions: Tensor, per_position_kd: Callable[[Tensor], Tensor], student_logits: Tensor,
                 labels: Tensor) -> Tensor:
    """A divergence over completion positions, with cross-entropy on the reference at ``positions``.

    ``per_position_kd(mask)`` is the divergence's masked mean over the positions in ``mask``; the result
    weighs both parts by their share of positions, so with no ``positions`` it equals the divergence.
    Used for the end-of-completion token: where a completion ends is the repository's fact, and a
    student matching a teacher's soft distribution there learnt to stop late (see bench_distill).
    """
    n = labels.numel()
    if n == 0:
        return student_logits.sum() * 0.0
    rest = ~positions
    loss = per_position_kd(rest) * (rest.sum() / n)
    if bool(positions.any()):
        loss = loss + F.cross_entropy(student_logits[positions].float(), labels[positions], reduction="sum") / n
    return loss


def mix_with_ce(kd_loss: Tensor, ce_loss: Tensor, alpha: float) -> Tensor:
    """``alpha * kd + (1 - alpha) * ce``: alpha = 1 is pure distillation, 0 plain fine-tuning."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha * kd_loss + (1.0 - alpha) * ce_loss


# ------------------------------------------------------------------ cross-tokenizer


def uld_loss(student_logits: Tensor, teacher_logits: Tensor, student_mask: Tensor, teacher_mask: Tensor,
             temperature: float = 1.0) -> Tensor:
    """Universal Logit Distillation (Boizard et al., 2024) for different tokenizers.

    Sorted probability vectors are compared with an L1 distance (a closed-form Wasserstein
    bound), so no token correspondence is needed; the i-th completion position of the student
    is paired with the i-th of the teacher, up to the shorter of the two, per sequence.
    Inputs are ``(B, L, V)`` logits and ``(B, L)`` masks; lengths and vocabularies may differ.
    """
    _check_temperature(temperature)
    per_seq: list[Tensor] = []
    for b in range(student_logits.shape[0]):
        s = F.softmax(_upcast(student_logits[b][student_mask[b].bool()]) / temperature, dim=-1)
        t = F.softmax(_upcast(teacher_logits[b][teacher_mask[b].bool()].detach()) / temperature, dim=-1)
        n = min(s.shape[0], t.shape[0])
        if n == 0:
            continue
        s_sorted = s[:n].sort(dim=-1, descending=True).values
        t_sorted = t[:n].sort(dim=-1, descending=True).values
        width = max(s_sorted.shape[-1], t_sorted.shape[-1])
        s_sorted = F.pad(s_sorted, (0, width - s_sorted.shape[-1]))
        t_sorted = F.pad(t_sorted, (0, width - t_sorted.shape[-1]))
        per_seq.append((s_sorted - t_sorted).abs().sum(-1))
    if not per_seq:
        return student_logits.sum() * 0.0
    return torch.cat(per_seq).mean() * temperature**2


# --------------------------------------------------------------------- hidden states


def default_layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Pair each student layer output with the proportionally deep teacher one (indices into hidden_states).

    ``hidden_states`` from Hugging Face models have ``n_layers + 1`` entries (embeddings first);
    the map covers layers 1..n of the student and always pairs the last with the teacher's last.
    """
    if student_layers < 1 or teacher_layers < 1:
        raise ValueError("both models need at least one layer for a hidden-state loss")
    return [(i, round(i * teacher_layers / student_layers)) for i in range(1, student_layers + 1)]


class HiddenStateLoss(nn.Module):
    """MSE or cosine distance between student and teacher hidden states through learned projections.

    One linear projection per mapped student layer lifts its width to the teacher's; the
    projections train with the student and are dropped on export.
    """

    def __init__(self, student_dim: int, teacher_dim: int, layer_map: Sequence[tuple[int, int]],
                 kind: str = "mse") -> None:
        super().__init__()
        if kind not in ("mse", "cosine"):
            raise ValueError(f"unknown hidden-state loss {kind!r}; choose 'mse' or 'cosine'")
        if not layer_map:
            raise ValueError("layer_map is empty; give at least one (student_layer, teacher_layer) pair")
        self.kind = kind
        self.layer_map = [(int(s), int(t)) for s, t in layer_map]
        self.projections = nn.ModuleList(
            [nn.Linear(student_dim, teacher_dim, bias=False) for _ in self.layer_map]
        )
        if student_dim == teacher_dim:
            # Start from the identity so equal widths begin as a plain comparison.
            for proj in self.projections:
                assert isinstance(proj, nn.Linear)
                nn.init.eye_(proj.weight)

    def forward(self, student_hidden: Sequence[Tensor], teacher_hidden: Sequence[Tensor],
                mask: Tensor | None = None) -> Tensor:
        total: Tensor | None = None
        for (s_idx, t_idx), proj in zip(self.layer_map, self.projections, strict=True):
            if s_idx >= len(student_hidden) or t_idx >= len(teacher_hidden):
                raise ValueError(
                    f"layer map pair ({s_idx}, {t_idx}) is out of range for {len(student_hidden)} student / "
                    f"{len(teacher_hidden)} teacher hidden states"
                )
            assert isinstance(proj, nn.Linear)
            s = proj(student_hidden[s_idx].to(proj.weight.dtype))
            t = teacher_hidden[t_idx].detach().to(s.dtype)
            if self.kind == "mse":
                # Mean over the feature axis keeps the scale independent of width.
                per_pos = (s - t).pow(2).mean(-1)
            else:
                per_pos = 1.0 - F.cosine_similarity(s, t, dim=-1)
            term = masked_mean(per_pos, mask)
            total = term if total is None else total + term
        assert total is not None
        return total / len(self.layer_map)
