"""The one place that turns a composed config into objects and runs them.

Flow (ARCHITECTURE.md): check what can be checked without compute (:func:`validate`, no
torch) -> load plugins from ``cfg.plugin`` and ``setup_all`` -> resolve providers against
the registry (plugin-registered ones included) and check the model config -> data ->
schedule -> model -> ``on_model_init`` -> optimizer -> :class:`~apt.training.Trainer` ->
``teardown_all`` -> summary. Every configuration problem found before data or model are
built is reported as one line; :func:`main` prints them and exits with status 2.

Config formats (conf/):

- ``provider/<kind>/<option>.yaml``: ``_target_`` (a provider class), ``name`` (its registry
  name), then the provider's options. A ``_target_`` not registered under ``name`` is
  registered; without ``_target_`` the name must be registered already (built-in, entry
  point, or by a selected plugin's ``setup``): ``provider/attention=registered
  provider.attention.name=my_attention``.
- ``plugin/<name>.yaml``: ``<name>: {_target_: <Plugin class>, ...options}``; the group is
  a list (``plugin=[moe,align]``). ``_target_`` may be left out for a plugin the manager
  knows by name (built-in or entry point): ``+plugin.my_plugin={}``. Relative paths in
  plugin options named ``*_file`` or ``*_dir`` are taken relative to the run directory.
"""

from __future__ import annotations

import importlib
import logging
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from apt.core.config import APTConfig
from apt.training.validation import (
    KINDS,
    ConfigProblems,
    check_overrides,
    dotted_target,
    to_plain,
    validate,
)

__all__ = ["ConfigProblems", "check_overrides", "in_run_dir", "load_plugins", "main", "new_plugin_manager",
           "resolve_device", "run", "validate"]

log = logging.getLogger("apt")


def main(cfg: DictConfig) -> float:
    """Hydra task function: run, or print the problems (one line each) and exit with 2."""
    from apt.training.checkpoint import CheckpointError

    try:
        return run(cfg)
    except ConfigProblems as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        if _in_multirun():
            raise  # one failed job of a sweep: Hydra records it, the sweep goes on
        raise SystemExit(2) from None
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if _in_multirun():
            raise
        raise SystemExit(1) from None


# -- building ------------------------------------------------------------------------------
def new_plugin_manager(strict: bool = False) -> Any:
    """A fresh manager, registry and hook manager for one run (multirun jobs share nothing)."""
    from apt.core.registry import Registry
    from apt.plugins import HookManager, PluginManager

    hooks = HookManager(strict=True) if strict else HookManager()
    return PluginManager(registry=Registry.with_builtins(entry_points=True), hook_manager=hooks)


def load_plugins(pm: Any, plugins: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Register each ``_target_`` under its name and ``load_plugin``; problems as lines."""
    from apt.plugins import PluginError

    problems = []
    for name, node in plugins.items():
        options = {k: v for k, v in dict(node).items() if k != "_target_"}
        target = node.get("_target_")
        try:
            if target:
                cls = _import_target(str(target))
                if name not in pm.available_plugins():
                    pm.register_plugin(name, cls)
                elif pm.get_plugin_class(name) is not cls:
                    pm.register_plugin(name, cls, override=True)
            pm.load_plugin(name, options)
        except (PluginError, ImportError, AttributeError, TypeError, ValueError) as exc:
            problems.append(f"plugin {name!r}: {exc}" if name not in str(exc) else str(exc))
    return problems


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


def run(cfg: DictConfig, *, out_dir: str | Path | None = None, plugin_manager: Any = None) -> float:
    """Validate, build and train; returns the final validation loss."""
    problems = validate(cfg, plugin_manager)
    if problems:
        raise ConfigProblems(problems)
    plain = to_plain(cfg)
    t_cfg = plain["trainer"]
    if out_dir is None:
        out_dir = _hydra_output_dir()
    from apt.training import distributed

    ctx = distributed.setup(resolve_device(t_cfg["device"]), t_cfg.get("strategy", "ddp"))
    try:
        if ctx.enabled:  # rank 0's run directory (the others' Hydra wrote none, see train.py)
            out_dir = ctx.broadcast_object(out_dir)
        return _run(cfg, plain, pm=plugin_manager, out_dir=out_dir, ctx=ctx)
    finally:
        distributed.teardown(ctx)


def _run(cfg: DictConfig, plain: dict[str, Any], *, pm: Any, out_dir: str | Path | None, ctx: Any) -> float:
    """The rest of :func:`run`, inside the process group (when there is one)."""
    t_cfg = plain["trainer"]
    plugins_cfg = plain.get("plugin") or {}
    pm = pm if pm is not None else new_plugin_manager(t_cfg["strict_hooks"])
    if out_dir is not None:
        plugins_cfg = {n: in_run_dir(o, Path(out_dir)) for n, o in plugins_cfg.items()}
    problems = load_plugins(pm, plugins_cfg)
    if problems:
        raise ConfigProblems(problems)
    try:
        builder = _model_builder(pm, plain)  # plugins' setup registers their providers first
        optimizer_factory = _optimizer_factory(cfg)
    except ConfigProblems:
        pm.teardown_all()
        raise
    try:
        return _train(cfg, plain, pm, builder, optimizer_factory, out_dir, ctx)
    finally:
        pm.teardown_all()


def _model_builder(pm: Any, plain: dict[str, Any]) -> Any:
    from apt.plugins import PluginError

    try:
        pm.setup_all()
    except PluginError as exc:
        raise ConfigProblems([str(exc)]) from None
    reg = pm.registry
    problems, names, options = [], {}, {}
    for kind in KINDS:
        node = dict(plain["provider"][kind])
        name, target = str(node.pop("name")), node.pop("_target_", None)
        names[kind], options[kind] = name, node
        if target:
            dotted = dotted_target(str(target))
            if reg.has(kind, name) and not reg.spec(kind, name).same_target(dotted):
                problems.append(f"provider.{kind}: name {name!r} is registered to "
                                f"{reg.spec(kind, name).target!r}, not to _target_ {target!r}; "
                                "use another name or leave _target_ out")
            elif not reg.has(kind, name):
                reg.register(kind, name, dotted, origin="config")
        elif not reg.has(kind, name):
            problems.append(f"unknown {kind} provider {name!r}; available: {reg.names(kind)}")
    if problems:
        raise ConfigProblems(problems)
    d, m = plain["data"], plain["model"]
    apt_cfg = APTConfig.from_dict({
        **{k: v for k, v in m.items() if k != "max_seq_len"},
        "max_seq_len": m.get("max_seq_len") or d["block_size"],
        "vocab_size": 256,  # replaced by the tokenizer's size once the data is loaded
        "attention_name": names["attention"], "ffn_name": names["ffn"], "router_name": names["router"],
        "attention_config": options["attention"], "ffn_config": options["ffn"],
        "router_config": options["router"], "plugins": list(plain.get("plugin") or {}),
        "schedules": plain.get("schedule") or {},
    })
    from apt.core.registry import RegistryError
    from apt.modeling import ModelBuilder

    try:
        return ModelBuilder(apt_cfg, registry=reg)
    except (RegistryError, ValueError, TypeError) as exc:
        raise ConfigProblems([str(exc)]) from None


def _optimizer_factory(cfg: DictConfig) -> Any:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(cfg.optim.optimizer)
    except InstantiationException as exc:
        raise ConfigProblems([f"optim.optimizer: {str(exc).splitlines()[0]}"]) from None


def _train(cfg: DictConfig, plain: dict[str, Any], pm: Any, builder: Any, optimizer_factory: Any,
           out_dir: str | Path | None, ctx: Any) -> float:
    import inspect
    import random

    import numpy as np
    import torch

    from apt.data import load_dataset
    from apt.data.loader import BatchLoader
    from apt.schedule import Schedule
    from apt.training.distributed import ParallelModel, ShardedModel
    from apt.training.lr import WarmupCosine, split_decay
    from apt.training.trainer import Trainer

    t_cfg, d_cfg, o_cfg = plain["trainer"], plain["data"], plain["optim"]
    device = resolve_device(t_cfg["device"])
    if ctx.enabled and device.startswith("cuda"):  # one GPU per process
        device = f"cuda:{ctx.local_rank}"
    if t_cfg.get("threads"):
        torch.set_num_threads(int(t_cfg["threads"]))
    if t_cfg.get("deterministic"):
        torch.use_deterministic_algorithms(True)
    seed = int(plain.get("seed", 0))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

    t0 = time.perf_counter()
    data = load_dataset(d_cfg)
    log.info("data %s (%.2fs)", data.describe(), time.perf_counter() - t0)
    # data.batch_size is per process: the global batch is batch_size * world_size
    loader_kw = {"batch_size": d_cfg["batch_size"], "block_size": d_cfg["block_size"], "device": device,
                 "rank": ctx.rank, "world_size": ctx.world_size}
    try:
        train_loader = BatchLoader(data.train, seed=seed, **loader_kw)
        val_loader = BatchLoader(data.val, seed=seed, **loader_kw)
    except ValueError as exc:
        raise ConfigProblems([f"data: {exc}"]) from None

    builder.config.vocab_size = data.vocab_size
    model = builder.build_model().to(device)
    n_params = model.num_params() if hasattr(model, "num_params") else sum(p.numel() for p in model.parameters())
    log.info("model %s/%s/%s: %.2fM parameters on %s", builder.attention_name, builder.ffn_name,
             builder.config.norm, n_params / 1e6, device)

    clip_plugin = "gradient_clipping" in pm.list_plugins()
    if clip_plugin and t_cfg["grad_clip"] > 0:
        log.info("the gradient_clipping plugin clips gradients; trainer.grad_clip is skipped")
    groups = split_decay(model.parameters(), o_cfg["weight_decay"])
    kwargs = {}
    fused = o_cfg.get("fused")
    func = getattr(optimizer_factory, "func", optimizer_factory)
    if "fused" in inspect.signature(func).parameters and fused is not False:
        kwargs["fused"] = True if fused or device in ("cuda", "cpu") or device.startswith("cuda") else None
    try:
        optimizer = optimizer_factory(groups, **kwargs)
    except (RuntimeError, ValueError, TypeError) as exc:
        if not kwargs:
            raise ConfigProblems([f"optim.optimizer: {exc}"]) from None
        optimizer = optimizer_factory(groups)  # no fused kernel for this device/dtype

    if ctx.enabled and ctx.strategy == "ddp":
        forward_model = ParallelModel(model, ctx, compile=t_cfg["compile"])
    elif ctx.enabled:
        forward_model = None  # FSDP shards after on_model_init, below
    else:
        forward_model = torch.compile(model) if t_cfg["compile"] else None
    trainer = Trainer(
        model, optimizer, train_loader, val_loader, config=t_cfg, plugins=pm, device=device,
        out_dir=out_dir, run_config=plain, forward_model=forward_model, dist=ctx,
        extra_state={"model_config": builder.config.to_dict(), "tokenizer": data.tokenizer.to_dict()},
        token_bytes=data.tokenizer.token_bytes(),
    )
    trainer.lr_schedule = WarmupCosine(optimizer, warmup_steps=o_cfg["warmup_steps"],
                                       total_steps=trainer.max_steps, decay=o_cfg["decay"],
                                       min_lr_ratio=o_cfg["min_lr_ratio"])
    epochs = t_cfg.get("max_epochs") or math.ceil(trainer.max_steps / trainer.steps_per_epoch)
    trainer.schedule = Schedule(plain.get("schedule") or {}, max_epochs=epochs, max_steps=trainer.max_steps)
    pm.trigger_event("on_model_init", model=model, trainer=trainer, optimizer=optimizer,
                     schedule=trainer.schedule, epoch=0, step=0)
    # A plugin may have added parameters to the model in on_model_init.
    known = {id(p) for g in optimizer.param_groups for p in g["params"]}
    new = [p for p in model.parameters() if id(p) not in known]
    if new:
        trainer.add_param_group(new)
    if ctx.enabled and ctx.strategy == "fsdp":
        trainer.forward_model = ShardedModel(model, ctx, optimizer, compile=t_cfg["compile"])

    log.info("training: %d steps (%d per epoch, ~%d epochs), %d tokens per step, plugins %s",
             trainer.max_steps, trainer.steps_per_epoch, epochs, trainer.tokens_per_step,
             pm.list_plugins() or "none")
    t_start = time.perf_counter()
    try:
        summary = trainer.fit(resume_from=plain.get("ckpt_path"), auto_resume=bool(t_cfg["resume"]))
    finally:
        trainer.schedule.deactivate()  # ${schedule:...} must not read this run's values later
    wall = time.perf_counter() - t_start
    val = summary["val_loss"]
    if t_cfg["eval_test"]:
        test = trainer.evaluate_split(data.test)
        summary.update(test_loss=test.loss, test_loss_se=test.se, test_tokens=test.tokens, test_bpb=test.bpb)
        log.info("test loss %s", test)
    from apt.training.evaluation import describe

    final = describe(val, summary["val_loss_se"], summary["val_tokens"], summary["val_bpb"])
    log.info("summary: params %.2fM | steps %d | epochs %d | %.0f tokens/s | final val loss %s | "
             "best val loss %.4f (step %d, %s periodic tokens) | %.1fs%s%s", n_params / 1e6, summary["step"],
             summary["epoch"], summary["tokens_per_s"], final, summary["best_val_loss"], summary["best_step"],
             f"{summary['best_val_tokens']:,}", wall, f" | stopped: {summary['stopped']}" if summary["stopped"] else "",
             f" | out: {out_dir}" if out_dir else "")
    if out_dir is not None and ctx.is_main:
        import json

        (Path(out_dir) / "summary.json").write_text(json.dumps(
            {**summary, "params": n_params, "wall_s": wall}, indent=2, default=str), encoding="utf-8")
    if trainer.interrupted_by is not None:
        raise SystemExit(128 + int(trainer.interrupted_by))
    return float(val)


# -- helpers -------------------------------------------------------------------------------
def _import_target(target: str) -> Any:
    module, _, attr = dotted_target(target).partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def in_run_dir(options: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """Relative ``*_file`` / ``*_dir`` plugin options point into the run directory."""
    out = dict(options)
    for key, value in options.items():
        if (key.endswith("_file") or key.endswith("_dir")) and isinstance(value, str) and value \
                and not Path(value).is_absolute():
            out[key] = str(out_dir / value)
    return out


def _in_multirun() -> bool:
    """Inside a Hydra multirun job, where SystemExit would end the whole sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _hydra_output_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return None
