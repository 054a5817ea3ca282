"""APT plugins: lifecycle extensions that register providers and react to training events.

    from apt.plugins import Plugin, plugin_manager, every_n_epochs, after_epoch

See ``spec/PLUGIN_GUIDE.md`` for the developer guide. Importing this package does not
import torch.
"""

from apt.plugins.base import CAPABILITIES, CLIPS_GRADIENTS, Plugin
from apt.plugins.conditions import (
    Condition,
    after_epoch,
    after_step,
    all_of,
    any_of,
    before_epoch,
    before_step,
    every_n_epochs,
    every_n_steps,
)
from apt.plugins.hooks import (
    CONTEXT_PARAMS,
    EVENT_ALIASES,
    EVENT_EXTRAS,
    EVENT_PARAMS,
    EVENTS,
    STRICT_ENV_VAR,
    DisabledHook,
    HookInfo,
    HookManager,
    HookSignatureError,
    canonical_event,
    hook_manager,
)
from apt.plugins.manager import (
    PluginConfigError,
    PluginConflictError,
    PluginDependencyError,
    PluginError,
    PluginManager,
    PluginNameError,
    PluginNotFoundError,
    plugin_manager,
)
from apt.plugins.options import PluginOptionError, check_options, describe_options
from apt.plugins.trainer_view import TrainerView

__all__ = [
    "CAPABILITIES",
    "CLIPS_GRADIENTS",
    "CONTEXT_PARAMS",
    "EVENTS",
    "EVENT_ALIASES",
    "EVENT_EXTRAS",
    "EVENT_PARAMS",
    "STRICT_ENV_VAR",
    "Condition",
    "DisabledHook",
    "HookInfo",
    "HookManager",
    "HookSignatureError",
    "Plugin",
    "PluginConfigError",
    "PluginConflictError",
    "PluginDependencyError",
    "PluginError",
    "PluginManager",
    "PluginNameError",
    "PluginNotFoundError",
    "PluginOptionError",
    "TrainerView",
    "after_epoch",
    "after_step",
    "all_of",
    "any_of",
    "before_epoch",
    "before_step",
    "canonical_event",
    "check_options",
    "describe_options",
    "every_n_epochs",
    "every_n_steps",
    "hook_manager",
    "plugin_manager",
]
