"""Built-in ``logging`` plugin: append each epoch's metrics to a text file.

The guide's Example 1, kept line-oriented (``Epoch N: {...}``) so a run's progress can be
followed with ``tail -f`` while it trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from apt.plugins.base import Plugin

__all__ = ["LoggingOptions", "LoggingPlugin"]


@dataclass
class LoggingOptions:
    log_file: str = "training.log"  # relative paths are inside the run directory
    mode: Literal["w", "a"] = "w"  # w: truncate; a: append (e.g. when resuming)


class LoggingPlugin(Plugin):
    """Log training events to a file (options: :class:`LoggingOptions`)."""

    Options = LoggingOptions

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.log_file = self.options.log_file
        self.mode = self.options.mode
        self.file_handle: IO[str] | None = None

    def get_name(self) -> str:
        return "logging"

    def get_version(self) -> str:
        return "1.0.0"

    def validate_config(self, config: dict[str, Any] | None = None) -> bool:
        """A non-empty path; types and ``mode`` were checked against :class:`LoggingOptions`."""
        if not self.log_file:
            raise ValueError("log_file must be a non-empty path")
        return True

    def setup(self, registry: Any, hook_manager: Any) -> None:
        super().setup(registry, hook_manager)
        path = Path(self.log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file_handle = path.open(self.mode, encoding="utf-8")

    def teardown(self) -> None:
        if self.file_handle:
            self.file_handle.close()
            self.file_handle = None
        super().teardown()

    def _write(self, line: str) -> None:
        if self.file_handle is not None:
            self.file_handle.write(line + "\n")
            self.file_handle.flush()

    def on_epoch_end(self, epoch: int | None = None, metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if metrics:
            self._write(f"Epoch {epoch}: {metrics}")

    def on_train_end(self, metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if metrics:
            self._write(f"Training finished: {metrics}")
