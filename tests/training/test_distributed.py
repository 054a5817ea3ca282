"""Data-parallel training: 2 CPU processes under torchrun (gloo) against one process.

The end-to-end test launches the real ``torchrun --nproc_per_node=2 train.py`` with DDP
twice (8 steps, then a resume to 16), then with FSDP from that checkpoint to step 20, and
a single-process ``train.py`` with the same global batch (per-rank ``data.batch_size=2`` x
2 ranks = ``data.batch_size=4``), all with gradient accumulation. Asserted: the loss falls;
after every backward the DDP gradients are identical on both ranks (a recording plugin
dumps them); only rank 0 wrote outputs; checkpoints are plain single-process ones; and the
DDP and FSDP losses match the single-process ones within LOSS_TOL.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from apt.training.checkpoint import load_checkpoint
from apt.training.distributed import (
    DistContext,
    ParallelModel,
    no_sync,
    setup,
    worker_hydra_overrides,
)

REPO = Path(__file__).resolve().parents[2]

# DDP averages per-rank gradients where one process takes the gradient of the whole batch:
# the same sums in another order. Over 16 steps the losses (2.7 falling to ~0.3) stay this close.
LOSS_TOL = 1e-4

COMMON = [
    "model=tiny", "data=synthetic", "trainer=debug", "data.num_tokens=4000", "trainer.grad_accum=2",
    "trainer.log_every=1", "trainer.eval_every=4", "trainer.eval_batches=2", "trainer.threads=1",
    "optim.warmup_steps=2", "optim.decay=constant", "optim.optimizer.lr=1e-2", "data.task=cycle", "seed=3",
]

RECORDER = '''
import os
import torch
from apt.plugins import Plugin


class GradRecorder(Plugin):
    """Dumps every step's flat gradient and the final weights of this rank."""

    def __init__(self, config=None):
        super().__init__(config)
        self.grads = {}

    def on_backward_end(self, model=None, step=None, **kwargs):
        flat = [p.grad.detach().flatten() for p in model.parameters() if p.grad is not None]
        self.grads[step] = torch.cat(flat).clone()

    def on_train_end(self, model=None, **kwargs):
        params = torch.cat([p.detach().flatten() for p in model.parameters()])
        path = os.path.join(self.config["dump_dir"], f"{self.config['label']}-rank{os.environ['RANK']}.pt")
        torch.save({"grads": self.grads, "params": params}, path)
'''


def _run(args: list[str], cwd: Path, env: dict[str, str], nproc: int = 0) -> None:
    launcher = [sys.executable]
    if nproc:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    proc = subprocess.run([*launcher, str(REPO / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _losses(rows: list[dict[str, str]], key: str) -> dict[int, float]:
    return {int(r["step"]): float(r[key]) for r in rows if r.get(key)}


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path: Path) -> None:
    (tmp_path / "gradrec.py").write_text(textwrap.dedent(RECORDER), encoding="utf-8")
    grads_dir = tmp_path / "grads"
    grads_dir.mkdir()
    launch_dir = tmp_path / "launch"
    launch_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "OMP_NUM_THREADS": "1",
           "APT_CACHE_DIR": str(tmp_path / "cache"), "MPLBACKEND": "Agg"}
    ddp_dir = launch_dir / "ddp"

    def recorder(label: str) -> str:
        return f"+plugin.gradrec={{_target_:gradrec.GradRecorder,dump_dir:'{grads_dir}',label:{label}}}"

    ddp = [*COMMON, "data.batch_size=2", f"hydra.run.dir={ddp_dir}", "trainer.keep_last=5"]
    _run([*ddp, "trainer.max_steps=8", recorder("a")], launch_dir, env, nproc=2)
    _run([*ddp, "trainer.max_steps=16", "trainer.resume=true", recorder("b")], launch_dir, env, nproc=2)
    fsdp_dir = launch_dir / "fsdp"
    _run([*COMMON, "data.batch_size=2", f"hydra.run.dir={fsdp_dir}", "trainer.strategy=fsdp", "trainer.max_steps=20",
          f"ckpt_path={ddp_dir / 'checkpoints' / 'step-00000016.pt'}"], launch_dir, env, nproc=2)
    single_dir = tmp_path / "single"
    _run([*COMMON, "data.batch_size=4", "trainer.max_steps=20", "trainer.checkpoint_every=16",
          f"hydra.run.dir={single_dir}"], tmp_path, env)

    # rank 0 alone wrote: one run directory each, one metrics row per step, no stray Hydra dirs
    assert sorted(p.name for p in launch_dir.iterdir()) == ["ddp", "fsdp"]
    rows = _rows(ddp_dir)
    assert [int(r["step"]) for r in rows] == list(range(1, 17))
    assert (ddp_dir / ".hydra" / "config.yaml").is_file() and (ddp_dir / "summary.json").is_file()
    # the workers end by exit_worker (os._exit): rank 0's log still has its last line
    assert "summary: params" in (ddp_dir / "train.log").read_text(encoding="utf-8").splitlines()[-1]

    # training proceeds, and resumes where it stopped (steps 9.. came from the second launch)
    train = _losses(rows, "train_loss")
    assert np.mean([train[s] for s in range(13, 17)]) < np.mean([train[s] for s in range(1, 5)]) - 0.5

    # gradients in sync on every step, and the weights at the end
    for label, steps in (("a", range(1, 9)), ("b", range(9, 17))):
        r0 = torch.load(grads_dir / f"{label}-rank0.pt")
        r1 = torch.load(grads_dir / f"{label}-rank1.pt")
        assert sorted(r0["grads"]) == list(steps)
        for step in steps:
            assert r0["grads"][step].abs().sum() > 0
            torch.testing.assert_close(r0["grads"][step], r1["grads"][step], rtol=0, atol=0)
        torch.testing.assert_close(r0["params"], r1["params"], rtol=0, atol=0)

    # the same global batch in one process: matching losses (FSDP rows 1-16 are DDP's, restored)
    single = _rows(single_dir)
    fsdp_rows = _rows(fsdp_dir)
    assert [int(r["step"]) for r in fsdp_rows] == list(range(1, 21))
    for key in ("train_loss", "val_loss"):
        a, b, c = _losses(rows, key), _losses(single, key), _losses(fsdp_rows, key)
        assert a.keys() | c.keys() == b.keys() and len(c) > len(a) >= 4
        if key == "val_loss":  # a run's last evaluation (DDP's steps 8 and 16) scores the whole
            # split, periodic ones a subset: compare evaluations of the same windows
            same = {s for s, n in _losses(single, "val_tokens").items()
                    if {**_losses(rows, "val_tokens"), **_losses(fsdp_rows, "val_tokens")}[s] == n}
            assert {4, 12, 20} <= same  # periodic subsets, and step 20: the whole split everywhere
            b = {s: v for s, v in b.items() if s in same}
        worst = max(abs(c.get(s, a.get(s)) - b[s]) for s in b)
        assert worst < LOSS_TOL, f"{key}: DDP/FSDP and single-process differ by {worst:.2e}"

    # checkpoints are plain single-process ones (no DDP prefix, FSDP gathered, optimizer
    # keyed by index), close to the single run's
    for run_dir, step in ((ddp_dir, 16), (fsdp_dir, 20)):
        ours = load_checkpoint(run_dir / "checkpoints" / f"step-{step:08d}.pt")
        theirs = load_checkpoint(single_dir / "checkpoints" / f"step-{step:08d}.pt")
        assert ours["model"].keys() == theirs["model"].keys()
        for name, value in ours["model"].items():
            torch.testing.assert_close(value, theirs["model"][name], rtol=1e-3, atol=1e-4)
        assert [g["params"] for g in ours["optimizer"]["param_groups"]] == \
            [g["params"] for g in theirs["optimizer"]["param_groups"]]
        for i, state in theirs["optimizer"]["state"].items():
            torch.testing.assert_close(ours["optimizer"]["state"][i]["exp_avg"], state["exp_avg"],
                                       rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_ddp_moe_upcycle_mid_run_keeps_ranks_in_sync(tmp_path: Path) -> None:
    """The moe plugin swaps FFNs at step 3: the DDP wrapper is rebuilt, gradients stay equal."""
    (tmp_path / "gradrec.py").write_text(textwrap.dedent(RECORDER), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "OMP_NUM_THREADS": "1",
           "APT_CACHE_DIR": str(tmp_path / "cache"), "MPLBACKEND": "Agg"}
    run_dir = tmp_path / "moe"
    _run([*COMMON, "data.batch_size=2", "trainer.max_steps=6", "plugin=[moe]", "+schedule.enable_moe_at_step=3",
          f"hydra.run.dir={run_dir}",
          f"+plugin.gradrec={{_target_:gradrec.GradRecorder,dump_dir:'{tmp_path}',label:moe}}"],
         tmp_path, env, nproc=2)
    r0, r1 = (torch.load(tmp_path / f"moe-rank{r}.pt") for r in (0, 1))
    assert r0["grads"][3].numel() > r0["grads"][2].numel()  # experts and routers from step 3
    for step in range(1, 7):
        torch.testing.assert_close(r0["grads"][step], r1["grads"][step], rtol=0, atol=0)
    torch.testing.assert_close(r0["params"], r1["params"], rtol=0, atol=0)
    state = load_checkpoint(run_dir / "checkpoints" / "step-00000006.pt")["model"]
    assert any(".experts." in name for name in state) and not any(n.startswith("module.") for n in state)


def test_strategy_checks(cfg_factory) -> None:
    from apt.checks import check_run
    from apt.core.errors import ConfigProblems

    def problems(*overrides: str) -> list[str]:
        try:
            check_run(cfg_factory(*overrides)).plugins.teardown_all()
        except ConfigProblems as exc:
            return exc.problems
        return []

    assert problems("trainer.strategy=fsdp") == []
    assert any("trainer.strategy='zero' is not one of ['ddp', 'fsdp']" in p for p in problems("trainer.strategy=zero"))
    assert any("fsdp cannot run plugin 'moe'" in p for p in problems("trainer.strategy=fsdp", "plugin=[moe]"))
    assert problems("plugin=[moe]") == []  # DDP rebuilds its wrapper after the upcycle


def test_single_process_context_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = setup("cpu")
    assert not ctx.enabled and ctx.is_main and ctx.world_size == 1
    t = torch.tensor(3.0)
    assert ctx.all_reduce_mean(t) is t
    assert ctx.any_true(True) and not ctx.any_true(False)
    assert ctx.broadcast_object({"a": 1}) == {"a": 1}
    assert worker_hydra_overrides({}) == []
    assert worker_hydra_overrides({"WORLD_SIZE": "2", "RANK": "0"}) == []
    assert "hydra.output_subdir=null" in worker_hydra_overrides({"WORLD_SIZE": "2", "RANK": "1"})
    model = torch.nn.Linear(2, 2)
    with no_sync(model, skip=True):  # a plain module has no no_sync: nothing happens
        model(torch.ones(1, 2)).sum().backward()
    with pytest.raises(ValueError, match=r"trainer.strategy='zero'.*\['ddp', 'fsdp'\]"):
        setup("cpu", strategy="zero")


class _FakeDist:
    """Records what teardown asks of torch.distributed."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def is_initialized(self) -> bool:
        return True

    def barrier(self) -> None:
        self.calls.append("barrier")

    def destroy_process_group(self) -> None:
        self.calls.append("destroy")


@pytest.mark.parametrize(("finished", "by_exit", "calls"), [
    (True, False, ["barrier", "destroy"]),   # a library caller: the group is gone, another may start
    (True, True, ["barrier"]),               # train.py under torchrun: exit_worker ends the process next
    (False, True, ["destroy"]),              # an exception: no barrier (peers may be stuck elsewhere)
    (False, False, ["destroy"]),
])
def test_teardown_barrier_and_destroy(monkeypatch: pytest.MonkeyPatch, finished: bool, by_exit: bool,
                                      calls: list[str]) -> None:
    import torch.distributed

    from apt.training import distributed

    fake = _FakeDist()
    for name in ("is_initialized", "barrier", "destroy_process_group"):
        monkeypatch.setattr(torch.distributed, name, getattr(fake, name))
    monkeypatch.setattr(distributed, "_LEAVE_BY_EXIT", False)
    distributed.leave_by_exit(by_exit)
    distributed.teardown(DistContext(rank=1, world_size=2), finished=finished)
    assert fake.calls == calls
    fake.calls.clear()
    distributed.teardown(DistContext(), finished=finished)  # one process: nothing to leave
    assert fake.calls == []


def test_exit_worker_runs_atexit_and_flushes_before_it_ends(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import atexit, logging, sys
        from apt.training.distributed import exit_worker
        logging.basicConfig(filename={str(tmp_path / 'run.log')!r}, level=logging.INFO)
        atexit.register(lambda: open({str(tmp_path / 'atexit')!r}, "w").write("ran"))
        logging.getLogger("apt").info("summary: last line")
        print("buffered stdout", end="")
        sys.stderr.write("buffered stderr")
        exit_worker(3)
        print("not reached")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 3
    assert proc.stdout == "buffered stdout" and proc.stderr == "buffered stderr"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "run.log").read_text().endswith("summary: last line\n")


def test_loader_shards_are_the_single_process_batches() -> None:
    from apt.data.loader import BatchLoader

    tokens = np.arange(5000, dtype=np.uint16)
    whole = BatchLoader(tokens, batch_size=6, block_size=8, seed=4)
    shards = [BatchLoader(tokens, batch_size=3, block_size=8, seed=4, rank=r, world_size=2) for r in range(2)]
    assert shards[0].batches_per_epoch == whole.batches_per_epoch
    for epoch in (1, 2):
        joined = np.concatenate([s.epoch_starts(epoch) for s in shards], axis=1)  # (batches, 6)
        np.testing.assert_array_equal(joined, whole.epoch_starts(epoch))
    np.testing.assert_array_equal(np.concatenate([s.fixed_starts(3) for s in shards], axis=1),
                                  whole.fixed_starts(3))
    assert not set(shards[0].epoch_starts(1).ravel()) & set(shards[1].epoch_starts(1).ravel())
    with pytest.raises(ValueError, match=r"batch_size=400 \* 2 processes"):
        BatchLoader(tokens, batch_size=400, block_size=8, rank=1, world_size=2)


def test_parallel_model_rebuilds_after_a_layout_change(tmp_path: Path) -> None:
    """One-process gloo group: the DDP wrapper follows a swapped layer (as moe upcycling does)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ctx = DistContext(rank=0, world_size=2, backend="gloo")  # enabled, over the 1-rank group
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
        par = ParallelModel(model, ctx)
        par(torch.ones(2, 4)).sum().backward()
        assert par.rebuilds == 1
        par(torch.ones(2, 4)).sum().backward()
        assert par.rebuilds == 1  # same parameters: same wrapper
        model[0] = torch.nn.Linear(4, 4)
        out = par(torch.ones(2, 4)).sum()
        out.backward()
        assert par.rebuilds == 2 and model[0].weight.grad is not None
        with par.no_sync():
            par(torch.ones(2, 4)).sum().backward()
    finally:
        dist.destroy_process_group()
