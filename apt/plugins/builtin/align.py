"""``align``: consistency alignment of the model against an EMA copy of itself.

The teacher is an exponential moving average of the student's weights (decay ``beta``),
a cheap, slowly moving target that damps step-to-step noise (mean-teacher / BYOL style).
Each step the plugin adds ``alpha * tau^2 * KL(softmax(teacher / tau) || softmax(student / tau))``
over the batch's logits with ``trainer.add_loss("align", ...)`` (the ``tau^2`` keeps the
gradient scale independent of the temperature, as in distillation); the trainer logs the
added term as ``loss/align``. ``metric: cosine`` or ``l2`` compare logits (``outputs:
logits``) or final hidden states (``outputs: hidden``) instead.

The teacher (:class:`EMATeacher`) is a module of the student's structure with its own
parameters and buffers, frozen, in eval mode, without the student's hooks; tensors a layer
keeps from its last forward are not copied into it. It stays in step with the student:

- structure: when the student's parameters change (``moe`` upcycling after ``align``
  started), the teacher is rebuilt from the student, keeping its EMA values for every
  tensor that still exists with the same shape (new tensors, such as the experts, start
  at the student's values);
- buffers, such as a router's annealed temperature, are copied from the student before
  every teacher forward (they are state the schedule sets, not weights to average);
- checkpoints: the teacher's full state dict (buffers, so temperatures, included) is this
  plugin's state, so a resumed teacher equals the uninterrupted one.

Memory: one extra copy of parameters and buffers (no gradients, no optimizer state), about
1/4 of what the student needs under AdamW, plus one no-grad forward per step.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from apt.plugins.base import Plugin
from apt.plugins.trainer_view import TrainerView

if TYPE_CHECKING:  # torch is imported where tensors are made: checking a config must not import it
    import torch
    from torch import nn

__all__ = ["AlignOptions", "AlignPlugin", "EMATeacher", "alignment_loss"]

log = logging.getLogger(__name__)


@dataclass
class AlignOptions:
    beta: float = 0.999  # EMA decay of the teacher
    alpha: float = 0.35  # loss weight when the schedule has no `alpha_from` entry
    alpha_from: str | None = "align_alpha"  # schedule entry alpha follows
    tau_align: float = 1.0  # softmax temperature of the KL
    metric: Literal["kl", "cosine", "l2"] = "kl"
    outputs: Literal["logits", "hidden"] = "logits"  # hidden: the final normed hidden states


def alignment_loss(
    student: torch.Tensor, teacher: torch.Tensor, *, metric: str = "kl", tau: float = 1.0
) -> torch.Tensor:
    """Mean per-token distance between student and teacher outputs of shape (B, T, D).

    ``kl``: ``tau^2 * KL(softmax(teacher/tau) || softmax(student/tau))``; ``cosine``:
    ``1 - cos``; ``l2``: mean squared difference per element. All are 0 when equal.
    """
    import torch.nn.functional as F

    s, t = student.float(), teacher.detach().float()  # (B, T, D)
    if metric == "kl":
        log_p_s = F.log_softmax(s / tau, dim=-1)
        log_p_t = F.log_softmax(t / tau, dim=-1)
        kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="none").sum(-1)  # (B, T)
        return kl.mean() * tau**2
    if metric == "cosine":
        return (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()
    if metric == "l2":
        return F.mse_loss(s, t)
    raise ValueError(f"align: metric={metric!r} is not one of ['kl', 'cosine', 'l2']")


class EMATeacher:
    """A frozen module of the student's structure whose weights follow the student's by EMA."""

    def __init__(self, student: nn.Module) -> None:
        self.module = _frozen_copy(student)
        self.layout = _layout_of(student)

    def follow_structure(self, student: nn.Module) -> bool:
        """Rebuild after the student's parameters changed, keeping the EMA of unchanged tensors."""
        layout = _layout_of(student)
        if layout == self.layout:
            return False
        old = self.module.state_dict()
        self.module = _frozen_copy(student)
        new = self.module.state_dict()
        kept = {k: v for k, v in old.items() if k in new and new[k].shape == v.shape}
        self.module.load_state_dict(kept, strict=False)
        self.layout = layout
        log.info("align: the student's layout changed (upcycled?); teacher rebuilt, EMA kept for %d of %d "
                 "tensors, the rest start at the student's values", len(kept), len(new))
        return True

    def copy_buffers(self, student: nn.Module) -> None:
        """Take the student's buffers (e.g. router temperatures) as they are now."""
        import torch

        with torch.no_grad():
            for tb, sb in zip(self.module.buffers(), student.buffers(), strict=True):
                tb.copy_(sb)

    def update(self, student: nn.Module, beta: float) -> None:
        """``teacher <- beta * teacher + (1 - beta) * student`` for the parameters."""
        import torch

        t_params = list(self.module.parameters())
        s_params = [p.detach() for p in student.parameters()]
        with torch.no_grad():
            torch._foreach_lerp_(t_params, s_params, 1.0 - beta)


class AlignPlugin(Plugin):
    """EMA-teacher consistency loss added to every training step while enabled."""

    Options = AlignOptions

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        o = self.options
        self.beta, self.alpha, self.tau = o.beta, o.alpha, o.tau_align
        self.metric, self.outputs = o.metric, o.outputs
        self.teacher: EMATeacher | None = None
        self.updates = 0
        self.snapshot_step: int | None = None
        self._pending: dict[str, Any] | None = None
        self._hidden: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self._sum: torch.Tensor | None = None
        self._count = 0

    def get_name(self) -> str:
        return "align"

    def get_version(self) -> str:
        return "2.0.0"

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        """Ranges; types and choices were checked against :class:`AlignOptions` at creation."""
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"align: beta must be in [0, 1), got {self.beta}")
        if self.alpha < 0:
            raise ValueError(f"align: alpha must be >= 0, got {self.alpha}")
        if self.tau <= 0:
            raise ValueError(f"align: tau_align must be > 0, got {self.tau}")
        return True

    # -- teacher --------------------------------------------------------------------------
    def _ensure_teacher(self, model: nn.Module, step: int | None) -> EMATeacher:
        if self.teacher is None:
            self.teacher = EMATeacher(model)
            if self._pending is not None:
                self.teacher.module.load_state_dict(self._pending)
                self._pending = None
            else:
                self.snapshot_step = step
                log.info("align: EMA teacher taken at step %s", step)
            self._hook_hidden(model)
        elif self.teacher.follow_structure(model):
            self._hook_hidden(model)
        return self.teacher

    def _hook_hidden(self, model: nn.Module) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self.outputs != "hidden":
            return
        assert self.teacher is not None
        for key, m in (("student", model), ("teacher", self.teacher.module)):
            norm = getattr(m, "norm_f", None)
            if norm is None:
                raise ValueError("align outputs=hidden needs a model with a final norm `norm_f`")
            self._handles.append(norm.register_forward_hook(self._capture(key)))

    def _capture(self, key: str) -> Any:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            self._hidden[key] = output  # (B, T, C)

        return hook

    # -- events ---------------------------------------------------------------------------
    def current_alpha(self, schedule: Any = None) -> float:
        key = self.options.alpha_from
        if schedule is not None and key and key in schedule:
            try:
                return float(schedule.get(key))
            except ValueError:
                return self.alpha
        return self.alpha

    def on_batch_begin(self, model: nn.Module | None = None, step: int | None = None, **kwargs: Any) -> None:
        """Before the forward pass, so ``outputs: hidden`` captures the student's hidden states."""
        if model is not None:
            self._ensure_teacher(model, step)

    def on_batch_end(self, batch: Any = None, outputs: Any = None, trainer: TrainerView | None = None,
                     model: nn.Module | None = None, schedule: Any = None, step: int | None = None,
                     **kwargs: Any) -> None:
        """After the forward pass: teacher forward on the same inputs, add the loss."""
        if trainer is None or model is None or batch is None:
            return
        import torch

        alpha = self.current_alpha(schedule)
        teacher = self._ensure_teacher(model, step)
        teacher.copy_buffers(model)
        idx = batch[0] if isinstance(batch, list | tuple) else batch["input_ids"]  # (B, T)
        dtype = trainer.autocast_dtype  # the student's precision (bf16 on CUDA)
        amp = torch.autocast(idx.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.no_grad(), amp:
            t_logits, _ = teacher.module(idx)  # (B, T, V)
        if self.outputs == "hidden":
            student_out, teacher_out = self._hidden.pop("student"), self._hidden.pop("teacher")
        else:
            student_out = outputs[0] if isinstance(outputs, list | tuple) else outputs
            teacher_out = t_logits
        loss = alignment_loss(student_out, teacher_out, metric=self.metric, tau=self.tau)
        trainer.add_loss("align", alpha * loss)
        self._sum = loss.detach() if self._sum is None else self._sum.to(loss.device) + loss.detach()
        self._count += 1

    def on_optimizer_step(self, model: nn.Module | None = None, **kwargs: Any) -> None:
        if model is not None and self.teacher is not None:
            self.teacher.update(model, self.beta)
            self.updates += 1

    def on_epoch_end(self, trainer: TrainerView | None = None, schedule: Any = None, **kwargs: Any) -> None:
        if trainer is not None and self._count:
            trainer.log_metric("align/loss", float(self._sum) / self._count)
            trainer.log_metric("align/alpha", self.current_alpha(schedule))
        self._sum, self._count = None, 0

    def teardown(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        super().teardown()

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The teacher's full state dict (buffers such as router temperatures included), and
        this epoch's loss sum so far (``align/loss`` is a mean over the whole epoch)."""
        teacher = self.teacher.module.state_dict() if self.teacher is not None else self._pending
        return {"teacher": teacher, "updates": self.updates, "snapshot_step": self.snapshot_step,
                "epoch_sum": self._sum.detach().cpu() if self._sum is not None else None,
                "epoch_batches": self._count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Keep the teacher's state until the model exists; loaded at the first batch."""
        self.updates = int(state.get("updates", 0))
        self.snapshot_step = state.get("snapshot_step")
        self._pending = state.get("teacher")
        self.teacher = None
        self._sum, self._count = state.get("epoch_sum"), int(state.get("epoch_batches", 0))


def _layout_of(model: nn.Module) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Names and shapes of the parameters: changes when ``moe`` upcycles."""
    return tuple((name, tuple(p.shape)) for name, p in model.named_parameters())


def _frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its own parameters and buffers, frozen, in eval mode, hook-free.

    Other tensors kept on modules (statistics or losses of the last forward, possibly part of
    an autograd graph, which ``deepcopy`` refuses to copy) are shared detached, not copied.
    """
    memo: dict[int, Any] = {}
    for m in model.modules():
        for key, value in vars(m).items():
            if key.startswith(("_forward_", "_backward_")) and isinstance(value, dict):
                memo[id(value)] = type(value)()  # other plugins' hooks stay on the student
            elif key not in ("_parameters", "_buffers", "_modules"):
                _share_detached(value, memo)
    teacher = copy.deepcopy(model, memo)
    teacher.requires_grad_(False)
    return teacher.eval()


def _share_detached(value: Any, memo: dict[int, Any]) -> None:
    import torch

    if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
        memo[id(value)] = value.detach()
    elif isinstance(value, Mapping):
        for v in value.values():
            _share_detached(v, memo)
    elif isinstance(value, list | tuple):
        for v in value:
            _share_detached(v, memo)
