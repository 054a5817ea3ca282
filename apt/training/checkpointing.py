"""The trainer's checkpoints: where they go, what is in them, and what a resume restores.

One part of the :class:`~apt.training.trainer.Trainer` (the others: :mod:`.progress`, :mod:`.rows` and
:mod:`.window`). A checkpoint holds everything that makes the continuation of a run equal to
the uninterrupted run: weights, optimizer, lr position, every RNG, the progress counters,
the half-filled metrics window, the latest metric values, the metrics rows so far, plugin
and schedule state, a stop already decided (early stopping's), the layers' statistics of
their last training forward, the training and evaluation time so far, and the run config
(a resume with another config is refused, except for the keys :data:`apt.resume.RESUMABLE`
lists).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from apt.training.checkpoint import CheckpointManager, capture_rng, load_checkpoint, restore_rng
from apt.training.metrics import MetricsLogger

if TYPE_CHECKING:
    from apt.training.trainer import Trainer

__all__ = ["Checkpointing"]

log = logging.getLogger("apt.training.trainer")


class Checkpointing:
    """``<directory>/step-<N>.pt`` of one run (``directory`` None: the run saves nothing)."""

    def __init__(self, directory: Path | None, keep_last: int) -> None:
        self.manager = CheckpointManager(directory, keep_last) if directory is not None else None
        self.last: Path | None = None  # the newest checkpoint this run wrote or resumed from

    @classmethod
    def of_run(cls, checkpoint_dir: str | None, out_dir: Path | None, keep_last: int) -> Checkpointing:
        """``trainer.checkpoint_dir``, else ``<run dir>/checkpoints``, else none (no run directory)."""
        directory = Path(checkpoint_dir) if checkpoint_dir else (out_dir / "checkpoints" if out_dir else None)
        return cls(directory, keep_last)

    def state(self, trainer: Trainer) -> dict[str, Any]:
        """Everything a resume needs. Under torchrun every rank calls it (collective)."""
        gather = getattr(trainer.forward_model, "full_state_dict", None)  # ShardedModel
        model_sd, optim_sd = gather(trainer.optimizer) if gather else (trainer.model.state_dict(),
                                                                        trainer.optimizer.state_dict())
        return {
            "model": model_sd,
            "optimizer": optim_sd,
            "lr_schedule": trainer.lr_schedule.state_dict(),
            "rng": capture_rng(),
            "progress": {**trainer.progress.state_dict(), "train_time": trainer.train_seconds()},
            "eval_seconds": trainer.evals.evaluator.seconds,
            # a stop already decided (early stopping's, ...): the resumed run ends with it
            "stop_reason": trainer.stop_reason if trainer.should_stop else None,
            "window": trainer.window.state_dict(trainer.dist, trainer.progress.tokens_seen),
            "layer_stats": _layer_stats(trainer.model),
            "nonfinite": trainer.nonfinite.state_dict(),
            "tokens_per_step": trainer.tokens_per_step,
            "metrics": {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in trainer.metrics.items()},
            "schedule": trainer.schedule.state_dict() if trainer.schedule is not None else {},
            "plugins": trainer.plugins.state_dict() if trainer.plugins is not None else {},
            "metrics_rows": [dict(r) for r in trainer.metrics_logger.rows],
            "config": trainer.run_config,
            **trainer.extra_state,
        }

    def save(self, trainer: Trainer) -> Path:
        """Write the checkpoint of the current step (rank 0; other ranks note the path)."""
        assert self.manager is not None
        trainer.nonfinite.check(trainer.dist, self.last)
        state = self.state(trainer)
        if not trainer.dist.is_main:
            self.last = self.manager.path_for(trainer.step)
            return self.last
        self.last = self.manager.save(state, trainer.step)
        trainer.fire("on_checkpoint_save", checkpoint_path=str(self.last))
        return self.last

    def start(self, trainer: Trainer, resume_from: str | Path | None, auto_resume: bool) -> None:
        """Remove what killed saves left, then resume: the directory's newest checkpoint
        (``auto_resume``), else ``resume_from`` (a run started from a file)."""
        if self.manager is not None and trainer.dist.is_main:
            self.manager.remove_orphans()
        if auto_resume:
            found = self.manager.load_latest() if self.manager is not None else None
            if found is not None:
                _check_same_run(trainer, found[1])
                self.restore(trainer, *found)
                return
            where = self.manager.directory if self.manager is not None else "(no checkpoint directory)"
            log.info("trainer.resume=true: no checkpoint in %s yet; %s", where,
                     f"starting from {resume_from}" if resume_from else "starting at step 0")
        if resume_from is not None:
            self.restore(trainer, Path(resume_from), load_checkpoint(resume_from, map_location="cpu"))

    def restore(self, trainer: Trainer, path: Path, state: dict[str, Any]) -> None:
        if trainer.plugins is not None:
            trainer.plugins.load_state_dict(state.get("plugins", {}))
        if trainer.schedule is not None and state.get("schedule"):
            trainer.schedule.load_state_dict(state["schedule"])
        # Plugins that change the model's layout (MoE upcycling) rebuild it here, before
        # the weights and optimizer state of that layout are loaded.
        trainer.fire("on_checkpoint_load", checkpoint_path=str(path), checkpoint=state)
        load_sharded = getattr(trainer.forward_model, "load_full_state_dict", None)  # FSDP
        if load_sharded is not None:
            load_sharded(trainer.optimizer, state["model"], state["optimizer"])
        else:
            trainer.model.load_state_dict(state["model"])
            trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.lr_schedule.load_state_dict(state.get("lr_schedule", {}))
        trainer.progress.load_state_dict(state["progress"])
        trainer.evals.evaluator.seconds = float(state.get("eval_seconds", 0.0))
        if state.get("stop_reason") is not None:
            trainer.should_stop, trainer.stop_reason = True, state["stop_reason"]
        trainer.window.load_state_dict(state.get("window", {}), trainer.device, trainer.progress.tokens_seen)
        _load_layer_stats(trainer.model, state.get("layer_stats", {}), trainer.device)
        trainer.nonfinite.load_state_dict(state.get("nonfinite", {}))
        rows = state.get("metrics_rows", [])
        trainer.metrics_logger = MetricsLogger(trainer.metrics_logger.path, rows)
        # the latest values (val_loss, ...) as the uninterrupted run has them (older checkpoints: the last row)
        trainer.metrics = dict(state["metrics"]) if "metrics" in state else \
            {k: v for k, v in (rows[-1] if rows else {}).items() if v is not None}
        restore_rng(state["rng"])
        self.last = path
        log.info("resumed from %s at step %d (epoch %d)", path, trainer.step, trainer.epoch)


def _layer_stats(model: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """The layers' statistics of their last training forward (``last_stats``, what the next
    metrics.csv row reports), by module name: a row written right after a resume (an epoch's
    end) reports them as the uninterrupted run does."""
    return {name: {k: torch.as_tensor(v).detach().cpu() for k, v in stats.items()}
            for name, m in model.named_modules() if (stats := getattr(m, "last_stats", None))}


def _load_layer_stats(model: torch.nn.Module, saved: dict[str, dict[str, torch.Tensor]], device: torch.device) -> None:
    for name, m in model.named_modules():
        if name in saved and hasattr(m, "last_stats"):
            m.last_stats = {k: v.to(device) for k, v in saved[name].items()}


def _check_same_run(trainer: Trainer, state: dict[str, Any]) -> None:
    """A resume continues the checkpoint's run: its config, except resumable keys, and its global batch."""
    from apt.core.errors import ConfigProblems
    from apt.resume import resume_problems

    problems = resume_problems(trainer.run_config, state.get("config") or {})
    saved = state.get("tokens_per_step", trainer.tokens_per_step)
    if saved != trainer.tokens_per_step:
        problems.append(f"a step is now {trainer.tokens_per_step} tokens (data.batch_size x processes x grad_accum "
                        f"x block_size) but {saved} in the run being resumed; keep the global batch (halve "
                        "data.batch_size when doubling the processes)")
    if problems:
        raise ConfigProblems(problems)
