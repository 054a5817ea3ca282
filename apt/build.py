"""Step three of a run (compose -> check -> build -> train): a checked config becomes objects.

:func:`build` reads only the :class:`~apt.checks.RunConfig` and the plugin manager the
check step set up, in this order: device and seeds -> data -> loaders -> the model config
(an :class:`~apt.core.APTConfig` made once, with the tokenizer's vocabulary size) -> model
from the run's registry -> optimizer -> LR schedule and schedule over the run's length ->
trainer -> ``on_model_init``. Settings the run's real length leaves without effect are
logged (:mod:`apt.checks.length`) where the config check could not count them. Problems only
the real objects reveal (an optimizer argument its class does not take, CUDA missing after
all, a model larger than the GPU's free memory) are ConfigProblems too.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from apt.checks import CheckedRun, RunConfig
from apt.checks.length import length_warnings
from apt.checks.memory import memory_problem
from apt.core.config import APTConfig
from apt.core.errors import ConfigProblems

__all__ = ["BuiltRun", "build", "model_config", "resolve_device"]

log = logging.getLogger("apt")


@dataclass
class BuiltRun:
    """What training needs: the trainer (holding model, data, optimizer and schedules)."""

    trainer: Any
    model: Any
    n_params: int
    epochs: int
    data: Any  # the TokenData (its test split is scored after training on request)


def resolve_device(name: str) -> str:
    """``auto`` -> cuda, then mps, then cpu; an explicit device must be available."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigProblems([f"trainer.device={name} but CUDA is not available; use trainer.device=cpu or auto"])
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigProblems(["trainer.device=mps but MPS is not available; use trainer.device=cpu or auto"])
    return name


def build(checked: CheckedRun, ctx: Any) -> BuiltRun:
    """Data, model, optimizer and trainer for ``checked``, inside the process group ``ctx``."""
    import random

    import numpy as np
    import torch

    from apt.data import DataError, load_dataset
    from apt.data.loader import BatchLoader
    from apt.modeling import ModelBuilder
    from apt.optim import build_optimizer
    from apt.plugins import CLIPS_GRADIENTS
    from apt.schedule import Schedule
    from apt.training.distributed import ParallelModel, ShardedModel
    from apt.training.lr import WarmupCosine
    from apt.training.progress import RunLength
    from apt.training.trainer import Trainer, run_length

    cfg, pm = checked.config, checked.plugins
    t_cfg, d_cfg, o_cfg = cfg.trainer, cfg.data, cfg.optim
    device = resolve_device(t_cfg["device"])
    if ctx.enabled and device.startswith("cuda"):  # one GPU per process
        device = f"cuda:{ctx.local_rank}"
    if t_cfg.get("threads"):
        torch.set_num_threads(int(t_cfg["threads"]))
    if t_cfg.get("deterministic"):
        torch.use_deterministic_algorithms(True)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)

    t0 = time.perf_counter()
    try:
        data = load_dataset(d_cfg)
    except DataError as exc:  # what the check could not see without reading the data
        raise ConfigProblems([str(exc)]) from None
    log.info("data %s (%.2fs)", data.describe(), time.perf_counter() - t0)
    # data.batch_size is per process: the global batch is batch_size * world_size
    loader_kw = {"batch_size": d_cfg["batch_size"], "block_size": d_cfg["block_size"], "device": device,
                 "rank": ctx.rank, "world_size": ctx.world_size}
    try:  # the check estimated the token count; the loader counts the real one
        train_loader = BatchLoader(data.train, seed=cfg.seed, **loader_kw)
        val_loader = BatchLoader(data.val, seed=cfg.seed, **loader_kw)
    except ValueError as exc:
        raise ConfigProblems([f"data: {exc}"]) from None

    model_cfg = model_config(cfg, data.vocab_size)
    if device.startswith("cuda"):  # the config check compared host memory; a GPU's needs torch
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        problem = memory_problem(cfg.model, o_cfg, data.vocab_size, free, f"free on {device}")
        if problem:
            raise ConfigProblems([problem])
    builder = ModelBuilder(model_cfg, registry=pm.registry)
    model = builder.build_model().to(device)
    n_params = model.num_params() if hasattr(model, "num_params") else sum(p.numel() for p in model.parameters())
    log.info("model %s/%s/%s: %.2fM parameters on %s", builder.attention_name, builder.ffn_name,
             model_cfg.norm, n_params / 1e6, device)

    optimizer = build_optimizer(o_cfg, model, device=device)
    clippers = [p.get_name() for p in pm.with_capability(CLIPS_GRADIENTS)]
    if clippers and t_cfg["grad_clip"] > 0:
        log.info("plugin %s clips gradients; trainer.grad_clip is not applied while it is enabled",
                 " and ".join(clippers))
    steps_per_epoch, max_steps = run_length(t_cfg, train_loader.batches_per_epoch)
    epochs = t_cfg.get("max_epochs") or math.ceil(max_steps / steps_per_epoch)
    lr_schedule = WarmupCosine(optimizer, warmup_steps=o_cfg["warmup_steps"], total_steps=max_steps,
                               decay=o_cfg["decay"], min_lr_ratio=o_cfg["min_lr_ratio"],
                               cooldown_fraction=o_cfg.get("cooldown_fraction"))
    length = RunLength(max_steps, steps_per_epoch, math.ceil(max_steps / steps_per_epoch))
    shown = list(checked.warnings)  # the check's: printed and logged already
    for line in length_warnings(length, o_cfg, Schedule(cfg.schedule, max_epochs=epochs, max_steps=max_steps),
                                [(n, pm.get_plugin(n)) for n in pm.list_plugins()]):
        if line not in shown:  # what only the data's real size shows
            log.warning(line)
            shown.append(line)
    schedule = Schedule(cfg.schedule, max_epochs=epochs, max_steps=max_steps, reported=shown)
    if ctx.enabled and ctx.strategy == "ddp":
        forward_model = ParallelModel(model, ctx, compile=t_cfg["compile"])
    elif ctx.enabled:
        forward_model = None  # FSDP shards after on_model_init, below
    else:
        forward_model = torch.compile(model) if t_cfg["compile"] else None
    trainer = Trainer(
        model, optimizer, train_loader, val_loader, config=t_cfg, lr_schedule=lr_schedule,
        plugins=pm, schedule=schedule, device=device, out_dir=cfg.run_dir, run_config=cfg.resolved,
        forward_model=forward_model, dist=ctx,
        extra_state={"model_config": model_cfg.to_dict(), "tokenizer": data.tokenizer.to_dict()},
        token_bytes=data.tokenizer.token_bytes(),
    )
    trainer.fire("on_model_init")  # model, optimizer, schedule, epoch=0, step=0: the trainer's context
    # A plugin may have added parameters to the model in on_model_init.
    known = {id(p) for g in optimizer.param_groups for p in g["params"]}
    new = [p for p in model.parameters() if id(p) not in known]
    if new:
        trainer.add_param_group(new)
    if ctx.enabled and ctx.strategy == "fsdp":
        trainer.forward_model = ShardedModel(model, ctx, optimizer, compile=t_cfg["compile"])
    return BuiltRun(trainer, model, n_params, epochs, data)


def model_config(cfg: RunConfig, vocab_size: int) -> APTConfig:
    """The model's APTConfig, made once the tokenizer's vocabulary size is known."""
    routes = cfg.providers["router"] is not None
    return APTConfig(
        **cfg.model, vocab_size=vocab_size,
        attention_name=cfg.providers["attention"], ffn_name=cfg.providers["ffn"],
        router_name=cfg.providers["router"], attention_config=cfg.provider_options["attention"],
        ffn_config=cfg.provider_options["ffn"], router_config=cfg.provider_options["router"] if routes else {},
        plugins=list(cfg.plugins), schedules=cfg.schedule)

