"""Triton kernels of APT's FlashAttention-2 style attention (forward and backward).

Only ``@triton.jit`` functions live here. ``flash_attention.py`` loads this module twice:
once as imported (compiled for the GPU, unless ``TRITON_INTERPRET=1`` was set first) and,
on demand, a second time under the Triton interpreter, because ``triton.jit`` decides
compiled-or-interpreted when the decorator runs. Keeping the kernels in their own module
lets both copies exist side by side without touching the process environment.

Conventions shared by every kernel:

* tensors are ``(Z, H, N_CTX, HEAD_DIM)`` with arbitrary strides (passed explicitly);
* the grid's axis 1 enumerates ``Z * H`` heads, base offsets are computed in int64;
* scores use base 2: ``qk_scale = sm_scale * log2(e)`` and ``LSE`` holds
  ``m + log2(l)`` per row, so the backward recomputes ``P = exp2(qk * qk_scale - LSE)``;
* ``BLOCK_M`` is a multiple of ``BLOCK_N`` (forward, dQ) and ``BLOCK_N`` a multiple of
  ``BLOCK_M`` (dK/dV), so the causal diagonal falls on block boundaries and the blocks
  strictly above it are skipped, not masked;
* only iterations that touch the diagonal or the sequence tail use masks.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # scores use exp2: exp(x) == exp2(x * LOG2E)


@triton.jit
def _row_block(CAUSAL: tl.constexpr):
    """This program's query block. Causal: the last (longest) blocks are launched first,
    so the short ones fill the tail of the grid instead of leaving SMs idle."""
    if CAUSAL:
        return tl.num_programs(0) - 1 - tl.program_id(0)
    return tl.program_id(0)


@triton.jit
def _head_offsets(H):
    """This program's head: ``(off_hz, off_z, off_h)``, the batch and head index in int64
    so that base offsets of large tensors do not overflow."""
    off_hz = tl.program_id(1)
    return off_hz, (off_hz // H).to(tl.int64), (off_hz % H).to(tl.int64)


@triton.jit
def _key_bounds(start_m, N_CTX, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
    """Keys a query block visits (forward and dQ): ``[0, full_end)`` without masks, then
    ``[full_end, hi)`` masked. Causal: key blocks left of the query block need no mask, the
    diagonal block does, blocks right of it are never visited. Otherwise only the tail is
    masked."""
    if CAUSAL:
        full_end = start_m
        hi = tl.minimum(start_m + BLOCK_M, N_CTX)
    else:
        full_end = (N_CTX // BLOCK_N) * BLOCK_N
        hi = N_CTX
    return full_end, hi


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, K_base, V_base, stride_kn, stride_kd, stride_vn, stride_vd,
               offs_m, offs_d, lo, hi, qk_scale, N_CTX,
               BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr,
               DOT_PRECISION: tl.constexpr):
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        # K is loaded row-major like V and transposed in registers: loading K^T through
        # pointers directly cost ~200 bytes of spills per thread at head dim 128 (sm_90).
        k_ptrs = K_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd  # (BN, D)
        v_ptrs = V_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd  # (BN, D)
        if MASKED:
            k = tl.load(k_ptrs, mask=offs_n[:, None] < N_CTX, other=0.0)
            v = tl.load(v_ptrs, mask=offs_n[:, None] < N_CTX, other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # (BM, BN) fp32
        if MASKED:
            keep = offs_n[None, :] < N_CTX
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            qk = tl.where(keep, qk * qk_scale, float("-inf"))
            m_ij = tl.maximum(m_i, tl.max(qk, 1))
            qk = qk - m_ij[:, None]
        else:
            m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            qk = qk * qk_scale - m_ij[:, None]
        p = tl.math.exp2(qk)
        alpha = tl.math.exp2(m_i - m_ij)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
        m_i = m_ij
    return acc, l_i, m_i


@triton.jit
def flash_fwd_kernel(Q, K, V, Out, LSE, sm_scale,
                     stride_qz, stride_qh, stride_qm, stride_qd,
                     stride_kz, stride_kh, stride_kn, stride_kd,
                     stride_vz, stride_vh, stride_vn, stride_vd,
                     stride_oz, stride_oh, stride_om, stride_od,
                     H, N_CTX, N_CTX_KEY,
                     HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr):
    # N_CTX_KEY (a power-of-two bucket of N_CTX) is read by the autotuner only.
    start_m = _row_block(CAUSAL) * BLOCK_M
    off_hz, off_z, off_h = _head_offsets(H)
    Q_base = Q + off_z * stride_qz + off_h * stride_qh
    K_base = K + off_z * stride_kz + off_h * stride_kh
    V_base = V + off_z * stride_vz + off_h * stride_vh
    O_base = Out + off_z * stride_oz + off_h * stride_oh

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_CTX
    q = tl.load(Q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None], other=0.0)  # (BM, D)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * LOG2E

    full_end, hi = _key_bounds(start_m, N_CTX, BLOCK_M, BLOCK_N, CAUSAL)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K_base, V_base, stride_kn, stride_kd,
                               stride_vn, stride_vd, offs_m, offs_d, 0, full_end, qk_scale,
                               N_CTX, BLOCK_N, CAUSAL, False, DOT_PRECISION)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K_base, V_base, stride_kn, stride_kd,
                               stride_vn, stride_vd, offs_m, offs_d, full_end, hi, qk_scale,
                               N_CTX, BLOCK_N, CAUSAL, True, DOT_PRECISION)

    acc = acc / l_i[:, None]
    tl.store(LSE + off_hz * N_CTX + offs_m, m_i + tl.math.log2(l_i), mask=row_ok)
    tl.store(O_base + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
             acc.to(Out.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def flash_bwd_preprocess_kernel(Out, DO, DELTA,
                                stride_oz, stride_oh, stride_om, stride_od,
                                stride_dz, stride_dh, stride_dm, stride_dd,
                                H, N_CTX,
                                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """DELTA[z*H + h, m] = rowsum(dO * O): the softmax Jacobian's correction term."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    off_hz, off_z, off_h = _head_offsets(H)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_CTX
    o = tl.load(Out + off_z * stride_oz + off_h * stride_oh
                + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
                mask=row_ok[:, None], other=0.0).to(tl.float32)
    do = tl.load(DO + off_z * stride_dz + off_h * stride_dh
                 + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd,
                 mask=row_ok[:, None], other=0.0).to(tl.float32)
    tl.store(DELTA + off_hz * N_CTX + offs_m, tl.sum(o * do, axis=1), mask=row_ok)


@triton.jit
def _bwd_dkdv_inner(dk, dv, k, v, Q_base, DO_base, LSE_base, DELTA_base,
                    stride_qm, stride_qd, stride_dm, stride_dd,
                    offs_n, offs_d, lo, hi, qk_scale, N_CTX,
                    BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr,
                    DOT_PRECISION: tl.constexpr):
    offs_m0 = tl.arange(0, BLOCK_M)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        q_ptrs = Q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd  # (BM, D)
        do_ptrs = DO_base + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd  # (BM, D)
        if MASKED:
            row_ok = offs_m < N_CTX
            q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
            do = tl.load(do_ptrs, mask=row_ok[:, None], other=0.0)
            lse = tl.load(LSE_base + offs_m, mask=row_ok, other=0.0)
            delta = tl.load(DELTA_base + offs_m, mask=row_ok, other=0.0)
        else:
            q = tl.load(q_ptrs)
            do = tl.load(do_ptrs)
            lse = tl.load(LSE_base + offs_m)
            delta = tl.load(DELTA_base + offs_m)
        qkT = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)  # (BN, BM)
        pT = tl.math.exp2(qkT * qk_scale - lse[None, :])
        if MASKED:
            keep = offs_m[None, :] < N_CTX
            if CAUSAL:
                keep = keep & (offs_m[None, :] >= offs_n[:, None])
            pT = tl.where(keep, pT, 0.0)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
        dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)  # (BN, BM)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(q.dtype), q, dk, input_precision=DOT_PRECISION)
    return dk, dv


@triton.jit
def flash_bwd_dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, sm_scale,
                          stride_qz, stride_qh, stride_qm, stride_qd,
                          stride_kz, stride_kh, stride_kn, stride_kd,
                          stride_vz, stride_vh, stride_vn, stride_vd,
                          stride_dz, stride_dh, stride_dm, stride_dd,
                          stride_dkz, stride_dkh, stride_dkn, stride_dkd,
                          stride_dvz, stride_dvh, stride_dvn, stride_dvd,
                          H, N_CTX, N_CTX_KEY,
                          HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One program owns BLOCK_N keys/values and sweeps the query blocks that see them."""
    start_n = tl.program_id(0) * BLOCK_N
    off_hz, off_z, off_h = _head_offsets(H)
    Q_base = Q + off_z * stride_qz + off_h * stride_qh
    DO_base = DO + off_z * stride_dz + off_h * stride_dh
    LSE_base = LSE + off_hz * N_CTX
    DELTA_base = DELTA + off_hz * N_CTX

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < N_CTX
    k = tl.load(K + off_z * stride_kz + off_h * stride_kh
                + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                mask=col_ok[:, None], other=0.0)  # (BN, D)
    v = tl.load(V + off_z * stride_vz + off_h * stride_vh
                + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                mask=col_ok[:, None], other=0.0)  # (BN, D)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * LOG2E

    if CAUSAL:
        # Query rows above start_n never see these keys: skipped. The diagonal band
        # [start_n, start_n + BLOCK_N) is masked, the rows below it are not.
        diag_hi = tl.minimum(start_n + BLOCK_N, N_CTX)
        dk, dv = _bwd_dkdv_inner(dk, dv, k, v, Q_base, DO_base, LSE_base, DELTA_base,
                                 stride_qm, stride_qd, stride_dm, stride_dd, offs_n, offs_d,
                                 start_n, diag_hi, qk_scale, N_CTX,
                                 BLOCK_M, CAUSAL, True, DOT_PRECISION)
        lo = start_n + BLOCK_N
    else:
        lo = 0
    full_hi = lo + tl.maximum(N_CTX - lo, 0) // BLOCK_M * BLOCK_M
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, Q_base, DO_base, LSE_base, DELTA_base,
                             stride_qm, stride_qd, stride_dm, stride_dd, offs_n, offs_d,
                             lo, full_hi, qk_scale, N_CTX,
                             BLOCK_M, CAUSAL, False, DOT_PRECISION)
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, Q_base, DO_base, LSE_base, DELTA_base,
                             stride_qm, stride_qd, stride_dm, stride_dd, offs_n, offs_d,
                             full_hi, N_CTX, qk_scale, N_CTX,
                             BLOCK_M, CAUSAL, True, DOT_PRECISION)

    dk = dk * sm_scale
    tl.store(DK + off_z * stride_dkz + off_h * stride_dkh
             + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd,
             dk.to(DK.dtype.element_ty), mask=col_ok[:, None])
    tl.store(DV + off_z * stride_dvz + off_h * stride_dvh
             + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd,
             dv.to(DV.dtype.element_ty), mask=col_ok[:, None])


@triton.jit
def _bwd_dq_inner(dq, q, do, lse, delta, K_base, V_base, stride_kn, stride_kd,
                  stride_vn, stride_vd, offs_m, offs_d, lo, hi, qk_scale, N_CTX,
                  BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr,
                  DOT_PRECISION: tl.constexpr):
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        k_ptrs = K_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd  # (BN, D)
        v_ptrs = V_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd  # (BN, D)
        if MASKED:
            col_ok = offs_n[:, None] < N_CTX
            k = tl.load(k_ptrs, mask=col_ok, other=0.0)
            v = tl.load(v_ptrs, mask=col_ok, other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # (BM, BN)
        p = tl.math.exp2(qk * qk_scale - lse[:, None])
        if MASKED:
            keep = offs_n[None, :] < N_CTX
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            p = tl.where(keep, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)  # (BM, BN)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PRECISION)
    return dq


@triton.jit
def flash_bwd_dq_kernel(Q, K, V, DO, DQ, LSE, DELTA, sm_scale,
                        stride_qz, stride_qh, stride_qm, stride_qd,
                        stride_kz, stride_kh, stride_kn, stride_kd,
                        stride_vz, stride_vh, stride_vn, stride_vd,
                        stride_dz, stride_dh, stride_dm, stride_dd,
                        stride_dqz, stride_dqh, stride_dqm, stride_dqd,
                        H, N_CTX, N_CTX_KEY,
                        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One program owns BLOCK_M queries and sweeps the key blocks they attend to."""
    start_m = _row_block(CAUSAL) * BLOCK_M
    off_hz, off_z, off_h = _head_offsets(H)
    K_base = K + off_z * stride_kz + off_h * stride_kh
    V_base = V + off_z * stride_vz + off_h * stride_vh

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_CTX
    q = tl.load(Q + off_z * stride_qz + off_h * stride_qh
                + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None], other=0.0)  # (BM, D)
    do = tl.load(DO + off_z * stride_dz + off_h * stride_dh
                 + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd,
                 mask=row_ok[:, None], other=0.0)  # (BM, D)
    lse = tl.load(LSE + off_hz * N_CTX + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + off_hz * N_CTX + offs_m, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * LOG2E

    full_end, hi = _key_bounds(start_m, N_CTX, BLOCK_M, BLOCK_N, CAUSAL)
    dq = _bwd_dq_inner(dq, q, do, lse, delta, K_base, V_base, stride_kn, stride_kd,
                       stride_vn, stride_vd, offs_m, offs_d, 0, full_end, qk_scale, N_CTX,
                       BLOCK_N, CAUSAL, False, DOT_PRECISION)
    dq = _bwd_dq_inner(dq, q, do, lse, delta, K_base, V_base, stride_kn, stride_kd,
                       stride_vn, stride_vd, offs_m, offs_d, full_end, hi, qk_scale, N_CTX,
                       BLOCK_N, CAUSAL, True, DOT_PRECISION)

    dq = dq * sm_scale
    tl.store(DQ + off_z * stride_dqz + off_h * stride_dqh
             + offs_m[:, None] * stride_dqm + offs_d[None, :] * stride_dqd,
             dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])
