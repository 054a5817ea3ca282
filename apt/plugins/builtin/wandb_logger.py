"""``wandb``: the run's config, metrics and plots in Weights & Biases.

Options (conf/plugin/wandb.yaml): ``project``, ``entity`` (null: your default entity) and
``mode`` (``online``, ``offline``, ``disabled``; null: ``$WANDB_MODE``, else online). Offline
runs need no network or account: they are written under ``<run dir>/wandb/`` and can be
uploaded later with ``wandb sync``. The config goes in flattened (``model.d_model``), each
metrics row is logged at its step, summary.json's numbers become the run summary, and
loss.png and summary.json are saved as run files (see :mod:`apt.plugins.builtin.tracking`).
Needs ``pip install 'apt[wandb]'``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from apt.plugins.builtin.tracking import TrackerPlugin, metric_values, run_label
from apt.plugins.trainer_view import TrainerView

__all__ = ["WandbOptions", "WandbPlugin"]


@dataclass
class WandbOptions:
    project: str = "apt"
    entity: str | None = None  # null: the logged-in user's default entity
    mode: Literal["online", "offline", "disabled"] | None = None  # null: $WANDB_MODE, else online


class WandbPlugin(TrackerPlugin):
    """Record params, metrics and files of the run in W&B (options: :class:`WandbOptions`)."""

    Options = WandbOptions
    package = "wandb"
    extra = "wandb"

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.run: Any = None

    def get_name(self) -> str:
        return "wandb"

    def get_version(self) -> str:
        return "1.0.0"

    def start_run(self, params: dict[str, Any], trainer: TrainerView | None, resumed: bool) -> tuple[str, int]:
        import wandb

        out_dir = trainer.out_dir if trainer is not None else None
        continuing = self.run_id is not None and resumed
        self.run = wandb.init(
            project=self.options.project, entity=self.options.entity, mode=self.options.mode,
            dir=str(out_dir) if out_dir is not None else None, config=params,
            name=run_label(trainer),
            id=self.run_id if continuing else None, resume="allow" if continuing else None,
        )
        # a resumed W&B run drops rows below its current step itself (offline it knows none)
        return self.run.id, 0

    def log_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.run.log(metric_values(row), step=int(row["step"]))

    def log_artifact(self, path: Path) -> None:
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            self.run.summary.update({k: v for k, v in data.items()
                                     if isinstance(v, int | float) and not isinstance(v, bool)})
        self.run.save(str(path), base_path=str(path.parent), policy="now")

    def end_run(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)
        self.run = None
