"""Sweeps that summarise themselves: the Hydra callback and the summary writer.

``SweepSummaryCallback`` is enabled by ``conf/hydra/callbacks/sweep_summary.yaml``;
``write_summary`` rebuilds a summary from a sweep directory at any time (also available as
``python -m apt summary <sweep_dir>``).
"""

from apt.sweeps.callback import SweepSummaryCallback
from apt.sweeps.summary import (
    JOB_RECORD,
    METRICS_FILE,
    RUN_SUMMARY,
    SUMMARY_COLUMNS,
    JobRecord,
    collect_records,
    read_metrics,
    varying_overrides,
    write_summary,
)

__all__ = [
    "JOB_RECORD",
    "METRICS_FILE",
    "RUN_SUMMARY",
    "SUMMARY_COLUMNS",
    "JobRecord",
    "SweepSummaryCallback",
    "collect_records",
    "read_metrics",
    "varying_overrides",
    "write_summary",
]
