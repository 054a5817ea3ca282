"""``align``: consistency alignment of the model against an EMA copy of itself.

The teacher is an exponential moving average of the student's weights (decay ``beta``),
a cheap, slowly moving target that damps step-to-step noise (mean-teacher / BYOL style).
Each step the plugin adds ``alpha * tau^2 * KL(softmax(teacher / tau) || softmax(student / tau))``
over the batch's logits with ``trainer.add_loss("align", ...)`` (the ``tau^2`` keeps the
gradient scale independent of the temperature, as in distillation). ``metric: cosine`` or
``l2`` compare logits (``outputs: logits``) or final hidden states (``outputs: hidden``) instead.

Options (conf/plugin/align.yaml): ``beta`` 0.999, ``alpha`` 0.35, ``alpha_from`` (name of a
schedule entry ``alpha`` follows while training; used when the schedule has it),
``tau_align`` 1.0, ``metric`` kl|cosine|l2, ``outputs`` logits|hidden.

Lifecycle: the teacher snapshot is taken lazily at the first batch the plugin sees, so
with ``moe`` enabled in the same or an earlier epoch it copies the upcycled model and
both share one layout; if the student's layout changes later (``moe`` upcycling after
``align`` started), the snapshot is retaken and a warning says so. The teacher's weights
are this plugin's checkpoint state. Memory: one extra copy of parameters and buffers (no
gradients, no optimizer state), about 1/4 of what the student needs under AdamW, plus one
no-grad forward per step.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from apt.plugins.base import Plugin

__all__ = ["AlignPlugin", "alignment_loss"]

log = logging.getLogger(__name__)

METRICS = ("kl", "cosine", "l2")
TARGETS = ("logits", "hidden")


def alignment_loss(
    student: torch.Tensor, teacher: torch.Tensor, *, metric: str = "kl", tau: float = 1.0
) -> torch.Tensor:
    """Mean per-token distance between student and teacher outputs of shape (B, T, D).

    ``kl``: ``tau^2 * KL(softmax(teacher/tau) || softmax(student/tau))``; ``cosine``:
    ``1 - cos``; ``l2``: mean squared difference per element. All are 0 when equal.
    """
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
    raise ValueError(f"align: metric={metric!r} is not one of {list(METRICS)}")


class AlignPlugin(Plugin):
    """EMA-teacher consistency loss added to every training step while enabled."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.beta = float(cfg.get("beta", 0.999))
        self.alpha = float(cfg.get("alpha", 0.35))
        self.alpha_from: str | None = cfg.get("alpha_from", "align_alpha")
        self.tau = float(cfg.get("tau_align", 1.0))
        self.metric = str(cfg.get("metric", "kl"))
        self.outputs = str(cfg.get("outputs", "logits"))
        self.teacher: nn.Module | None = None
        self.updates = 0
        self.snapshot_step: int | None = None
        self._pending: dict[str, Any] | None = None
        self._layout: tuple[int, int] | None = None
        self._hidden: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self._sum = 0.0
        self._count = 0

    def get_name(self) -> str:
        return "align"

    def get_version(self) -> str:
        return "1.0.0"

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"align: beta must be in [0, 1), got {self.beta}")
        if self.alpha < 0:
            raise ValueError(f"align: alpha must be >= 0, got {self.alpha}")
        if self.tau <= 0:
            raise ValueError(f"align: tau_align must be > 0, got {self.tau}")
        if self.metric not in METRICS:
            raise ValueError(f"align: metric={self.metric!r} is not one of {list(METRICS)}")
        if self.outputs not in TARGETS:
            raise ValueError(f"align: outputs={self.outputs!r} is not one of {list(TARGETS)}")
        return True

    # -- teacher --------------------------------------------------------------------------
    @staticmethod
    def _layout_of(model: nn.Module) -> tuple[int, int]:
        """(number of parameter tensors, total elements): changes when ``moe`` upcycles."""
        params = list(model.parameters())
        return len(params), sum(p.numel() for p in params)

    def snapshot(self, model: nn.Module, step: int | None = None) -> nn.Module:
        """(Re)take the teacher as a frozen copy of ``model``'s current weights."""
        self._remove_hooks()  # a deepcopy would carry the student's capture hook along
        teacher = copy.deepcopy(model).eval()
        teacher.requires_grad_(False)
        self.teacher = teacher
        self._layout = self._layout_of(model)
        self.snapshot_step = step
        self._hook_hidden(model, teacher)
        return teacher

    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _hook_hidden(self, model: nn.Module, teacher: nn.Module) -> None:
        if self.outputs != "hidden":
            return
        for key, m in (("student", model), ("teacher", teacher)):
            norm = getattr(m, "norm_f", None)
            if norm is None:
                raise ValueError("align outputs=hidden needs a model with a final norm `norm_f`")
            self._handles.append(norm.register_forward_hook(self._capture(key)))

    def _capture(self, key: str) -> Any:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            self._hidden[key] = output  # (B, T, C)

        return hook

    def _ensure_teacher(self, model: nn.Module, step: int | None) -> nn.Module:
        if self.teacher is None:
            self.snapshot(model, step)
            if self._pending is not None:
                self.teacher.load_state_dict(self._pending)  # type: ignore[union-attr]
                self._pending = None
            log.info("align: EMA teacher taken at step %s", step)
        elif self._layout != self._layout_of(model):
            log.warning("align: the model's layout changed (upcycled?); retaking the EMA teacher")
            self.snapshot(model, step)
        return self.teacher  # type: ignore[return-value]

    @torch.no_grad()
    def ema_update(self, model: nn.Module) -> None:
        """``teacher <- beta * teacher + (1 - beta) * student`` (buffers are copied)."""
        assert self.teacher is not None
        t_params = list(self.teacher.parameters())
        s_params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(t_params, s_params, 1.0 - self.beta)
        for tb, sb in zip(self.teacher.buffers(), model.buffers(), strict=True):
            tb.copy_(sb)
        self.updates += 1

    # -- events ---------------------------------------------------------------------------
    def current_alpha(self, schedule: Any = None) -> float:
        if schedule is not None and self.alpha_from and self.alpha_from in schedule:
            try:
                return float(schedule.get(self.alpha_from))
            except ValueError:
                return self.alpha
        return self.alpha

    def on_batch_begin(
        self, model: nn.Module | None = None, step: int | None = None, **kwargs: Any
    ) -> None:
        """Before the forward pass, so ``outputs: hidden`` captures the student's hidden states."""
        if model is not None:
            self._ensure_teacher(model, step)

    def on_batch_end(
        self,
        batch: Any = None,
        outputs: Any = None,
        trainer: Any = None,
        model: nn.Module | None = None,
        schedule: Any = None,
        step: int | None = None,
        **kwargs: Any,
    ) -> None:
        """After the forward pass: teacher forward on the same inputs, add the loss."""
        if trainer is None or model is None or batch is None:
            return
        alpha = self.current_alpha(schedule)
        teacher = self._ensure_teacher(model, step)
        idx = batch[0] if isinstance(batch, list | tuple) else batch["input_ids"]  # (B, T)
        dtype = getattr(trainer, "autocast_dtype", None)  # the student's precision (bf16 on CUDA)
        amp = (
            torch.autocast(idx.device.type, dtype=dtype)
            if dtype is not None
            else contextlib.nullcontext()
        )
        with torch.no_grad(), amp:
            t_logits, _ = teacher(idx)  # (B, T, V)
        if self.outputs == "hidden":
            student_out, teacher_out = self._hidden.pop("student"), self._hidden.pop("teacher")
        else:
            student_out = outputs[0] if isinstance(outputs, list | tuple) else outputs
            teacher_out = t_logits
        loss = alignment_loss(student_out, teacher_out, metric=self.metric, tau=self.tau)
        trainer.add_loss("align", alpha * loss)
        self._sum += float(loss.detach())
        self._count += 1

    def on_optimizer_step(self, model: nn.Module | None = None, **kwargs: Any) -> None:
        if model is not None and self.teacher is not None:
            self.ema_update(model)

    def on_epoch_end(self, trainer: Any = None, schedule: Any = None, **kwargs: Any) -> None:
        if trainer is not None and self._count:
            trainer.log_metric("align/loss", self._sum / self._count)
            trainer.log_metric("align/alpha", self.current_alpha(schedule))
        self._sum, self._count = 0.0, 0

    def teardown(self) -> None:
        self._remove_hooks()
        super().teardown()

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        teacher = self.teacher.state_dict() if self.teacher is not None else self._pending
        return {"teacher": teacher, "updates": self.updates, "snapshot_step": self.snapshot_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Keep the teacher weights until the model exists; loaded at the first batch."""
        self.updates = int(state.get("updates", 0))
        self.snapshot_step = state.get("snapshot_step")
        self._pending = state.get("teacher")
        self.teacher = None
