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
import importlib.util
import logging
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from apt.core.config import APTConfig
from apt.data.dataset import DATASETS
from apt.training.lr import DECAYS

__all__ = ["ConfigProblems", "check_overrides", "load_plugins", "main", "new_plugin_manager",
           "resolve_device", "run", "validate"]

log = logging.getLogger("apt")

KINDS = ("attention", "ffn", "router")
PRECISIONS = ("auto", "fp32", "bf16")
STRATEGIES = ("ddp", "fsdp")  # apt.training.distributed.STRATEGIES, kept here free of torch
TOKENIZERS = ("byte", "char")
TASKS = ("copy", "cycle", "markov")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfigProblems(ValueError):
    """Configuration problems, one readable line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


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


# -- checks without torch ----------------------------------------------------------------
def check_overrides(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """Unknown options in ``plugin=[...]`` / ``provider/<kind>=...`` command-line overrides.

    Hydra reports these as "Could not load 'plugin/x'" without the valid choices; this
    names them. Sweeps (``plugin=[],[moe]``, ``provider/attention=sdpa,naive``) are split.
    """
    problems = []
    for arg in argv:
        m = re.match(r"^(plugin|provider/(?:attention|ffn|router))=(.*)$", arg)
        if not m or "$" in arg:
            continue
        group, value = m.groups()
        valid = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
        for name in re.findall(r"[A-Za-z0-9_.\-]+", value):
            if name not in valid:
                what = "plugin" if group == "plugin" else f"{group.split('/')[1]} provider"
                problems.append(f"unknown {what} {name!r} in {arg!r}; valid: {valid}")
    return problems


def validate(cfg: DictConfig, plugin_manager: Any = None) -> list[str]:
    """Problems that need no torch, data or model: values, names, ranges. Empty when fine.

    Plugin names without ``_target_`` are checked against ``plugin_manager`` (default: a
    fresh one, which knows built-in and entry-point plugins).
    """
    problems: list[str] = []
    add = problems.append

    # model
    m = _section(cfg, "model", problems)
    d = _section(cfg, "data", problems)
    t = _section(cfg, "trainer", problems)
    o = _section(cfg, "optim", problems)
    if problems:
        return problems
    model_fields = {k: v for k, v in m.items() if k != "max_seq_len"}
    apt_cfg = APTConfig.from_dict({**model_fields, "max_seq_len": m.get("max_seq_len") or d.get("block_size")})
    problems += [f"model.{p}" for p in apt_cfg.validate()]
    if m.get("max_seq_len") and d.get("block_size", 0) > m["max_seq_len"]:
        add(f"data.block_size={d['block_size']} exceeds model.max_seq_len={m['max_seq_len']}")

    # data
    if d.get("name") not in DATASETS:
        add(f"data.name={d.get('name')!r} is not one of {list(DATASETS)}")
    for key in ("batch_size", "block_size"):
        _positive_int(d, key, "data", problems)
    if not 0.0 < float(d.get("val_fraction", 0.1)) < 1.0:
        add(f"data.val_fraction must be in (0, 1), got {d.get('val_fraction')}")
    if d.get("name") in ("stdlib", "text") and d.get("tokenizer") not in TOKENIZERS:
        add(f"data.tokenizer={d.get('tokenizer')!r} is not one of {list(TOKENIZERS)}")
    if d.get("name") == "text":
        path = d.get("path")
        if not path or path == "???":
            add("data=text needs data.path=<a UTF-8 text file>")
        elif not Path(str(path)).expanduser().is_file():
            add(f"data.path={str(path)!r} is not a readable file")
    if d.get("name") == "synthetic":
        if d.get("task") not in TASKS:
            add(f"data.task={d.get('task')!r} is not one of {list(TASKS)}")
        for key in ("num_tokens", "vocab_size", "period"):
            _positive_int(d, key, "data", problems)

    # trainer
    if t.get("max_steps") is None and t.get("max_epochs") is None:
        add("set trainer.max_steps or trainer.max_epochs (both are null)")
    for key in ("max_steps", "max_epochs", "steps_per_epoch", "checkpoint_every", "threads"):
        if t.get(key) is not None:
            _positive_int(t, key, "trainer", problems)
    for key in ("grad_accum", "eval_every", "eval_batches", "log_every", "keep_last"):
        _positive_int(t, key, "trainer", problems)
    if not float(t.get("grad_clip", 0.0)) >= 0:
        add(f"trainer.grad_clip must be >= 0 (0 disables), got {t.get('grad_clip')}")
    if t.get("precision") not in PRECISIONS:
        add(f"trainer.precision={t.get('precision')!r} is not one of {list(PRECISIONS)}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(t.get("device"))):
        add(f"trainer.device={t.get('device')!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if t.get("strategy", "ddp") not in STRATEGIES:
        add(f"trainer.strategy={t.get('strategy')!r} is not one of {list(STRATEGIES)}")
    if t.get("strategy") == "fsdp" and "moe" in (cfg.get("plugin") or {}):
        add("trainer.strategy=fsdp cannot run plugin 'moe': it replaces layers mid-run and FSDP shards the "
            "layout fixed at the start; use trainer.strategy=ddp")
    if t.get("resume") and cfg.get("ckpt_path"):
        add("give either trainer.resume=true or ckpt_path=..., not both")
    if cfg.get("ckpt_path") and not Path(str(cfg.ckpt_path)).is_file():
        add(f"ckpt_path={str(cfg.ckpt_path)!r} does not exist")

    # optim
    opt = o.get("optimizer")
    if not isinstance(opt, Mapping) or not opt.get("_target_"):
        add("optim.optimizer needs a _target_ (e.g. torch.optim.AdamW) with _partial_: true")
    else:
        lr = opt.get("lr")
        if lr is not None and not (isinstance(lr, int | float) and lr > 0):
            add(f"optim.optimizer.lr must be a positive number, got {lr!r}")
        if not opt.get("_partial_"):
            add("optim.optimizer must set _partial_: true (it is called with the parameter groups)")
    if o.get("decay") not in DECAYS:
        add(f"optim.decay={o.get('decay')!r} is not one of {list(DECAYS)}")
    if not 0.0 <= float(o.get("min_lr_ratio", 0.0)) <= 1.0:
        add(f"optim.min_lr_ratio must be in [0, 1], got {o.get('min_lr_ratio')}")
    if int(o.get("warmup_steps", 0)) < 0:
        add(f"optim.warmup_steps must be >= 0, got {o.get('warmup_steps')}")
    if float(o.get("weight_decay", 0.0)) < 0:
        add(f"optim.weight_decay must be >= 0, got {o.get('weight_decay')}")

    # providers
    for kind in KINDS:
        node = OmegaConf.select(cfg, f"provider.{kind}")
        if node is None:
            add(f"provider.{kind} is missing; choose one with provider/{kind}=<option>")
            continue
        if OmegaConf.is_missing(node, "name"):
            add(f"provider.{kind}.name is required (the registry name of the {kind} provider)")
            continue
        target = node.get("_target_")
        if target and not _importable(str(target)):
            add(f"provider.{kind}._target_={target!r} cannot be found (no such module or class)")

    # plugins
    plugins = cfg.get("plugin") or {}
    if not isinstance(plugins, Mapping):
        add("plugin must be a mapping of plugin name -> options (select with plugin=[a,b])")
        plugins = {}
    known = None
    for name, node in plugins.items():
        if not isinstance(node, Mapping):
            add(f"plugin.{name} must be a mapping of options, got {node!r}")
            continue
        target = node.get("_target_")
        if target:
            if not _importable(str(target)):
                add(f"plugin {name!r}: _target_={target!r} cannot be found (no such module or class)")
        else:
            if known is None:
                if plugin_manager is None:
                    from apt.plugins import PluginManager

                    plugin_manager = PluginManager(entry_points=True)
                known = plugin_manager.available_plugins()
            if name not in known:
                add(f"unknown plugin {name!r}; available: {sorted(set(known) | set(_conf_options('plugin')))}")

    # schedule (its horizon is checked again once the epoch length is known)
    try:
        from apt.schedule import Schedule, ScheduleError

        sched = Schedule(_plain(cfg.get("schedule")), max_epochs=t.get("max_epochs") or 1,
                         max_steps=t.get("max_steps") or 1)
        sched.check_plugins(list(plugins))
    except ScheduleError as exc:
        add(f"schedule: {exc}")
    return problems


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
    plain = _plain(cfg)
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
        plugins_cfg = {n: _in_run_dir(o, Path(out_dir)) for n, o in plugins_cfg.items()}
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
            dotted = _dotted(str(target))
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
    from apt.training.lr import WarmupCosine
    from apt.training.trainer import Trainer, split_decay

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
    log.info("summary: params %.2fM | steps %d | epochs %d | %.0f tokens/s | final val loss %.4f | "
             "best val loss %.4f (step %d) | %.1fs%s%s", n_params / 1e6, summary["step"], summary["epoch"],
             summary["tokens_per_s"], val, summary["best_val_loss"], summary["best_step"], wall,
             f" | stopped: {summary['stopped']}" if summary["stopped"] else "",
             f" | out: {out_dir}" if out_dir else "")
    if out_dir is not None and ctx.is_main:
        import json

        (Path(out_dir) / "summary.json").write_text(json.dumps(
            {**summary, "params": n_params, "wall_s": wall}, indent=2, default=str), encoding="utf-8")
    if trainer.interrupted_by is not None:
        raise SystemExit(128 + int(trainer.interrupted_by))
    return float(val)


# -- helpers -------------------------------------------------------------------------------
def _section(cfg: DictConfig, name: str, problems: list[str]) -> dict[str, Any]:
    node = cfg.get(name)
    if node is None:
        problems.append(f"config group {name!r} is missing")
        return {}
    try:
        return _plain(node)
    except Exception as exc:  # noqa: BLE001 - a missing mandatory value (???) and the like
        problems.append(f"{name}: {str(exc).splitlines()[0]}")
        return {}


def _positive_int(section: Mapping[str, Any], key: str, where: str, problems: list[str]) -> None:
    value = section.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        problems.append(f"{where}.{key} must be a positive integer, got {value!r}")


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig) or type(node).__module__.startswith("omegaconf"):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _dotted(target: str) -> str:
    """``pkg.mod.Class`` -> ``pkg.mod:Class`` (the registry's lazy form)."""
    if ":" in target:
        return target
    module, _, attr = target.rpartition(".")
    return f"{module}:{attr}"


def _importable(target: str) -> bool:
    """Whether ``target``'s module exists, without importing it (keeps torch out)."""
    module = _dotted(target).partition(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _import_target(target: str) -> Any:
    module, _, attr = _dotted(target).partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _in_run_dir(options: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """Relative ``*_file`` / ``*_dir`` plugin options point into the run directory."""
    out = dict(options)
    for key, value in options.items():
        if (key.endswith("_file") or key.endswith("_dir")) and isinstance(value, str) and value \
                and not Path(value).is_absolute():
            out[key] = str(out_dir / value)
    return out


def _conf_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


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
