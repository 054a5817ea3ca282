"""The one error type for bad data input (a missing corpus, a broken token directory)."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad data input, described in one readable line (printed as ``error: <line>``)."""
