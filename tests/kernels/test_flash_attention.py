"""The flash-attention kernels against a float64 reference, on the CPU (Triton interpreter).

Every check draws fresh random inputs (the seed is in the failure message), writes the
outputs into NaN-filled buffers so an element the kernels never write fails the check, and
compares with ``attention_ref`` run in float64 by ``||x - ref|| / ||ref||``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from apt.kernels.flash_attention import (
    attention_ref,
    flash_attention,
    flash_attention_backward,
    flash_attention_forward,
)

# fp32 goes through true fp32 products: rounding alone is ~3e-7 at these sizes.
FP32_TOL = 1e-5
# fp16 under the interpreter, measured at N=100, D=32: out and grads 2e-4 .. 3.2e-4 (the
# reference rounded to fp16 is itself 2e-4 away). The bound leaves ~6x headroom.
FP16_TOL = 2e-3


def _seed() -> int:
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    torch.manual_seed(seed)
    return seed


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    ref_norm = ref.norm().item()
    diff = (x.double() - ref).norm().item()
    # A reference that is exactly zero (dQ, dK at N=1) is compared absolutely.
    return diff / ref_norm if ref_norm > 0 else diff


def _poisoned(like: torch.Tensor) -> torch.Tensor:
    return torch.full_like(like, float("nan"))


def _reference(q, k, v, do, causal, sm_scale=None):
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = attention_ref(q64, k64, v64, causal=causal, sm_scale=sm_scale)
    out.backward(do.double())
    return out.detach(), q64.grad, k64.grad, v64.grad


def _run_poisoned(q, k, v, do, causal, sm_scale=None):
    out = _poisoned(q)
    flash_attention_forward(q, k, v, causal=causal, sm_scale=sm_scale, out=out)
    _, lse = flash_attention_forward(q, k, v, causal=causal, sm_scale=sm_scale)
    dq, dk, dv = _poisoned(q), _poisoned(k), _poisoned(v)
    flash_attention_backward(do, q, k, v, out, lse, causal=causal, sm_scale=sm_scale, dq=dq, dk=dk, dv=dv)
    return out, dq, dk, dv


def _assert_close(got, ref, tol, context):
    for name, g, r in zip(("out", "dq", "dk", "dv"), got, ref, strict=True):
        assert torch.isfinite(g).all(), f"{name} has unwritten (NaN) or non-finite elements; {context}"
        err = _rel_err(g, r)
        assert err < tol, f"{name} relative error {err:.3g} >= {tol}; {context}"


@pytest.mark.parametrize("head_dim", [16, 32, 64])
@pytest.mark.parametrize("seq_len", [1, 17, 100, 129])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_fp32_forward_and_backward_match_float64(causal, seq_len, head_dim):
    seed = _seed()
    q, k, v, do = (torch.randn(2, 2, seq_len, head_dim) for _ in range(4))
    got = _run_poisoned(q, k, v, do, causal)
    ref = _reference(q, k, v, do, causal)
    _assert_close(got, ref, FP32_TOL, f"seed={seed}")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_strided_inputs_and_custom_scale(causal):
    """q, k, v as views into one packed (B, N, 3, H, D) projection, as attention layers make them."""
    seed = _seed()
    batch, seq_len, heads, head_dim = 2, 45, 2, 32
    qkv = torch.randn(batch, seq_len, 3, heads, head_dim)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, N, D), not contiguous
    assert not q.is_contiguous()
    do = torch.randn(batch, heads, seq_len, head_dim).transpose(2, 3).contiguous().transpose(2, 3)
    got = _run_poisoned(q, k, v, do, causal, sm_scale=0.3)
    ref = _reference(q, k, v, do, causal, sm_scale=0.3)
    _assert_close(got, ref, FP32_TOL, f"seed={seed}")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_autograd_function_matches_reference(causal):
    seed = _seed()
    q, k, v = (torch.randn(2, 2, 70, 16, requires_grad=True) for _ in range(3))
    do = torch.randn(2, 2, 70, 16)
    out = flash_attention(q, k, v, causal=causal)
    out.backward(do)
    ref = _reference(q, k, v, do, causal)
    _assert_close((out.detach(), q.grad, k.grad, v.grad), ref, FP32_TOL, f"seed={seed}")


def test_broadcast_grad_output():
    """``out.sum().backward()`` hands the backward a zero-stride gradient."""
    q, k, v = (torch.randn(1, 2, 33, 16, requires_grad=True) for _ in range(3))
    flash_attention(q, k, v, causal=True).sum().backward()
    ref = _reference(q, k, v, torch.ones(1, 2, 33, 16), True)
    for g, r in zip((q.grad, k.grad, v.grad), ref[1:], strict=True):
        assert _rel_err(g, r) < FP32_TOL


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_fp16_within_measured_bound(causal):
    seed = _seed()
    q, k, v, do = (torch.randn(2, 2, 100, 32, dtype=torch.float16) for _ in range(4))
    got = _run_poisoned(q, k, v, do, causal)
    assert all(t.dtype == torch.float16 for t in got)
    ref = _reference(q, k, v, do, causal)
    _assert_close(got, ref, FP16_TOL, f"seed={seed}")


def test_lse_is_base2_logsumexp_of_scaled_scores():
    q, k, v = (torch.randn(1, 2, 40, 16) for _ in range(3))
    _, lse = flash_attention_forward(q, k, v, causal=True)
    scores = (q.double() @ k.double().transpose(-2, -1)) / 4.0
    scores = scores.masked_fill(~torch.ones(40, 40, dtype=torch.bool).tril(), float("-inf"))
    expected = torch.logsumexp(scores, dim=-1) / torch.log(torch.tensor(2.0, dtype=torch.float64))
    assert _rel_err(lse, expected) < FP32_TOL


# --------------------------------------------------------------------------- launcher errors


def _qkv(*shape, dtype=torch.float32):
    return tuple(torch.randn(*shape, dtype=dtype) for _ in range(3))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: _qkv(2, 16, 16), "must be 4-D"),
        (lambda: _qkv(1, 1, 8, 80), "head dim 80 is not supported; supported: 16, 32, 64, 128"),
        (lambda: _qkv(1, 1, 8, 16, dtype=torch.float64), "dtype torch.float64"),
        (lambda: (*_qkv(1, 1, 8, 16)[:2], torch.randn(1, 1, 9, 16)), "same shape"),
        (lambda: (*_qkv(1, 1, 8, 16)[:2], torch.randn(1, 1, 8, 16, dtype=torch.float16)), "share a dtype"),
        (lambda: _qkv(1, 1, 0, 16), "empty input"),
        (lambda: _qkv(1, 1, 8, 16, dtype=torch.bfloat16), "bfloat16 is not supported under the Triton interpreter"),
        (lambda: tuple(t.expand(2**16, 2**15, 1, 16) for t in _qkv(1, 1, 1, 16)), "rows is too many"),
    ],
    ids=["rank", "head_dim", "dtype", "shape", "mixed_dtype", "empty", "bf16_interpreted", "too_many_rows"],
)
def test_launcher_rejects_unsupported_inputs(make, message):
    q, k, v = make()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        flash_attention_forward(q, k, v)


def test_launcher_rejects_bad_output_buffer():
    q, k, v = _qkv(1, 2, 8, 16)
    with pytest.raises(ValueError, match=r"out must be \(1, 2, 8, 16\)"):
        flash_attention_forward(q, k, v, out=torch.empty(1, 2, 8, 32))
    with pytest.raises(ValueError, match="unit stride in the head dim"):
        flash_attention_forward(q, k, v, out=torch.empty(1, 2, 16, 8).transpose(2, 3))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_compiled_kernels_on_cpu_tensors_name_the_fix():
    q, k, v = _qkv(1, 1, 8, 16)
    with pytest.raises(ValueError, match="need CUDA tensors.*interpret=True"):
        flash_attention_forward(q, k, v, interpret=False)


def test_interpret_without_env_var_leaves_process_untouched(tmp_path):
    """interpret=True works when TRITON_INTERPRET was unset at import, and undoes itself."""
    script = textwrap.dedent(
        """
        import os, torch, triton, triton.language as tl
        from triton.runtime.jit import JITFunction
        from apt.kernels.flash_attention import attention_ref, flash_attention
        q, k, v = (torch.randn(1, 2, 20, 16) for _ in range(3))
        out = flash_attention(q, k, v, causal=True, interpret=True)
        err = ((out - attention_ref(q, k, v, causal=True)).norm() / out.norm()).item()
        assert err < 1e-5, err
        assert "TRITON_INTERPRET" not in os.environ
        assert not triton.knobs.runtime.interpret

        @triton.jit
        def later(x):
            pass

        assert isinstance(later, JITFunction), type(later)
        try:
            tl.zeros((1,), tl.float32)
        except RuntimeError as exc:
            assert "outside of the scope of a kernel" in str(exc)
        else:
            raise AssertionError("JITFunction.__call__ was left patched")
        print("ok")
        """
    )
    env = {key: val for key, val in os.environ.items() if key != "TRITON_INTERPRET"}
    path = tmp_path / "interpret_check.py"  # triton.jit needs its source in a file
    path.write_text(script)
    result = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
