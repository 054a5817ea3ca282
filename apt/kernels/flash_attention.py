"""Fused scaled-dot-product attention: Triton kernels -> launchers -> autograd -> reference.

The layers, top to bottom:

* ``apt.kernels._flash_triton``: the ``@triton.jit`` kernels (FlashAttention-2 style: tiled,
  online softmax, the log-sum-exp saved for the backward; no N x N matrix in memory).
* :func:`flash_attention_forward` / :func:`flash_attention_backward`: launchers that check
  shapes, dtypes, strides and devices, pick block sizes (autotuned on CUDA) and launch.
* :class:`FlashAttentionFunction` / :func:`flash_attention`: the differentiable op.
* :func:`attention_ref`: the plain torch definition the kernels are tested against.

On CUDA, block sizes are autotuned per (head dim, power-of-two bucket of the sequence
length, causal, dot precision); ``APT_FLASH_AUTOTUNE=0`` uses the first config of each list.

Tensors are ``(B, H, N, D)``: batch, heads, sequence, head dim. CPU tensors (or
``interpret=True``) run the same kernels under the Triton interpreter, which is slow and
meant for tests and debugging.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator

import torch
import triton
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from apt.kernels import _flash_triton

__all__ = [
    "DKDV_CONFIGS",
    "DQ_CONFIGS",
    "FWD_CONFIGS",
    "SUPPORTED_DTYPES",
    "SUPPORTED_HEAD_DIMS",
    "FlashAttentionFunction",
    "attention_ref",
    "flash_attention",
    "flash_attention_backward",
    "flash_attention_forward",
    "interpreter_enabled_globally",
]

SUPPORTED_HEAD_DIMS: tuple[int, ...] = (16, 32, 64, 128)
SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)

# Block sizes under the interpreter: small enough that tails and the causal diagonal are
# exercised at test sizes, large enough that numpy does the work in few programs.
_INTERP_FWD = {"BLOCK_M": 64, "BLOCK_N": 32}
_INTERP_DKDV = {"BLOCK_M": 32, "BLOCK_N": 64}
_INTERP_DQ = {"BLOCK_M": 64, "BLOCK_N": 32}
_PREPROCESS_BLOCK_M = 64


# --------------------------------------------------------------------------- kernels


def _configs(shapes: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in shapes]


# (BLOCK_M, BLOCK_N, num_warps, num_stages). The first entry of each list is the default when
# autotuning is off; 128-row tiles with 8 warps suit Hopper's wgmma, 64-row tiles and
# 4 warps suit older cards and small head dims. The defaults are the tiles that spill no
# registers on sm_90 at head dims 64 and 128 as the JIT specialises them for contiguous
# inputs (``scripts/bench_attention.py --compile-report``); dK/dV keeps two fp32
# accumulators and K, V resident, so its default is the narrow 32x128 tile (64x128 spills
# at head dim 128).
FWD_CONFIGS = _configs([(128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 8, 3), (128, 64, 4, 3),
                        (128, 128, 8, 2), (64, 64, 4, 3), (64, 32, 4, 4)])
DKDV_CONFIGS = _configs([(32, 128, 8, 3), (64, 128, 8, 3), (32, 64, 8, 3), (64, 128, 8, 2),
                         (32, 64, 4, 3), (64, 64, 4, 3), (32, 128, 4, 3)])
DQ_CONFIGS = _configs([(128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (128, 64, 8, 2),
                       (64, 32, 4, 3), (128, 128, 8, 2)])


def _prune(configs: list[triton.Config], named_args: dict, **kwargs: object) -> list[triton.Config]:
    """Drop configs that cannot pay off for this call's constexprs.

    fp32 (``DOT_PRECISION="ieee"``) products run on FMA units, not tensor cores: large tiles
    spill and take minutes each to compile, so only the two smallest tiles are tried. At head
    dim 128, large tiles with 4 warps exceed the register file.
    """
    args = {**named_args, **kwargs}  # constexprs arrive as keywords, pointers positionally
    head_dim = args.get("HEAD_DIM", 64)
    if args.get("DOT_PRECISION") == "ieee":
        small = sorted(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])
        return small[:2]
    kept = [c for c in configs
            if not (head_dim >= 128 and c.num_warps == 4 and c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] >= 128 * 64)]
    return kept or configs


_TUNE_KEY = ["N_CTX_KEY", "HEAD_DIM", "CAUSAL", "DOT_PRECISION"]


def _as_interpreted(kernel: JITFunction | InterpretedFunction, interpreted: bool):
    """The interpreter's view of a kernel (already one when TRITON_INTERPRET=1 at import)."""
    if interpreted and isinstance(kernel, JITFunction):
        return InterpretedFunction(kernel.fn)
    return kernel


class _Kernels:
    """One copy of the kernels: compiled (autotuned) or interpreted (fixed blocks)."""

    def __init__(self, interpreted: bool, fwd: list[triton.Config] = FWD_CONFIGS,
                 dkdv: list[triton.Config] = DKDV_CONFIGS, dq: list[triton.Config] = DQ_CONFIGS) -> None:
        module = _flash_triton
        self.interpreted = interpreted
        self.preprocess = _as_interpreted(module.flash_bwd_preprocess_kernel, interpreted)
        if interpreted:
            self.fwd, self.dkdv, self.dq = (_as_interpreted(k, True) for k in (
                module.flash_fwd_kernel, module.flash_bwd_dkdv_kernel, module.flash_bwd_dq_kernel))
        else:
            prune = {"early_config_prune": _prune}
            self.fwd = triton.autotune(fwd, key=_TUNE_KEY, prune_configs_by=prune)(module.flash_fwd_kernel)
            self.dkdv = triton.autotune(dkdv, key=_TUNE_KEY, prune_configs_by=prune)(module.flash_bwd_dkdv_kernel)
            self.dq = triton.autotune(dq, key=_TUNE_KEY, prune_configs_by=prune)(module.flash_bwd_dq_kernel)


def interpreter_enabled_globally() -> bool:
    """True when TRITON_INTERPRET was set before triton.jit ran (then every kernel is interpreted)."""
    return bool(triton.knobs.runtime.interpret)


_interp_lock = threading.RLock()
# Keyed by id(): hashing a JITFunction parses its source (and fails while lang is patched).
_interpreted_fns: dict[int, tuple[JITFunction, InterpretedFunction]] = {}


def _call_interpreted(self: JITFunction, *args: object, **kwargs: object) -> object:
    """Stand-in for ``JITFunction.__call__`` while an interpreted kernel runs.

    Kernels call other ``@triton.jit`` functions (our helpers and triton's own ``tl.sum``,
    ``tl.max``, ``tl.zeros``); those were compiled-mode ``JITFunction`` objects when triton
    was imported without TRITON_INTERPRET, and calling one outside a compiled kernel raises.
    Here each is run through an ``InterpretedFunction`` instead.
    """
    entry = _interpreted_fns.get(id(self))
    if entry is None or entry[0] is not self:
        entry = _interpreted_fns[id(self)] = (self, InterpretedFunction(self.fn))
    return entry[1](*args, **kwargs)


@contextlib.contextmanager
def _interpreter_mode() -> Iterator[None]:
    """Let interpreted kernels call jit helpers, for the duration of one launch.

    ``triton.jit`` picks compiled or interpreted when it decorates (from TRITON_INTERPRET),
    so the top-level kernels are wrapped in ``InterpretedFunction`` explicitly and nested
    calls are routed through :func:`_call_interpreted`. Neither ``os.environ`` nor triton's
    knobs change: a kernel decorated meanwhile elsewhere is compiled as usual, and the
    patched ``__call__`` only replaces an error (calling a jit function outside a kernel).
    Restored on exit, under a lock so concurrent interpreted launches do not interleave.
    """
    with _interp_lock:
        previous_call = JITFunction.__call__
        JITFunction.__call__ = _call_interpreted  # type: ignore[method-assign]
        try:
            yield
        finally:
            JITFunction.__call__ = previous_call  # type: ignore[method-assign]


_compiled: _Kernels | None = None
_interpreted: _Kernels | None = None


def _kernels(interpret: bool) -> _Kernels:
    global _compiled, _interpreted
    if interpret or interpreter_enabled_globally():
        if _interpreted is None:
            _interpreted = _Kernels(interpreted=True)
        return _interpreted
    if _compiled is None:
        if os.environ.get("APT_FLASH_AUTOTUNE", "1") == "0":  # skip tuning: first config of each list
            _compiled = _Kernels(False, FWD_CONFIGS[:1], DKDV_CONFIGS[:1], DQ_CONFIGS[:1])
        else:
            _compiled = _Kernels(interpreted=False)
    return _compiled


# --------------------------------------------------------------------------- launchers


def _resolve_interpret(device: torch.device, interpret: bool | None) -> bool:
    if interpret is None:
        return device.type != "cuda"
    if not interpret and device.type != "cuda":
        raise ValueError(f"flash attention: compiled kernels need CUDA tensors, got device "
                         f"{device}; pass interpret=True to run the Triton interpreter on the CPU")
    return interpret


def _check_interpretable(dtype: torch.dtype, interpreted: bool) -> None:
    # triton's interpreter (3.9) feeds bf16 tl.dot operands to numpy as raw bits: the
    # results are garbage (seen: ~1e9 relative error), so refuse instead of returning them.
    if interpreted and dtype == torch.bfloat16:
        raise ValueError("flash attention: bfloat16 is not supported under the Triton interpreter "
                         "(its tl.dot mishandles bf16 operands); use float32 or float16 on the CPU, "
                         "or run bfloat16 on a CUDA device")


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"flash attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"flash attention: {name} must be 4-D (batch, heads, seq, head_dim), "
                             f"got shape {tuple(t.shape)}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"flash attention: {name} has dtype {t.dtype}; supported: "
                             f"{', '.join(str(d) for d in SUPPORTED_DTYPES)}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError("flash attention: q, k and v must have the same shape (self-attention), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"flash attention: q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"flash attention: q, k and v must be on one device, got {q.device}, "
                         f"{k.device}, {v.device}")
    batch, heads, seq, head_dim = q.shape
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"flash attention: head dim {head_dim} is not supported; supported: "
                         f"{', '.join(map(str, SUPPORTED_HEAD_DIMS))}")
    if batch < 1 or heads < 1 or seq < 1:
        raise ValueError(f"flash attention: empty input of shape {tuple(q.shape)}")
    if batch * heads * seq >= 2**31:  # the log-sum-exp rows are indexed in 32 bits
        raise ValueError(f"flash attention: batch * heads * seq = {batch * heads * seq} rows is too many "
                         f"(limit 2**31); split the batch")
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_strides(name, t)


def _check_strides(name: str, t: torch.Tensor) -> None:
    if any(s < 0 for s in t.stride()):
        raise ValueError(f"flash attention: {name} has negative strides {t.stride()}")
    _, _, seq, head_dim = t.shape
    # Offsets inside one head are 32-bit in the kernels; head/batch offsets are 64-bit.
    if (seq - 1) * t.stride(2) + (head_dim - 1) * t.stride(3) >= 2**31:
        raise ValueError(f"flash attention: {name} with shape {tuple(t.shape)} and strides "
                         f"{t.stride()} spans more than 2**31 elements within one head")


def _check_output(name: str, out: torch.Tensor, like: torch.Tensor) -> None:
    if out.shape != like.shape or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(f"flash attention: {name} must be {tuple(like.shape)} {like.dtype} on "
                         f"{like.device}, got {tuple(out.shape)} {out.dtype} on {out.device}")
    if out.stride(-1) != 1 or any(s == 0 for s, n in zip(out.stride(), out.shape, strict=True) if n > 1):
        raise ValueError(f"flash attention: {name} must have unit stride in the head dim and no "
                         f"broadcast (zero-stride) dims, got strides {out.stride()}")


def _empty_bnhd(like: torch.Tensor) -> torch.Tensor:
    """An output shaped (B, H, N, D) laid out as (B, N, H, D): merging heads after is free."""
    b, h, n, d = like.shape
    return torch.empty((b, n, h, d), dtype=like.dtype, device=like.device).transpose(1, 2)


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs get true fp32 products (not tf32), matching torch's fp32 attention.
    return "ieee" if dtype == torch.float32 else "tf32"


def _strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


@contextlib.contextmanager
def _launch_context(kernels: _Kernels, device: torch.device) -> Iterator[None]:
    if kernels.interpreted and not interpreter_enabled_globally():
        with _interpreter_mode():
            yield
    elif device.type == "cuda":
        with torch.cuda.device(device):
            yield
    else:
        yield


def flash_attention_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
    sm_scale: float | None = None, out: torch.Tensor | None = None, interpret: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel. Returns ``(out, lse)``.

    ``out`` (optional) is a preallocated ``(B, H, N, D)`` buffer; ``lse`` is fp32
    ``(B, H, N)`` in base 2 (``max + log2(sum)`` of the scaled scores), as the backward wants.
    """
    _check_inputs(q, k, v)
    use_interp = _resolve_interpret(q.device, interpret)
    batch, heads, seq, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else float(sm_scale)
    if out is None:
        out = _empty_bnhd(q)
    _check_output("out", out, q)
    lse = torch.empty((batch, heads, seq), dtype=torch.float32, device=q.device)
    kernels = _kernels(use_interp)
    _check_interpretable(q.dtype, kernels.interpreted)

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(seq, meta["BLOCK_M"]), batch * heads

    extra = _INTERP_FWD if kernels.interpreted else {}
    with _launch_context(kernels, q.device):
        kernels.fwd[grid](q, k, v, out, lse, scale, *_strides(q), *_strides(k), *_strides(v),
                          *_strides(out), heads, seq, triton.next_power_of_2(seq),
                          HEAD_DIM=head_dim, CAUSAL=bool(causal),
                          DOT_PRECISION=_dot_precision(q.dtype), **extra)
    return out, lse


def flash_attention_backward(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
    lse: torch.Tensor, *, causal: bool = False, sm_scale: float | None = None,
    dq: torch.Tensor | None = None, dk: torch.Tensor | None = None, dv: torch.Tensor | None = None,
    interpret: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward: ``rowsum(dO * O)``, then the dK/dV pass, then the dQ pass."""
    _check_inputs(q, k, v)
    use_interp = _resolve_interpret(q.device, interpret)
    batch, heads, seq, head_dim = q.shape
    for name, t in (("grad_out", grad_out), ("out", out)):
        if t.shape != q.shape or t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f"flash attention: {name} must be {tuple(q.shape)} {q.dtype} on {q.device}, "
                             f"got {tuple(t.shape)} {t.dtype} on {t.device}")
        _check_strides(name, t)
    if lse.shape != (batch, heads, seq) or lse.dtype != torch.float32 or not lse.is_contiguous():
        raise ValueError(f"flash attention: lse must be contiguous fp32 {(batch, heads, seq)}, got "
                         f"{tuple(lse.shape)} {lse.dtype}")
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else float(sm_scale)
    dq = _empty_bnhd(q) if dq is None else dq
    dk = _empty_bnhd(k) if dk is None else dk
    dv = _empty_bnhd(v) if dv is None else dv
    for name, t in (("dq", dq), ("dk", dk), ("dv", dv)):
        _check_output(name, t, q)
    delta = torch.empty_like(lse)
    kernels = _kernels(use_interp)
    _check_interpretable(q.dtype, kernels.interpreted)
    common = {"HEAD_DIM": head_dim, "CAUSAL": bool(causal), "DOT_PRECISION": _dot_precision(q.dtype)}
    n_key = triton.next_power_of_2(seq)
    with _launch_context(kernels, q.device):
        kernels.preprocess[(triton.cdiv(seq, _PREPROCESS_BLOCK_M), batch * heads)](
            out, grad_out, delta, *_strides(out), *_strides(grad_out), heads, seq,
            HEAD_DIM=head_dim, BLOCK_M=_PREPROCESS_BLOCK_M)
        kernels.dkdv[lambda meta: (triton.cdiv(seq, meta["BLOCK_N"]), batch * heads)](
            q, k, v, grad_out, dk, dv, lse, delta, scale, *_strides(q), *_strides(k),
            *_strides(v), *_strides(grad_out), *_strides(dk), *_strides(dv), heads, seq, n_key,
            **common, **(_INTERP_DKDV if kernels.interpreted else {}))
        kernels.dq[lambda meta: (triton.cdiv(seq, meta["BLOCK_M"]), batch * heads)](
            q, k, v, grad_out, dq, lse, delta, scale, *_strides(q), *_strides(k), *_strides(v),
            *_strides(grad_out), *_strides(dq), heads, seq, n_key,
            **common, **(_INTERP_DQ if kernels.interpreted else {}))
    return dq, dk, dv


# --------------------------------------------------------------------------- autograd


class FlashAttentionFunction(torch.autograd.Function):
    """Differentiable fused attention; saves ``(q, k, v, out, lse)``, never the N x N scores."""

    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale, interpret):  # type: ignore[override]
        out, lse = flash_attention_forward(q, k, v, causal=causal, sm_scale=sm_scale, interpret=interpret)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.sm_scale, ctx.interpret = causal, sm_scale, interpret
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(grad_out, q, k, v, out, lse, causal=ctx.causal,
                                              sm_scale=ctx.sm_scale, interpret=ctx.interpret)
        return dq, dk, dv, None, None, None


def flash_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
    sm_scale: float | None = None, interpret: bool | None = None,
) -> torch.Tensor:
    """softmax(q k^T * sm_scale [+ causal mask]) v for ``(B, H, N, D)`` tensors.

    ``sm_scale`` defaults to ``1/sqrt(D)``. ``interpret=None`` picks the compiled kernels for
    CUDA tensors and the interpreter otherwise; ``True`` forces the interpreter.
    """
    return FlashAttentionFunction.apply(q, k, v, bool(causal), sm_scale, interpret)


def attention_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """The definition, in plain torch and in the inputs' dtype (upcast them for a reference)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else sm_scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, N, N)
    if causal:
        n = q.shape[-2]
        keep = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
