"""Plugin: the base class of every lifecycle extension.

A plugin is loaded with a config dict, set up once (where it registers providers and
hooks), receives events while enabled, and is torn down at the end of a run. Overriding
one of the ``on_*`` methods is enough to receive that event: the overridden methods are
registered as hooks at setup with :meth:`Plugin.get_priority`, and each parameter name must be
a keyword the event passes (:data:`~apt.plugins.hooks.EVENT_PARAMS`), else setup fails with
:class:`~apt.plugins.hooks.HookSignatureError`. The ``trainer`` keyword is a
:class:`~apt.plugins.trainer_view.TrainerView`.

Two class-level declarations let the rest of APT work with a plugin without knowing it by
name: :attr:`Plugin.capabilities` (what it takes over from the trainer, see
:data:`CAPABILITIES`) and :meth:`Plugin.restore_structure` (how a model saved by its run
is rebuilt for sampling, evaluation and export, without setting the plugin up).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from apt.core.config import to_plain
from apt.plugins.hooks import EVENT_ALIASES, EVENTS
from apt.plugins.options import check_options

if TYPE_CHECKING:
    from apt.core.registry import Registry
    from apt.plugins.hooks import HookManager

__all__ = ["CAPABILITIES", "CLIPS_GRADIENTS", "Plugin", "docstring_summary", "overridden_hook_methods"]

#: The plugin clips gradients itself (in ``on_backward_end``): the trainer then does not
#: apply ``trainer.grad_clip`` while the plugin is enabled.
CLIPS_GRADIENTS = "clips_gradients"

#: Every capability a plugin may declare in :attr:`Plugin.capabilities`, with what it means.
CAPABILITIES: dict[str, str] = {
    CLIPS_GRADIENTS: "clips gradients in on_backward_end; the trainer skips trainer.grad_clip",
}


def _as_dict(config: Any) -> dict[str, Any]:
    """A plain dict from None, a mapping, an OmegaConf node or an APTConfig."""
    if config is None:
        return {}
    config = to_plain(config)
    if hasattr(config, "to_dict") and not isinstance(config, Mapping):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise TypeError(f"plugin config must be a mapping, got {type(config).__name__}: {config!r}")
    return dict(config)


class Plugin:
    """Base class: override ``get_name`` and the ``on_*`` events you need.

    ``config`` is always a dict (``{}`` when none is given). ``should_stop = True`` asks
    the trainer to end training after the current step.

    A plugin declares its options by setting ``Options`` to a dataclass (see
    :mod:`apt.plugins.options`): unknown keys and wrong types are then errors at creation,
    ``self.config`` holds every option (defaults filled in) and ``self.options`` is the
    dataclass instance.
    """

    #: The dataclass declaring this plugin's options; None: the config is taken as given.
    Options: ClassVar[type | None] = None

    #: What this plugin takes over from the trainer; names from :data:`CAPABILITIES`.
    capabilities: ClassVar[frozenset[str]] = frozenset()

    # Class-level defaults so subclasses that skip ``super().__init__`` still work.
    _enabled: bool = True
    _apt_name: str | None = None
    should_stop: bool = False

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = _as_dict(config)
        if self.Options is not None:
            self.config = check_options(self.Options, self.config, owner=f"plugin {self.get_name()!r}")
            self.options = self.Options(**self.config)
        self._enabled = True
        self.should_stop = False
        self.registry: Registry | None = None
        self.hook_manager: HookManager | None = None

    # -- identity -----------------------------------------------------------------------
    def get_name(self) -> str:
        """Unique plugin name; defaults to the name it was registered under."""
        if self._apt_name:
            return self._apt_name
        return re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", type(self).__name__.removesuffix("Plugin")).lower()

    def get_version(self) -> str:
        return "0.0.0"

    def get_description(self) -> str:
        return docstring_summary(type(self).__doc__)

    def get_dependencies(self) -> list[str]:
        """``"plugin:NAME"`` entries and package requirements such as ``"torch>=1.9.0"``."""
        return []

    def get_conflicts(self) -> list[str]:
        """Names of plugins that cannot be loaded together with this one."""
        return []

    def get_priority(self) -> int:
        """Priority of the auto-registered ``on_*`` hooks (higher runs earlier)."""
        return 0

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        """Return False (or raise ``ValueError`` with a reason) when the config cannot work.

        Called at load time with no argument, after ``__init__`` has read ``self.config``.
        """
        return True

    def check_model(self, model: Mapping[str, Any]) -> list[str]:
        """Problems of this plugin's options with the run's ``model`` section (``num_layers``,
        ``d_model``, ...), one line each naming the option, its value and the valid range.

        ``apt check`` and train.py call it once every plugin of the run is set up (its
        ``self.registry`` then holds every provider, a plugin's too), before anything is
        built, so an option that only the model or the registry can refute (a block index, a
        provider name) is not found mid-run.
        """
        return []

    # -- lifecycle ----------------------------------------------------------------------
    def setup(self, registry: Registry, hook_manager: HookManager) -> None:
        """Register providers and hooks. Subclasses call ``super().setup(...)`` first."""
        self.registry = registry
        self.hook_manager = hook_manager
        hook_manager.register_plugin_hooks(self)

    def teardown(self) -> None:
        """Release resources; the base removes every hook this plugin owns."""
        hm = getattr(self, "hook_manager", None)
        if hm is not None:
            hm.unregister_owner(self)

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        """Silence every hook this plugin owns until :meth:`enable`."""
        self._enabled = False

    def is_enabled(self) -> bool:
        """Whether hooks reach this plugin. The hook loop reads ``_enabled`` directly (it is
        on the hot path), so toggle it with :meth:`enable`/:meth:`disable`, not by overriding."""
        return self._enabled

    # -- checkpoints --------------------------------------------------------------------
    @classmethod
    def restore_structure(cls, model: Any, *, options: Mapping[str, Any], state: Mapping[str, Any],
                          registry: Registry) -> None:
        """Give ``model`` (freshly built from a checkpoint's model config) the structure this
        plugin had made when the checkpoint was saved, before its weights are loaded.

        ``options`` are the plugin's options in the run's config, ``state`` its entry of the
        checkpoint (what :meth:`state_dict` returned) and ``registry`` the built-in and
        installed providers. Sampling, evaluation and export call this, and only this, for
        built-in and entry-point plugins (never for a class a checkpoint merely names): it
        must change the model and nothing else (no files, no hooks, no setup). The default
        does nothing: most plugins leave the model's structure alone.
        """

    def state_dict(self) -> dict[str, Any]:
        """State to put in a checkpoint (counters, best values); override to add yours."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; the base accepts only ``{}``."""
        if state:
            raise ValueError(
                f"plugin {self.get_name()!r} keeps no state but got keys {sorted(state)}; "
                "override load_state_dict to restore them"
            )

    def __repr__(self) -> str:
        state = "enabled" if self._enabled else "disabled"
        return f"<{type(self).__name__} {self.get_name()!r} {state}>"

    # -- the 16 standard events (no-ops; override the ones you need) --------------------
    def on_model_init(self, **kwargs: Any) -> None: ...
    def on_train_begin(self, **kwargs: Any) -> None: ...
    def on_train_end(self, **kwargs: Any) -> None: ...
    def on_epoch_begin(self, **kwargs: Any) -> None: ...
    def on_epoch_end(self, **kwargs: Any) -> None: ...
    def on_step_begin(self, **kwargs: Any) -> None: ...
    def on_step_end(self, **kwargs: Any) -> None: ...
    def on_batch_begin(self, **kwargs: Any) -> None: ...
    def on_batch_end(self, **kwargs: Any) -> None: ...
    def on_backward_begin(self, **kwargs: Any) -> None: ...
    def on_backward_end(self, **kwargs: Any) -> None: ...
    def on_optimizer_step(self, **kwargs: Any) -> None: ...
    def on_validation_begin(self, **kwargs: Any) -> None: ...
    def on_validation_end(self, **kwargs: Any) -> None: ...
    def on_checkpoint_save(self, **kwargs: Any) -> None: ...
    def on_checkpoint_load(self, **kwargs: Any) -> None: ...


def overridden_hook_methods(cls: type) -> list[tuple[str, str]]:
    """``(method name, canonical event)`` for each event method ``cls`` defines itself.

    Alias spellings (``on_epoch_start``) count too and map to their ``*_begin`` event.
    """
    out = []
    for attr in EVENTS + tuple(EVENT_ALIASES):
        impl = getattr(cls, attr, None)
        if impl is not None and impl is not getattr(Plugin, attr, None):
            out.append((attr, EVENT_ALIASES.get(attr, attr)))
    return out


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")  # :class:`X`, :py:meth:`~a.b`


def docstring_summary(doc: str | None) -> str:
    """The first line of a docstring as plain text, for a listing or a description.

    Docstrings are written for Sphinx; ``python -m apt list plugins`` shows them to a person,
    so roles (``:class:`EarlyStoppingOptions` ``) become their target's last name and literals
    lose their double backquotes.
    """
    doc = (doc or "").strip()
    line = doc.splitlines()[0] if doc else ""
    line = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], line)
    return line.replace("``", "")
