"""Throughput of APT's Triton flash-attention kernel against torch's attention backends.

    python scripts/bench_attention.py [--head-dims 64 128] [--seq-lens 512 ... 16384] [--out DIR]

For B*N = 16k tokens and H*D = 2048 (so every row does the same work), bf16, causal and
not, prints forward and backward TFLOP/s of:

* ``apt``: :func:`apt.kernels.flash_attention.flash_attention` (autotuned Triton kernels);
* ``sdpa-flash``, ``sdpa-efficient``, ``sdpa-cudnn``: torch SDPA pinned to one backend
  (a backend this torch/GPU cannot run for the shape prints ``n/a``);
* ``naive``: the ``naive`` provider's attention core (materialises the N x N scores;
  skipped, printed ``oom?``, where its estimated memory exceeds the card's).

FLOPs are 4*B*H*N^2*D for the forward (two matmuls), halved when causal, x2.5 for the
backward (five matmuls). Times are medians of ``triton.testing.do_bench``; the backward is
timed alone (``out.backward`` on a retained graph). The last columns are apt / sdpa-flash.
The table also goes to ``--out`` (default ``$OUT`` when set) as markdown. Without CUDA the
script says so and exits 0.

``--compile-report [ARCH]`` needs no GPU: it compiles every autotuning config of every
kernel for ``sm_ARCH`` (default 90) and prints registers, stack (spill) bytes, shared memory
and whether wgmma is used (run it without ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

PROVIDERS = ("apt", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "naive")


def _attention_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name == "apt":
        from apt.kernels.flash_attention import flash_attention

        return lambda q, k, v, causal: flash_attention(q, k, v, causal=causal)
    if name == "naive":
        from apt.providers.attention import NaiveCausalSelfAttention

        layer = NaiveCausalSelfAttention(64, 1)

        def naive(q, k, v, causal):
            if causal:
                return layer.attend(q, k, v)
            att = torch.softmax(((q @ k.transpose(-2, -1)) * q.size(-1) ** -0.5).float(), dim=-1)
            return att.to(v.dtype) @ v

        return naive
    backend = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
               "sdpa-cudnn": getattr(SDPBackend, "CUDNN_ATTENTION", None)}[name]

    def sdpa(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return sdpa


def _flops(batch: int, heads: int, seq: int, head_dim: int, causal: bool) -> float:
    return 4.0 * batch * heads * seq * seq * head_dim * (0.5 if causal else 1.0)


def _bench_one(name: str, batch: int, heads: int, seq: int, head_dim: int, causal: bool) -> tuple[str, str]:
    from triton.testing import do_bench

    if name == "naive":
        # scores (fp32 + bf16 copies) and their gradients: ~12 bytes per score, x2 for autograd
        need = 24 * batch * heads * seq * seq
        if need > 0.8 * torch.cuda.get_device_properties(0).total_memory:
            return "oom?", "oom?"
    fn = _attention_fn(name)
    q, k, v = (torch.randn(batch, heads, seq, head_dim, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True) for _ in range(3))
    do = torch.randn_like(q)
    flops = _flops(batch, heads, seq, head_dim, causal)
    try:
        out = fn(q, k, v, causal)
        fwd_ms = do_bench(lambda: fn(q, k, v, causal), warmup=25, rep=100, return_mode="median")
        bwd_ms = do_bench(lambda: out.backward(do, retain_graph=True), warmup=25, rep=100,
                          grad_to_none=[q, k, v], return_mode="median")
    except torch.OutOfMemoryError:
        return "oom", "oom"
    except RuntimeError as exc:  # a backend that cannot run this shape on this GPU
        print(f"  {name} D={head_dim} N={seq} causal={causal}: {str(exc).splitlines()[0][:120]}",
              file=sys.stderr)
        return "n/a", "n/a"
    finally:
        torch.cuda.empty_cache()
    return f"{flops / fwd_ms * 1e-9:.0f}", f"{2.5 * flops / bwd_ms * 1e-9:.0f}"


def _ratio(a: str, b: str) -> str:
    try:
        return f"{float(a) / float(b):.2f}x"
    except (ValueError, ZeroDivisionError):
        return "-"


def _compile_report(arch: int, head_dims: list[int]) -> int:
    from apt.kernels.flash_compile import KERNELS, compile_kernel

    print(f"sm_{arch}, bf16, non-causal: registers / stack bytes (spills) / shared bytes / wgmma "
          "as the JIT builds them for contiguous inputs with N a multiple of 16; the last column "
          "is the stack of the general build (runtime strides, any N)")
    print("| D | kernel | tile warps stages | registers | stack | shared | wgmma | general stack |\n"
          "|---|---|---|---|---|---|---|---|")
    for head_dim in head_dims:
        for name, (_, configs) in KERNELS.items():
            for config in configs:
                r = compile_kernel(name, config, arch=arch, head_dim=head_dim)
                g = compile_kernel(name, config, arch=arch, head_dim=head_dim, specialize=False)
                print(f"| {head_dim} | {r.kernel} | {r.config} | {r.registers} | {r.stack_bytes} | "
                      f"{r.shared_bytes} | {r.uses_wgmma} | {g.stack_bytes} |", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--tokens", type=int, default=16384, help="B*N")
    parser.add_argument("--width", type=int, default=2048, help="H*D")
    parser.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for bench_attention.md")
    parser.add_argument("--compile-report", type=int, nargs="?", const=90, metavar="ARCH",
                        help="no GPU needed: per-config registers/spills for sm_ARCH (default 90)")
    args = parser.parse_args(argv)
    if args.compile_report is not None:
        return _compile_report(args.compile_report, args.head_dims)

    if not torch.cuda.is_available():
        print("bench_attention: no CUDA GPU on this machine; nothing measured.")
        return 0
    import triton

    card = torch.cuda.get_device_name(0)
    header = (f"{card}, torch {torch.__version__}, triton {triton.__version__}, bf16, "
              f"B*N={args.tokens}, H*D={args.width}; TFLOP/s (fwd / bwd)")
    cols = ["D", "N", "B", "H", "causal"] + [f"{p} fwd" for p in args.providers] \
        + [f"{p} bwd" for p in args.providers] + ["apt/sdpa-flash fwd", "apt/sdpa-flash bwd"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    print("\n".join(lines), flush=True)
    out_path = Path(args.out) / "bench_attention.md" if args.out else None
    for head_dim in args.head_dims:
        heads = args.width // head_dim
        for causal in (False, True):
            for seq in args.seq_lens:
                batch = max(1, args.tokens // seq)
                results = {p: _bench_one(p, batch, heads, seq, head_dim, causal) for p in args.providers}
                row = [str(head_dim), str(seq), str(batch), str(heads), str(causal)]
                row += [results[p][0] for p in args.providers] + [results[p][1] for p in args.providers]
                if "apt" in results and "sdpa-flash" in results:
                    row += [_ratio(results["apt"][0], results["sdpa-flash"][0]),
                            _ratio(results["apt"][1], results["sdpa-flash"][1])]
                else:
                    row += ["-", "-"]
                lines.append("| " + " | ".join(row) + " |")
                print(lines[-1], flush=True)
                if out_path is not None:
                    out_path.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
