"""matplotlib, when it is installed: plots are an optional extra (``pip install "apt[plot]"``).

Every plot APT draws (a run's loss.png, a sweep's val_loss.png, ``python -m apt schedule
--png``) gets pyplot from :func:`pyplot`. Without matplotlib that plot is skipped and a log
line says which one and how to get it, so a missing picture is never a silent surprise.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["MISSING_HINT", "pyplot"]

log = logging.getLogger(__name__)

MISSING_HINT = "matplotlib is not installed (pip install 'apt[plot]')"


def pyplot(what: str) -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or None (logged) without it."""
    try:
        import matplotlib
    except ImportError:
        log.warning("%s: %s not drawn", MISSING_HINT, what)
        return None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt
