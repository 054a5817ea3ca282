"""Ahead-of-time compilation of the flash-attention kernels, for machines without a GPU.

The interpreter accepts code that the compiler rejects, and register pressure (spills)
decides much of a kernel's speed; both can be checked by lowering the kernels to a cubin
for a chosen architecture with the ptxas bundled in triton. Used by
``tests/kernels/test_flash_compile.py`` and ``scripts/bench_attention.py --compile-report``.

Needs triton imported *without* ``TRITON_INTERPRET=1`` (interpreter objects cannot be
compiled); run it in a subprocess when that variable is set.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from apt.kernels import _flash_triton
from apt.kernels.flash_attention import DKDV_CONFIGS, DQ_CONFIGS, FWD_CONFIGS

__all__ = ["KERNELS", "CompileReport", "compile_kernel"]

#: name -> (kernel, configs it is autotuned over)
KERNELS = {
    "fwd": (_flash_triton.flash_fwd_kernel, FWD_CONFIGS),
    "dkdv": (_flash_triton.flash_bwd_dkdv_kernel, DKDV_CONFIGS),
    "dq": (_flash_triton.flash_bwd_dq_kernel, DQ_CONFIGS),
    "preprocess": (_flash_triton.flash_bwd_preprocess_kernel,
                   [triton.Config({"BLOCK_M": 64}, num_warps=4, num_stages=1)]),
}
_FP32_POINTERS = {"LSE", "DELTA"}
_INTS = {"H", "N_CTX", "N_CTX_KEY"}


@dataclass(frozen=True)
class CompileReport:
    kernel: str
    config: str
    registers: int | None
    stack_bytes: int | None
    shared_bytes: int
    uses_wgmma: bool


def compile_kernel(name: str, config: triton.Config, *, dtype: str = "bf16", arch: int = 90,
                   head_dim: int = 64, causal: bool = False, specialize: bool = True) -> CompileReport:
    """Compile kernel ``name`` ("fwd", "dkdv", "dq") with ``config`` for ``sm_<arch>``.

    ``specialize=True`` compiles what the JIT builds for contiguous inputs whose sequence
    length and head count are multiples of 16 (every benchmark shape): at launch triton turns an integer
    argument equal to 1 into a constant and marks one divisible by 16, so unit head-dim
    strides make the loads vectorised and the others aligned. ``False`` compiles the
    general case (every stride and length a runtime value), the worst case for registers.
    """
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; valid: {', '.join(KERNELS)}")
    kernel = KERNELS[name][0]
    wanted = {"HEAD_DIM": head_dim, "CAUSAL": causal,
              "DOT_PRECISION": "ieee" if dtype == "fp32" else "tf32", **config.kwargs}
    constexprs = {k: v for k, v in wanted.items() if k in kernel.arg_names}
    signature: dict[str, str] = {}
    attrs: dict[tuple[int, ...], list[list[object]]] = {}
    for i, arg in enumerate(kernel.arg_names):
        if arg in constexprs:
            signature[arg] = "constexpr"
        elif arg == "sm_scale":
            signature[arg] = "fp32"
        elif specialize and arg.startswith("stride_") and arg.endswith("d"):
            signature[arg] = "constexpr"  # the JIT's specialisation of an int equal to 1
            constexprs[arg] = 1
        elif arg in _INTS or arg.startswith("stride_"):
            signature[arg] = "i32"
            if specialize:
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:  # a pointer, 16-byte aligned as torch allocations are
            signature[arg] = "*fp32" if arg in _FP32_POINTERS else f"*{dtype}"
            attrs[(i,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    registers, stack = _resource_usage(compiled.asm["cubin"])
    tile = "x".join(str(config.kwargs[k]) for k in ("BLOCK_M", "BLOCK_N") if k in config.kwargs)
    shape = f"{tile} w{config.num_warps} s{config.num_stages}"
    return CompileReport(name, shape, registers, stack, int(compiled.metadata.shared),
                         "wgmma" in compiled.asm["ptx"])


def _resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        text = subprocess.run([tool, "-res-usage", path], capture_output=True, text=True).stdout
    regs, stack = re.search(r"REG:(\d+)", text), re.search(r"STACK:(\d+)", text)
    return (int(regs.group(1)) if regs else None, int(stack.group(1)) if stack else None)
