"""Sweeps that summarise themselves: the Hydra callback and the summary writer.

``SweepSummaryCallback`` is enabled by ``conf/hydra/callbacks/sweep_summary.yaml``;
``write_summary`` rebuilds a summary from a sweep directory at any time (also available as
``python -m apt summary <sweep_dir>``). Jobs that differ only in ``seed`` are grouped into
configurations with confidence intervals and paired t-tests (``summary_grouped.csv``).
"""

from apt.sweeps.callback import SweepSummaryCallback
from apt.sweeps.grouped import GROUPED_COLUMNS, ConfigStats, grouped_markdown, grouped_stats
from apt.sweeps.summary import (
    GROUPED_SUMMARY,
    JOB_RECORD,
    METRICS_FILE,
    RUN_SUMMARY,
    SUMMARY_COLUMNS,
    SWEEP_FILE,
    JobRecord,
    collect_records,
    read_metrics,
    split_records,
    start_sweep,
    sweep_groups,
    sweep_key,
    varying_overrides,
    write_summary,
)

__all__ = [
    "GROUPED_COLUMNS",
    "GROUPED_SUMMARY",
    "JOB_RECORD",
    "METRICS_FILE",
    "RUN_SUMMARY",
    "SUMMARY_COLUMNS",
    "SWEEP_FILE",
    "ConfigStats",
    "JobRecord",
    "SweepSummaryCallback",
    "collect_records",
    "grouped_markdown",
    "grouped_stats",
    "read_metrics",
    "split_records",
    "start_sweep",
    "sweep_groups",
    "sweep_key",
    "varying_overrides",
    "write_summary",
]
