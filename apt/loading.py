"""Rebuild a trained model from an APT checkpoint: the one loader of sampling, evaluation and export.

The checkpoint carries the model config, the tokenizer and the run config, so nothing else
is needed. Loading runs no code the checkpoint merely names: the model's providers come
from APT and installed packages (entry-point group ``apt.providers``), and of the run's
plugins only built-in ones and ones installed through the ``apt.plugins`` entry points may
take part, through their structure-restoring part alone
(:meth:`apt.plugins.Plugin.restore_structure`: MoE upcycling rebuilds its experts). No
plugin is set up, so none registers hooks or opens files (the ``logging`` plugin of a run
does not truncate a ``training.log`` anywhere). A ``_target_`` the checkpoint names that is
neither is a one-line :class:`~apt.training.checkpoint.CheckpointError`, never an import;
so are weights that do not fit the model config beside them (the line names the parameters
and both shapes, where ``load_state_dict`` would raise a screenful).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["load_model", "weights_mismatch"]


def load_model(path: str, device: str = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """``(model, tokenizer, checkpoint)`` rebuilt from an APT checkpoint, in eval mode.

    Raises :class:`apt.training.checkpoint.CheckpointError` naming the file when it is
    missing, unreadable or not APT's, names a provider or plugin that is not built in or
    installed, or holds weights that do not fit its model config.
    """
    from apt.core.config import APTConfig
    from apt.core.registry import Registry
    from apt.data.tokenizers import tokenizer_from_dict
    from apt.modeling import ModelBuilder
    from apt.training.checkpoint import CheckpointError, load_checkpoint

    state = load_checkpoint(path)
    if "model_config" not in state or "tokenizer" not in state:
        raise CheckpointError(f"checkpoint {path!r} has no model config or tokenizer; it was not written by train.py")
    registry = Registry.with_builtins(entry_points=True)
    model_cfg = APTConfig.from_dict(state["model_config"])
    for kind in ("attention", "ffn", "router"):
        name = getattr(model_cfg, f"{kind}_name")
        if name and not registry.has(kind, name):
            raise CheckpointError(
                f"checkpoint {path!r}: its {kind} provider {name!r} is neither built in nor installed (entry-point "
                "group apt.providers); a provider that a plugin registers in its setup is not loaded here: "
                "install it as a package to sample, evaluate or export this model")
    restorers = _structure_restorers(path, state, registry)
    model = ModelBuilder(model_cfg, registry=registry).build_model()
    for cls, options, plugin_state in restorers:
        try:
            cls.restore_structure(model, options=options, state=plugin_state, registry=registry)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {path!r}: plugin {cls.__name__} cannot restore the model's "
                                  f"structure: {exc}") from exc
    mismatch = weights_mismatch(model.state_dict(), state["model"])
    if mismatch:
        raise CheckpointError(f"checkpoint {path!r}: its weights do not match its model config: {mismatch}")
    model.load_state_dict(state["model"])
    return model.to(device).eval(), tokenizer_from_dict(state["tokenizer"]), state


def weights_mismatch(expected: Mapping[str, Any], found: Mapping[str, Any], shown: int = 3) -> str:
    """How the weights ``found`` differ from the model's ``expected`` state dict, in one line
    (the first ``shown`` parameters of each kind); ``""`` when they fit."""
    def shape(t: Any) -> list[int] | None:
        return list(t.shape) if hasattr(t, "shape") else None

    def first(items: list[str]) -> str:
        more = f" (and {len(items) - shown} more)" if len(items) > shown else ""
        return "; ".join(items[:shown]) + more

    wrong = [f"{k}: {shape(found[k])} in the file, {shape(v)} for the config"
             for k, v in expected.items() if k in found and shape(found[k]) != shape(v)]
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    parts = ([f"shapes differ for {first(wrong)}"] if wrong else []) + \
        ([f"the file lacks {first(missing)}"] if missing else []) + \
        ([f"the model has no {first(extra)}"] if extra else [])
    return ", ".join(parts)


def _structure_restorers(path: str, state: Mapping[str, Any], registry: Any) -> list[tuple[type, dict, Any]]:
    """``(class, options, checkpoint state)`` of each plugin of the run, each class built in
    or installed; anything else the checkpoint names is refused without importing it."""
    from apt.checks.plugins import dotted_target
    from apt.plugins import PluginError, PluginManager
    from apt.training.checkpoint import CheckpointError

    pm = PluginManager(registry=registry)
    plugins = (state.get("config") or {}).get("plugin") or {}
    out = []
    for name, node in plugins.items():
        node = dict(node) if isinstance(node, Mapping) else {}
        target = node.pop("_target_", None)
        try:
            cls = pm.trusted_class(str(name))
        except PluginError as exc:
            raise CheckpointError(f"checkpoint {path!r}: {exc}") from None
        if cls is None or (target and dotted_target(str(target)) != f"{cls.__module__}:{cls.__qualname__}"):
            named = f" ({target})" if target else ""
            raise CheckpointError(
                f"checkpoint {path!r} names plugin {name!r}{named}, which is neither built in nor installed through "
                "an entry point (group apt.plugins); loading runs no other code a checkpoint names (install the "
                "plugin as a package to load this model)")
        out.append((cls, node, (state.get("plugins") or {}).get(name, {})))
    return out
