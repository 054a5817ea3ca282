"""The kernels compile for real GPUs (sm_80, sm_90), checked without a GPU.

The interpreter accepts code the compiler rejects (a plain-float global, a type mismatch
between loop-carried values), so CI also lowers each kernel to a cubin with the ptxas
bundled in triton. It runs in a subprocess because TRITON_INTERPRET=1 (set by CI) makes
``triton.jit`` produce interpreter objects that cannot be compiled.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from apt.kernels import _flash_triton as K
    from apt.kernels.flash_attention import DKDV_CONFIGS, DQ_CONFIGS, FWD_CONFIGS

    FP32_ARGS = {"LSE", "DELTA"}
    INT_ARGS = {"H", "N_CTX", "N_CTX_KEY"}

    def compile_one(kernel, config, dtype, arch, **constexprs):
        fn = kernel
        signature, attrs = {}, {}
        for i, name in enumerate(fn.arg_names):
            if name in constexprs or name in ("BLOCK_M", "BLOCK_N"):
                signature[name] = "constexpr"
            elif name == "sm_scale":
                signature[name] = "fp32"
            elif name in INT_ARGS or name.startswith("stride_"):
                signature[name] = "i32"
            else:
                signature[name] = "*fp32" if name in FP32_ARGS else "*" + dtype
                attrs[(i,)] = [["tt.divisibility", 16]]
        consts = dict(constexprs)
        if config is not None:
            consts.update(config.kwargs)
            options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
        else:
            consts.update(BLOCK_M=64)
            options = {"num_warps": 4, "num_stages": 1}
        src = ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs)
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
        assert compiled.asm.get("cubin"), (fn.__name__, arch)
        print(fn.__name__, dtype, f"sm_{arch}", "shared bytes", compiled.metadata.shared)

    for dtype, arch, head_dim, causal in (("bf16", 90, 128, True), ("fp16", 80, 64, False)):
        common = dict(HEAD_DIM=head_dim, CAUSAL=causal, DOT_PRECISION="tf32")
        compile_one(K.flash_fwd_kernel, FWD_CONFIGS[0], dtype, arch, **common)
        compile_one(K.flash_bwd_dkdv_kernel, DKDV_CONFIGS[0], dtype, arch, **common)
        compile_one(K.flash_bwd_dq_kernel, DQ_CONFIGS[0], dtype, arch, **common)
        compile_one(K.flash_bwd_preprocess_kernel, None, dtype, arch, HEAD_DIM=head_dim)
    print("compiled")
    """
)


def test_kernels_compile_for_ampere_and_hopper(tmp_path):
    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        pytest.skip("triton was built without its NVIDIA backend")
    path = tmp_path / "compile_kernels.py"
    path.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")  # compile for real, not from a cache
    result = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("compiled"), result.stdout
