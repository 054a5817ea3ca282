"""Rebuild a trained model from an APT checkpoint: the one loader of sampling and evaluation.

The checkpoint carries the model config, the tokenizer and the run config, so nothing else
is needed; plugins of the run that change the model's layout (MoE upcycling) are loaded
from the saved config and restore it through ``on_checkpoint_load``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_model"]


def load_model(path: str, device: str = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """``(model, tokenizer, checkpoint)`` rebuilt from an APT checkpoint, in eval mode.

    Raises :class:`apt.training.checkpoint.CheckpointError` naming the file when it is
    missing, unreadable, not APT's, or its plugins cannot be loaded.
    """
    from apt.checks import new_plugin_manager
    from apt.checks.plugins import load_plugins, set_up_plugins
    from apt.core.config import APTConfig
    from apt.data.tokenizers import tokenizer_from_dict
    from apt.modeling import ModelBuilder
    from apt.training.checkpoint import CheckpointError, load_checkpoint

    state = load_checkpoint(path)
    if "model_config" not in state or "tokenizer" not in state:
        raise CheckpointError(f"checkpoint {path!r} has no model config or tokenizer; it was not written by train.py")
    pm = new_plugin_manager()
    plugins = (state.get("config") or {}).get("plugin") or {}
    problems = load_plugins(pm, plugins) or set_up_plugins(pm)
    if problems:
        raise CheckpointError(f"checkpoint {path!r}: the run's plugins cannot be loaded: " + "; ".join(problems))
    try:
        model = ModelBuilder(APTConfig.from_dict(state["model_config"]), registry=pm.registry).build_model()
        pm.load_state_dict(state.get("plugins", {}))
        pm.trigger_event("on_checkpoint_load", checkpoint_path=str(path), checkpoint=state, model=model,
                         trainer=None, optimizer=None, schedule=None,
                         epoch=state["progress"]["epoch"], step=state["progress"]["step"])
        model.load_state_dict(state["model"])
    finally:
        pm.teardown_all()
    return model.to(device).eval(), tokenizer_from_dict(state["tokenizer"]), state
