"""Optimizers built from ``optim``: one torch optimizer, or several acting as one.

    select.py     named parameter selectors (``hidden_matrices``, ...), without torch
    composite.py  CompositeOptimizer: one optimizer per part behind one optimizer's interface
    factory.py    build_optimizer (config -> optimizer) and add_params (parameters added mid-run)

Names are imported on first use, so checking a config (:mod:`apt.optim.select`) does not
import torch.
"""

from __future__ import annotations

from apt.core.lazy import lazy_attributes

__all__ = ["DEFAULT_PART", "SELECTORS", "CompositeOptimizer", "ParamRouter", "add_params", "build_optimizer",
           "selects"]

_LOCATIONS = {
    "DEFAULT_PART": "apt.optim.select",
    "SELECTORS": "apt.optim.select",
    "CompositeOptimizer": "apt.optim.composite",
    "ParamRouter": "apt.optim.factory",
    "add_params": "apt.optim.factory",
    "build_optimizer": "apt.optim.factory",
    "selects": "apt.optim.select",
}


__getattr__ = lazy_attributes(__name__, _LOCATIONS)
