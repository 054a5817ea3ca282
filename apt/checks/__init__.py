"""Step two of a run (compose -> check -> build -> train): everything checkable without compute.

:func:`check_run` takes a composed config and either raises
:class:`~apt.core.errors.ConfigProblems` (every problem found, one line each) or returns a
:class:`CheckedRun`: the validated :class:`RunConfig` that the build step turns into
objects, and the run's one plugin manager (holding its one provider registry) with the
plugins created and set up. train.py (before Hydra creates a run directory, and again in
the job), ``python -m apt check`` and every multirun job call it, so their verdicts agree.

It checks: section keys and value ranges (:mod:`.values`), the data source and its size
(:mod:`apt.data.checks`), paths and the device (:mod:`.paths`), the optimizers and their
parts (:mod:`.optim`), plugins with their declared options, dependencies, conflicts and
options the model refutes (:mod:`.plugins`), the schedule's entries, the providers as the
builder will call them (:mod:`.providers`), combinations that cannot work together, the
model's memory (:mod:`.memory`), and settings the run's length leaves without effect
(warnings, :mod:`.length`). Nothing here imports torch, except a user's plugin or provider
module that does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from apt.checks.length import length_warnings, run_length_estimate
from apt.checks.memory import available_host_memory, known_vocab_size, memory_problem
from apt.checks.optim import optim_problems
from apt.checks.paths import (
    checkpoint_path_problem,
    device_problem,
    existing_checkpoints_problem,
    on_host,
    writable_dir_problem,
)
from apt.checks.plugins import (
    in_run_dir,
    load_plugins,
    monitor_problems,
    plugin_model_problems,
    set_up_plugins,
)
from apt.checks.providers import provider_choices, provider_problems
from apt.checks.values import resolve_sections, value_problems
from apt.core.errors import ConfigProblems

__all__ = ["CheckedRun", "ConfigProblems", "RunConfig", "check_run", "new_plugin_manager"]


@dataclass(frozen=True)
class RunConfig:
    """A run's configuration after every check passed: the one object the build step reads.

    ``model`` holds the schema's model fields with ``max_seq_len`` filled in (the vocabulary
    size comes from the data, at build time); ``providers`` the registry name per kind
    (``router`` None when the FFN does not route) and ``provider_options`` their options;
    ``plugins`` each plugin's options as loaded. ``resolved`` is the whole config as plain
    data: it is saved in checkpoints and given to ``on_train_begin``.
    """

    seed: int
    model: dict[str, Any]
    providers: dict[str, str | None]
    provider_options: dict[str, dict[str, Any]]
    plugins: dict[str, dict[str, Any]]
    data: dict[str, Any]
    trainer: dict[str, Any]
    optim: dict[str, Any]
    schedule: dict[str, Any]
    ckpt_path: str | None
    run_dir: Path | None
    resolved: dict[str, Any] = field(repr=False)


@dataclass
class CheckedRun:
    """The checked config, the run's plugin manager (plugins set up) and warnings to show."""

    config: RunConfig
    plugins: Any
    warnings: list[str]


def new_plugin_manager(strict: bool = False) -> Any:
    """A fresh manager with its own registry and hook manager (multirun jobs share nothing)."""
    from apt.core.registry import Registry
    from apt.plugins import HookManager, PluginManager

    hooks = HookManager(strict=True) if strict else HookManager()
    return PluginManager(registry=Registry.with_builtins(entry_points=True), hook_manager=hooks)


def check_run(cfg: DictConfig, *, run_dir: str | Path | None = None, plugin_manager: Any = None,
              plugin_dir: str | Path | None = None, writer: bool = True) -> CheckedRun:
    """Check ``cfg`` as the run in ``run_dir`` would use it; raise ConfigProblems or return it checked.

    ``plugin_manager`` (default: :func:`new_plugin_manager`) receives the plugins; on a
    problem the plugins set up so far are torn down before raising. Relative ``*_file`` /
    ``*_dir`` plugin options point into ``plugin_dir`` (default ``run_dir``): a dry check
    sets the plugins up in a scratch directory. ``writer``: this process will write the run
    and checkpoint directories (under torchrun, rank 0), so they must be free.
    """
    plain, problems = resolve_sections(cfg)
    problems += value_problems(plain)
    problems += optim_problems(plain)
    data, trainer = plain.get("data"), plain.get("trainer") or {}
    if data is not None:
        from apt.data.checks import check_data

        problems += check_data(data)
    run_dir = Path(run_dir) if run_dir is not None else None
    problems += _path_problems(plain, trainer, run_dir, writer)
    names, provider_options, provider_section = provider_choices(plain.get("provider") or {})
    problems += provider_section

    plugins_cfg = plain.get("plugin") or {}
    if not isinstance(plugins_cfg, Mapping):
        problems.append("plugin must be a mapping of plugin name -> options (select with plugin=[a,b])")
        plugins_cfg = {}
    plugin_dir = Path(plugin_dir) if plugin_dir is not None else run_dir
    if plugin_dir is not None:
        plugins_cfg = {n: in_run_dir(o, plugin_dir) if isinstance(o, Mapping) else o for n, o in plugins_cfg.items()}
    pm = plugin_manager if plugin_manager is not None else new_plugin_manager(bool(trainer.get("strict_hooks")))
    warnings: list[str] = []
    try:
        plugin_problems = load_plugins(pm, plugins_cfg)
        problems += plugin_problems
        schedule_problems, warnings = _schedule_problems(plain, trainer, pm)
        problems += schedule_problems
        setup_problems = set_up_plugins(pm) if not plugin_problems else []
        problems += setup_problems
        providers: dict[str, str | None] = {}
        model_ok = bool(plain.get("model")) and not any(p.startswith("model.") for p in problems)
        if model_ok:
            problems += plugin_model_problems(pm, _model(plain))
        if model_ok and not (plugin_problems or setup_problems or provider_section):
            providers, more = provider_problems(pm.registry, names, provider_options, _model(plain))
            problems += more
        problems += _combination_problems(plugins_cfg, names)
        if model_ok and not problems:
            problems += _memory_problems(plain, trainer)
        if not (plugin_problems or setup_problems):
            problems += monitor_problems(pm)
        if problems:
            raise ConfigProblems(problems)
        warnings += _length_warnings(plain, trainer, pm)
    except BaseException:
        pm.teardown_all()
        raise
    config = RunConfig(
        seed=plain["seed"], model=_model(plain), providers=providers, provider_options=provider_options,
        plugins={n: {k: v for k, v in o.items() if k != "_target_"} for n, o in plugins_cfg.items()},
        data=plain["data"], trainer=trainer, optim=plain["optim"], schedule=plain.get("schedule") or {},
        ckpt_path=plain.get("ckpt_path"), run_dir=run_dir, resolved=plain)
    return CheckedRun(config, pm, warnings)


# -- helpers ----------------------------------------------------------------------------------
def _model(plain: Mapping[str, Any]) -> dict[str, Any]:
    m, d = dict(plain.get("model") or {}), plain.get("data") or {}
    m["max_seq_len"] = m.get("max_seq_len") or d.get("block_size")
    return m


def _path_problems(plain: Mapping[str, Any], trainer: Mapping[str, Any], run_dir: Path | None,
                   writer: bool) -> list[str]:
    from apt.training.runlock import lock_problem

    problems = []
    if trainer:
        problem = device_problem(str(trainer.get("device")))
        if problem:
            problems.append(problem)
    run_dir_problem = writable_dir_problem(run_dir, "the run directory (hydra.run.dir)") if run_dir else None
    if run_dir_problem:
        problems.append(run_dir_problem)
    elif run_dir is not None and writer and (problem := lock_problem(run_dir)):
        problems.append(problem)
    ckpt_dir = trainer.get("checkpoint_dir") or (run_dir / "checkpoints" if run_dir and not run_dir_problem else None)
    if ckpt_dir is not None:
        problem = writable_dir_problem(ckpt_dir, "the checkpoint directory (trainer.checkpoint_dir)")
        if problem is None and not trainer.get("resume"):
            problem = existing_checkpoints_problem(ckpt_dir)
        if problem is None and writer and trainer.get("checkpoint_dir"):
            problem = lock_problem(ckpt_dir)
        if problem:
            problems.append(problem)
    if plain.get("ckpt_path") is not None:
        problem = checkpoint_path_problem(str(plain["ckpt_path"]), plain.get("model"),
                                          (plain.get("data") or {}).get("block_size"))
        if problem:
            problems.append(problem)
    return problems


def _schedule_problems(plain: Mapping[str, Any], trainer: Mapping[str, Any], pm: Any) -> tuple[list[str], list[str]]:
    """Entries that cannot be evaluated, or name a plugin that does not exist (errors), or
    one that is not selected (warnings). Entries after the run's end are warnings of
    :func:`_length_warnings` (:meth:`apt.schedule.Schedule.unreachable`)."""
    from apt.schedule import Schedule, ScheduleError

    try:
        schedule = Schedule(plain.get("schedule") or {}, max_epochs=trainer.get("max_epochs") or 1,
                            max_steps=trainer.get("max_steps") or 1)
    except ScheduleError as exc:
        return [str(exc)], []
    selected = list(plain.get("plugin") or {}) if isinstance(plain.get("plugin"), Mapping) else []
    return schedule.check_plugins(selected, pm.available_plugins())


def _memory_problems(plain: Mapping[str, Any], trainer: Mapping[str, Any]) -> list[str]:
    """A model that cannot fit in host memory (:mod:`.memory`; a GPU's is the build step's)."""
    available = available_host_memory() if on_host(str(trainer.get("device"))) else None
    if available is None:
        return []
    problem = memory_problem(_model(plain), plain.get("optim") or {}, known_vocab_size(plain.get("data") or {}),
                             *available)
    return [problem] if problem else []


def _length_warnings(plain: Mapping[str, Any], trainer: Mapping[str, Any], pm: Any) -> list[str]:
    """Settings the run's length leaves without effect (:mod:`.length`), as the build step
    will see them where the check can count the run (the schedule's horizons included)."""
    from apt.schedule import Schedule, ScheduleError

    length = run_length_estimate(trainer, plain.get("data"))
    try:
        schedule = Schedule(plain.get("schedule") or {}, max_epochs=trainer.get("max_epochs") or length.epochs,
                            max_steps=length.steps)
    except ScheduleError:  # a horizon the check cannot tell yet: the build step's schedule reports
        schedule = None
    return length_warnings(length, plain.get("optim") or {}, schedule,
                           [(n, pm.get_plugin(n)) for n in pm.list_plugins()])


def _combination_problems(plugins: Mapping[str, Any], names: Mapping[str, Any]) -> list[str]:
    """Choices that are each valid but cannot work together."""
    ffn = (names.get("ffn") or {}).get("name")
    if "moe" in plugins and ffn == "moe":
        return ["plugin 'moe' upcycles the dense FFNs of a model, but provider/ffn=moe already builds "
                "mixture-of-experts layers; use one: plugin=[moe] with a dense FFN (mlp, swiglu), "
                "or provider/ffn=moe without the plugin"]
    return []
