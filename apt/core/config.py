"""APTConfig: the model/provider/plugin settings the guide passes around as one object.

Hydra composes the full run config; APTConfig is the plain-Python view of the part that
describes the model and its extensions, usable without Hydra (tests, notebooks, the
guide's snippets). Keys it does not know (per-plugin sections such as ``my_plugin:``)
are kept in :attr:`APTConfig.extra` rather than dropped, so nothing in a YAML file is lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["APTConfig", "model_problems", "to_plain"]

_NORMS = ("layernorm", "rmsnorm")
_POSITIONS = ("learned", "rope")


@dataclass
class APTConfig:
    """Model dimensions, provider names and plugin settings.

    ``*_name = None`` selects the registry's default provider of that kind;
    ``*_config`` holds options passed to that provider. ``d_ff = None`` means ``4 * d_model``.
    """

    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 4
    d_ff: int | None = None
    dropout: float = 0.0
    vocab_size: int = 256
    max_seq_len: int = 256
    norm: str = "layernorm"
    position: str = "learned"
    rope_base: float = 10000.0
    bias: bool = False
    attention_name: str | None = None
    ffn_name: str | None = None
    router_name: str | None = None
    attention_config: dict[str, Any] = field(default_factory=dict)
    ffn_config: dict[str, Any] = field(default_factory=dict)
    router_config: dict[str, Any] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)
    schedules: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        if isinstance(self.plugins, str):
            self.plugins = [self.plugins]
        self.plugins = list(self.plugins or [])

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> APTConfig:
        """Build from a mapping (or an OmegaConf node); unknown keys go to ``extra``."""
        data = to_plain(data) if data is not None else {}
        if not isinstance(data, dict):
            raise TypeError(f"APTConfig.from_dict expects a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names and k != "extra"}
        extra = dict(data.get("extra") or {})
        extra.update({k: v for k, v in data.items() if k not in names})
        return cls(**known, extra=extra)

    @classmethod
    def from_yaml(cls, path: str | Path) -> APTConfig:
        import yaml

        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FileNotFoundError(f"cannot read APT config {str(path)!r}: {exc.strerror}") from exc
        data = yaml.safe_load(text)
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
        return cls.from_dict(data or {})

    def to_dict(self) -> dict[str, Any]:
        """A plain dict; ``extra`` keys are flattened back to the top level (round-trips)."""
        out = {f.name: to_plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(to_plain(self.extra))
        return out

    # -- access -------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """Field or extra key, like ``dict.get``: plugins read their sections this way."""
        if key in self.extra:
            return self.extra[key]
        if key != "extra" and key in {f.name for f in dataclasses.fields(self)}:
            return getattr(self, key)
        return default

    def __getitem__(self, key: str) -> Any:
        sentinel = object()
        value = self.get(key, sentinel)
        if value is sentinel:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _MISSING) is not _MISSING

    def plugin_config(self, name: str) -> dict[str, Any]:
        """The top-level section named after a plugin (``{}`` when absent)."""
        section = self.extra.get(name)
        return dict(section) if isinstance(section, Mapping) else {}

    def validate(self) -> list[str]:
        """Problems with the model settings, one readable line each (empty when fine)."""
        return model_problems(dataclasses.asdict(self))


def model_problems(model: Mapping[str, Any]) -> list[str]:
    """Problems with model settings (APTConfig field names); keys not given are not checked.

    The config check runs this before the data (and so ``vocab_size``) is known.
    """
    problems = []
    for name in ("d_model", "num_heads", "num_layers", "d_ff", "vocab_size", "max_seq_len"):
        if name in model and not (name == "d_ff" and model[name] is None):  # d_ff None: 4 * d_model
            value = model[name]
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name} must be a positive integer, got {value!r}")
    dims = "d_model" in model and "num_heads" in model
    if not problems and dims and model["d_model"] % model["num_heads"]:
        problems.append(f"d_model={model['d_model']} is not divisible by num_heads={model['num_heads']}")
    dropout = model.get("dropout", 0.0)
    if not isinstance(dropout, int | float) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
        problems.append(f"dropout must be in [0, 1), got {dropout!r}")
    if model.get("norm", _NORMS[0]) not in _NORMS:
        problems.append(f"norm={model['norm']!r} is not one of {list(_NORMS)}")
    if model.get("position", _POSITIONS[0]) not in _POSITIONS:
        problems.append(f"position={model['position']!r} is not one of {list(_POSITIONS)}")
    if model.get("position") == "rope" and not problems and dims and (model["d_model"] // model["num_heads"]) % 2:
        problems.append(f"rope needs an even head dim, got {model['d_model'] // model['num_heads']}")
    return problems


_MISSING = object()


def to_plain(value: Any) -> Any:
    """Plain containers from OmegaConf nodes (resolved) and nested mappings; other values as is."""
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value
