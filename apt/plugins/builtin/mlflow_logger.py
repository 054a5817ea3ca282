"""``mlflow``: the run's config, metrics and plots in an MLflow tracking store.

Options (conf/plugin/mlflow.yaml): ``tracking_uri`` (null: ``$MLFLOW_TRACKING_URI``, else
MLflow's default, ``sqlite:///mlflow.db`` in the current directory with artifacts under
``./mlruns``), ``experiment`` (created if missing) and ``run_name`` (null: the run
directory). What is recorded and when: :mod:`apt.plugins.builtin.tracking`. Uses
``MlflowClient`` with an explicit run id, never MLflow's global "active run", so the jobs of
a sweep in one process cannot log into each other's runs. Needs ``pip install 'apt[mlflow]'``
(mlflow-skinny, plus SQLAlchemy for the sqlite store).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt.plugins.builtin.tracking import TrackerPlugin, metric_values, run_label
from apt.plugins.trainer_view import TrainerView

__all__ = ["MLflowOptions", "MLflowPlugin"]

_PARAM_CHARS = 6000  # MLflow's longest param value
_BATCH = 100  # MLflow's most params per log_batch call (metrics: 1000)


@dataclass
class MLflowOptions:
    tracking_uri: str | None = None  # null: $MLFLOW_TRACKING_URI or MLflow's default
    experiment: str = "apt"  # experiment name, created when missing
    run_name: str | None = None  # null: the run directory (outputs/<date>/<time>)


class MLflowPlugin(TrackerPlugin):
    """Record params, metrics and artifacts of the run in MLflow (options: :class:`MLflowOptions`)."""

    Options = MLflowOptions
    package = "mlflow"
    extra = "mlflow"

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.client: Any = None

    def get_name(self) -> str:
        return "mlflow"

    def get_version(self) -> str:
        return "1.0.0"

    def start_run(self, params: dict[str, Any], trainer: TrainerView | None, resumed: bool) -> tuple[str, int]:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.options.tracking_uri)
        if self.run_id is not None and resumed:  # the checkpoint's run: continue it
            self.client.update_run(self.run_id, status="RUNNING")
            keys = self.client.get_run(self.run_id).data.metrics
            steps = [m.step for k in keys for m in self.client.get_metric_history(self.run_id, k)]
            return self.run_id, max(steps, default=0)
        experiment_id = self._experiment_id(self.options.experiment)
        run = self.client.create_run(experiment_id, run_name=self.options.run_name or run_label(trainer),
                                     tags={"apt.run_dir": str(trainer.out_dir or "") if trainer is not None else ""})
        items = [Param(_key(k), str(v)[:_PARAM_CHARS]) for k, v in sorted(params.items())]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(run.info.run_id, params=items[i:i + _BATCH])
        return run.info.run_id, 0

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # created by a parallel job in the meantime
            return self.client.get_experiment_by_name(name).experiment_id

    def log_rows(self, rows: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_key(k), v, now, int(row["step"])) for row in rows
                   for k, v in metric_values(row).items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def end_run(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def _key(name: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . / space``; anything else becomes ``_``."""
    return re.sub(r"[^\w\-./ ]", "_", name)
