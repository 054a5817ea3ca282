"""The training loop: one place where every lifecycle event fires.

The loop, with the event each line fires (context keywords ``trainer, model, optimizer,
schedule, epoch, step`` go with every event; :data:`apt.plugins.hooks.EVENT_EXTRAS` declares
each event's own keywords, which :meth:`Trainer.fire` enforces and hooks are checked against)::

    (app)  on_model_init(model)                       after the model is built
    resume: plugins.load_state_dict; on_checkpoint_load(checkpoint_path, checkpoint)
            then model / optimizer / lr / RNG / progress / metrics window / a decided stop are restored
    on_train_begin(config, trainer)
    (resumed after an epoch's last step, before its end: that epoch's end, as below, first)
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
            on_backward_end()                         clipping plugins act here; a plugin may skip_step()
            unless skipped (a plugin, or trainer.on_nonfinite=skip):
                clip to trainer.grad_clip (unless an enabled plugin declares clips_gradients)
                optimizer.step(); on_optimizer_step(optimizer)
            on_step_end(step, loss)                   loss: the detached total, mean over micro-batches
            every eval_every (unless null): on_validation_begin(); eval (fixed subset); on_validation_end(metrics)
            every log_every, and after each evaluation: metrics.csv row, progress bar
            every checkpoint_every: save; on_checkpoint_save(checkpoint_path)
            stop if trainer.should_stop or a plugin's should_stop (the run ends), a plugin
                 failed (the run fails: see below), or SIGINT/SIGTERM (the run pauses: see below)
        (eval if eval_on_epoch_end and not just done); on_epoch_end(epoch, metrics)
    (final eval: whole val split, if not just done); save; on_checkpoint_save(checkpoint_path)
    on_train_end(metrics)

A run fails when a plugin hook is disabled by repeated failures (``trainer.on_plugin_error=
fail``, the default; ``warn`` trains on) or a plugin calls :meth:`Trainer.fail`: the loop ends
after the step in progress, with no final evaluation, checkpoint or ``on_train_end`` (the
model is not the one that was asked for); the summary's ``failed`` says why, and the app
exits 1. Either way the summary's ``plugin_errors`` name every disabled hook with its
plugin's first error.

SIGINT/SIGTERM pause the run: the step in progress finishes, a checkpoint of that step
boundary is saved, and nothing else happens (no evaluation, no metrics row, no
``on_train_end``: an uninterrupted run would not have had them there). ``trainer.resume=true``
then continues exactly: batches are a pure function of ``(seed, epoch, index)`` (see
:class:`apt.data.BatchLoader`) and the checkpoint holds model, optimizer, lr position, every
RNG state, the progress counters (:mod:`.progress`), the half-filled metrics window
(:mod:`.window`), plugin and schedule state, so on CPU the resumed run writes the
metrics.csv of an uninterrupted one. A non-finite loss ends the run by default
(:mod:`.nonfinite`).

What is logged in metrics.csv, and how a row averages its steps: :mod:`.window`; when a row is
written: :mod:`.rows`.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from apt.data.loader import BatchLoader
from apt.modeling.auxiliary import collect_aux_losses
from apt.optim.factory import add_params
from apt.plugins.base import CLIPS_GRADIENTS
from apt.plugins.hooks import CONTEXT_PARAMS, EVENT_EXTRAS
from apt.training import rows
from apt.training.checkpoint import CheckpointManager, load_checkpoint
from apt.training.checkpointing import Checkpointing
from apt.training.distributed import DistContext, no_sync
from apt.training.evaluation import EvalResult, RunEvaluation, autocast_dtype
from apt.training.lr import WarmupCosine
from apt.training.metrics import MetricsLogger, logging_redirect, plot_losses, progress_bar
from apt.training.nonfinite import NonFiniteCheck
from apt.training.progress import Progress, run_length
from apt.training.schema import TrainerConfig, trainer_config
from apt.training.signals import install_stop_handlers
from apt.training.window import MetricsWindow

__all__ = ["Trainer", "run_length"]

log = logging.getLogger(__name__)

_CONTEXT = frozenset(CONTEXT_PARAMS)
_EXTRAS = {event: frozenset(extras) for event, extras in EVENT_EXTRAS.items()}


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
        self.config = c = trainer_config(config)
        self.dist = dist or DistContext()
        self.model = model
        self.forward_model = model if forward_model is None else forward_model  # e.g. torch.compile(model)
        self.optimizer = optimizer
        self.train_loader, self.val_loader = train_loader, val_loader
        self.plugins, self.schedule = plugins, schedule
        self.device = torch.device(device)
        self.run_config = dict(run_config or {})
        self.extra_state = dict(extra_state or {})
        self.out_dir = Path(out_dir) if out_dir is not None else None
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
        self.evals = RunEvaluation(val_loader, eval_tokens=c.eval_tokens, eval_batches=c.eval_batches,
                                   token_bytes=token_bytes, device=self.device, dist=self.dist,
                                   autocast=self.autocast_dtype)
        self.checkpointing = Checkpointing.of_run(c.checkpoint_dir, self.out_dir, c.keep_last)
        self.checkpoints: CheckpointManager | None = self.checkpointing.manager  # None: nothing is saved
        writes = self.out_dir is not None and self.dist.is_main
        self.metrics_logger = MetricsLogger(self.out_dir / "metrics.csv" if writes else None)
        self.progress = Progress()
        self.window = MetricsWindow()
        self.nonfinite = NonFiniteCheck(c.on_nonfinite, self.device)
        self.should_stop = False
        self.stop_reason: str | None = None
        self.failed: str | None = None  # why the run failed (see fail); None: it did not
        self._disabled_seen = 0  # disabled hooks already acted on (_check_plugins)
        self.metrics: dict[str, Any] = {}
        self.schedule_values: dict[str, float] = {}
        self._clock: float | None = None  # perf_counter() this session's training time counts from
        self._pending_losses: dict[str, torch.Tensor] = {}
        self._skip_reason: str | None = None
        self._signal: int | None = None
        self._clippers = plugins.with_capability(CLIPS_GRADIENTS) if plugins is not None else []

    @property
    def step(self) -> int:
        """Optimizer steps done (inside a step's events: the step being run)."""
        return self.progress.step

    @step.setter
    def step(self, value: int) -> None:
        self.progress.step = int(value)

    @property
    def epoch(self) -> int:
        return self.progress.epoch

    # -- public API for plugins ---------------------------------------------------------
    def add_loss(self, name: str, tensor: torch.Tensor) -> None:
        """Add ``tensor`` to this micro-batch's loss (before backward); logged as ``loss/<name>``."""
        self._pending_losses[name] = self._pending_losses[name] + tensor if name in self._pending_losses else tensor

    def log_metric(self, name: str, value: Any) -> None:
        """Record a value for the next metrics.csv row (a column named ``name``)."""
        self.window.log(name, value)
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
        """End the run after this step (then the final evaluation and checkpoint, as at max_steps)."""
        self.should_stop = True
        self.stop_reason = self.stop_reason or reason

    def fail(self, reason: str) -> None:
        """End the run as failed after this step: no final evaluation, checkpoint or
        ``on_train_end``; the summary's ``failed`` is ``reason`` and the app exits 1. For a
        plugin that cannot do what the run asked of it (a tracker that cannot start a run)."""
        if self.failed is None:
            self.failed = reason
            log.error("the run fails: %s", reason)
        self.request_stop(reason)

    def skip_step(self, reason: str) -> None:
        """Drop this step's update (call before the optimizer step, e.g. in ``on_backward_end``).

        The gradients are discarded, the optimizer does not step, ``on_optimizer_step`` does
        not fire and the step's losses stay out of metrics.csv; the step still counts.
        """
        self._skip_reason = reason

    # -- events -------------------------------------------------------------------------
    def fire(self, event: str, **kwargs: Any) -> list[Any]:
        """Trigger ``event`` with the context keywords plus ``kwargs``.

        ``kwargs`` are exactly the event's own keywords (:data:`~apt.plugins.hooks.EVENT_EXTRAS`,
        the declaration hooks are checked against at registration) plus context keywords to
        override (``step`` inside a step is the step being run), so the two cannot drift.
        """
        if kwargs.keys() - _CONTEXT != _EXTRAS.get(event):
            raise ValueError(f"the trainer fires {event!r} with {sorted(kwargs)}; EVENT_EXTRAS declares "
                             f"{list(EVENT_EXTRAS.get(event, ('<no such event>',)))} (plus the context keywords)")
        if self.plugins is None:
            return []
        ctx = {"trainer": self, "model": self.model, "optimizer": self.optimizer,
               "schedule": self.schedule, "epoch": self.epoch, "step": self.step}
        ctx.update(kwargs)
        return self.plugins.trigger_event(event, **ctx)

    # -- the loop -----------------------------------------------------------------------
    def fit(self, resume_from: str | Path | None = None, auto_resume: bool = False) -> dict[str, Any]:
        """Train until max_steps/max_epochs or a stop; returns the summary metrics.

        ``auto_resume``: continue from the newest readable checkpoint of the checkpoint
        directory (``resume_from``, the run's ``ckpt_path``, only while there is none).
        """
        self.checkpointing.start(self, resume_from, auto_resume)
        p = self.progress
        self.fire("on_train_begin", config=self.run_config)
        restore = install_stop_handlers(self._on_signal)
        bar = progress_bar(self.config.progress and self.dist.is_main, self.max_steps, p.step)
        self._clock = time.perf_counter()
        self.window.start_clock(p.tokens_seen)
        try:
            with logging_redirect(bar):
                self._loop(bar)
            self.nonfinite.check(self.dist, self.last_checkpoint)
        finally:
            p.train_time, self._clock = self.train_seconds(), None
            restore()
            if bar is not None:
                bar.close()
        if self._signal is not None:  # paused: what an uninterrupted run has at this boundary, saved
            if self.checkpoints is not None:
                self.save()
            return self.summary()
        self._agree_failed()
        if self.failed is None and p.last_final_step != p.step:
            self.validate(final=True)
            self._agree_failed()  # a hook disabled in the final evaluation
        if p.step > 0:
            rows.record(self)
        if self.failed is not None:  # not the model that was asked for: no final checkpoint
            return self.summary()
        if self.checkpoints is not None:
            self.save()
        summary = self.summary()
        self.fire("on_train_end", metrics=summary)
        if self.config.plot and self.out_dir is not None and self.dist.is_main:
            try:
                plot_losses(self.metrics_logger.rows, self.out_dir / "loss.png", title="loss")
            except Exception as exc:  # noqa: BLE001 - a plot must never fail a finished run
                log.warning("could not write loss.png: %s", exc)
        return summary

    def _loop(self, bar: Any) -> None:
        p = self.progress
        if p.epoch_open:  # resumed inside an epoch: restore values, publish and fire nothing again
            self._apply_schedule("epoch", publish=False)
        while True:
            # An epoch whose last step is done ends before anything else, also when the run
            # stops there and when it resumes there (its checkpoint is written by the step,
            # before the epoch's end): its evaluation, row and on_epoch_end values are never lost.
            # A run that failed in that step ends first: its epoch end would evaluate and record
            # a model that is not the one asked for (the ranks agree: the evaluation is collective).
            if p.epoch_open and p.steps_in_epoch >= self.steps_per_epoch:
                self._agree_failed()
                if self.failed is None:
                    self._end_epoch()
            if self._done():
                break
            if not p.epoch_open:
                if self.config.max_epochs is not None and p.epoch >= self.config.max_epochs:
                    break
                p.epoch += 1
                p.steps_in_epoch, p.epoch_open = 0, True
                self._apply_schedule("epoch")
                self.fire("on_epoch_begin", epoch=p.epoch)
            while p.steps_in_epoch < self.steps_per_epoch and not self._done():
                first = p.steps_in_epoch * self.grad_accum
                self._train_step(self.train_loader.epoch_rows(p.epoch, first, self.grad_accum))
                if bar is not None:
                    bar.update(1)
                self._after_step(bar)

    def _end_epoch(self) -> None:
        p = self.progress
        if self.config.eval_on_epoch_end and p.last_val_step != p.step:
            self.validate(final=p.step >= self.max_steps)
        rows.record(self)
        self.fire("on_epoch_end", epoch=p.epoch, metrics=dict(self.metrics))
        rows.flush_epoch_metrics(self)
        p.epoch_open = False

    def _done(self) -> bool:
        """Whether the loop ends here: max_steps, a stop (the run ends) or a signal (it pauses).

        Under torchrun the ranks agree (a signal may reach one rank only, and a rank that
        stops alone leaves the others hanging in a collective).
        """
        self._check_plugins()
        if self.step >= self.max_steps:
            return True
        if self.should_stop and self.stop_reason is None:
            self.stop_reason = "trainer.should_stop was set"
        if self.plugins is not None and self.plugins.should_stop:
            self.request_stop("a plugin asked to stop")
        local = 100 + self._signal if self._signal is not None else 2 if self.failed else int(self.should_stop)
        agreed = self.dist.max_int(local, self.device)
        if agreed >= 100 and self._signal is None:
            self._on_signal(agreed - 100)
        elif agreed == 2 and self.failed is None:
            self.fail("a plugin failed on another rank")
        elif agreed == 1 and not self.should_stop:
            self.request_stop("another rank stopped")
        return agreed > 0

    def _train_step(self, batch_rows: np.ndarray) -> None:
        step = self.step + 1
        self._apply_schedule("step", step=step)
        lr = self.lr_schedule.apply(self.step)
        model, optimizer = self.model, self.optimizer
        batches = [self.train_loader.batch(r) for r in batch_rows]
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
                self.nonfinite.observe(total)
                (total / self.grad_accum if self.grad_accum > 1 else total).backward()
            parts = {"train_loss": loss, "loss/total": total, **{f"loss/{k}": v for k, v in terms.items()}}
            for column, value in parts.items():
                v = value.detach().float()
                sums[column] = sums[column] + v if column in sums else v
        self.fire("on_backward_end", step=step)
        skipped, self._skip_reason = self._skip_reason, None
        if skipped is None and self.nonfinite.should_skip(self.dist):
            skipped = "non-finite loss (trainer.on_nonfinite=skip)"
            log.warning("step %d skipped: its loss is not finite (trainer.on_nonfinite=skip; %d so far)",
                        step, self.nonfinite.skipped)
            self.log_metric("nonfinite/skipped", self.nonfinite.skipped)
        if skipped is None:
            if self.config.grad_clip > 0 and not any(p.is_enabled() for p in self._clippers):
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip, foreach=True)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.nonfinite.end_step(step, applied=skipped is None)
        if skipped is None:
            self.fire("on_optimizer_step", step=step, optimizer=optimizer)
        p = self.progress
        p.step, p.steps_in_epoch, p.tokens_seen = step, p.steps_in_epoch + 1, p.tokens_seen + self.tokens_per_step
        means = {k: v / self.grad_accum for k, v in sums.items()} if self.grad_accum > 1 else sums
        if skipped is None:
            self.window.add_step(means, lr)
        self.window.lr = lr
        self.fire("on_step_end", step=step, loss=means["loss/total"])

    def _after_step(self, bar: Any) -> None:
        c, step = self.config, self.step
        if c.eval_every and step % c.eval_every == 0:
            self.validate(final=step >= self.max_steps)
        if step % c.log_every == 0 or self.progress.last_val_step == step:  # every val loss gets its row
            rows.record(self)
            if bar is not None:
                bar.set_postfix(loss=f"{self.metrics.get('train_loss', math.nan):.4f}",
                                tok_s=f"{self.metrics['tokens_per_s']:.0f}", refresh=False)
        if c.checkpoint_every and step % c.checkpoint_every == 0 and self.checkpoints is not None:
            self.save()

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, num_batches: int | None = None) -> float:
        """Mean val loss over the periodic windows, or ``num_batches`` global batches of them."""
        return self.evals.subset(self.forward_model, self.model, num_batches)

    def evaluate_split(self, tokens: np.ndarray, max_tokens: int | None = None) -> EvalResult:
        """Score another split (e.g. the test split) as the final evaluation scores val."""
        return self.evals.split(self.forward_model, self.model, tokens, max_tokens)

    def validate(self, final: bool = False) -> dict[str, Any]:
        """Evaluate, fire the validation events, track the best loss.

        ``final`` (the run's last evaluation) scores ``trainer.eval_tokens`` windows (default:
        the whole split), otherwise the periodic subset. The best loss is tracked on the
        periodic subset at every evaluation, the final one included (its windows are part of
        the final ones), so best and best step compare like with like.
        """
        self.nonfinite.check(self.dist, self.last_checkpoint)
        p = self.progress
        self.fire("on_validation_begin")
        t0 = time.perf_counter()
        res, tracked = self.evals.run(self.forward_model, self.model, final=final)
        if final:
            p.final_eval_time = time.perf_counter() - t0
            p.last_final_step = p.step
            if self._clock is not None:  # the final evaluation is not training: the clock skips it
                self._clock += p.final_eval_time
        p.last_val_step = p.step
        if tracked.loss < p.best_val_loss:
            p.best_val_loss, p.best_step = tracked.loss, p.step
        values = {"val_loss": res.loss, "val_loss_se": res.se, "val_tokens": res.tokens, "val_bpb": res.bpb}
        self.metrics.update(values, best_val_loss=p.best_val_loss)
        metrics = {**values, "step": p.step, "epoch": p.epoch, "best_val_loss": p.best_val_loss, "final": final}
        self.fire("on_validation_end", metrics=metrics)
        return metrics

    def summary(self) -> dict[str, Any]:
        """End-of-run numbers (summary.json); ``val_*`` are the final evaluation's. Times and
        throughput are over the whole run, every session of a resumed run included."""
        p, train_time = self.progress, self.train_seconds()
        return {"step": p.step, "epoch": p.epoch, "val_loss": self.metrics.get("val_loss"),
                "val_loss_se": self.metrics.get("val_loss_se"), "val_tokens": self.metrics.get("val_tokens"),
                "val_bpb": self.metrics.get("val_bpb"),
                "best_val_loss": p.best_val_loss if math.isfinite(p.best_val_loss) else None,  # None: no evaluation
                "best_step": p.best_step,
                "best_val_tokens": self.evals.periodic_tokens,
                "train_loss": self.metrics.get("train_loss"),
                "tokens_per_s": p.tokens_seen / train_time if train_time else 0.0,
                "train_time_s": train_time, "eval_time_s": self.evals.evaluator.seconds,
                "final_eval_time_s": p.final_eval_time, "stopped": self._stopped(),
                "failed": self.failed, "plugin_errors": [str(h) for h in self._disabled_hooks()],
                "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None}

    def _stopped(self) -> str | None:
        """Why the loop ended early: a pause by a signal, else a stop's reason (None: it ran to the end)."""
        return f"signal {signal.Signals(self._signal).name}" if self._signal is not None else self.stop_reason

    def train_seconds(self) -> float:
        """Seconds of training so far, over every session of the run (checkpoints carry them):
        the final evaluation aside, the periodic ones included."""
        p = self.progress
        return p.train_time + (time.perf_counter() - self._clock if self._clock is not None else 0.0)

    # -- checkpoints (apt.training.checkpointing) ----------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs. Under torchrun every rank calls it (collective)."""
        return self.checkpointing.state(self)

    def save(self) -> Path:
        """Write a checkpoint for the current step and fire ``on_checkpoint_save`` (see
        :meth:`Checkpointing.save`; never after a non-finite loss under on_nonfinite=stop)."""
        return self.checkpointing.save(self)

    def load(self, path: str | Path) -> None:
        """Restore everything from ``path`` (raises CheckpointError naming it when unreadable)."""
        self.checkpointing.restore(self, Path(path), load_checkpoint(path, map_location="cpu"))

    @property
    def last_checkpoint(self) -> Path | None:
        return self.checkpointing.last

    # -- internals ----------------------------------------------------------------------
    def _loss_terms(self, aux: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This micro-batch's added terms by name: layers' aux losses, then plugins' ``add_loss``."""
        terms = dict(aux)
        for name, value in self._pending_losses.items():
            terms[name] = terms[name] + value if name in terms else value
        self._pending_losses = {}
        return terms

    def _apply_schedule(self, by: str, step: int | None = None, publish: bool = True) -> None:
        if self.schedule is not None:
            self.schedule.apply(self, epoch=self.epoch, step=step if step is not None else self.step, by=by,
                                publish=publish)

    def _disabled_hooks(self) -> list[Any]:
        return self.plugins.disabled_hooks() if self.plugins is not None else []

    def _check_plugins(self) -> None:
        """Act on hooks disabled since the last look: fail the run (``on_plugin_error=fail``)
        or log that training goes on without them (``warn``)."""
        disabled = self._disabled_hooks()
        new, self._disabled_seen = disabled[self._disabled_seen:], len(disabled)
        for hook in new:
            if self.config.on_plugin_error == "fail":
                self.fail(f"{hook} (trainer.on_plugin_error=fail)")
            else:
                log.warning("%s; training goes on without it (trainer.on_plugin_error=warn)", hook)

    def _agree_failed(self) -> None:
        """:meth:`_check_plugins`, then all ranks fail if one does (a checkpoint and an epoch's end are collective)."""
        self._check_plugins()
        if self.dist.any_true(self.failed is not None, self.device) and self.failed is None:
            self.fail("a plugin failed on another rank")

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _on_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM (apt.training.signals): pause after this step and save a checkpoint."""
        name = signal.Signals(signum).name
        log.warning("received %s: stopping after this step and saving a checkpoint", name)
        self._signal = signum  # a pause, not a stop: stop_reason keeps a stop already decided

    @property
    def interrupted_by(self) -> int | None:
        """The signal number that paused the run, if any."""
        return self._signal
