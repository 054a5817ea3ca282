"""The plugin guide's complete example: one plugin using every feature, in a simulated run.

    python examples/example_plugin.py

It shows a plugin that registers an attention provider returning a real ``nn.Module``,
overridden ``on_*`` methods (hooks registered automatically), a plain-function custom
hook with a priority, conditional hooks, a plugin firing its own custom event, a short
loop of epochs and steps, checkpoint state, and teardown removing the plugin's hooks.
Everything runs in an isolated PluginManager, so nothing global is touched.
"""

from __future__ import annotations

import torch
from torch import nn

from apt.core import APTConfig, AttentionProvider, Registry
from apt.modeling import ModelBuilder
from apt.plugins import (
    HookManager,
    Plugin,
    PluginManager,
    after_epoch,
    every_n_epochs,
    every_n_steps,
)


class WindowedAttention(nn.Module):
    """Causal self-attention that only looks ``window`` tokens back: (B, T, C) -> (B, T, C)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, window: int = 4) -> None:
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        i = torch.arange(T, device=x.device)
        mask = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < self.window)  # (T, T)
        y = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class WindowedAttentionProvider(AttentionProvider):
    """Sliding-window causal attention."""

    def get_name(self) -> str:
        return "windowed"

    def create_layer(self, d_model: int, num_heads: int, dropout: float = 0.0, **kwargs: object) -> nn.Module:
        return WindowedAttention(d_model, num_heads, dropout, window=self.config.get("window", 4))

    def validate_config(self, config: dict) -> bool:
        return config.get("d_model", 0) % config.get("num_heads", 1) == 0


def report_progress(epoch: int, **kwargs: object) -> None:
    """A plain-function hook; registered during setup, so owned by the plugin."""
    print(f"  [custom hook, priority 10] epoch {epoch} begins")


class WindowedAttentionPlugin(Plugin):
    """Adds the `windowed` attention provider and watches training."""

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config)
        self.report_every = self.config.get("report_every", 2)
        self.epochs_seen = 0
        self.losses: list[float] = []

    def get_name(self) -> str:
        return "windowed_attention"

    def get_version(self) -> str:
        return "1.0.0"

    def validate_config(self, config: dict | None = None) -> bool:
        if self.report_every < 1:
            raise ValueError(f"report_every must be >= 1, got {self.report_every}")
        return True

    def setup(self, registry: Registry, hook_manager: HookManager) -> None:
        super().setup(registry, hook_manager)  # registers the on_* methods below
        registry.register("attention", "windowed", WindowedAttentionProvider)
        hook_manager.register("on_epoch_start", report_progress, priority=10, name="report_progress")
        hook_manager.register("on_epoch_end", self.summarise,
                              condition=every_n_epochs(self.report_every), name="summarise")
        hook_manager.register("on_step_end", self.warn_late,
                              condition=after_epoch(3) & every_n_steps(2), name="warn_late")

    def on_epoch_begin(self, epoch: int, **kwargs: object) -> None:  # priority 0: after report_progress
        self.epochs_seen += 1
        print(f"  [method hook] epoch {epoch}: plugin has seen {self.epochs_seen} epochs")

    def on_step_end(self, step: int, loss: float | None = None, **kwargs: object) -> None:
        self.losses.append(loss)

    def summarise(self, epoch: int, **kwargs: object) -> str:
        mean = sum(self.losses) / len(self.losses)
        print(f"  [every {self.report_every} epochs] epoch {epoch}: mean loss so far {mean:.3f}")
        self.hook_manager.trigger("on_windowed_report", epoch=epoch, mean_loss=mean)  # a custom event
        return f"epoch {epoch} summarised"

    def warn_late(self, step: int, epoch: int, **kwargs: object) -> None:
        print(f"  [epoch >= 3 and every 2 steps] step {step} of epoch {epoch}")

    def state_dict(self) -> dict:
        return {"epochs_seen": self.epochs_seen, "losses": list(self.losses)}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_seen, self.losses = state["epochs_seen"], list(state["losses"])

    def teardown(self) -> None:
        print(f"teardown: {self.get_name()} saw {self.epochs_seen} epochs, {len(self.losses)} steps")
        super().teardown()


def main() -> None:
    torch.manual_seed(0)
    registry, hooks = Registry.with_builtins(), HookManager()
    manager = PluginManager(registry=registry, hook_manager=hooks)
    manager.register_plugin("windowed_attention", WindowedAttentionPlugin)
    manager.load_from_config({"plugins": ["windowed_attention"], "windowed_attention": {"report_every": 2}})
    manager.setup_all()

    hooks.register("on_windowed_report", lambda mean_loss, **kw: print(f"  [custom event] mean={mean_loss:.3f}"))
    print("hooks on on_epoch_begin, in run order:",
          [h.name for h in hooks.list_hooks("on_epoch_begin")])

    config = APTConfig(d_model=32, num_heads=4, num_layers=2, vocab_size=64, max_seq_len=16,
                       attention_name="windowed")
    model = ModelBuilder(config, registry=registry).build_model()
    print(f"model uses {type(model.blocks[0].attn).__name__}, {model.num_params()} parameters")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = torch.randint(0, 64, (8, 17))  # (B, T+1) token ids, memorised by the tiny model
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()  # (B, T) inputs and next tokens

    step = 0
    manager.trigger_event("on_model_init", model=model)
    manager.trigger_event("on_train_begin", config=config, model=model)
    for epoch in range(1, 5):
        manager.trigger_event("on_epoch_start", epoch=epoch, model=model, step=step)
        for _ in range(3):
            _, loss = model(x, targets=y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            manager.trigger_event("on_step_end", epoch=epoch, step=step, loss=loss.item(), model=model)
        results = manager.trigger_event("on_epoch_end", epoch=epoch, metrics={"loss": loss.item()})
        if results:
            print("  on_epoch_end returned", results)
    manager.trigger_event("on_train_end", metrics={"loss": loss.item()})

    print("checkpoint state:", {k: {"epochs_seen": v["epochs_seen"]} for k, v in manager.state_dict().items()})
    stats = {h.name: h.calls for h in hooks.list_hooks() if h.plugin == "windowed_attention"}
    print("hook calls:", stats)
    manager.teardown_all()
    left = [h.name for h in hooks.list_hooks() if h.plugin == "windowed_attention"]
    print("plugin hooks left after teardown:", left)


if __name__ == "__main__":
    main()
