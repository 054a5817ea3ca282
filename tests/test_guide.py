"""Every code snippet of spec/PLUGIN_GUIDE.md, in the order it appears, doing what its text says.

Snippets that the guide shows as fragments of one class (Steps 1-3) are pasted into that
class; imports the guide leaves implicit are added. Snippets that use the global
``plugin_manager``, ``hook_manager`` and ``registry`` do so here too; a fixture restores
those globals after every test.
"""

import logging
import subprocess
import sys
from pathlib import Path
from typing import List  # noqa: UP035 - the guide's annotation

import pytest
import torch
import torch.nn as nn

from apt.core import Provider, Registry, RegistryError, registry
from apt.plugins import (
    HookManager,
    Plugin,
    PluginConfigError,
    PluginConflictError,
    PluginDependencyError,
    PluginManager,
    hook_manager,
    plugin_manager,
)
from apt.schedule import Schedule
from tests.helpers import MyAttentionLayer, MyAttentionProvider

logger = logging.getLogger("guide")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def restore_globals():
    specs = {kind: dict(names) for kind, names in registry._specs.items()}
    defaults = dict(registry._defaults)
    yield
    plugin_manager.reset()
    hook_manager.clear()
    registry._specs.clear()
    registry._specs.update(specs)
    registry._defaults.clear()
    registry._defaults.update(defaults)


def isolated() -> PluginManager:
    return PluginManager(registry=Registry(), hook_manager=HookManager(strict=True), entry_points=False)


# -- Provider Registration / Creating a Provider: the guide's provider and its layer live in
# tests/helpers.py (other tests build models with them too); Step 2 refers to them.


# -- Creating Your First Plugin: Steps 1-4 -----------------------------------------------
def test_first_plugin_steps_1_to_4(capsys):
    class MyPlugin(Plugin):
        """My custom plugin."""

        def __init__(self, config=None):
            super().__init__(config)
            # Initialize plugin state
            self.counter = 0

        def get_name(self) -> str:
            """Return unique plugin name."""
            return "my_plugin"

        def get_version(self) -> str:
            """Return semantic version."""
            return "1.0.0"

        def get_description(self) -> str:
            """Return human-readable description."""
            return "My custom plugin for APT"

        def setup(self, registry, hook_manager):
            """Setup plugin: register providers and hooks."""
            super().setup(registry, hook_manager)

            # Register provider (if you have one)
            registry.register(
                'attention',
                'my_attention',
                MyAttentionProvider
            )

            # Add custom hooks
            hook_manager.register(
                'on_epoch_start',
                self.on_epoch_start,
                priority=10
            )

        def on_epoch_start(self, epoch, **kwargs):
            """Called at the start of each epoch."""
            self.counter += 1
            print(f"MyPlugin: Epoch {epoch} started (total: {self.counter})")

        def on_step_end(self, step, loss=None, **kwargs):
            """Called at the end of each step."""
            if step % 100 == 0:
                print(f"MyPlugin: Step {step}, loss={loss}")

        def teardown(self):
            """Cleanup plugin resources."""
            super().teardown()
            print(f"MyPlugin: Processed {self.counter} epochs")

    # Step 4: Register and Use
    # Register plugin class
    plugin_manager.register_plugin('my_plugin', MyPlugin)

    # Load plugin with config
    config = {'enabled': True}
    plugin_manager.load_plugin('my_plugin', config)

    # Setup all plugins
    plugin_manager.setup_all()

    # Trigger events during training
    plugin_manager.trigger_event('on_epoch_start', epoch=1)

    plugin = plugin_manager.get_plugin("my_plugin")
    assert plugin.config == {"enabled": True} and plugin.counter == 1  # once, despite 2 registrations
    assert capsys.readouterr().out == "MyPlugin: Epoch 1 started (total: 1)\n"
    assert registry.get_class("attention", "my_attention") is MyAttentionProvider
    (hook,) = hook_manager.list_hooks("on_epoch_start")
    assert hook.priority == 10 and hook.plugin == "my_plugin"
    plugin_manager.trigger_event('on_step_end', step=100, loss=0.5)
    plugin_manager.trigger_event('on_step_end', step=101, loss=0.5)
    plugin_manager.trigger_event('on_epoch_begin', epoch=2)
    plugin_manager.teardown_all()
    assert capsys.readouterr().out == ("MyPlugin: Step 100, loss=0.5\n"
                                       "MyPlugin: Epoch 2 started (total: 2)\n"
                                       "MyPlugin: Processed 2 epochs\n")
    assert hook_manager.list_hooks() == []


# -- Provider Registration ---------------------------------------------------------------
def test_creating_a_provider():
    p = MyAttentionProvider({"d_model": 8})
    assert p.get_name() == "my_attention" and p.get_version() == "1.0.0"
    assert p.validate_config({"d_model": 8}) and not p.validate_config({})
    layer = p.create_layer(8, 2)
    assert isinstance(layer, nn.Module) and layer(torch.randn(2, 5, 8)).shape == (2, 5, 8)


def _registering_plugin():
    class MyPlugin(Plugin):
        def setup(self, registry, hook_manager):
            super().setup(registry, hook_manager)

            # Register provider
            registry.register(
                kind='attention',           # Provider type
                name='my_attention',        # Provider name
                provider_cls=MyAttentionProvider,
                default=False,              # Set as default?
                excludes=['flash_attn']     # Conflicts with these
            )
    return MyPlugin


def test_registering_in_plugin():
    pm = isolated()
    pm.register_plugin("my_plugin", _registering_plugin())
    pm.load_plugin("my_plugin")
    pm.setup_all()
    assert pm.registry.list_providers() == {"attention": ["my_attention"]}
    assert pm.registry.spec("attention", "my_attention").excludes == ("flash_attn",)
    pm.registry.register("ffn", "flash_attn", Provider)
    with pytest.raises(RegistryError, match="'my_attention' excludes ffn provider 'flash_attn'"):
        pm.registry.check_selection({"attention": "my_attention", "ffn": "flash_attn"})


def test_using_the_provider():
    plugin_manager.register_plugin("my_plugin", _registering_plugin())
    plugin_manager.load_plugin("my_plugin", None)
    plugin_manager.setup_all()

    from apt.core import APTConfig
    from apt.modeling import ModelBuilder

    # Configure to use your provider
    config = APTConfig(
        d_model=768,
        attention_name='my_attention'  # Use your provider
    )

    # Build model
    builder = ModelBuilder(config)
    attention = builder.build_attention()  # Uses MyAttentionProvider

    assert isinstance(attention, MyAttentionLayer)
    assert attention(torch.randn(1, 3, 768)).shape == (1, 3, 768)


# -- Hook System -------------------------------------------------------------------------
def test_hook_methods_option_1(capsys):
    class MyPlugin(Plugin):
        def on_epoch_end(self, epoch, metrics=None, **kwargs):
            """Called at end of each epoch."""
            if metrics:
                print(f"Epoch {epoch}: accuracy={metrics.get('acc', 0):.2f}")

    pm = isolated()
    pm.register_plugin("my_plugin", MyPlugin)
    pm.load_plugin("my_plugin")
    pm.setup_all()
    pm.trigger_event("on_epoch_end", epoch=3, metrics={"acc": 0.875})
    pm.trigger_event("on_epoch_end", epoch=4)
    assert capsys.readouterr().out == "Epoch 3: accuracy=0.88\n"


def test_custom_hooks_option_2(capsys):
    def my_custom_hook(epoch, **kwargs):
        print(f"Custom hook for epoch {epoch}")

    class MyPlugin(Plugin):
        def setup(self, registry, hook_manager):
            super().setup(registry, hook_manager)

            # Register custom hook
            hook_manager.register(
                'on_epoch_start',
                my_custom_hook,
                priority=10,     # Higher = earlier
                name='my_custom_hook'
            )

    pm = isolated()
    pm.register_plugin("my_plugin", MyPlugin)
    pm.load_plugin("my_plugin")
    pm.setup_all()
    pm.hook_manager.register("on_epoch_start", lambda **kw: print("default priority"))
    pm.trigger_event("on_epoch_start", epoch=7)
    assert capsys.readouterr().out == "Custom hook for epoch 7\ndefault priority\n"
    assert pm.hook_manager.list_hooks("on_epoch_begin")[0].name == "my_custom_hook"
    pm.disable_plugin("my_plugin")  # the plain function belongs to the plugin that registered it
    pm.trigger_event("on_epoch_start", epoch=8)
    assert capsys.readouterr().out == "default priority\n"
    pm.enable_plugin("my_plugin")
    pm.teardown_all()
    pm.trigger_event("on_epoch_start", epoch=9)
    assert capsys.readouterr().out == "default priority\n"


def test_conditional_hooks():
    saved, advanced = [], []

    def save_checkpoint(epoch, **kwargs):
        saved.append(epoch)

    def enable_advanced_features(epoch, **kwargs):
        advanced.append(epoch)

    from apt.plugins import after_epoch, every_n_epochs

    # Execute every 5 epochs
    hook_manager.register(
        'on_epoch_end',
        save_checkpoint,
        condition=every_n_epochs(5)
    )

    # Execute only after epoch 10
    hook_manager.register(
        'on_epoch_start',
        enable_advanced_features,
        condition=after_epoch(10)
    )

    for epoch in range(1, 13):
        plugin_manager.trigger_event("on_epoch_begin", epoch=epoch)
        plugin_manager.trigger_event("on_epoch_end", epoch=epoch)
    assert saved == [5, 10]
    assert advanced == [10, 11, 12]


def test_hook_priorities():
    order = []

    def hook1(**kwargs):
        order.append(1)

    def hook2(**kwargs):
        order.append(2)

    def hook3(**kwargs):
        order.append(3)

    # This runs first (priority 100)
    hook_manager.register('on_epoch_start', hook1, priority=100)

    # This runs second (priority 50)
    hook_manager.register('on_epoch_start', hook2, priority=50)

    # This runs third (priority 0, default)
    hook_manager.register('on_epoch_start', hook3)

    plugin_manager.trigger_event("on_epoch_start", epoch=1)
    assert order == [1, 2, 3]

    # the order comes from the priorities, not from the order of registration
    other = HookManager()
    for hook, prio in ((hook3, 0), (hook2, 50), (hook1, 100)):
        other.register('on_epoch_start', hook, priority=prio)
    order.clear()
    other.trigger("on_epoch_start", epoch=1)
    assert order == [1, 2, 3]


# -- Configuration -----------------------------------------------------------------------
class ConfiguredPlugin(Plugin):
    """The guide's 'Plugin Configuration' MyPlugin."""

    def __init__(self, config=None):
        super().__init__(config)

        # Read config values
        self.enable_at_epoch = config.get('enable_at_epoch', 0)
        self.learning_rate = config.get('learning_rate', 0.001)
        self.verbose = config.get('verbose', False)

    def validate_config(self) -> bool:
        """Validate configuration."""
        if self.enable_at_epoch < 0:
            logger.error("enable_at_epoch must be non-negative")
            return False
        return True

    def get_name(self):
        return "my_plugin"


class OtherPlugin(Plugin):
    def get_name(self):
        return "other_plugin"


def test_plugin_configuration(caplog):
    pm = isolated()
    pm.register_plugin("my_plugin", ConfiguredPlugin)
    plugin = pm.load_plugin("my_plugin", None)  # defaults, read with config.get
    assert (plugin.enable_at_epoch, plugin.learning_rate, plugin.verbose) == (0, 0.001, False)
    pm.unload_plugin("my_plugin")
    with pytest.raises(PluginConfigError, match="'my_plugin'"):
        pm.load_plugin("my_plugin", {"enable_at_epoch": -1})
    assert "enable_at_epoch must be non-negative" in caplog.text


YAML = """\
# config.yaml
plugins:
  - my_plugin
  - other_plugin

my_plugin:
  enable_at_epoch: 2
  learning_rate: 0.001
  verbose: true

other_plugin:
  mode: "advanced"
"""


def test_yaml_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("config.yaml").write_text(YAML)
    plugin_manager.register_plugin("my_plugin", ConfiguredPlugin)
    plugin_manager.register_plugin("other_plugin", OtherPlugin)

    from apt.core import APTConfig
    from apt.plugins import plugin_manager as pm  # the guide's import

    # Load config from YAML
    config = APTConfig.from_yaml('config.yaml')

    # Load plugins from config
    pm.load_from_config(config)
    pm.setup_all()

    mine = pm.get_plugin("my_plugin")
    assert (mine.enable_at_epoch, mine.learning_rate, mine.verbose) == (2, 0.001, True)
    assert pm.get_plugin("other_plugin").config == {"mode": "advanced"}
    assert pm.list_plugins() == ["my_plugin", "other_plugin"]


SCHEDULE_YAML = """\
plugins:
  - moe
  - align

schedules:
  enable_moe_at_epoch: 2      # Enable MoE at epoch 2
  enable_align_at_epoch: 3    # Enable alignment at epoch 3

  route_temp:
    start: 1.5
    end: 0.8
    by: "epoch"
"""


def test_schedule_integration(tmp_path, capsys):
    from apt.core import APTConfig

    path = tmp_path / "config.yaml"
    path.write_text(SCHEDULE_YAML)
    config = APTConfig.from_yaml(path)
    assert config.plugins == ["moe", "align"]
    assert config.schedules["enable_moe_at_epoch"] == 2

    class MoEPlugin(Plugin):
        def on_epoch_begin(self, epoch, schedule=None, **kwargs):
            if schedule and schedule.should_enable_plugin('moe', epoch=epoch):
                self.enable()
                print(f"MoE enabled at epoch {epoch}")

    schedule = Schedule(config.schedules, max_epochs=4)
    assert [schedule.should_enable_plugin("align", epoch=e) for e in (1, 2, 3)] == [False, False, True]
    pm = isolated()
    pm.register_plugin("moe", MoEPlugin, override=True)
    pm.load_plugin("moe")
    pm.setup_all()
    for epoch in (1, 2):
        pm.trigger_event("on_epoch_begin", epoch=epoch, schedule=schedule)
    assert capsys.readouterr().out == "MoE enabled at epoch 2\n"


# -- Examples ----------------------------------------------------------------------------
class LoggingPlugin(Plugin):
    """Log training events to file."""

    def __init__(self, config=None):
        super().__init__(config)
        self.log_file = config.get('log_file', 'training.log')
        self.file_handle = None

    def get_name(self) -> str:
        return "logging"

    def get_version(self) -> str:
        return "1.0.0"

    def setup(self, registry, hook_manager):
        super().setup(registry, hook_manager)
        self.file_handle = open(self.log_file, 'w')

    def teardown(self):
        if self.file_handle:
            self.file_handle.close()
        super().teardown()

    def on_epoch_end(self, epoch, metrics=None, **kwargs):
        if metrics:
            line = f"Epoch {epoch}: {metrics}\n"
            self.file_handle.write(line)
            self.file_handle.flush()


@pytest.mark.parametrize("source", ["guide", "builtin"])
def test_example_1_logging(tmp_path, source):
    pm = isolated()
    if source == "guide":
        pm.register_plugin("logging", LoggingPlugin, override=True)
    log_file = tmp_path / "train.log"
    plugin = pm.load_plugin("logging", {"log_file": str(log_file)})
    pm.setup_all()
    pm.trigger_event("on_epoch_end", epoch=1, metrics={"loss": 3.0})
    assert log_file.read_text() == "Epoch 1: {'loss': 3.0}\n"
    handle = plugin.file_handle
    pm.teardown_all()
    assert handle.closed


class EarlyStoppingPlugin(Plugin):
    """Stop training if validation loss doesn't improve."""

    def __init__(self, config=None):
        super().__init__(config)
        self.patience = config.get('patience', 5)
        self.min_delta = config.get('min_delta', 0.001)

        self.best_loss = float('inf')
        self.wait = 0
        self.should_stop = False

    def get_name(self) -> str:
        return "early_stopping"

    def get_version(self) -> str:
        return "1.0.0"

    def on_validation_end(self, metrics=None, **kwargs):
        if not metrics or 'val_loss' not in metrics:
            return

        val_loss = metrics['val_loss']

        if val_loss < self.best_loss - self.min_delta:
            self.best_loss = val_loss
            self.wait = 0
        else:
            self.wait += 1

        if self.wait >= self.patience:
            self.should_stop = True
            print(f"Early stopping: no improvement for {self.patience} epochs")


@pytest.mark.parametrize("source", ["guide", "builtin"])
def test_example_2_early_stopping(source, capsys):
    pm = isolated()
    if source == "guide":
        pm.register_plugin("early_stopping", EarlyStoppingPlugin, override=True)
    plugin = pm.load_plugin("early_stopping", {"patience": 2})
    pm.setup_all()
    for val in (1.0, 0.5, 0.5, 0.4995):  # the last is within min_delta: no improvement
        assert not plugin.should_stop
        pm.trigger_event("on_validation_end", metrics={"val_loss": val})
    assert plugin.should_stop and plugin.best_loss == 0.5 and pm.should_stop
    if source == "guide":
        assert "Early stopping: no improvement for 2 epochs" in capsys.readouterr().out


class GradientClippingPlugin(Plugin):
    """Clip gradients during training."""

    def __init__(self, config=None):
        super().__init__(config)
        self.max_norm = config.get('max_norm', 1.0)
        self.norm_type = config.get('norm_type', 2.0)

    def get_name(self) -> str:
        return "gradient_clipping"

    def get_version(self) -> str:
        return "1.0.0"

    def on_backward_end(self, model=None, **kwargs):
        if model is None:
            return

        import torch.nn as nn
        total_norm = nn.utils.clip_grad_norm_(
            model.parameters(),
            self.max_norm,
            norm_type=self.norm_type
        )

        if total_norm > self.max_norm:
            print(f"Gradient clipped: {total_norm:.2f} -> {self.max_norm}")


@pytest.mark.parametrize("source", ["guide", "builtin"])
def test_example_3_gradient_clipping(source, capsys):
    pm = isolated()
    if source == "guide":
        pm.register_plugin("gradient_clipping", GradientClippingPlugin, override=True)
    pm.load_plugin("gradient_clipping", None)
    pm.setup_all()
    model = nn.Linear(3, 3)
    (model(torch.ones(1, 3)) * 10).sum().backward()
    pm.trigger_event("on_backward_end", model=model)
    norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    assert norm == pytest.approx(1.0, rel=1e-4)
    if source == "guide":
        assert "-> 1.0" in capsys.readouterr().out


# -- Advanced Topics ---------------------------------------------------------------------
def test_plugin_dependencies():
    class AdvancedPlugin(Plugin):
        def get_dependencies(self) -> List[str]:  # noqa: UP006
            return [
                'plugin:moe',           # Requires MoE plugin
                'torch>=1.9.0',         # Requires PyTorch 1.9+
                'transformers>=4.0.0'   # Requires Transformers 4.0+
            ]

    pm = isolated()
    pm.register_plugin("advanced", AdvancedPlugin)
    try:
        import transformers  # noqa: F401
    except ImportError:
        with pytest.raises(PluginDependencyError, match="'advanced'.*'transformers>=4.0.0'.*not installed"):
            pm.load_plugin("advanced")
        return
    pm.load_plugin("advanced")
    with pytest.raises(PluginDependencyError, match="'advanced' depends on plugin 'moe'"):
        pm.setup_all()


def test_plugin_conflicts():
    class FlashAttentionPlugin(Plugin):
        def get_conflicts(self) -> List[str]:  # noqa: UP006
            return ['slow_attention', 'memory_attention']

    class SlowAttentionPlugin(Plugin):
        pass

    pm = isolated()
    pm.register_plugin("flash_attention", FlashAttentionPlugin)
    pm.register_plugin("slow_attention", SlowAttentionPlugin)
    pm.load_plugin("slow_attention")
    with pytest.raises(PluginConflictError, match="'flash_attention' and 'slow_attention'"):
        pm.load_plugin("flash_attention")


def test_dynamic_provider_selection():
    class CudaAttention(Provider):
        pass

    class CPUAttention(Provider):
        pass

    class AdaptivePlugin(Plugin):
        def setup(self, registry, hook_manager):
            super().setup(registry, hook_manager)

            # Choose provider based on hardware
            if torch.cuda.is_available():
                registry.register('attention', 'fast', CudaAttention, default=True)
            else:
                registry.register('attention', 'cpu', CPUAttention, default=True)

    pm = isolated()
    pm.register_plugin("adaptive", AdaptivePlugin)
    pm.load_plugin("adaptive")
    pm.setup_all()
    expected = CudaAttention if torch.cuda.is_available() else CPUAttention
    assert isinstance(pm.registry.get("attention"), expected)


# -- Complete Example --------------------------------------------------------------------
def test_complete_example_runs():
    out = subprocess.run([sys.executable, "examples/example_plugin.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    assert "[custom event]" in out and "model uses WindowedAttention" in out
    assert "plugin hooks left after teardown: []" in out


def test_troubleshooting_list_providers():
    assert "sdpa" in registry.list_providers()["attention"]
    assert "sdpa" in registry.list_providers("attention")
