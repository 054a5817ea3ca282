"""Resume is a property of the run directory: ``trainer.resume=true hydra.run.dir=D``.

A run directory holds the config its run was composed into (``.hydra/config.yaml``) and
the command-line overrides that composed it (``.hydra/overrides.yaml``). Resuming the run
in ``D`` continues *that* run:

- the config is ``D``'s saved one, not APT's defaults (:func:`resume_plan`, called by
  train.py's preflight before Hydra starts, so ``--cfg job`` shows it too);
- an override given with the resume changes the run only where :data:`RESUMABLE` allows
  it (extending ``trainer.max_steps``, another ``trainer.device``, ...); any other
  difference is one error listing the keys, and nothing runs;
- the overrides are appended to ``.hydra/overrides.yaml`` and the changed config is saved
  (:func:`record_resume`), so the history still composes the run and the next resume starts
  from it; neither is ever replaced by a fresh command line.

Where there is no saved config (a multirun job, ``trainer.checkpoint_dir`` elsewhere) the
checkpoint's own copy of the config is compared instead (:func:`resume_problems`, called by
the trainer when it resumes). Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from apt.core.errors import ConfigProblems
from apt.core.files import atomic_write_text

__all__ = ["RESUMABLE", "ResumePlan", "flatten", "is_hydra_override", "record_resume", "resume_plan",
           "resume_problems"]

#: The keys a resume may change, each with what changing it does. Everything else is the
#: run's and stays as it was saved.
RESUMABLE: dict[str, str] = {
    "trainer.resume": "continue the run in its directory",
    "trainer.max_steps": "extend (or shorten) the run; the LR schedule and schedule entries of the "
                         "run's length are laid out over the new length from the resume point on",
    "trainer.max_epochs": "the same, counted in epochs",
    "trainer.checkpoint_every": "how often to save",
    "trainer.keep_last": "how many checkpoints to keep",
    "trainer.eval_test": "score the test split at the end (training is unaffected)",
    "trainer.on_nonfinite": "what a non-finite loss does from now on",
    "trainer.progress": "the progress bar",
    "trainer.plot": "loss.png at the end",
    "trainer.strict_hooks": "re-raise plugin hook errors",
    "trainer.device": "another device (numbers may differ in the last bits)",
    "trainer.threads": "torch's intra-op threads",
    "trainer.compile": "torch.compile (numbers may differ in the last bits)",
    "trainer.deterministic": "torch's deterministic algorithms",
    "trainer.strategy": "DDP or FSDP under torchrun (checkpoints are single-process ones)",
    "data.batch_size": "per-process batch, only with the same global batch (batch_size x processes): "
                       "another number of processes",
    "data.cache_dir": "where token caches are kept",
}


@dataclass(frozen=True)
class ResumePlan:
    """What ``trainer.resume=true`` will run: the saved config with the allowed changes."""

    run_dir: Path
    config: DictConfig  # the saved config, resumable overrides applied
    changed: list[str]  # dotted keys that differ from the saved config
    history: list[str]  # the saved overrides, then this command line's


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values; an empty mapping is ``{}``)."""
    if isinstance(config, Mapping) and (config or not prefix):
        out: dict[str, Any] = {}
        for key, value in config.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: config}


def _differences(now: Mapping[str, Any], saved: Mapping[str, Any]) -> list[str]:
    a, b = flatten(now), flatten(saved)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()


def _not_resumable(keys: Sequence[str], where: str) -> str:
    groups: dict[str, list[str]] = {}
    for key in RESUMABLE:
        section, _, name = key.partition(".")
        groups.setdefault(section, []).append(name)
    resumable = ", ".join(f"{section}.{'/'.join(names)}" for section, names in groups.items())
    return (f"trainer.resume=true continues {where}; {', '.join(keys)} {'differs' if len(keys) == 1 else 'differ'} "
            f"from it and cannot change when resuming (resumable: {resumable}); to change "
            f"{'it' if len(keys) == 1 else 'them'}, start a new run in another hydra.run.dir "
            "(ckpt_path=<checkpoint> starts it from this run's weights)")


def resume_problems(now: Mapping[str, Any], saved: Mapping[str, Any]) -> list[str]:
    """The problem line when config ``now`` differs from the checkpoint's ``saved`` outside
    :data:`RESUMABLE` (both plain, resolved configs), else ``[]``."""
    keys = [k for k in _differences(now, saved) if k not in RESUMABLE]
    return [_not_resumable(keys, "the run of the checkpoint with the config saved in it")] if keys else []


def is_hydra_override(override: str) -> bool:
    """Whether ``override`` sets Hydra's own config (``hydra.run.dir=...``, ``hydra/launcher=...``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    key = OverridesParser.create().parse_override(override).key_or_group
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def resume_plan(overrides: Sequence[str], config_dir: str | os.PathLike[str] | None = None, *,
                composed: DictConfig | None = None) -> ResumePlan | None:
    """The run to resume, when the command line asks for ``trainer.resume=true`` in a run
    directory that holds a saved config; None otherwise (a fresh composition).

    ``composed`` is the command line already composed with its ``hydra`` node (saves a
    composition). Raises ConfigProblems for an override the resume cannot honour.
    """
    import yaml

    from apt.compose import compose

    cfg = composed if composed is not None else compose(overrides, config_dir, with_hydra=True)
    if not OmegaConf.select(cfg, "trainer.resume", default=False):
        return None
    run_dir = Path(str(OmegaConf.select(cfg, "hydra.run.dir")))
    saved_path, history_path = run_dir / ".hydra" / "config.yaml", run_dir / ".hydra" / "overrides.yaml"
    if not saved_path.is_file():
        return None
    saved = OmegaConf.load(saved_path)
    history = [str(o) for o in (yaml.safe_load(history_path.read_text(encoding="utf-8")) or [])] \
        if history_path.is_file() else []
    task = [o for o in overrides if not is_hydra_override(o)]
    try:
        before, after = compose(history, config_dir), compose([*history, *task], config_dir)
    except ConfigProblems as exc:
        raise ConfigProblems([f"the overrides saved in {history_path} no longer compose ({p}); pass the "
                              "--config-dir the run used" for p in exc.problems]) from None
    plain_before = OmegaConf.to_container(before, resolve=False)
    plain_after = OmegaConf.to_container(after, resolve=False)
    changed = _differences(plain_after, plain_before)
    refused = [k for k in changed if k not in RESUMABLE]
    if refused:
        raise ConfigProblems([_not_resumable(refused, f"the run in {str(run_dir)!r} with its saved config "
                                                      "(.hydra/config.yaml)")])
    config = OmegaConf.create(OmegaConf.to_container(saved, resolve=False))
    for key in changed:
        OmegaConf.update(config, key, OmegaConf.select(after, key), force_add=True)
    return ResumePlan(run_dir=run_dir, config=config, changed=changed, history=[*history, *task])


def record_resume(plan: ResumePlan) -> None:
    """Save the resumed run's config and append this command line to its overrides history."""
    import yaml

    hydra_dir = plan.run_dir / ".hydra"
    atomic_write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(plan.config))
    atomic_write_text(hydra_dir / "overrides.yaml", yaml.safe_dump(plan.history, default_flow_style=False))
