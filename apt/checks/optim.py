"""Checks of ``optim`` beyond the schema's ranges: the WSD cooldown, the optimizer parts, and
each optimizer ``_target_``: found, a ``torch.optim.Optimizer`` subclass (checked before
anything calls it), given only options its ``__init__`` takes and values its argument checks
accept (both read from its source: :mod:`.targets`, :mod:`.constructor`), and values torch
would refuse only when building it (``betas``).

``optim.parts`` (several optimizers acting as one, :mod:`apt.optim`) is a mapping of part
name -> ``{params: <selector>, optimizer: <_partial_ target>, weight_decay: <float|null>}``;
every key, selector and target is checked here without importing torch, one line per
problem naming the bad value and the valid choices. A part that can take no parameter (an
earlier part's selector takes all of its own) and parts that leave ``optim.optimizer``
nothing are refused here, as the optimizer factory would refuse them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apt.checks.constructor import constructor_problem
from apt.checks.targets import HYDRA_KEYS, class_problem, target_keywords, target_problem
from apt.core.errors import did_you_mean
from apt.optim.select import COVERS, DEFAULT_PART, SELECTORS

__all__ = ["OPTIMIZER_BASE", "OPTIMIZER_KIND", "PART_KEYS", "option_problems", "optim_problems", "optimizer_problems",
           "value_problems"]

#: The keys of one ``optim.parts.<name>`` entry.
PART_KEYS = ("params", "optimizer", "weight_decay")
#: The class every optimizer ``_target_`` derives from (``module:name``, where it is defined).
OPTIMIZER_BASE = "torch.optim.optimizer:Optimizer"
#: How a message names what an optimizer ``_target_`` must be.
OPTIMIZER_KIND = "an optimizer class (a subclass of torch.optim.Optimizer)"


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
    problems += optimizer_problems("optim.optimizer", o.get("optimizer"))
    parts = o.get("parts")
    if parts is None or parts == {}:
        return problems
    if not isinstance(parts, Mapping):
        return [*problems, f"optim.parts must be a mapping of part name -> {{{', '.join(PART_KEYS)}}}, "
                           f"got {parts!r}"]
    for name, part in parts.items():
        problems += _part_problems(str(name), part)
    problems += _coverage_problems(parts)
    strategy = (plain.get("trainer") or {}).get("strategy")
    if strategy == "fsdp":
        problems.append("optim.parts cannot run with trainer.strategy=fsdp: FSDP shards each matrix across "
                        "ranks, and the parts' optimizers (Muon) need whole matrices; use trainer.strategy=ddp")
    return problems


def optimizer_problems(where: str, opt: Any) -> list[str]:
    """Problems of the optimizer node ``opt`` (``{_target_, _partial_, ...options}``) at ``where``.

    The target is found and checked to be an optimizer class before anything calls it (a
    ``_target_`` naming ``os.system`` must never run); then its options are checked against
    its ``__init__``: the names it takes, and the values its argument checks refuse
    (``nesterov=True`` with ``momentum=0``), as building it would refuse them.
    """
    if not isinstance(opt, Mapping) or not opt.get("_target_"):
        return []
    target = opt["_target_"]
    problem = target_problem(target) if isinstance(target, str) else f"{target!r} is not a dotted path"
    problem = problem or class_problem(target, OPTIMIZER_BASE, OPTIMIZER_KIND)
    if problem:
        return [f"{where}._target_={problem}"]
    problems = option_problems(where, opt)
    options = {k: v for k, v in opt.items() if k not in HYDRA_KEYS}
    nested = [f"{where}.{k}: a nested _target_ is not built here; give the option's value itself"
              for k, v in options.items() if _nested_target(v)]
    problems += nested or value_problems(where, opt)
    lr = options.get("lr")
    lr_ok = lr is None or (isinstance(lr, int | float) and not isinstance(lr, bool) and lr > 0)  # else: values.py
    refused = None if problems or not lr_ok else constructor_problem(target, options, unknown=("fused",))
    if refused:
        shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
        problems.append(f"{where}: {refused} ({target.rpartition('.')[2]} with {shown or 'its defaults'})")
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
        if not opt.get("_partial_"):
            problems.append(f"{where}.optimizer must set _partial_: true (it is called with the parameter groups)")
        lr = opt.get("lr")
        if lr is not None and (not isinstance(lr, int | float) or isinstance(lr, bool) or not lr > 0):
            problems.append(f"{where}.optimizer.lr must be a positive number, got {lr!r}")
        else:
            problems += optimizer_problems(f"{where}.optimizer", opt)
    wd = part.get("weight_decay")
    if wd is not None and (not isinstance(wd, int | float) or isinstance(wd, bool) or not wd >= 0):
        problems.append(f"{where}.weight_decay must be a number >= 0 (or null: optim.weight_decay), got {wd!r}")
    return problems


def _nested_target(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "_target_" in value or any(_nested_target(v) for v in value.values())
    return isinstance(value, list | tuple) and any(_nested_target(v) for v in value)


def _coverage_problems(parts: Mapping[str, Any]) -> list[str]:
    """Parts that can take no parameter, and parts that leave optim.optimizer none, decided from
    the selectors alone (:data:`apt.optim.select.COVERS`), as the factory would find them."""
    problems, earlier = [], {}
    for name, part in parts.items():
        selector = part.get("params") if isinstance(part, Mapping) else None
        if selector not in SELECTORS:
            continue
        taker = next((n for n, sel in earlier.items() if sel == selector or selector in COVERS.get(sel, ())), None)
        if taker is not None:
            problems.append(f"optim.parts.{name}: params={selector} takes no parameter of this model: "
                            f"optim.parts.{taker} (params={earlier[taker]}) comes first and takes all of them "
                            "(a parameter goes to the first part whose selector takes it)")
        earlier.setdefault(str(name), selector)
    if {"matrices", "vectors"} <= set(earlier.values()):
        problems.append("optim.optimizer: optim.parts take every parameter and leave none for it (params=matrices "
                        "and params=vectors take them all); drop the last part and let optim.optimizer take those")
    return problems
