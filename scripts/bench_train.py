"""Training-loop overhead and time-to-quality on tiny-shakespeare.

    python scripts/bench_train.py                  # reference config, 2000 steps, (a) vs (b)
    python scripts/bench_train.py --preset         # also experiment=shakespeare_fast
    python scripts/bench_train.py --steps 100 --preset --preset-steps 50   # quick check

(a) APT: ``apt.app.run`` on ``experiment=shakespeare_ref`` with plugins
    [logging, gradient_clipping, early_stopping] (everything a real run does: validation,
    metrics.csv, events, final checkpoint).
(b) a minimal hand-written loop over the same model (same init), the same batches, the same
    AdamW groups and the same warmup/cosine lr, with the same gradient clipping and the same
    evaluations, in this process.
Both are timed from "config in hand" to "final val loss known" (data cache is warm).
The two runs compute the same thing, so on CPU their val losses agree (a check that (a)
adds nothing to the math). Prints one table and the ratio (a)/(b).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
PLUGINS = "plugin=[logging,gradient_clipping,early_stopping]"


def compose(overrides: list[str]):
    from apt.compose import compose as apt_compose

    return apt_compose(overrides)


def run_apt(overrides: list[str]) -> dict:
    import json

    from apt.app import run

    cfg = compose(overrides)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        val = run(cfg, out_dir=out)
        wall = time.perf_counter() - t0
        summary = json.loads((Path(out) / "summary.json").read_text())
    return {"val": val, "wall": wall, "steps": summary["step"], "ms_step": 1e3 * summary["train_time_s"] / summary["step"]}


def run_minimal(overrides: list[str]) -> dict:
    """The hand-written loop: what a researcher would write without APT."""
    import numpy as np
    import torch

    from apt.build import model_config
    from apt.checks import check_run
    from apt.data import load_dataset
    from apt.data.loader import BatchLoader
    from apt.modeling import ModelBuilder

    cfg = compose(overrides)
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=True)
    t0 = time.perf_counter()
    seed = c["seed"]
    torch.manual_seed(seed)
    np.random.seed(seed)
    data = load_dataset(c["data"])
    B, T = c["data"]["batch_size"], c["data"]["block_size"]
    train = BatchLoader(data.train, batch_size=B, block_size=T, seed=seed)
    checked = check_run(cfg)  # the run's own providers and model config, built without the app
    checked.plugins.teardown_all()
    model = ModelBuilder(model_config(checked.config, data.vocab_size)).build_model()
    o = c["optim"]
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt_kw = {k: v for k, v in o["optimizer"].items() if not k.startswith("_")}
    lr_max = opt_kw.pop("lr")
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr_max, fused=True, **opt_kw)
    tr = c["trainer"]
    steps, warmup, min_ratio = tr["max_steps"], o["warmup_steps"], o["min_lr_ratio"]
    clip = c["plugin"]["gradient_clipping"]["max_norm"]

    def lr_at(s: int) -> float:
        if s < warmup:
            return lr_max * ((s + 1) / warmup)
        p = min(1.0, (s - warmup) / max(1, steps - warmup))
        return lr_max * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p)))

    targets = len(data.val) - 1
    full = targets // T

    @torch.no_grad()
    def evaluate(k: int | None = None) -> float:
        """Mean loss over k full val windows spread evenly, or over every target (k=None)."""
        model.eval()
        picks = range(full) if k is None else [(i * full) // k for i in range(k)]
        rows = [(w * T, T) for w in picks]
        if k is None and targets % T:  # the short last window
            rows.append((full * T, targets % T))
        total, count = 0.0, 0
        for i in range(0, len(rows), B):
            for n in sorted({n for _, n in rows[i:i + B]}):
                starts = np.array([s for s, m in rows[i:i + B] if m == n])
                chunk = torch.from_numpy(np.asarray(data.val)[starts[:, None] + np.arange(n + 1)].astype(np.int64))
                total += float(model(chunk[:, :-1], chunk[:, 1:])[1]) * chunk[:, 1:].numel()
                count += chunk[:, 1:].numel()
        model.train()
        return total / count

    per_epoch = train.batches_per_epoch
    t_loop = time.perf_counter()
    loss_val = math.nan
    for s in range(steps):
        epoch, i = divmod(s, per_epoch)
        if i == 0:
            starts = train.epoch_starts(epoch + 1)
        for g in opt.param_groups:
            g["lr"] = lr_at(s)
        _, loss = model(*train.batch(starts[i]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (s + 1) % tr["eval_every"] == 0 and s + 1 < steps:
            loss_val = evaluate(tr["eval_batches"] * B)
    t_steps = time.perf_counter()  # (a)'s train_time_s leaves the final evaluation out too
    loss_val = evaluate()  # the final evaluation: the whole val split
    t1 = time.perf_counter()
    return {"val": loss_val, "wall": t1 - t0, "steps": steps, "ms_step": 1e3 * (t_steps - t_loop) / steps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--preset", action="store_true", help="also run experiment=shakespeare_fast")
    ap.add_argument("--preset-only", action="store_true")
    ap.add_argument("--preset-steps", type=int, default=None, help="shorten the preset (quick checks)")
    ap.add_argument("--target", type=float, default=1.886, help="val loss the preset must reach")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data).resolve()
    if not data.is_file():
        print(f"error: {data} not found (give --data)", file=sys.stderr)
        return 2
    import logging

    logging.basicConfig(level=logging.WARNING)
    common = [f"data.path={data}", "trainer.progress=false", "trainer.plot=false",
              "trainer.eval_on_epoch_end=false", "trainer.device=cpu"]
    ref = ["experiment=shakespeare_ref", f"trainer.max_steps={args.steps}", *common]
    rows = []
    if not args.preset_only:
        run_apt(ref[:1] + [*common, "trainer.max_steps=20", PLUGINS])  # warm caches, lazy imports
        b = run_minimal([*ref, PLUGINS])
        a = run_apt([*ref, PLUGINS])
        rows += [("(a) APT trainer + 3 plugins", a), ("(b) minimal loop", b)]
    if args.preset or args.preset_only:
        fast = ["experiment=shakespeare_fast", *common]
        if args.preset_steps:
            fast += [f"trainer.max_steps={args.preset_steps}", f"trainer.eval_every={args.preset_steps}"]
        rows.append(("preset shakespeare_fast", run_apt(fast)))
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, data {data.name}")
    print(f"{'run':32s} {'steps':>6s} {'val loss':>9s} {'wall s':>8s} {'ms/step':>8s}")
    for name, r in rows:
        print(f"{name:32s} {r['steps']:6d} {r['val']:9.4f} {r['wall']:8.1f} {r['ms_step']:8.2f}")
    if not args.preset_only:
        print(f"ratio (a)/(b): wall {a['wall'] / b['wall']:.3f}, ms/step {a['ms_step'] / b['ms_step']:.3f}; "
              f"|val(a) - val(b)| = {abs(a['val'] - b['val']):.2e}")
    if args.preset or args.preset_only:
        p = rows[-1][1]
        print(f"preset: val {p['val']:.4f} (target {args.target}) in {p['wall']:.1f}s "
              f"-> {'reached' if p['val'] <= args.target else 'NOT reached'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
