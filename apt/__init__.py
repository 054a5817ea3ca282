"""APT: a Hydra-driven experiment runner for transformer language-model research.

The top-level package stays import-light (no torch) so that composing and checking a
configuration answers quickly; heavy modules are imported where they are used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
