"""Checks of ``optim`` beyond the schema's ranges: the WSD cooldown, the optimizer parts, and
the options each optimizer is given (names its class's ``__init__`` takes, from its source;
values torch would refuse only when building it, such as ``betas``).

``optim.parts`` (several optimizers acting as one, :mod:`apt.optim`) is a mapping of part
name -> ``{params: <selector>, optimizer: <_partial_ target>, weight_decay: <float|null>}``;
every key, selector and target is checked here without importing torch, one line per
problem naming the bad value and the valid choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apt.checks.targets import HYDRA_KEYS, target_keywords, target_problem
from apt.core.errors import did_you_mean
from apt.optim.select import DEFAULT_PART, SELECTORS

__all__ = ["PART_KEYS", "option_problems", "optim_problems", "value_problems"]

#: The keys of one ``optim.parts.<name>`` entry.
PART_KEYS = ("params", "optimizer", "weight_decay")


def optim_problems(plain: Mapping[str, Any]) -> list[str]:
    """Problems of ``optim.cooldown_fraction`` and ``optim.parts`` in a resolved config."""
    o = plain.get("optim")
    if not isinstance(o, Mapping):
        return []
    problems: list[str] = []
    cooldown = o.get("cooldown_fraction")
    if cooldown is not None:
        if not isinstance(cooldown, int | float) or isinstance(cooldown, bool) or not 0.0 < cooldown <= 1.0:
            problems.append(f"optim.cooldown_fraction must be in (0, 1] (or null: 0.2), got {cooldown!r}")
        elif o.get("decay") != "wsd":
            problems.append(f"optim.cooldown_fraction={cooldown} applies to optim.decay=wsd only "
                            f"(decay is {o.get('decay')!r})")
    problems += option_problems("optim.optimizer", o.get("optimizer"))
    problems += value_problems("optim.optimizer", o.get("optimizer"))
    parts = o.get("parts")
    if parts is None or parts == {}:
        return problems
    if not isinstance(parts, Mapping):
        return [*problems, f"optim.parts must be a mapping of part name -> {{{', '.join(PART_KEYS)}}}, "
                           f"got {parts!r}"]
    for name, part in parts.items():
        problems += _part_problems(str(name), part)
    strategy = (plain.get("trainer") or {}).get("strategy")
    if strategy == "fsdp":
        problems.append("optim.parts cannot run with trainer.strategy=fsdp: FSDP shards each matrix across "
                        "ranks, and the parts' optimizers (Muon) need whole matrices; use trainer.strategy=ddp")
    return problems


def option_problems(where: str, opt: Any) -> list[str]:
    """Options of the optimizer node ``opt`` that its class does not take (read from its source)."""
    if not isinstance(opt, Mapping) or not isinstance(opt.get("_target_"), str):
        return []
    target = opt["_target_"]
    valid = target_keywords(target)
    if valid is None:  # the source cannot tell: the build reports what the class refuses
        return []
    short = target.rpartition(".")[2]
    return [f"{where}.{k}: {short} takes no option {k!r}{did_you_mean(str(k), valid)}; valid: {', '.join(valid)}"
            for k in opt if k not in HYDRA_KEYS and k not in valid]


def value_problems(where: str, opt: Any) -> list[str]:
    """Option values torch would refuse only when the optimizer is built: ``betas`` (Adam's
    family unpacks exactly two, each in [0, 1))."""
    if not isinstance(opt, Mapping) or "betas" not in opt:
        return []
    betas = opt["betas"]
    ok = isinstance(betas, list | tuple) and len(betas) == 2 and all(
        isinstance(b, int | float) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas)
    return [] if ok else [f"{where}.betas must be 2 numbers in [0, 1) (beta1, beta2), got {betas!r}"]


def _part_problems(name: str, part: Any) -> list[str]:
    where = f"optim.parts.{name}"
    if name == DEFAULT_PART:
        return [f"{where}: {DEFAULT_PART!r} is the name of optim.optimizer's part; choose another name"]
    if not isinstance(part, Mapping):
        return [f"{where} must be a mapping with keys {list(PART_KEYS)}, got {part!r}"]
    problems = [f"unknown key {where}.{k}{did_you_mean(str(k), PART_KEYS)}; valid keys: {', '.join(PART_KEYS)}"
                for k in part if k not in PART_KEYS]
    selector = part.get("params")
    if selector not in SELECTORS:
        problems.append(f"{where}.params={selector!r} is not a parameter selector"
                        f"{did_you_mean(str(selector), list(SELECTORS))}; valid: {', '.join(SELECTORS)}")
    opt = part.get("optimizer")
    if not isinstance(opt, Mapping) or not opt.get("_target_"):
        problems.append(f"{where}.optimizer needs a _target_ (e.g. torch.optim.Muon) with _partial_: true")
    else:
        target = opt["_target_"]
        bad_target = target_problem(target) if isinstance(target, str) else f"{target!r} is not a dotted path"
        if bad_target:
            problems.append(f"{where}.optimizer._target_={bad_target}")
        if not opt.get("_partial_"):
            problems.append(f"{where}.optimizer must set _partial_: true (it is called with the parameter groups)")
        lr = opt.get("lr")
        if lr is not None and (not isinstance(lr, int | float) or isinstance(lr, bool) or not lr > 0):
            problems.append(f"{where}.optimizer.lr must be a positive number, got {lr!r}")
        if not bad_target:
            problems += option_problems(f"{where}.optimizer", opt)
        problems += value_problems(f"{where}.optimizer", opt)
    wd = part.get("weight_decay")
    if wd is not None and (not isinstance(wd, int | float) or isinstance(wd, bool) or not wd >= 0):
        problems.append(f"{where}.weight_decay must be a number >= 0 (or null: optim.weight_decay), got {wd!r}")
    return problems
