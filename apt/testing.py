"""Conformance checks any provider can run from its own tests.

    from apt.testing import check_attention_provider
    def test_my_attention():
        check_attention_provider(MyAttentionProvider({}), reference="naive")

Each check builds small layers, exercises the contract the model relies on and raises
``AssertionError`` naming the provider and the broken property. What is checked:

- output shape and dtype, finite values;
- attention: no information flows from future positions (perturbing tokens ``>= t``
  leaves outputs ``< t`` unchanged, and does change later outputs);
- FFN: position-wise (perturbing one token changes only that token's output), unless
  ``pointwise=False`` (e.g. MoE with a capacity limit, which drops tokens in training);
- router: when its provider tells whether the combine weights sum to one
  (``combine_weights_sum_to_one``, what the ``moe`` plugin asks), a built router agrees;
- gradients reach every trainable parameter and the input;
- two layers built under the same seed are identical and give identical outputs;
- every dtype in ``dtypes`` (float32 and bfloat16 by default) on the chosen device;
- with ``reference=`` (a provider or registry name), the same function as the reference
  with the same weights (the state dict is copied across, so parameter names must match).

Default sizes are tiny so that the checks are quick even for Triton kernels in interpret
mode; every size, dtype and tolerance is a parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from apt.core.provider import Provider
from apt.modeling.auxiliary import collect_aux_losses
from apt.modeling.selection import LAYER_KEYWORDS, call_provider, check_accepts

__all__ = [
    "DEFAULT_TOLERANCES",
    "check_attention_provider",
    "check_ffn_provider",
    "check_router_provider",
]

#: Relative tolerances ``max|a - b| / max|b|`` per dtype: (exact-function checks such as
#: causality and reference matching, comparison of this dtype against float32).
DEFAULT_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-5, 1e-5),
    torch.float64: (1e-10, 1e-10),
    torch.bfloat16: (2e-2, 6e-2),
    torch.float16: (4e-3, 1e-2),
}


def check_attention_provider(
    provider: Provider | type[Provider] | str,
    *,
    d_model: int = 32,
    num_heads: int = 2,
    seq_len: int = 16,
    batch: int = 2,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16),
    reference: Provider | type[Provider] | str | None = None,
    rope: bool | None = None,
    tolerances: Mapping[torch.dtype, tuple[float, float]] | None = None,
    layer_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> None:
    """Check an attention provider's layers: shape, causality, gradients, determinism, dtypes.

    ``rope`` also runs everything with ``position='rope'`` (default: when the provider sets
    ``supports_rope``). ``reference`` (e.g. ``"naive"``) must compute the same function.
    """
    prov = _resolve(provider, "attention")
    tol = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    ref = _resolve(reference, "attention") if reference is not None else None
    positions = ["learned"]
    if rope if rope is not None else getattr(prov, "supports_rope", False):
        positions.append("rope")
    check_accepts(prov.create_layer, *LAYER_KEYWORDS["attention"], owner=f"attention provider {_name(prov)}")
    for position in positions:
        label = f"attention provider {_name(prov)} (position={position})"
        kw = {"position": position, "max_seq_len": seq_len, "rope_base": 10000.0, **(layer_kwargs or {})}

        def make(p: Provider, kw: dict[str, Any] = kw, label: str = label) -> nn.Module:
            torch.manual_seed(seed)
            return call_provider(p.create_layer, d_model, num_heads, 0.0, owner=label, **kw).to(device)

        _check_layers(label, make, prov, ref, (batch, seq_len, d_model), dtypes, tol, seed, device,
                      structure=_check_causal)


def check_ffn_provider(
    provider: Provider | type[Provider] | str,
    *,
    d_model: int = 32,
    d_ff: int = 64,
    seq_len: int = 8,
    batch: int = 2,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16),
    reference: Provider | type[Provider] | str | None = None,
    pointwise: bool = True,
    tolerances: Mapping[torch.dtype, tuple[float, float]] | None = None,
    layer_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> None:
    """Check an FFN provider's layers: shape, position-wise, gradients, determinism, dtypes.

    Auxiliary losses a layer adds (:func:`apt.modeling.auxiliary.add_aux_loss`) are added to
    the loss of the gradient check, so a router that learns only from them still counts as
    reached.
    """
    prov = _resolve(provider, "ffn")
    tol = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    ref = _resolve(reference, "ffn") if reference is not None else None
    label = f"ffn provider {_name(prov)}"
    check_accepts(prov.create_layer, *LAYER_KEYWORDS["ffn"], owner=label)

    def make(p: Provider) -> nn.Module:
        torch.manual_seed(seed)
        return call_provider(p.create_layer, d_model, d_ff, 0.0, owner=label, **(layer_kwargs or {})).to(device)

    _check_layers(label, make, prov, ref, (batch, seq_len, d_model), dtypes, tol, seed, device,
                  structure=_check_pointwise if pointwise else None)


def check_router_provider(
    provider: Provider | type[Provider] | str,
    *,
    d_model: int = 32,
    num_experts: int = 4,
    top_k: int | None = None,
    num_tokens: int = 64,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16),
    router_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> None:
    """Check a router: output fields and shapes, float32 probabilities, the aux losses it adds
    (:func:`apt.modeling.auxiliary.add_aux_loss`), a settable ``temperature``, gradients,
    determinism, dtypes."""
    prov = _resolve(provider, "router")
    label = f"router provider {_name(prov)}"
    kw = dict(router_kwargs or {})
    if top_k is not None:
        kw["top_k"] = top_k
    check_accepts(prov.create_router, *LAYER_KEYWORDS["router"], owner=label)

    def make() -> nn.Module:
        torch.manual_seed(seed)
        return call_provider(prov.create_router, d_model, num_experts, owner=label, **kw).to(device)

    first, second = make(), make()
    x = _input(seed, (num_tokens, d_model), torch.float32, device)
    _assert(_same_state(first, second), label, "two routers built under the same seed differ")
    first.eval()
    a, b = first(x), first(x)
    _assert(torch.equal(a.weights, b.weights) and torch.equal(a.indices, b.indices), label,
            "the same input routed twice in eval mode gave different results")
    _check_combine_weights(label, prov, num_experts, {"top_k": a.indices.size(-1), **kw}, a.weights)
    for dtype in dtypes:
        router = make().to(dtype)
        x = _input(seed, (num_tokens, d_model), dtype, device).requires_grad_(True)
        with collect_aux_losses() as aux:
            out = router(x)
        k = getattr(router, "top_k", top_k or out.indices.size(-1))
        where = f"[{dtype}]"
        _assert(tuple(out.indices.shape) == (num_tokens, k), label,
                f"{where} indices shape {tuple(out.indices.shape)} != {(num_tokens, k)}")
        _assert(out.indices.dtype == torch.int64, label, f"{where} indices dtype {out.indices.dtype} != int64")
        _assert(bool(((out.indices >= 0) & (out.indices < num_experts)).all()), label,
                f"{where} indices outside [0, {num_experts})")
        if k > 1:
            srt = out.indices.sort(dim=-1).values
            _assert(bool((srt[:, 1:] != srt[:, :-1]).all()), label, f"{where} a token picked the same expert twice")
        _assert(tuple(out.weights.shape) == (num_tokens, k), label,
                f"{where} weights shape {tuple(out.weights.shape)} != {(num_tokens, k)}")
        _assert(bool(torch.isfinite(out.weights).all() and (out.weights >= 0).all()), label,
                f"{where} weights must be finite and >= 0")
        _assert(out.probs.dtype == torch.float32, label, f"{where} probs must be float32, got {out.probs.dtype}")
        _assert(torch.allclose(out.probs.sum(-1), torch.ones(num_tokens, device=device), atol=1e-5), label,
                f"{where} probs do not sum to 1 over experts")
        logits = getattr(out, "logits", None)
        if logits is not None:
            _assert(logits.dtype == torch.float32, label, f"{where} logits must be float32, got {logits.dtype}")
        for name, value in aux.items():
            _assert(value.dim() == 0 and bool(torch.isfinite(value)) and float(value.detach()) >= 0, label,
                    f"{where} aux loss {name!r} must be a finite scalar >= 0, got {value}")
        _check_temperature(label, where, router, x.detach())
        gen = torch.Generator(device="cpu").manual_seed(seed + 1)
        r = torch.randn(out.weights.shape, generator=gen).to(device)
        loss = (out.weights.float() * r).sum() + sum(aux.values(), torch.zeros((), device=device))
        loss.backward()
        _check_param_grads(label, dtype, router)
        _assert(x.grad is not None and bool(x.grad.abs().sum() > 0), label, f"{where} no gradient reaches the input")


# -- individual checks ------------------------------------------------------------------
def _check_combine_weights(label: str, prov: Provider, num_experts: int, kw: Mapping[str, Any],
                           weights: torch.Tensor) -> None:
    """The provider's answer to "do the weights sum to one?" (if it has one) matches ``weights``."""
    tell = getattr(prov, "combine_weights_sum_to_one", None)
    known = None if tell is None else call_provider(tell, num_experts, owner=label, **kw)
    if known is not None:
        err = float((weights.detach().float().sum(-1) - 1.0).abs().max())  # weights: (N, k) in eval mode
        _assert(bool(known) == (err <= 1e-5), label,
                f"combine_weights_sum_to_one({num_experts}, top_k={kw['top_k']}) says {known}, but a "
                f"built router's weights sum to one within {err:.2g}")


def _check_output(label: str, dtype: torch.dtype, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = layer(x)
    _assert(isinstance(y, torch.Tensor), label, f"[{dtype}] layer must return a tensor, got {type(y).__name__}")
    _assert(y.shape == x.shape, label, f"[{dtype}] output shape {tuple(y.shape)} != input shape {tuple(x.shape)}")
    _assert(y.dtype == dtype, label, f"[{dtype}] output dtype {y.dtype} != input dtype {dtype}")
    _assert(bool(torch.isfinite(y).all()), label, f"[{dtype}] output has non-finite values")
    return y


def _check_layers(
    label: str,
    make: Callable[[Provider], nn.Module],
    prov: Provider,
    ref: Provider | None,
    shape: tuple[int, int, int],
    dtypes: Sequence[torch.dtype],
    tol: Mapping[torch.dtype, tuple[float, float]],
    seed: int,
    device: str | torch.device,
    *,
    structure: Callable[..., None] | None,
) -> None:
    """The checks every (B, T, C) -> (B, T, C) layer kind shares, per dtype.

    ``structure`` is the kind's own check of which positions may influence which
    (causal for attention, position-wise for an FFN), or None to skip it.
    """
    _check_determinism(label, make, prov, shape, device)
    base = None
    for dtype in dtypes:
        layer = make(prov).to(dtype)
        x = _input(seed, shape, dtype, device)
        y = _check_output(label, dtype, layer, x)
        if structure is not None:
            structure(label, dtype, layer, x, y, tol[dtype][0])
        _check_grads(label, dtype, layer, x, y)
        base = _check_against_float32(label, dtype, y, base, tol[dtype][1])
        if ref is not None:
            _check_reference(label, dtype, layer, make(ref).to(dtype), x, y, tol[dtype][0])


def _check_causal(label: str, dtype: torch.dtype, layer: nn.Module, x: torch.Tensor, y: torch.Tensor, tol: float) -> None:
    T = x.size(1)
    with torch.no_grad():
        for cut in sorted({1, T // 2, T - 1}):
            x2 = x.detach().clone()
            x2[:, cut:] = _input(1234 + cut, x2[:, cut:].shape, dtype, x.device)
            y2 = layer(x2)
            err = _rel_err(y2[:, :cut], y[:, :cut])
            _assert(err <= tol, label, f"[{dtype}] not causal: changing tokens >= {cut} changed outputs "
                    f"before position {cut} (relative error {err:.3g} > {tol:g})")
            _assert(_rel_err(y2[:, cut:], y[:, cut:]) > tol, label,
                    f"[{dtype}] outputs at positions >= {cut} ignore their own inputs")


def _check_pointwise(label: str, dtype: torch.dtype, layer: nn.Module, x: torch.Tensor, y: torch.Tensor, tol: float) -> None:
    B, T = x.shape[:2]
    with torch.no_grad():
        for b, t in {(0, 0), (B - 1, T // 2), (B - 1, T - 1)}:
            x2 = x.detach().clone()
            x2[b, t] = _input(99 + t, x2[b, t].shape, dtype, x.device)
            y2 = layer(x2)
            others = torch.ones(B, T, dtype=torch.bool, device=x.device)
            others[b, t] = False
            err = _rel_err(y2[others], y[others])
            _assert(err <= tol, label, f"[{dtype}] not position-wise: changing token ({b}, {t}) changed "
                    f"other tokens' outputs (relative error {err:.3g} > {tol:g})")
            _assert(_rel_err(y2[b, t], y[b, t]) > tol, label, f"[{dtype}] output at ({b}, {t}) ignores its input")


def _check_grads(label: str, dtype: torch.dtype, layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    layer.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    with collect_aux_losses() as aux:
        y = layer(x)
    gen = torch.Generator(device="cpu").manual_seed(7)
    r = torch.randn(y.shape, generator=gen).to(y.device)
    loss = (y.float() * r).sum()
    for value in aux.values():
        loss = loss + value.float()
    loss.backward()
    _check_param_grads(label, dtype, layer)
    _assert(x.grad is not None and bool(torch.isfinite(x.grad).all()) and bool(x.grad.abs().sum() > 0), label,
            f"[{dtype}] no finite gradient reaches the input")


def _check_param_grads(label: str, dtype: torch.dtype, module: nn.Module) -> None:
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        _assert(p.grad is not None, label, f"[{dtype}] parameter {name!r} gets no gradient (unused in forward?)")
        _assert(bool(torch.isfinite(p.grad).all()), label, f"[{dtype}] parameter {name!r} has a non-finite gradient")
        _assert(bool(p.grad.abs().sum() > 0), label, f"[{dtype}] parameter {name!r} has an all-zero gradient")


def _check_determinism(
    label: str, make: Callable[[Provider], nn.Module], prov: Provider, shape: tuple[int, ...], device: Any
) -> None:
    first, second = make(prov), make(prov)
    _assert(_same_state(first, second), label, "two layers built under the same seed have different weights")
    first.eval()
    x = _input(0, shape, torch.float32, device)
    with torch.no_grad():
        _assert(torch.equal(first(x), first(x)), label, "the same input twice in eval mode gave different outputs")


def _check_against_float32(
    label: str, dtype: torch.dtype, y: torch.Tensor, base: torch.Tensor | None, tol: float
) -> torch.Tensor | None:
    """Outputs of all dtypes share weights and inputs (same seed): they must agree roughly."""
    if dtype == torch.float32:
        return y.detach()
    if base is not None:
        err = _rel_err(y.detach().float(), base)
        _assert(err <= tol, label, f"[{dtype}] output differs from float32 by relative error {err:.3g} > {tol:g}")
    return base


def _check_reference(
    label: str, dtype: torch.dtype, layer: nn.Module, ref: nn.Module, x: torch.Tensor, y: torch.Tensor, tol: float
) -> None:
    try:
        ref.load_state_dict(layer.state_dict())
    except RuntimeError as exc:
        raise AssertionError(f"{label}: cannot compare with the reference, parameter names differ: {exc}") from exc
    with torch.no_grad():
        y_ref = ref(x.detach())
    err = _rel_err(y.detach(), y_ref)
    _assert(err <= tol, label, f"[{dtype}] differs from the reference by relative error {err:.3g} > {tol:g}")


def _check_temperature(label: str, where: str, router: nn.Module, x: torch.Tensor) -> None:
    _assert(hasattr(router, "temperature"), label, "router has no settable `temperature` attribute")
    old = router.temperature
    was_training = router.training
    router.eval()
    try:
        with torch.no_grad():
            router.temperature = 1.0
            cold = _entropy(router(x).probs)
            router.temperature = 10.0
            hot = _entropy(router(x).probs)
    finally:
        router.temperature = old
        router.train(was_training)
    _assert(hot > cold, label, f"{where} raising temperature from 1 to 10 did not flatten the probabilities "
            f"(entropy {cold:.4f} -> {hot:.4f})")


# -- helpers ----------------------------------------------------------------------------
def _resolve(provider: Provider | type[Provider] | str, kind: str) -> Provider:
    if isinstance(provider, str):
        from apt.core.registry import registry

        return registry.get(kind, provider)
    if isinstance(provider, type):
        return provider({})
    return provider


def _name(provider: Provider) -> str:
    try:
        return repr(provider.get_name())
    except Exception:  # noqa: BLE001 - a name is only for messages
        return type(provider).__name__


def _input(seed: int, shape: Sequence[int], dtype: torch.dtype, device: Any) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=gen).to(device=device, dtype=dtype)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    if a.numel() == 0:
        return 0.0
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


def _entropy(probs: torch.Tensor) -> float:
    return float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _assert(ok: bool, label: str, message: str) -> None:
    if not ok:
        raise AssertionError(f"{label}: {message}")
