"""Structured configs of the ``optuna`` sweeper and its samplers (``hydra/sweeper/sampler=...``).

The keys are hydra-optuna-sweeper's (direction, n_trials, n_jobs, sampler, params, storage,
study_name, custom_search_space), so its documented commands work unchanged; that package
pins Optuna 2.x, whose database storage fails under SQLAlchemy 2, and cannot be installed
beside APT's ``optuna`` extra (Optuna 4 or 5). Sampler options are checked when the config
is composed: a typo is an error naming the sampler's fields.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

__all__ = ["OptunaSweeperConf", "SAMPLERS"]


@dataclass
class TPESamplerConfig:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10  # random trials before TPE starts modelling
    n_ei_candidates: int = 24
    multivariate: bool | None = None
    group: bool = False
    constant_liar: bool = True  # spreads trials that run at the same time (n_jobs > 1)


@dataclass
class RandomSamplerConfig:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class CmaEsSamplerConfig:
    """Needs the ``cmaes`` package (``pip install cmaes``)."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    restart_strategy: str | None = None
    popsize: int | None = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False


@dataclass
class NSGAIISamplerConfig:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class GridSamplerConfig:
    """Every combination of the (discrete) search space once; ``n_trials`` caps the count."""

    _target_: str = "optuna.samplers.GridSampler"
    seed: int | None = None


#: ``hydra/sweeper/sampler`` options.
SAMPLERS: dict[str, type] = {"tpe": TPESamplerConfig, "random": RandomSamplerConfig,
                             "cmaes": CmaEsSamplerConfig, "nsgaii": NSGAIISamplerConfig,
                             "grid": GridSamplerConfig}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.apt_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # The sampler stays a config until the study is open, so a continued study can offset
    # its seed (see apt.sweeps.optuna_study).
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = MISSING
    direction: Any = "minimize"  # or maximize; a list of them for several objectives
    storage: str | None = None  # e.g. sqlite:///study.db; null keeps the study in memory
    study_name: str | None = None  # with a storage, the same name continues the study
    n_trials: int = 20  # trials this command runs (a continued study adds them)
    n_jobs: int = 1  # trials launched together (parallel with hydra/launcher=joblib)
    params: dict[str, str] | None = None  # search space, in Hydra's sweep syntax
    custom_search_space: str | None = None  # dotted path of fn(cfg, trial) suggesting more


_cs = ConfigStore.instance()
_cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="apt")
for _name, _node in SAMPLERS.items():
    _cs.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="apt")
