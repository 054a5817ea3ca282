"""Where APT's own configuration tree (``conf/``) is, in a clone and in an installed wheel.

There is one ``conf/`` tree, at the top of the repository beside ``apt/``. A wheel ships it
as package data inside the package (``apt/conf``, see pyproject.toml), so a non-editable
install can train from any directory; a clone or an editable install reads the repository's
tree directly. Everything that needs APT's configs (``train.py``, ``python -m apt train``,
the config checks, the CLI) asks :data:`CONF_DIR`, so the two layouts never disagree.
Importing this module imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONF_DIR", "packaged_conf_dir"]


def packaged_conf_dir() -> Path:
    """``apt/conf`` of an installed wheel, else the repository's top-level ``conf/``."""
    package = Path(__file__).resolve().parent
    candidates = (package / "conf", package.parent / "conf")
    for cand in candidates:
        if (cand / "config.yaml").is_file():
            return cand
    raise FileNotFoundError(f"APT's configs are missing: no config.yaml in {[str(c) for c in candidates]}; "
                            "reinstall APT (the wheel ships them as apt/conf)")


#: APT's configuration directory (the one ``conf/`` tree).
CONF_DIR: Path = packaged_conf_dir()
