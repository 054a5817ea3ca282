"""The training loop: one place where every lifecycle event fires.

The loop, with the event each line fires (context keywords ``trainer, model, optimizer,
schedule, epoch, step`` go with every event)::

    (app)  on_model_init(model)                       after the model is built
    resume: plugins.load_state_dict; on_checkpoint_load(checkpoint_path, checkpoint)
            then model / optimizer / lr / RNG / position are restored
    on_train_begin(config, trainer)
    for epoch in 1, 2, ...:                           until max_epochs / max_steps / stop
        schedule.apply(by="epoch")                    plugin enablement, annealed values
        on_epoch_begin(epoch)                         (not re-fired when resuming mid-epoch)
        for each optimizer step of the epoch:
            schedule.apply(by="step")
            lr = warmup/cosine(step)
            on_step_begin(step, batch)                step = the step being run, from 1
            for each of grad_accum micro-batches:
                on_batch_begin(batch)                 batch = (x, y), each (B, T)
                logits, loss = model(x, y)            bf16 autocast on CUDA; layers' aux losses collected
                on_batch_end(batch, outputs)          outputs = (logits, loss); plugins may add_loss
                total = loss + aux losses + added losses
                on_backward_begin(loss=total)
                (total / grad_accum).backward()
            on_backward_end()                         gradient-clipping plugins act here
            clip to trainer.grad_clip (unless a plugin clips)
            optimizer.step(); zero_grad
            on_optimizer_step(optimizer)
            on_step_end(step, loss)                   loss: the detached total, mean over micro-batches
            every log_every: metrics.csv row, progress bar
            every eval_every (unless null): on_validation_begin(); eval (fixed subset); on_validation_end(metrics)
            every checkpoint_every: save; on_checkpoint_save(checkpoint_path)
            stop if trainer.should_stop, a plugin's should_stop, or SIGINT/SIGTERM
        (eval if eval_on_epoch_end and not just done); on_epoch_end(epoch, metrics)
    (final eval: whole val split, if not just done); save; on_checkpoint_save(checkpoint_path)
    on_train_end(metrics)

What is logged: ``train_loss`` is the cross-entropy alone (comparable to ``val_loss``);
``loss/total`` is what was optimised and ``loss/<name>`` each added term (a layer's aux
loss such as an MoE router's ``loss/balance`` and ``loss/z``, a plugin's ``add_loss`` such
as ``loss/align``). Each is the mean over the row's steps, a term counting 0 in steps that
did not add it, so ``loss/total = train_loss + sum(loss/<name>)`` row by row. Aux losses
are whatever layers add through :mod:`apt.modeling.auxiliary` during the forward, so a
layer swapped in mid-run (MoE upcycling) is counted from its first forward.

Exact resume: batches are a pure function of ``(seed, epoch, index)`` (see
:class:`apt.data.BatchLoader`) and the checkpoint holds model, optimizer, lr position,
every RNG state, plugin and schedule state, so on CPU a resumed run reproduces the losses
of an uninterrupted one step for step.

Under torchrun (``dist``, see :mod:`apt.training.distributed`) every rank runs this loop on
its share of each batch; ``forward_model`` averages gradients (non-final micro-batches of an
accumulation skip that all-reduce), the logged train and val losses are means over ranks,
stopping is agreed by all ranks, and rank 0 alone writes metrics.csv, the plot and
checkpoints and shows the progress bar.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from apt.core.config import to_plain
from apt.data.loader import BatchLoader
from apt.modeling.auxiliary import collect_aux_losses
from apt.optim.factory import add_params
from apt.training.checkpoint import CheckpointManager, capture_rng, load_checkpoint, restore_rng
from apt.training.distributed import DistContext, no_sync
from apt.training.evaluation import EvalResult, Evaluator, autocast_dtype, parse_eval_tokens
from apt.training.lr import WarmupCosine
from apt.training.metrics import MetricsLogger, logging_redirect, plot_losses, progress_bar
from apt.training.schema import TrainerConfig
from apt.training.signals import install_stop_handlers

__all__ = ["Trainer", "run_length"]

log = logging.getLogger(__name__)


class Trainer:
    """Runs the loop above for ``model`` with ``optimizer`` over the two loaders.

    ``plugins`` is a :class:`apt.plugins.PluginManager` (its events are fired), ``schedule``
    an :class:`apt.schedule.Schedule` (or None). ``out_dir`` receives ``metrics.csv``, the
    loss plot and ``checkpoints/``; with ``None`` nothing is written. ``extra_state`` is
    stored in every checkpoint (the app puts the tokenizer and the model config there).
    ``dist`` describes a torchrun process group (default: a single process); ``forward_model``
    is then a :class:`apt.training.distributed.ParallelModel` over ``model``. ``token_bytes``
    (the tokenizer's bytes per id) turns val losses into bits per byte.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 train_loader: BatchLoader, val_loader: BatchLoader, *,
                 config: TrainerConfig | Mapping[str, Any] | None = None,
                 lr_schedule: WarmupCosine | None = None, plugins: Any = None, schedule: Any = None,
                 out_dir: str | Path | None = None, run_config: Mapping[str, Any] | None = None,
                 extra_state: Mapping[str, Any] | None = None, device: str | torch.device = "cpu",
                 forward_model: Any = None, dist: DistContext | None = None,
                 token_bytes: np.ndarray | None = None) -> None:
        self.config = _trainer_config(config)
        self.dist = dist or DistContext()
        self.model = model
        self.forward_model = model if forward_model is None else forward_model  # e.g. torch.compile(model)
        self.optimizer = optimizer
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.plugins = plugins
        self.schedule = schedule
        self.device = torch.device(device)
        self.run_config = dict(run_config or {})
        self.extra_state = dict(extra_state or {})
        self.out_dir = Path(out_dir) if out_dir is not None else None
        c = self.config
        self.grad_accum = max(1, int(c.grad_accum))
        self.steps_per_epoch, self.max_steps = run_length(c, train_loader.batches_per_epoch)
        if c.steps_per_epoch:  # the loader must provide that many micro-batches per epoch
            train_loader.batches_per_epoch = self.steps_per_epoch * self.grad_accum
        self.lr_schedule = lr_schedule or WarmupCosine(optimizer, warmup_steps=0, total_steps=self.max_steps,
                                                       decay="constant")
        # global: every rank's micro-batches of a step
        self.tokens_per_step = (train_loader.batch_size * train_loader.block_size * self.grad_accum
                                * self.dist.world_size)
        self.autocast_dtype = autocast_dtype(c.precision, self.device)
        # the final evaluation's windows (default: the whole split); periodic ones a fixed subset
        self.evaluator = Evaluator(val_loader.tokens, block_size=val_loader.block_size,
                                   batch_size=val_loader.batch_size, token_bytes=token_bytes,
                                   device=self.device, dist=self.dist, autocast=self.autocast_dtype)
        self.final_windows = self.evaluator.windows(parse_eval_tokens(c.eval_tokens))
        self._periodic_index = (self.final_windows.subset_index(c.eval_batches * val_loader.global_batch_size)
                                if c.eval_batches else None)
        ckpt_dir = Path(c.checkpoint_dir) if c.checkpoint_dir else (
            self.out_dir / "checkpoints" if self.out_dir is not None else None)
        self.checkpoints = CheckpointManager(ckpt_dir, c.keep_last) if ckpt_dir is not None else None
        writes = self.out_dir is not None and self.dist.is_main
        self.metrics_logger = MetricsLogger(self.out_dir / "metrics.csv" if writes else None)
        # progress
        self.epoch = 0
        self.step = 0
        self.steps_in_epoch = 0
        self.epoch_open = False
        self.should_stop = False
        self.stop_reason: str | None = None
        self.metrics: dict[str, Any] = {}
        self.schedule_values: dict[str, float] = {}
        self.best_val_loss = math.inf
        self.best_step = 0
        self.last_val_step = -1
        self.last_final_step = -1
        self.final_eval_time = 0.0
        self.last_checkpoint: Path | None = None
        self.tokens_seen = 0
        self.train_time = 0.0
        self.log_every = int(c.log_every)
        self._pending_losses: dict[str, torch.Tensor] = {}
        self._extra_metrics: dict[str, Any] = {}
        self._signal: int | None = None
        self._window_n = 0  # steps since the last metrics row
        self._window: dict[str, torch.Tensor] = {}  # column -> summed per-step loss, on the device
        self._window_t0 = time.perf_counter()
        self._window_tokens0 = 0
        self._lr = 0.0
        self._clip_by_plugin = bool(plugins is not None and "gradient_clipping" in plugins.list_plugins())

    # -- public API for plugins ---------------------------------------------------------
    def add_loss(self, name: str, tensor: torch.Tensor) -> None:
        """Add ``tensor`` to this micro-batch's loss (before backward); logged as ``loss/<name>``."""
        self._pending_losses[name] = self._pending_losses[name] + tensor if name in self._pending_losses else tensor

    def log_metric(self, name: str, value: Any) -> None:
        """Record a value for the next metrics.csv row (a column named ``name``)."""
        self._extra_metrics[name] = value
        self.metrics[name] = value

    def add_param_group(self, params: Iterable[torch.nn.Parameter], **options: Any) -> None:
        """Give new parameters to the optimizer mid-run, on the same LR schedule.

        Matrices get the configured weight decay, vectors none (as at the start); ``options``
        override group settings. The new groups' lr follows the warmup/cosine factor of the
        current step, so the LR schedule is unchanged. With several optimizers
        (``optim.parts``) each parameter goes to its part (:func:`apt.optim.add_params`).
        """
        add_params(self.optimizer, params, lr_factor=self.lr_schedule.factor(max(self.step, 0)), **options)

    def request_stop(self, reason: str = "requested") -> None:
        self.should_stop = True
        self.stop_reason = reason

    # -- events -------------------------------------------------------------------------
    def fire(self, event: str, **kwargs: Any) -> list[Any]:
        """Trigger ``event`` with the context keywords plus ``kwargs``."""
        if self.plugins is None:
            return []
        ctx = {"trainer": self, "model": self.model, "optimizer": self.optimizer,
               "schedule": self.schedule, "epoch": self.epoch, "step": self.step}
        ctx.update(kwargs)
        return self.plugins.trigger_event(event, **ctx)

    # -- the loop -----------------------------------------------------------------------
    def fit(self, resume_from: str | Path | None = None, auto_resume: bool = False) -> dict[str, Any]:
        """Train until max_steps/max_epochs or a stop; returns the summary metrics."""
        if resume_from is not None:
            self.load(resume_from)
        elif auto_resume:
            self._auto_resume()
        c = self.config
        self.fire("on_train_begin", config=self.run_config)
        restore = self._install_signal_handlers()
        bar = progress_bar(c.progress and self.dist.is_main, self.max_steps, self.step)
        t0 = self._window_t0 = time.perf_counter()
        self._window_n, self._window_tokens0 = 0, self.tokens_seen
        try:
            with logging_redirect(bar):
                self._loop(bar)
        finally:
            in_loop = self.final_eval_time if self.last_final_step == self.step else 0.0
            self.train_time += time.perf_counter() - t0 - in_loop  # the final evaluation is not training
            restore()
            if bar is not None:
                bar.close()
        if self.last_final_step != self.step:
            self.validate(final=True)
        if self.step > 0:
            self._record()
        if self.checkpoints is not None:
            self.save()
        summary = self.summary()
        self.fire("on_train_end", metrics=summary)
        if c.plot and self.out_dir is not None and self.dist.is_main:
            try:
                plot_losses(self.metrics_logger.rows, self.out_dir / "loss.png", title="loss")
            except Exception as exc:  # noqa: BLE001 - a plot must never fail a finished run
                log.warning("could not write loss.png: %s", exc)
        return summary

    def _loop(self, bar: Any) -> None:
        while not self._done():
            if not self.epoch_open:
                if self.config.max_epochs is not None and self.epoch >= self.config.max_epochs:
                    break
                self.epoch += 1
                self.steps_in_epoch = 0
                self.epoch_open = True
                self._epoch_loss_sum, self._epoch_loss_n = 0.0, 0
                self._apply_schedule("epoch")
                self.fire("on_epoch_begin", epoch=self.epoch)
            else:  # resumed inside an epoch: restore values, do not re-fire on_epoch_begin
                self._apply_schedule("epoch")
            while self.steps_in_epoch < self.steps_per_epoch and not self._done():
                first = self.steps_in_epoch * self.grad_accum
                self._train_step(self.train_loader.epoch_rows(self.epoch, first, self.grad_accum))
                if bar is not None:
                    bar.update(1)
                self._after_step(bar)
            if self.steps_in_epoch >= self.steps_per_epoch:
                if self.config.eval_on_epoch_end and self.last_val_step != self.step:
                    self.validate(final=self.step >= self.max_steps)
                self._record()
                self.fire("on_epoch_end", epoch=self.epoch, metrics=dict(self.metrics))
                self._flush_epoch_metrics()
                self.epoch_open = False

    def _done(self) -> bool:
        if self.step >= self.max_steps:
            return True
        if not self.dist.enabled:
            return self._stop_requested()
        # A signal may reach one rank only: all ranks stop together, or the others hang.
        local = self._stop_requested()
        if self.dist.any_true(local, self.device) and not local:
            self.request_stop("another rank stopped")
        return self.should_stop

    def _stop_requested(self) -> bool:
        if self.should_stop:
            return True
        if self._signal is not None:
            self.request_stop(f"signal {signal.Signals(self._signal).name}")
            return True
        if self.plugins is not None and self.plugins.should_stop:
            self.request_stop("a plugin asked to stop")
            return True
        return False

    def _train_step(self, rows: np.ndarray) -> None:
        step = self.step + 1
        self._apply_schedule("step", step=step)
        lr = self.lr_schedule.apply(self.step)
        model, optimizer = self.model, self.optimizer
        batches = [self.train_loader.batch(r) for r in rows]
        self.fire("on_step_begin", step=step, batch=batches[0])
        sums: dict[str, torch.Tensor] = {}  # column -> sum over micro-batches
        for i, batch in enumerate(batches):
            x, y = batch
            self.fire("on_batch_begin", step=step, batch=batch)
            with no_sync(self.forward_model, skip=i < len(batches) - 1):  # DDP: all-reduce once per step
                with collect_aux_losses() as aux, self._autocast():
                    logits, loss = self.forward_model(x, y)
                self.fire("on_batch_end", step=step, batch=batch, outputs=(logits, loss))
                terms = self._loss_terms(aux)
                total = loss
                for value in terms.values():
                    total = total + value
                self.fire("on_backward_begin", step=step, loss=total)
                (total / self.grad_accum if self.grad_accum > 1 else total).backward()
            parts = {"train_loss": loss, "loss/total": total, **{f"loss/{k}": v for k, v in terms.items()}}
            for column, value in parts.items():
                v = value.detach().float()
                sums[column] = sums[column] + v if column in sums else v
        self.fire("on_backward_end", step=step)
        if self.config.grad_clip > 0 and not self._clip_by_plugin:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.fire("on_optimizer_step", step=step, optimizer=optimizer)
        self.step = step
        self.steps_in_epoch += 1
        self.tokens_seen += self.tokens_per_step
        means = {k: v / self.grad_accum for k, v in sums.items()} if self.grad_accum > 1 else sums
        for column, value in means.items():  # summed over the steps of the next metrics row
            self._window[column] = self._window[column] + value if column in self._window else value
        self._window_n += 1
        self._lr = lr
        self.fire("on_step_end", step=step, loss=means["loss/total"])

    def _after_step(self, bar: Any) -> None:
        c = self.config
        step = self.step
        if c.eval_every and step % c.eval_every == 0:
            self.validate(final=step >= self.max_steps)
        if step % self.log_every == 0:
            self._record()
            if bar is not None:
                bar.set_postfix(loss=f"{self.metrics['train_loss']:.4f}",
                                tok_s=f"{self.metrics['tokens_per_s']:.0f}", refresh=False)
        if c.checkpoint_every and step % c.checkpoint_every == 0 and self.checkpoints is not None:
            self.save()

    def _record(self) -> None:
        """Write this step's metrics.csv row, or add a new val loss to the row already written."""
        rows = self.metrics_logger.rows
        if rows and rows[-1].get("step") == self.step:
            if self.last_val_step == self.step:
                self.metrics_logger.update_last(**self._val_columns())
            return
        self._write_row()

    def _flush_epoch_metrics(self) -> None:
        """Values logged in ``on_epoch_end`` describe the epoch just ended: put them in its last row."""
        rows = self.metrics_logger.rows
        if self._extra_metrics and rows and rows[-1].get("step") == self.step:
            values = {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in self._extra_metrics.items()}
            self.metrics_logger.update_last(**values)
            self._extra_metrics = {}

    def _write_row(self) -> None:
        """One metrics.csv row; the only place the train loss is moved to the host."""
        now = time.perf_counter()
        losses: dict[str, float] = {}
        if self._window_n:  # means over the window's steps and over ranks, one transfer
            columns = sorted(self._window)  # the same order on every rank
            stacked = self.dist.all_reduce_mean(torch.stack([self._window[c] for c in columns]))
            losses = {c: v / self._window_n for c, v in zip(columns, stacked.tolist(), strict=True)}
            self.metrics["train_loss"] = losses.pop("train_loss")
        dt = max(now - self._window_t0, 1e-9)
        self.metrics["tokens_per_s"] = (self.tokens_seen - self._window_tokens0) / dt
        vals = self._val_columns() if self.last_val_step == self.step else {}
        val = vals.get("val_loss")
        row = {"step": self.step, "epoch": self.epoch, "train_loss": self.metrics.get("train_loss"),
               **vals, "lr": self._lr, "tokens_per_s": self.metrics["tokens_per_s"], **losses}
        if hasattr(self.model, "metrics"):
            self._extra_metrics.update(self.model.metrics())
        for k, v in self._extra_metrics.items():
            row[k] = float(v) if isinstance(v, torch.Tensor) else v
        self.metrics.update({k: v for k, v in row.items() if v is not None})
        self.metrics_logger.log(row)
        log.info("step %d | epoch %d | loss %.4f%s | lr %.3g | %.0f tok/s", self.step, self.epoch,
                 self.metrics.get("train_loss", math.nan), f" | val {val:.4f}" if val is not None else "",
                 self._lr, self.metrics["tokens_per_s"])
        self._window_n, self._window = 0, {}
        self._window_t0, self._window_tokens0 = now, self.tokens_seen
        self._extra_metrics = {}

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, num_batches: int | None = None) -> float:
        """Mean val loss over the periodic windows, or ``num_batches`` global batches of them.

        The windows are fixed (the same every call) and spread evenly over the split.
        """
        index = self._periodic_index if num_batches is None else \
            self.final_windows.subset_index(int(num_batches) * self.val_loader.global_batch_size)
        return self.evaluator.run(self.forward_model, self.final_windows.take(index), model=self.model).result().loss

    def evaluate_split(self, tokens: np.ndarray, max_tokens: int | None = None) -> EvalResult:
        """Score another split (e.g. the test split) as the final evaluation scores val."""
        other = self.evaluator.on(tokens)
        return other.run(self.forward_model, other.windows(max_tokens), model=self.model).result()

    def validate(self, final: bool = False) -> dict[str, Any]:
        """Evaluate, fire the validation events, track the best loss.

        ``final`` (the run's last evaluation) scores ``trainer.eval_tokens`` windows (default:
        the whole split), otherwise the periodic subset. The best loss is tracked on the
        periodic subset at every evaluation, the final one included (its windows are part of
        the final ones), so best and best step compare like with like.
        """
        self.fire("on_validation_begin")
        t0 = time.perf_counter()
        windows = self.final_windows.take(None if final else self._periodic_index)
        losses = self.evaluator.run(self.forward_model, windows, model=self.model)
        res = losses.result()
        tracked = losses.result(self._periodic_index) if final and self._periodic_index is not None else res
        if final:
            self.final_eval_time = time.perf_counter() - t0
            self.last_final_step = self.step
        self.last_val_step = self.step
        if tracked.loss < self.best_val_loss:
            self.best_val_loss, self.best_step = tracked.loss, self.step
        values = {"val_loss": res.loss, "val_loss_se": res.se, "val_tokens": res.tokens, "val_bpb": res.bpb}
        self.metrics.update(values, best_val_loss=self.best_val_loss)
        metrics = {**values, "step": self.step, "epoch": self.epoch, "best_val_loss": self.best_val_loss,
                   "final": final}
        self.fire("on_validation_end", metrics=metrics)
        return metrics

    def _val_columns(self) -> dict[str, Any]:
        """The newest evaluation's metrics.csv columns."""
        return {k: self.metrics.get(k) for k in ("val_loss", "val_loss_se", "val_tokens")}

    def summary(self) -> dict[str, Any]:
        """End-of-run numbers (summary.json); ``val_*`` are the final evaluation's."""
        return {"step": self.step, "epoch": self.epoch, "val_loss": self.metrics.get("val_loss"),
                "val_loss_se": self.metrics.get("val_loss_se"), "val_tokens": self.metrics.get("val_tokens"),
                "val_bpb": self.metrics.get("val_bpb"),
                "best_val_loss": self.best_val_loss, "best_step": self.best_step,
                "best_val_tokens": self.final_windows.take(self._periodic_index).tokens,
                "train_loss": self.metrics.get("train_loss"),
                "tokens_per_s": self.tokens_seen / self.train_time if self.train_time else 0.0,
                "train_time_s": self.train_time, "eval_time_s": self.evaluator.seconds,
                "final_eval_time_s": self.final_eval_time, "stopped": self.stop_reason,
                "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None}

    # -- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs. Under FSDP gathering the weights is collective."""
        gather = getattr(self.forward_model, "full_state_dict", None)  # ShardedModel
        model_sd, optim_sd = gather(self.optimizer) if gather else (self.model.state_dict(),
                                                                     self.optimizer.state_dict())
        return {
            "model": model_sd,
            "optimizer": optim_sd,
            "lr_schedule": self.lr_schedule.state_dict(),
            "rng": capture_rng(),
            "progress": {"step": self.step, "epoch": self.epoch, "steps_in_epoch": self.steps_in_epoch,
                         "epoch_open": self.epoch_open, "best_val_loss": self.best_val_loss,
                         "best_step": self.best_step, "last_val_step": self.last_val_step,
                         "last_final_step": self.last_final_step,
                         "tokens_seen": self.tokens_seen, "train_time": self.train_time},
            "schedule": self.schedule.state_dict() if self.schedule is not None else {},
            "plugins": self.plugins.state_dict() if self.plugins is not None else {},
            "metrics_rows": [dict(r) for r in self.metrics_logger.rows],
            "config": self.run_config,
            **self.extra_state,
        }

    def save(self) -> Path:
        """Write a checkpoint for the current step and fire ``on_checkpoint_save``.

        Under torchrun rank 0 alone writes (every rank holds the same weights) and fires the
        event; the other ranks only note the path.
        """
        assert self.checkpoints is not None
        if not self.dist.is_main:
            if hasattr(self.forward_model, "full_state_dict"):
                self.state_dict()  # FSDP: every rank takes part in gathering rank 0's copy
            self.last_checkpoint = self.checkpoints.path_for(self.step)
            return self.last_checkpoint
        path = self.checkpoints.save(self.state_dict(), self.step)
        self.last_checkpoint = path
        self.fire("on_checkpoint_save", checkpoint_path=str(path))
        return path

    def load(self, path: str | Path) -> None:
        """Restore everything from ``path`` (raises CheckpointError naming it when unreadable)."""
        self._restore(Path(path), load_checkpoint(path, map_location="cpu"))

    def _auto_resume(self) -> None:
        found = self.checkpoints.load_latest() if self.checkpoints is not None else None
        if found is None:
            where = self.checkpoints.directory if self.checkpoints is not None else "(no checkpoint dir)"
            log.warning("trainer.resume=true but no readable checkpoint in %s; starting fresh", where)
            return
        self._restore(*found)

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        if self.plugins is not None:
            self.plugins.load_state_dict(state.get("plugins", {}))
        if self.schedule is not None and state.get("schedule"):
            self.schedule.load_state_dict(state["schedule"])
        # Plugins that change the model's layout (MoE upcycling) rebuild it here, before
        # the weights and optimizer state of that layout are loaded.
        self.fire("on_checkpoint_load", checkpoint_path=str(path), checkpoint=state)
        load_sharded = getattr(self.forward_model, "load_full_state_dict", None)  # FSDP
        if load_sharded is not None:
            load_sharded(self.optimizer, state["model"], state["optimizer"])
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state.get("lr_schedule", {}))
        p = state["progress"]
        self.step, self.epoch = int(p["step"]), int(p["epoch"])
        self.steps_in_epoch, self.epoch_open = int(p["steps_in_epoch"]), bool(p["epoch_open"])
        self.best_val_loss, self.best_step = float(p["best_val_loss"]), int(p["best_step"])
        self.last_val_step = int(p.get("last_val_step", -1))
        self.last_final_step = int(p.get("last_final_step", -1))
        self.tokens_seen, self.train_time = int(p["tokens_seen"]), float(p["train_time"])
        self.metrics_logger = MetricsLogger(self.metrics_logger.path, state.get("metrics_rows", []))
        if self.metrics_logger.rows:  # latest values (val_loss, ...) as an uninterrupted run has them
            self.metrics.update({k: v for k, v in self.metrics_logger.rows[-1].items() if v is not None})
        restore_rng(state["rng"])
        self.last_checkpoint = path
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)

    # -- internals ----------------------------------------------------------------------
    def _loss_terms(self, aux: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This micro-batch's added terms by name: layers' aux losses, then plugins' ``add_loss``."""
        terms = dict(aux)
        for name, value in self._pending_losses.items():
            terms[name] = terms[name] + value if name in terms else value
        self._pending_losses = {}
        return terms

    def _apply_schedule(self, by: str, step: int | None = None) -> None:
        if self.schedule is not None:
            self.schedule.apply(self, epoch=self.epoch, step=step if step is not None else self.step, by=by)

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _install_signal_handlers(self) -> Any:
        """SIGINT/SIGTERM end the run after the current step (a checkpoint is then saved)."""
        return install_stop_handlers(self._on_signal)

    def _on_signal(self, signum: int) -> None:
        log.warning("received %s: stopping after this step and saving a checkpoint",
                    signal.Signals(signum).name)
        self._signal = signum

    @property
    def interrupted_by(self) -> int | None:
        """The signal number that stopped the run, if any."""
        return self._signal


def run_length(config: TrainerConfig | Mapping[str, Any], loader_batches: int) -> tuple[int, int]:
    """``(steps_per_epoch, max_steps)`` for a train loader of ``loader_batches`` micro-batches an epoch.

    The app needs the run's length before the trainer exists (the LR schedule and the
    schedule anneal over it); the trainer uses the same function.
    """
    c = _trainer_config(config)
    steps_per_epoch = int(c.steps_per_epoch or max(1, loader_batches // max(1, int(c.grad_accum))))
    by_epochs = c.max_epochs * steps_per_epoch if c.max_epochs is not None else None
    if c.max_steps is not None and by_epochs is not None:
        return steps_per_epoch, min(int(c.max_steps), by_epochs)
    if c.max_steps is not None:
        return steps_per_epoch, int(c.max_steps)
    if by_epochs is not None:
        return steps_per_epoch, by_epochs
    raise ValueError("set trainer.max_steps or trainer.max_epochs")


def _trainer_config(config: Any) -> TrainerConfig:
    if isinstance(config, TrainerConfig):
        return config
    data = dict(to_plain(config) or {})
    known = {f.name for f in fields(TrainerConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown trainer option(s) {unknown}; valid: {sorted(known)}")
    return TrainerConfig(**{**asdict(TrainerConfig()), **data})
