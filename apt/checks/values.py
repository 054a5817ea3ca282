"""The plain values of a run config: each section resolved, its keys and ranges checked.

``model``, ``data``, ``trainer`` and ``optim`` start from the schemas in
:mod:`apt.training.schema`; Hydra already refuses a wrong type there, but ``+trainer.x=1``
adds a key the schema lacks, so keys are checked again here, then value ranges and
cross-field rules. Every problem is one line naming the key and the valid values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from apt.core.config import model_problems
from apt.core.errors import did_you_mean
from apt.training.distributed import STRATEGIES
from apt.training.evaluation import parse_eval_tokens
from apt.training.lr import DECAYS
from apt.training.nonfinite import POLICIES
from apt.training.schema import PLUGIN_ERROR_POLICIES

__all__ = ["PRECISIONS", "SCHEMAS", "SEED_RANGE", "STRATEGIES", "resolve_sections", "value_problems"]

PRECISIONS = ("auto", "fp32", "bf16")
#: The seeds a run takes: torch.manual_seed takes 64 bits, numpy's generators no negative seed.
SEED_RANGE = (0, 2**64 - 1)
#: Sections built on a schema of apt.training.schema.
SCHEMAS = ("model", "data", "trainer", "optim")


def _schemas() -> dict[str, type]:
    from apt.training.schema import DataConfig, ModelConfig, OptimConfig, TrainerConfig

    return {"model": ModelConfig, "data": DataConfig, "trainer": TrainerConfig, "optim": OptimConfig}


def resolve_sections(cfg: DictConfig) -> tuple[dict[str, Any], list[str]]:
    """The whole config as plain data (interpolations resolved), and the problems doing so.

    A section that cannot be resolved (``${oc.env:MISSING}``, an unknown resolver) is
    reported by name and left out; a schema section with a key its schema lacks too.
    """
    import apt.schedule  # noqa: F401 - registers the ${schedule:...} resolver used in configs

    plain: dict[str, Any] = {}
    problems: list[str] = []
    for key in cfg:
        try:
            node = cfg[key]
            plain[str(key)] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        except Exception as exc:  # noqa: BLE001 - OmegaConf's resolution errors, reported per section
            problems.append(f"{key}: {str(exc).strip().splitlines()[0]}")
    schemas = _schemas()
    for name in SCHEMAS:
        section = plain.get(name)
        if not isinstance(section, Mapping):
            if name not in plain and not any(p.startswith(f"{name}:") for p in problems):
                problems.append(f"config group {name!r} is missing")
            plain.pop(name, None)
            continue
        valid = sorted(f.name for f in fields(schemas[name]))
        for key in sorted(set(section) - set(valid)):
            problems.append(f"unknown key {name}.{key}{did_you_mean(key, valid)}; "
                            f"valid keys of {name}: {', '.join(valid)}")
    return plain, problems


def value_problems(plain: Mapping[str, Any]) -> list[str]:
    """Ranges and cross-field rules of ``seed``, ``model``, ``trainer``, ``optim`` and ``ckpt_path``."""
    problems: list[str] = []
    add = problems.append
    seed = plain.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        add(f"seed must be an integer, got {seed!r}")
    elif not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        add(f"seed={seed} is out of range; valid: {SEED_RANGE[0]} .. {SEED_RANGE[1]}")
    m, d, t, o = (plain.get(k) or {} for k in ("model", "data", "trainer", "optim"))

    # model (vocab_size comes from the data, at build time)
    if m:
        seq = m.get("max_seq_len") or d.get("block_size")
        problems += [f"model.{p}" for p in model_problems({**m, "max_seq_len": seq})]
        if m.get("max_seq_len") and isinstance(d.get("block_size"), int) and d["block_size"] > m["max_seq_len"]:
            add(f"data.block_size={d['block_size']} exceeds model.max_seq_len={m['max_seq_len']}")

    # trainer
    if t:
        if t.get("max_steps") is None and t.get("max_epochs") is None:
            add("set trainer.max_steps or trainer.max_epochs (both are null)")
        for key in ("max_steps", "max_epochs", "steps_per_epoch", "checkpoint_every", "threads", "eval_every"):
            if t.get(key) is not None:
                _positive_int(t, key, "trainer", problems)
        for key in ("grad_accum", "log_every", "keep_last"):
            _positive_int(t, key, "trainer", problems)
        if t.get("eval_batches") is not None:  # null: periodic evaluations use eval_tokens too
            _positive_int(t, "eval_batches", "trainer", problems)
        try:
            parse_eval_tokens(t.get("eval_tokens", "all"))
        except ValueError as exc:
            add(str(exc))
        if t.get("eval_test") and not d.get("test_fraction"):
            add("trainer.eval_test=true needs a test split: set data.test_fraction (e.g. 0.1)")
        clip = t.get("grad_clip")
        if not isinstance(clip, int | float) or not clip >= 0 or math.isinf(clip):
            add(f"trainer.grad_clip must be a finite number >= 0 (0 disables), got {clip!r}")
        if t.get("precision") not in PRECISIONS:
            add(f"trainer.precision={t.get('precision')!r} is not one of {list(PRECISIONS)}")
        if t.get("strategy") not in STRATEGIES:
            add(f"trainer.strategy={t.get('strategy')!r} is not one of {list(STRATEGIES)}")
        if t.get("strategy") == "fsdp" and "moe" in (plain.get("plugin") or {}):
            add("trainer.strategy=fsdp cannot run plugin 'moe': it replaces layers mid-run and FSDP shards "
                "the layout fixed at the start; use trainer.strategy=ddp")
        if t.get("on_nonfinite") not in POLICIES:
            add(f"trainer.on_nonfinite={t.get('on_nonfinite')!r} is not one of {list(POLICIES)}")
        if t.get("on_plugin_error") not in PLUGIN_ERROR_POLICIES:
            add(f"trainer.on_plugin_error={t.get('on_plugin_error')!r} is not one of "
                f"{list(PLUGIN_ERROR_POLICIES)}")

    # optim
    if o:
        opt = o.get("optimizer")
        if not isinstance(opt, Mapping) or not opt.get("_target_"):
            add("optim.optimizer needs a _target_ (e.g. torch.optim.AdamW) with _partial_: true")
        else:
            lr = opt.get("lr")
            if lr is not None and (not isinstance(lr, int | float) or isinstance(lr, bool) or not lr > 0):
                add(f"optim.optimizer.lr must be a positive number, got {lr!r}")
            if not opt.get("_partial_"):
                add("optim.optimizer must set _partial_: true (it is called with the parameter groups)")
        if o.get("decay") not in DECAYS:
            add(f"optim.decay={o.get('decay')!r} is not one of {list(DECAYS)}")
        ratio = o.get("min_lr_ratio")
        if not isinstance(ratio, int | float) or not 0.0 <= ratio <= 1.0:
            add(f"optim.min_lr_ratio must be in [0, 1], got {ratio!r}")
        if not isinstance(o.get("warmup_steps"), int) or o["warmup_steps"] < 0:
            add(f"optim.warmup_steps must be an integer >= 0, got {o.get('warmup_steps')!r}")
        wd = o.get("weight_decay")
        if not isinstance(wd, int | float) or not wd >= 0:
            add(f"optim.weight_decay must be >= 0, got {wd!r}")
    return problems


def _positive_int(section: Mapping[str, Any], key: str, where: str, problems: list[str]) -> None:
    value = section.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        problems.append(f"{where}.{key} must be a positive integer, got {value!r}")
