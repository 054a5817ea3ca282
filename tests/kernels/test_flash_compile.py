"""The kernels compile for real GPUs (sm_80, sm_90), checked without a GPU.

The interpreter accepts code the compiler rejects (a plain-float global, a type mismatch
between loop-carried values), so CI also lowers each kernel to a cubin with the ptxas
bundled in triton, and checks that the default tiles do not spill registers on sm_90. It runs in a subprocess because TRITON_INTERPRET=1 (set by CI) makes
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
    from apt.kernels.flash_compile import KERNELS, compile_kernel

    # sm_90 as the JIT builds contiguous inputs (unit strides constant); sm_80 the general
    # build (every stride a runtime value), so both code paths go through the compiler.
    builds = (("bf16", 90, 128, True, True), ("fp16", 80, 64, False, False))
    for dtype, arch, head_dim, causal, specialize in builds:
        for name, (_, configs) in KERNELS.items():
            report = compile_kernel(name, configs[0], dtype=dtype, arch=arch, head_dim=head_dim,
                                    causal=causal, specialize=specialize)
            print(dtype, f"sm_{arch}", report)
            assert report.uses_wgmma == (arch == 90 and name != "preprocess"), report
            if specialize:
                # The default tiles were chosen to spill nothing on Hopper at head dim 128.
                assert report.stack_bytes == 0, f"default {name} config spills: {report}"
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
