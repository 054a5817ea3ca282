"""``moe``: sparse upcycling of a dense model into a mixture of experts mid-run.

When the plugin switches on (``enable_moe_at_epoch: N`` in the schedule; at once when
unscheduled) each selected block's dense FFN becomes an :class:`~apt.providers.moe.MoELayer`
of ``num_experts`` copies of that FFN, each perturbed by Gaussian noise of ``noise`` times
the tensor's own std (to break the symmetry between copies), and a router from the router
provider (Komatsuzaki et al., "Sparse Upcycling", 2023). With a normalising top-k router
(``top_k >= 2``) and no dropped tokens the new layer computes exactly what the dense FFN
did, so training continues from the dense model: the loss jump at the switch is bounded by
the noise and by the tokens capacity drops. The plugin measures it once, on the first batch
after the upcycle, and logs ``moe/upcycle_loss_delta``; a jump above ``max_upcycle_jump``
logs a warning.

The new parameters join the existing optimizer param groups (each expert inherits a copy
of its dense FFN's optimizer state, the router starts fresh), so the LR schedule is
unchanged. The router temperature follows the schedule entry ``temperature_from``
(default ``route_temp``) when the schedule has it, else ``temperature``.

Per epoch it logs ``moe/balance_loss``, ``moe/z_loss``, ``moe/dropped_frac``,
``moe/load_entropy`` (entropy of the expert assignment counts / log E: 1.0 is perfectly
balanced), ``moe/load_max`` and ``moe/temperature``. Its checkpoint state records the
layout; on ``on_checkpoint_load`` a fresh dense model is upcycled to that layout before
the trainer loads the weights, so a checkpoint taken after the upcycle restores an MoE model.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from apt.plugins.base import Plugin

__all__ = ["MoEPlugin", "Upcycled", "add_upcycled_params", "upcycle_model"]

log = logging.getLogger(__name__)


def _perturbed_copy(ffn: nn.Module, noise: float, gen: torch.Generator) -> nn.Module:
    expert = copy.deepcopy(ffn)
    if noise > 0:
        with torch.no_grad():
            for p in expert.parameters():
                std = float(p.float().std()) if p.numel() > 1 else 0.0
                eps = torch.randn(p.shape, generator=gen, dtype=torch.float32)
                p.add_((eps * noise * std).to(device=p.device, dtype=p.dtype))
    return expert


class Upcycled(NamedTuple):
    """What :func:`upcycle_model` changed, for moving an optimizer over."""

    replaced: dict[nn.Parameter, list[nn.Parameter]]  # dense param -> its copy in each expert
    routers: list[nn.Parameter]  # new router parameters, layer by layer


def upcycle_model(
    model: nn.Module,
    make_router: Any,
    *,
    num_experts: int,
    top_k: int,
    capacity_factor: float,
    noise: float = 0.0,
    layers: Sequence[int] | None = None,
    seed: int = 0,
) -> Upcycled:
    """Replace ``model.blocks[i].ffn`` by an MoE layer of noisy copies, in place.

    ``make_router(d_model, num_experts, top_k)`` returns a router module; its weight
    matrices are re-drawn from N(0, 0.02) like the model's. The global RNG is not consumed
    (noise and router weights come from ``seed``), so a run resumed before the upcycle
    makes the same experts as an uninterrupted one.
    """
    from apt.providers.moe import MoELayer

    gen = torch.Generator().manual_seed(seed)
    chosen = range(len(model.blocks)) if layers is None else layers
    out = Upcycled({}, [])
    for i in chosen:
        block = model.blocks[i]
        dense = block.ffn
        if isinstance(dense, MoELayer):
            raise ValueError(f"moe: block {i}'s FFN is already a mixture of experts")
        ref = next(dense.parameters())
        experts = [_perturbed_copy(dense, noise, gen) for _ in range(num_experts)]
        with torch.random.fork_rng(devices=[]):
            router = make_router(model.config.d_model, num_experts, top_k)
        with torch.no_grad():
            for p in router.parameters():
                if p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        router.to(device=ref.device, dtype=ref.dtype)
        block.ffn = MoELayer(experts, router, top_k, capacity_factor)
        for name, p in dense.named_parameters():
            out.replaced[p] = [e.get_parameter(name) for e in experts]
        out.routers.extend(router.parameters())
    return out


def add_upcycled_params(
    optimizer: torch.optim.Optimizer,
    upcycled: Upcycled,
    *,
    copy_state: bool = True,
) -> int:
    """Swap dense parameters for their expert copies inside the optimizer's own groups.

    Each expert copy takes the place (and group, so weight decay and LR are unchanged) of
    the dense parameter it came from, with its own clone of that parameter's state when
    ``copy_state``; router parameters join the group holding parameters of the same
    dimensionality (matrices decay, vectors do not). The order is deterministic, so an
    optimizer state saved after the upcycle loads into a resumed run's optimizer.
    Returns the number of parameters added.
    """
    replaced, added = upcycled.replaced, 0
    group_of_ndim: dict[bool, dict[str, Any]] = {}
    for group in optimizer.param_groups:
        new_params: list[nn.Parameter] = []
        for p in group["params"]:
            if p not in replaced:
                new_params.append(p)
                continue
            group_of_ndim.setdefault(p.ndim >= 2, group)
            old_state = optimizer.state.pop(p, None)
            for q in replaced[p]:
                new_params.append(q)
                if copy_state and old_state:
                    optimizer.state[q] = {
                        k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v)
                        for k, v in old_state.items()
                    }
                added += 1
        group["params"] = new_params
    for p in upcycled.routers:
        group = group_of_ndim.get(p.ndim >= 2) or optimizer.param_groups[0]
        group["params"].append(p)
        added += 1
    return added


class MoEPlugin(Plugin):
    """Upcycle the dense FFNs to mixtures of experts when enabled; log router health."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        c = self.config
        self.num_experts = c.get("num_experts", 4)
        self.top_k = c.get("top_k", 2)
        self.capacity_factor = float(c.get("capacity_factor", 1.25))
        self.router = c.get("router")
        self.router_config = dict(c.get("router_config") or {})
        self.balance_coef = float(c.get("balance_coef", 0.01))
        self.z_coef = float(c.get("z_coef", 0.001))
        self.noise = float(c.get("noise", 0.01))
        self.seed = int(c.get("seed", 0))
        self.layers = c.get("layers")
        self.temperature = float(c.get("temperature", 1.0))
        self.temperature_from: str | None = c.get("temperature_from", "route_temp")
        self.copy_optimizer_state = bool(c.get("copy_optimizer_state", True))
        self.max_upcycle_jump = float(c.get("max_upcycle_jump", 0.1))
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

    def get_name(self) -> str:
        return "moe"

    def get_version(self) -> str:
        return "1.0.0"

    def validate_config(self, config: Mapping[str, Any] | None = None) -> bool:
        E, k = self.num_experts, self.top_k
        if isinstance(E, bool) or not isinstance(E, int) or E < 1:
            raise ValueError(f"moe: num_experts must be a positive integer, got {E!r}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= E:
            raise ValueError(f"moe: top_k must be an integer in [1, num_experts={E}], got {k!r}")
        if self.capacity_factor <= 0:
            raise ValueError(f"moe: capacity_factor must be > 0, got {self.capacity_factor}")
        for name in ("noise", "balance_coef", "z_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"moe: {name} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"moe: temperature must be > 0, got {self.temperature}")
        if self.layers is not None and not all(isinstance(i, int) for i in self.layers):
            raise ValueError(
                f"moe: layers must be null (all) or a list of block indices, got {self.layers!r}"
            )
        return True

    # -- upcycling -----------------------------------------------------------------------
    def _make_router(self, d_model: int, num_experts: int, top_k: int) -> nn.Module:
        from apt.core.registry import registry as default_registry
        from apt.modeling.selection import call_provider

        registry = self.registry or default_registry
        provider = registry.get("router", self.router, self.router_config)
        return call_provider(
            provider.create_router,
            d_model,
            num_experts,
            top_k=top_k,
            balance_coef=self.balance_coef,
            z_coef=self.z_coef,
            temperature=self.temperature,
            owner=f"moe plugin's router provider {self.router or 'default'!r}",
        )

    def upcycle(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        noise: float | None = None,
        epoch: int | None = None,
        step: int | None = None,
    ) -> None:
        """Turn ``model``'s dense FFNs into MoE layers and move ``optimizer`` over."""
        layers = list(self.layers) if self.layers is not None else None
        blocks = range(len(model.blocks)) if layers is None else layers
        self._dense = {i: model.blocks[i].ffn for i in blocks}
        replaced = upcycle_model(
            model,
            self._make_router,
            num_experts=self.num_experts,
            top_k=self.top_k,
            capacity_factor=self.capacity_factor,
            noise=self.noise if noise is None else noise,
            layers=layers,
            seed=self.seed,
        )
        if optimizer is not None:
            add_upcycled_params(optimizer, replaced, copy_state=self.copy_optimizer_state)
        self.upcycled = True
        self.upcycled_at = {"epoch": epoch, "step": step}
        self._watch(model)
        log.info(
            "moe: upcycled %d FFN(s) to %d experts (top_k=%d) at epoch %s",
            len(self._dense),
            self.num_experts,
            self.top_k,
            epoch,
        )

    def _watch(self, model: nn.Module) -> None:
        """Count expert assignments per layer on the device (no per-step host sync)."""
        from apt.providers.moe import MoELayer

        for h in self._handles:
            h.remove()
        self._handles, self._routers = [], []
        layers = [m for m in model.modules() if isinstance(m, MoELayer)]
        self._load = [
            torch.zeros(m.num_experts, device=next(m.parameters()).device) for m in layers
        ]
        for slot, layer in enumerate(layers):
            self._routers.append(layer.router)
            self._handles.append(layer.router.register_forward_hook(self._count_hook(slot)))
        self._current_temp = None

    def _count_hook(self, slot: int) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if module.training and self._counting:
                self._load[slot] += torch.bincount(
                    out.indices.reshape(-1), minlength=self._load[slot].numel()
                )

        return hook

    def current_temperature(self, schedule: Any = None) -> float:
        if schedule is not None and self.temperature_from and self.temperature_from in schedule:
            try:
                return float(schedule.get(self.temperature_from))
            except ValueError:  # position not known yet
                return self.temperature
        return self.temperature

    def _set_temperature(self, schedule: Any) -> None:
        temp = self.current_temperature(schedule)
        if temp != self._current_temp:
            for router in self._routers:
                router.temperature = temp
            self._current_temp = temp

    # -- events ----------------------------------------------------------------------------
    def on_epoch_begin(
        self,
        model: nn.Module | None = None,
        optimizer: Any = None,
        schedule: Any = None,
        epoch: int | None = None,
        step: int | None = None,
        **kwargs: Any,
    ) -> None:
        if model is not None and not self.upcycled:
            self.upcycle(model, optimizer, epoch=epoch, step=step)
            self._measure = True
        self._set_temperature(schedule)

    def on_step_begin(
        self,
        model: nn.Module | None = None,
        optimizer: Any = None,
        schedule: Any = None,
        epoch: int | None = None,
        step: int | None = None,
        **kwargs: Any,
    ) -> None:
        # Enabled mid-epoch (``enable_moe_at_step``): upcycle before this step's forward.
        if model is not None and not self.upcycled:
            self.on_epoch_begin(
                model=model, optimizer=optimizer, schedule=schedule, epoch=epoch, step=step
            )
        # Every step, not only at epoch starts: a run resumed mid-epoch gets no
        # on_epoch_begin, and a ``by: step`` temperature changes between epochs.
        if self._routers:
            self._set_temperature(schedule)

    def on_batch_begin(
        self, batch: Any = None, model: nn.Module | None = None, **kwargs: Any
    ) -> None:
        if (
            self._measure
            and model is not None
            and isinstance(batch, list | tuple)
            and len(batch) >= 2
        ):
            self._measure = False
            self.upcycle_loss_delta = self.measure_jump(model, batch[0], batch[1])
            self._delta_unlogged = True
            self._dense = {}  # measured: the dense FFNs are no longer needed
            if self.upcycle_loss_delta > self.max_upcycle_jump:
                log.warning(
                    "moe: loss changed by %+.4f at the upcycle (bound max_upcycle_jump=%g); "
                    "lower noise or raise capacity_factor",
                    self.upcycle_loss_delta,
                    self.max_upcycle_jump,
                )

    @torch.no_grad()
    def measure_jump(self, model: nn.Module, idx: torch.Tensor, targets: torch.Tensor) -> float:
        """Loss of the upcycled minus the dense model on one batch (RNG and stats untouched)."""
        moe_layers = {i: model.blocks[i].ffn for i in self._dense}
        self._counting = False
        with torch.random.fork_rng(devices=[idx.device] if idx.is_cuda else []):
            _, moe_loss = model(idx, targets)
            for i, dense in self._dense.items():
                model.blocks[i].ffn = dense
            try:
                _, dense_loss = model(idx, targets)
            finally:
                for i, layer in moe_layers.items():
                    model.blocks[i].ffn = layer
                self._counting = True
        return float(moe_loss - dense_loss)

    def on_batch_end(self, model: nn.Module | None = None, **kwargs: Any) -> None:
        if model is None or not self.upcycled:
            return
        for key, value in model.aux_losses().items():
            self._acc(key, value.detach())
        for m in self._moe_layers(model):
            self._acc(
                "dropped_frac", m.last_stats["moe_dropped_frac"], scale=1 / len(self._routers)
            )
            self._acc("load_max", m.last_stats["moe_load_max"], scale=1 / len(self._routers))
        self._n += 1

    def _acc(self, key: str, value: torch.Tensor, scale: float = 1.0) -> None:
        v = value.float() * scale
        self._sums[key] = self._sums[key] + v if key in self._sums else v

    @staticmethod
    def _moe_layers(model: nn.Module) -> list[nn.Module]:
        return [b.ffn for b in model.blocks if hasattr(b.ffn, "last_stats") and b.ffn.last_stats]

    def epoch_metrics(self) -> dict[str, float]:
        """Means over the epoch's batches and the assignment-count entropy (one sync)."""
        out = {f"moe/{k}": float(v) / max(self._n, 1) for k, v in self._sums.items()}
        entropies = []
        for counts in self._load:
            total = float(counts.sum())
            if total > 0:
                p = counts / total
                h = -(p * p.clamp_min(1e-12).log()).sum()
                entropies.append(float(h) / math.log(counts.numel()) if counts.numel() > 1 else 1.0)
        if entropies:
            out["moe/load_entropy"] = sum(entropies) / len(entropies)
        if self._current_temp is not None:
            out["moe/temperature"] = self._current_temp
        if self._delta_unlogged and self.upcycle_loss_delta is not None:
            out["moe/upcycle_loss_delta"] = self.upcycle_loss_delta  # once, in the upcycle epoch
        return out

    def on_epoch_end(self, trainer: Any = None, **kwargs: Any) -> None:
        if trainer is not None and self.upcycled:
            for name, value in self.epoch_metrics().items():
                trainer.log_metric(name, value)
            self._delta_unlogged = False
        self._sums, self._n = {}, 0
        for counts in self._load:
            counts.zero_()

    def on_checkpoint_load(
        self, model: nn.Module | None = None, optimizer: Any = None, **kwargs: Any
    ) -> None:
        """Rebuild the MoE layout recorded in the checkpoint before its weights are loaded."""
        if self.upcycled and model is not None and not self._moe_present(model):
            self.upcycle(model, optimizer, noise=0.0, **self.upcycled_at)
            self._dense = {}  # weights come from the checkpoint; nothing to measure

    def _moe_present(self, model: nn.Module) -> bool:
        from apt.providers.moe import MoELayer

        return any(isinstance(m, MoELayer) for m in model.modules())

    def teardown(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        super().teardown()

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "upcycled": self.upcycled,
            "upcycled_at": dict(self.upcycled_at),
            "layout": {"num_experts": self.num_experts, "top_k": self.top_k, "layers": self.layers},
            "upcycle_loss_delta": self.upcycle_loss_delta,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        layout = state.get("layout", {})
        mine = {"num_experts": self.num_experts, "top_k": self.top_k, "layers": self.layers}
        if layout and layout != mine:
            raise ValueError(
                f"moe: checkpoint layout {layout} differs from this run's config {mine}"
            )
        self.upcycled = bool(state.get("upcycled", False))
        self.upcycled_at = dict(state.get("upcycled_at") or {})
        self.upcycle_loss_delta = state.get("upcycle_loss_delta")
