"""Configuration checks that need no torch, data or model (run before anything is built).

:func:`validate` looks at a composed config and returns one readable line per problem:
value ranges, choices, missing files, unknown plugin names, importable ``_target_``
paths, the schedule's entries. :func:`check_overrides` names unknown options in
``plugin=[...]`` and ``provider/<kind>=...`` command-line overrides, which Hydra reports
without the valid choices. Importing this module does not import torch, so ``train.py``
answers ``--cfg``, ``--help`` and bad input quickly.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from apt.core.config import APTConfig, to_plain
from apt.data.dataset import DATASETS
from apt.training.evaluation import parse_eval_tokens
from apt.training.lr import DECAYS

__all__ = ["CONF_DIR", "KINDS", "ConfigProblems", "check_overrides", "conf_options", "dotted_target",
           "importable", "to_plain", "validate"]

KINDS = ("attention", "ffn", "router")
PRECISIONS = ("auto", "fp32", "bf16")
STRATEGIES = ("ddp", "fsdp")  # apt.training.distributed.STRATEGIES, kept here free of torch
TOKENIZERS = ("byte", "char")
TASKS = ("copy", "cycle", "markov")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


class ConfigProblems(ValueError):
    """Configuration problems, one readable line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


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
    test_fraction = float(d.get("test_fraction", 0.0))
    if not 0.0 <= test_fraction < 1.0 or test_fraction + float(d.get("val_fraction", 0.1)) >= 1.0:
        add(f"data.test_fraction must be in [0, 1) with val_fraction + test_fraction < 1, got {test_fraction}")
    if t.get("eval_test") and test_fraction == 0.0:
        add("trainer.eval_test=true needs a test split: set data.test_fraction (e.g. 0.1)")
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
    for key in ("grad_accum", "eval_every", "log_every", "keep_last"):
        _positive_int(t, key, "trainer", problems)
    if t.get("eval_batches") is not None:
        _positive_int(t, "eval_batches", "trainer", problems)
    try:
        parse_eval_tokens(t.get("eval_tokens", "all"))
    except ValueError as exc:
        add(str(exc))
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
        if target and not importable(str(target)):
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
            if not importable(str(target)):
                add(f"plugin {name!r}: _target_={target!r} cannot be found (no such module or class)")
        else:
            if known is None:
                if plugin_manager is None:
                    from apt.plugins import PluginManager

                    plugin_manager = PluginManager(entry_points=True)
                known = plugin_manager.available_plugins()
            if name not in known:
                add(f"unknown plugin {name!r}; available: {sorted(set(known) | set(conf_options('plugin')))}")

    # schedule (its horizon is checked again once the epoch length is known)
    try:
        from apt.schedule import Schedule, ScheduleError

        sched = Schedule(to_plain(cfg.get("schedule")), max_epochs=t.get("max_epochs") or 1,
                         max_steps=t.get("max_steps") or 1)
        sched.check_plugins(list(plugins))
    except ScheduleError as exc:
        add(f"schedule: {exc}")
    return problems


# -- helpers -------------------------------------------------------------------------------
def _section(cfg: DictConfig, name: str, problems: list[str]) -> dict[str, Any]:
    node = cfg.get(name)
    if node is None:
        problems.append(f"config group {name!r} is missing")
        return {}
    try:
        return to_plain(node)
    except Exception as exc:  # noqa: BLE001 - a missing mandatory value (???) and the like
        problems.append(f"{name}: {str(exc).splitlines()[0]}")
        return {}


def _positive_int(section: Mapping[str, Any], key: str, where: str, problems: list[str]) -> None:
    value = section.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        problems.append(f"{where}.{key} must be a positive integer, got {value!r}")


def dotted_target(target: str) -> str:
    """``pkg.mod.Class`` -> ``pkg.mod:Class`` (the registry's lazy form)."""
    if ":" in target:
        return target
    module, _, attr = target.rpartition(".")
    return f"{module}:{attr}"


def importable(target: str) -> bool:
    """Whether ``target``'s module exists, without importing it (keeps torch out)."""
    module = dotted_target(target).partition(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def conf_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
