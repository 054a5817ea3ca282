"""SIGINT/SIGTERM during training: finish the step, save, exit; a second signal aborts.

Kept apart from the loop so the rule is in one place: the first signal only records itself
(``on_signal(signum)``) and the trainer stops at the next step boundary and checkpoints; a
second one restores the previous handler and raises ``KeyboardInterrupt`` at once, for a
user who does not want to wait.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

__all__ = ["install_stop_handlers"]


def install_stop_handlers(on_signal: Callable[[int], None]) -> Callable[[], None]:
    """Install handlers for SIGINT and SIGTERM; returns a function that restores the old ones.

    Outside the main thread (where Python cannot install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, object] = {}
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if received:  # second signal: give up immediately
            signal.signal(signum, previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        received.append(signum)
        on_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
