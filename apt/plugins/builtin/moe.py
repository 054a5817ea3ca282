"""``moe``: sparse upcycling of a dense model into a mixture of experts mid-run.

When the plugin switches on (``enable_moe_at_epoch: N`` or ``enable_moe_at_step: S`` in the
schedule; at once when unscheduled, before the first step, which the run's log says) each selected block's dense FFN becomes an
:class:`~apt.moe.MoELayer` of ``num_experts`` copies of that FFN plus a router
(:func:`apt.moe.upcycle_model`; Komatsuzaki et al., "Sparse Upcycling", 2023). Routing is
dropless unless ``capacity_factor`` is set, which makes training non-causal across the
batch (see :mod:`apt.moe.layer`).

The switch preserves the model's function: with ``noise: 0`` the upcycled layer equals the
dense FFN for every configuration this plugin accepts, because it refuses, before
training, a router whose combine weights do not sum to one per token (a top-1 router that
does not renormalise would scale each FFN output by ~1/num_experts). The router provider
answers that from its options, without torch
(:meth:`~apt.core.provider.RouterProvider.combine_weights_sum_to_one`); a router whose
provider cannot tell is measured on a built router instead. The loss change at the
switch then comes from ``noise`` alone. The plugin measures it once, on the first batch
after the upcycle, with both models in eval mode on that batch, and logs
``moe/upcycle_loss_delta``; a change above ``max_upcycle_jump`` logs a warning.

The new parameters join the existing optimizer param groups (experts inherit the dense
FFN's optimizer state, the router starts fresh), so the LR schedule is unchanged. The
router temperature follows the schedule entry ``temperature_from`` (default
``route_temp``) when the schedule has it, else ``temperature``; it is part of the model's
state dict. The router losses reach the trainer from the router itself (``loss/balance``
and ``loss/z`` columns, from the upcycle step on). Per epoch the plugin logs
``moe/dropped_frac``, ``moe/load_entropy`` (entropy of the expert assignment counts / log
E: 1.0 is perfectly balanced), ``moe/load_max`` and ``moe/temperature``. Its checkpoint
state records the layout; on ``on_checkpoint_load`` a fresh dense model is upcycled to that
layout before the trainer loads the weights.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from apt.plugins.base import Plugin
from apt.plugins.trainer_view import TrainerView

if TYPE_CHECKING:  # torch and apt.moe are imported where modules are built or run
    import torch
    from torch import nn

    from apt.core.provider import Provider
    from apt.moe import MoELayer

__all__ = ["MoEOptions", "MoEPlugin"]

log = logging.getLogger(__name__)


@dataclass
class MoEOptions:
    num_experts: int = 4
    top_k: int = 2
    capacity_factor: float | None = None  # None: dropless; a number: per-expert capacity factor in training
    router: str | None = None  # router provider name; None: the registry default (topk)
    router_config: dict[str, Any] = field(default_factory=dict)  # extra router provider options
    balance_coef: float = 0.01  # load-balancing loss coefficient (Switch / HF Mixtral convention)
    z_coef: float = 0.001  # router z-loss coefficient (ST-MoE)
    noise: float = 0.01  # expert copy noise, relative to each tensor's std
    seed: int = 0  # noise and router init (the global RNG is left alone)
    layers: list[int] | None = None  # block indices to upcycle (each once, < model.num_layers); None: all
    temperature: float = 1.0  # router temperature when the schedule has no `temperature_from` entry
    temperature_from: str | None = "route_temp"
    copy_optimizer_state: bool = True  # experts inherit the dense FFN's optimizer moments
    max_upcycle_jump: float = 0.1  # warn when the loss changes more than this at the upcycle


class MoEPlugin(Plugin):
    """Upcycle the dense FFNs to mixtures of experts when enabled; log router health."""

    Options = MoEOptions

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        o = self.options
        self.num_experts, self.top_k, self.layers = o.num_experts, o.top_k, o.layers
        self.upcycled = False
        self.upcycled_at: dict[str, int | None] = {}
        self.upcycle_loss_delta: float | None = None
        self._measure = False
        self._dense: dict[int, nn.Module] = {}
        self._routers: list[nn.Module] = []
        self._current_temp: float | None = None
        self._sums: dict[str, torch.Tensor] = {}
        self._n = 0
        self._load: list[torch.Tensor] = []
        self._handles: list[Any] = []
        self._counting = True
        self._delta_unlogged = False
        self._saved_load: list[torch.Tensor] = []

    def get_name(self) -> str:
        return "moe"

    def get_version(self) -> str:
        return "2.0.0"

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        """Ranges, then (for routers already registered) the router's arguments and that its
        combine weights sum to one: no torch unless the router provider cannot tell."""
        o = self.options
        E, k = o.num_experts, o.top_k
        if E < 1:
            raise ValueError(f"moe: num_experts must be a positive integer, got {E!r}")
        if not 1 <= k <= E:
            raise ValueError(f"moe: top_k must be an integer in [1, num_experts={E}], got {k!r}")
        if o.capacity_factor is not None and o.capacity_factor <= 0:
            raise ValueError(f"moe: capacity_factor must be > 0 or null (dropless), got {o.capacity_factor}")
        for name in ("noise", "balance_coef", "z_coef"):
            if getattr(o, name) < 0:
                raise ValueError(f"moe: {name} must be >= 0, got {getattr(o, name)}")
        if o.temperature <= 0:
            raise ValueError(f"moe: temperature must be > 0, got {o.temperature}")
        if o.layers is not None and not o.layers:
            raise ValueError("moe: layers=[] selects no block to upcycle; list block indices, or null for all")
        twice = sorted({i for i in o.layers or () if list(o.layers).count(i) > 1})
        if twice:
            raise ValueError(f"moe: layers={list(o.layers)} names block(s) {twice} more than once; "
                             "list each block once")
        from apt.core.registry import registry as default_registry

        if default_registry.has("router", o.router or default_registry.default_name("router")):
            self.check_router(default_registry)  # others (a plugin's) are checked at the upcycle
        return True

    def check_model(self, model: Mapping[str, Any]) -> list[str]:
        """Every block index in ``layers`` exists (``0 .. model.num_layers - 1``), and the
        router is one the run's registry has (a plugin's router too: every plugin is set up
        by now), with combine weights that sum to one."""
        problems = []
        n, layers = model.get("num_layers"), self.options.layers
        if layers is not None and isinstance(n, int) and (bad := [i for i in layers if not 0 <= i < n]):
            problems.append(f"plugin 'moe': layers={list(layers)} names block(s) {bad} that the model does not "
                            f"have; model.num_layers={n}, so valid block indices are 0..{n - 1}")
        if self.registry is not None:
            from apt.core.registry import RegistryError

            try:
                self.check_router(self.registry)
            except (RegistryError, ValueError, TypeError) as exc:
                problems.append(f"plugin 'moe': {exc}")
        return problems

    # -- upcycling -----------------------------------------------------------------------
    def _router_provider(self, registry: Any = None) -> Provider:
        from apt.core.registry import registry as default_registry

        o = self.options
        return (registry or self.registry or default_registry).get("router", o.router, o.router_config)

    def _router_kwargs(self) -> dict[str, Any]:
        """What the plugin decides for its routers, besides ``top_k``."""
        o = self.options
        return {"balance_coef": o.balance_coef, "z_coef": o.z_coef, "temperature": o.temperature}

    def _make_router(self, d_model: int, num_experts: int, top_k: int, registry: Any = None) -> nn.Module:
        from apt.modeling.selection import call_provider

        return call_provider(self._router_provider(registry).create_router, d_model, num_experts, top_k=top_k,
                             **self._router_kwargs(), owner=self._router_owner())

    def _router_owner(self) -> str:
        return f"moe plugin's router provider {self.options.router or 'default'!r}"

    def check_router(self, registry: Any = None) -> None:
        """Refuse a router whose combine weights do not sum to one (the upcycle would change the model).

        The router provider tells from its options, without torch; when it cannot (``None``),
        a router is built and measured.
        """
        from apt.modeling.selection import call_provider, check_accepts

        provider, kwargs, owner = self._router_provider(registry), self._router_kwargs(), self._router_owner()
        tell = getattr(provider, "combine_weights_sum_to_one", None)
        known = None
        if tell is not None:
            check_accepts(provider.create_router, 2, ["top_k", *kwargs], owner=owner)
            known = call_provider(tell, self.num_experts, top_k=self.top_k, **kwargs, owner=owner)
        if known is None:
            from apt.moe import combine_weights_sum_to_one

            router = self._make_router(16, self.num_experts, self.top_k, registry)
            err = combine_weights_sum_to_one(router, 16)
            if err > 1e-5:
                raise ValueError(self._not_one(getattr(router, "normalize", "?"), f"off by up to {err:.2f}"))
        elif not known:
            from apt.moe.router_args import resolved_normalize

            opts = getattr(provider, "resolved_options", dict)()
            normalize = resolved_normalize(self.top_k, opts["normalize"]) if "normalize" in opts else "?"
            raise ValueError(self._not_one(normalize, f"they sum to about {self.top_k}/{self.num_experts} for a new router"))

    def _not_one(self, normalize: Any, how: str) -> str:
        return (f"moe: router {self.options.router or 'topk'!r} (top_k={self.top_k}, normalize={normalize}) "
                f"gives combine weights that do not sum to 1 ({how}), so upcycling would scale every FFN "
                "output and jump the loss; set plugin.moe.router_config.normalize=true (with top_k=1 the "
                "weight is then 1 and the router learns from its balance loss alone) or use top_k >= 2 with "
                "the topk router")

    def upcycle(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                noise: float | None = None, epoch: int | None = None, step: int | None = None) -> None:
        """Turn ``model``'s dense FFNs into MoE layers and move ``optimizer`` over."""
        from apt.moe import add_upcycled_params

        replaced = self._upcycle(model, self.options.noise if noise is None else noise)
        if optimizer is not None:
            add_upcycled_params(optimizer, replaced, copy_state=self.options.copy_optimizer_state)
        self.upcycled = True
        self.upcycled_at = {"epoch": epoch, "step": step}
        self._watch(model)
        log.info("moe: upcycled %d FFN(s) to %d experts (top_k=%d) at epoch %s, step %s",
                 len(self._dense), self.options.num_experts, self.options.top_k, epoch, step)

    def _upcycle(self, model: nn.Module, noise: float) -> Any:
        from apt.moe import upcycle_model

        o = self.options
        self.check_router()
        layers = list(o.layers) if o.layers is not None else None
        blocks = range(len(model.blocks)) if layers is None else layers
        self._dense = {i: model.blocks[i].ffn for i in blocks}
        return upcycle_model(model, self._make_router, num_experts=o.num_experts, top_k=o.top_k,
                             capacity_factor=o.capacity_factor, noise=noise, layers=layers, seed=o.seed)

    @classmethod
    def restore_structure(cls, model: nn.Module, *, options: Mapping[str, Any], state: Mapping[str, Any],
                          registry: Any) -> None:
        """Upcycle a freshly built dense model to the checkpoint's MoE layout (its weights come next)."""
        if not state.get("upcycled"):
            return
        plugin = cls(options)
        plugin.load_state_dict(state)  # refuses a layout other than the options'
        plugin.registry = registry
        plugin._upcycle(model, noise=0.0)

    def _watch(self, model: nn.Module) -> None:
        """Count expert assignments per layer on the device (no per-step host sync)."""
        import torch

        from apt.moe import MoELayer

        for h in self._handles:
            h.remove()
        self._handles, self._routers = [], []
        layers = [m for m in model.modules() if isinstance(m, MoELayer)]
        self._load = [torch.zeros(m.num_experts, dtype=torch.int64, device=next(m.parameters()).device)
                      for m in layers]
        for counts, saved in zip(self._load, self._saved_load, strict=False):  # counts of a resumed epoch
            counts.copy_(saved)
        self._saved_load = []
        for slot, layer in enumerate(layers):
            self._routers.append(layer.router)
            self._handles.append(layer.router.register_forward_hook(self._count_hook(slot)))
        self._current_temp = None

    def _count_hook(self, slot: int) -> Any:
        from apt.moe import expert_counts

        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if module.training and self._counting:
                self._load[slot] += expert_counts(out.indices, self._load[slot].numel())

        return hook

    def current_temperature(self, schedule: Any = None) -> float:
        key = self.options.temperature_from
        if schedule is not None and key and key in schedule:
            try:
                return float(schedule.get(key))
            except ValueError:  # position not known yet
                return self.options.temperature
        return self.options.temperature

    def _set_temperature(self, schedule: Any) -> None:
        temp = self.current_temperature(schedule)
        if temp != self._current_temp:
            for router in self._routers:
                router.temperature = temp
            self._current_temp = temp

    # -- events ----------------------------------------------------------------------------
    def on_train_begin(self, schedule: Any = None, **kwargs: Any) -> None:
        """Say so when nothing schedules the upcycle: the model is then upcycled before its
        first step and never trains dense, which is easy to miss with ``plugin=[moe]``."""
        name = self.get_name()
        if not self.upcycled and (schedule is None or name not in schedule.scheduled_plugins):
            log.info("moe: no schedule entry enables it later, so the dense model is upcycled before the first "
                     "step (no dense phase); for a dense phase first set +schedule.enable_%s_at_epoch=N or "
                     "+schedule.enable_%s_at_step=S (docs/moe.md)", name, name)

    def on_epoch_begin(self, model: nn.Module | None = None, optimizer: Any = None, schedule: Any = None,
                       epoch: int | None = None, step: int | None = None, **kwargs: Any) -> None:
        if model is not None and not self.upcycled:
            self.upcycle(model, optimizer, epoch=epoch, step=step)
            self._measure = True
        self._set_temperature(schedule)

    def on_step_begin(self, model: nn.Module | None = None, optimizer: Any = None, schedule: Any = None,
                      epoch: int | None = None, step: int | None = None, **kwargs: Any) -> None:
        # Enabled mid-epoch (``enable_moe_at_step``): upcycle before this step's forward.
        if model is not None and not self.upcycled:
            self.on_epoch_begin(model=model, optimizer=optimizer, schedule=schedule, epoch=epoch, step=step)
        # Every step, not only at epoch starts: a run resumed mid-epoch gets no
        # on_epoch_begin, and a ``by: step`` temperature changes between epochs.
        if self._routers:
            self._set_temperature(schedule)

    def on_batch_begin(self, batch: Any = None, model: nn.Module | None = None, **kwargs: Any) -> None:
        if self._measure and model is not None and isinstance(batch, list | tuple) and len(batch) >= 2:
            self._measure = False
            self.upcycle_loss_delta = self.measure_jump(model, batch[0], batch[1])
            self._delta_unlogged = True
            self._dense = {}  # measured: the dense FFNs are no longer needed
            if abs(self.upcycle_loss_delta) > self.options.max_upcycle_jump:
                log.warning("moe: loss changed by %+.4f at the upcycle (bound max_upcycle_jump=%g); lower noise",
                            self.upcycle_loss_delta, self.options.max_upcycle_jump)

    def measure_jump(self, model: nn.Module, idx: torch.Tensor, targets: torch.Tensor) -> float:
        """Loss of the upcycled minus the dense model on one batch, both in eval mode.

        Eval mode: no dropout and dropless routing, so the difference is the upcycle's alone
        (the expert noise), not two different dropout masks. RNG and statistics untouched.
        """
        import torch

        moe_layers = {i: model.blocks[i].ffn for i in self._dense}
        was_training = model.training
        self._counting = False
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[idx.device] if idx.is_cuda else []):
                _, moe_loss = model(idx, targets)
                for i, dense in self._dense.items():
                    model.blocks[i].ffn = dense.eval()
                _, dense_loss = model(idx, targets)
        finally:
            for i, layer in moe_layers.items():
                model.blocks[i].ffn = layer
            model.train(was_training)
            self._counting = True
        return float(moe_loss - dense_loss)

    def on_batch_end(self, model: nn.Module | None = None, **kwargs: Any) -> None:
        if model is None or not self.upcycled:
            return
        layers = [m for m in self._moe_layers(model) if m.last_stats]
        for m in layers:
            self._acc("dropped_frac", m.last_stats["moe_dropped_frac"], scale=1 / len(layers))
            self._acc("load_max", m.last_stats["moe_load_max"], scale=1 / len(layers))
        self._n += 1

    def _acc(self, key: str, value: torch.Tensor, scale: float = 1.0) -> None:
        v = value.float() * scale
        self._sums[key] = self._sums[key].to(v.device) + v if key in self._sums else v

    @staticmethod
    def _moe_layers(model: nn.Module) -> list[MoELayer]:
        from apt.moe import MoELayer

        return [b.ffn for b in model.blocks if isinstance(b.ffn, MoELayer)]

    def epoch_metrics(self) -> dict[str, float]:
        """Means over the epoch's batches and the assignment-count entropy (one sync)."""
        out = {f"moe/{k}": float(v) / max(self._n, 1) for k, v in self._sums.items()}
        entropies = []
        for counts in self._load:
            total = float(counts.sum())
            if total > 0:
                p = counts.float() / total
                h = -(p * p.clamp_min(1e-12).log()).sum()
                entropies.append(float(h) / math.log(counts.numel()) if counts.numel() > 1 else 1.0)
        if entropies:
            out["moe/load_entropy"] = sum(entropies) / len(entropies)
        if self._current_temp is not None:
            out["moe/temperature"] = self._current_temp
        if self._delta_unlogged and self.upcycle_loss_delta is not None:
            out["moe/upcycle_loss_delta"] = self.upcycle_loss_delta  # once, in the upcycle epoch
        return out

    def on_epoch_end(self, trainer: TrainerView | None = None, **kwargs: Any) -> None:
        if trainer is not None and self.upcycled:
            for name, value in self.epoch_metrics().items():
                trainer.log_metric(name, value)
            self._delta_unlogged = False
        self._sums, self._n = {}, 0
        for counts in self._load:
            counts.zero_()

    def on_checkpoint_load(self, model: nn.Module | None = None, optimizer: Any = None, schedule: Any = None,
                           **kwargs: Any) -> None:
        """Rebuild the MoE layout recorded in the checkpoint before its weights are loaded."""
        if self.upcycled and model is not None and not self._moe_layers(model):
            self.upcycle(model, optimizer, noise=0.0, **self.upcycled_at)
            self._dense = {}  # weights come from the checkpoint; nothing to measure
            # the temperature at the restored schedule position: a run resumed at an epoch's
            # last step ends that epoch (logs moe/temperature) before any on_step_begin
            self._set_temperature(schedule)

    def teardown(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        super().teardown()

    # -- checkpoints -------------------------------------------------------------------------
    def _layout(self) -> dict[str, Any]:
        return {"num_experts": self.num_experts, "top_k": self.top_k, "layers": self.layers}

    def state_dict(self) -> dict[str, Any]:
        """The layout, and this epoch's statistics so far (a run resumed mid-epoch logs the
        epoch's means over all of its batches, as an uninterrupted run does)."""
        return {"upcycled": self.upcycled, "upcycled_at": dict(self.upcycled_at), "layout": self._layout(),
                "upcycle_loss_delta": self.upcycle_loss_delta, "delta_unlogged": self._delta_unlogged,
                "epoch_sums": {k: v.detach().cpu() for k, v in self._sums.items()}, "epoch_batches": self._n,
                "epoch_load": [c.cpu() for c in self._load]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        layout = state.get("layout", {})
        if layout and layout != self._layout():
            raise ValueError(f"moe: checkpoint layout {layout} differs from this run's config {self._layout()}")
        self.upcycled = bool(state.get("upcycled", False))
        self.upcycled_at = dict(state.get("upcycled_at") or {})
        self.upcycle_loss_delta = state.get("upcycle_loss_delta")
        self._delta_unlogged = bool(state.get("delta_unlogged", False))
        self._sums, self._n = dict(state.get("epoch_sums", {})), int(state.get("epoch_batches", 0))
        self._saved_load = list(state.get("epoch_load", []))  # into the counters once the layers exist
