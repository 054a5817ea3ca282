"""Dense vs ``moe`` vs ``align`` vs ``moe+align`` at equal steps on tiny-shakespeare.

    python scripts/bench_moe_align.py                 # reference config, 2000 steps
    python scripts/bench_moe_align.py --steps 40      # a quick check that everything runs

Every variant is ``apt.app.run`` on ``experiment=shakespeare_ref`` (char-level, 4 layers x
4 heads x 128 dims, block 64, batch 12, AdamW lr 1e-3, warmup/cosine) with the same seed,
the same batches and the same number of optimizer steps, split into 4 epochs so the
schedule can switch plugins by epoch as ``schedule=moe_align`` does:

- ``dense``: no plugins;
- ``moe``: upcycled to 4 experts (top-2) at the start of epoch 2, router temperature
  1.5 -> 0.8 over the epochs;
- ``align``: EMA-teacher KL alignment from epoch 3;
- ``moe+align``: both, i.e. ``plugin=[moe,align] schedule=moe_align``.

Reported: final val loss (``eval_batches`` fixed batches), best val loss, training wall time
(config in hand to final val loss, data cache warm), ms per step, and the parameter count
at the end (upcycling multiplies the FFN parameters). One table, markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
ROUTE_TEMP = "{start: 1.5, end: 0.8, by: epoch}"
VARIANTS: dict[str, list[str]] = {
    "dense": ["plugin=[]", "schedule=default"],
    "moe": ["plugin=[moe]", "schedule=default", "+schedule.enable_moe_at_epoch=2",
            f"+schedule.route_temp={ROUTE_TEMP}"],
    "align": ["plugin=[align]", "schedule=default", "+schedule.enable_align_at_epoch=3"],
    "moe+align": ["plugin=[moe,align]", "schedule=moe_align"],
}


def compose(overrides: list[str]):
    from apt.compose import compose as apt_compose

    return apt_compose(overrides)


def final_params(out: Path) -> int:
    """Distinct parameter elements in the last checkpoint (tied weights once)."""
    from apt.training.checkpoint import CheckpointManager

    found = CheckpointManager(out / "checkpoints").load_latest()
    if found is None:
        return 0
    seen, total = set(), 0
    for tensor in found[1]["model"].values():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.is_floating_point() and key not in seen:
            seen.add(key)
            total += tensor.numel()
    return total


def run_variant(name: str, common: list[str]) -> dict:
    from apt.app import run

    cfg = compose([*common, *VARIANTS[name]])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        val = run(cfg, out_dir=out)
        wall = time.perf_counter() - t0
        summary = json.loads((out / "summary.json").read_text())
        params = final_params(out)
    return {"variant": name, "val": val, "best": summary["best_val_loss"], "wall": wall,
            "ms_step": 1e3 * summary["train_time_s"] / max(summary["step"], 1), "steps": summary["step"],
            "params": params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps per variant (4 epochs)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="tiny-shakespeare text file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--eval-batches", type=int, default=50)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    if args.steps % 4:
        parser.error(f"--steps must be a multiple of 4 (4 epochs of equal length), got {args.steps}")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    common = [
        "experiment=shakespeare_ref", f"data.path={Path(args.data).resolve()}", f"seed={args.seed}",
        f"trainer.max_steps={args.steps}", "trainer.max_epochs=4", f"trainer.steps_per_epoch={args.steps // 4}",
        f"trainer.eval_every={args.steps}", f"trainer.eval_batches={args.eval_batches}",
        f"trainer.log_every={max(1, args.steps // 20)}", f"trainer.device={args.device}",
        "trainer.progress=false", "trainer.plot=false",
    ]
    if args.threads:
        common.append(f"trainer.threads={args.threads}")
    compose(common)  # fail on a bad override before the first run
    results = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.append(run_variant(name, common))
    dense = next((r for r in results if r["variant"] == "dense"), None)
    print(f"\n{args.steps} steps (4 epochs of {args.steps // 4}), seed {args.seed}, device {args.device}\n")
    print("| variant | final val loss | best val loss | wall s | ms/step | time vs dense | params |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        rel = f"{r['wall'] / dense['wall']:.2f}x" if dense else "-"
        print(f"| {r['variant']} | {r['val']:.4f} | {r['best']:.4f} | {r['wall']:.1f} | {r['ms_step']:.1f} "
              f"| {rel} | {r['params'] / 1e6:.2f}M |")


if __name__ == "__main__":
    main()
