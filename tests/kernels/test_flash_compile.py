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
    from apt.kernels.flash_compile import KERNELS, compile_kernel

    for dtype, arch, head_dim, causal in (("bf16", 90, 128, True), ("fp16", 80, 64, False)):
        for name, (_, configs) in KERNELS.items():
            report = compile_kernel(name, configs[0], dtype=dtype, arch=arch, head_dim=head_dim,
                                    causal=causal)
            print(dtype, f"sm_{arch}", report)
            assert report.uses_wgmma == (arch == 90 and name != "preprocess"), report
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
