"""Data-parallel training over several processes, started by ``torchrun``.

``torchrun --nproc_per_node=N train.py ...`` starts N copies of train.py with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment.
:func:`setup` turns that into a process group (gloo on CPU, NCCL on CUDA) and a
:class:`DistContext`; without those variables it returns the single-process context, whose
helpers are identity functions, so an ordinary run pays nothing.

What every rank does the same way: build the model from the same seed, read the same
checkpoint, fire the same plugin events, take the same number of steps. What differs:
each rank trains on its own columns of every global batch (see
:class:`apt.data.loader.BatchLoader`), and rank 0 alone writes files and logs progress.

Strategies (``trainer.strategy``):

- ``ddp``: :class:`torch.nn.parallel.DistributedDataParallel` averages gradients during
  backward. :class:`ParallelModel` builds the wrapper lazily and rebuilds it when the model's
  parameters change (a plugin such as ``moe`` replaced layers), so plugins keep working on
  the plain model.
- ``fsdp``: :class:`ShardedModel` shards parameters, gradients and optimizer state across
  ranks with ``torch.distributed.fsdp.fully_shard`` (FSDP2; works with gloo on CPU and
  NCCL on CUDA). The layout is fixed when sharding, so plugins that replace layers mid-run
  (``moe``) are rejected; checkpoints are gathered into ordinary full state dicts.

Importing this module does not import torch: train.py asks :func:`worker_hydra_overrides`
before Hydra composes, and ``train.py --cfg job`` / ``--help`` stay fast.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "STRATEGIES",
    "DistContext",
    "ParallelModel",
    "ShardedModel",
    "backend_for",
    "env_world_size",
    "exit_worker",
    "leave_by_exit",
    "no_sync",
    "setup",
    "teardown",
    "worker_hydra_overrides",
]

log = logging.getLogger(__name__)

STRATEGIES = ("ddp", "fsdp")

#: Set by :func:`leave_by_exit`: a finished run keeps its process group, the process ends next.
_LEAVE_BY_EXIT = False


def env_world_size(env: Mapping[str, str] | None = None) -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when absent): > 1 means a distributed run."""
    return int((os.environ if env is None else env).get("WORLD_SIZE", "1"))


def worker_hydra_overrides(env: Mapping[str, str] | None = None) -> list[str]:
    """Hydra overrides that keep ranks other than 0 from writing a run directory.

    Every rank runs train.py, so every rank's Hydra would create ``outputs/<date>/<time>``
    (possibly a different second than rank 0's) with its ``.hydra/`` and log file. Ranks
    > 0 instead "run" in the current directory, write no ``.hydra/`` and log to stdout;
    they receive rank 0's run directory from :meth:`DistContext.broadcast_object`.
    """
    env = os.environ if env is None else env
    if env_world_size(env) <= 1 or int(env.get("RANK", "0")) == 0:
        return []
    return ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]


def backend_for(device: str | torch.device) -> str:
    """NCCL for CUDA devices, gloo otherwise (CPU)."""
    import torch

    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, and collectives that are no-ops alone."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    strategy: str = "ddp"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes metrics, plots, checkpoints and logs."""
        return self.rank == 0

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over ranks (a new float32 tensor; ``value`` itself alone)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        out = value.detach().float().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world_size

    def any_true(self, flag: bool, device: str | torch.device = "cpu") -> bool:
        """Whether ``flag`` is true on any rank (so all ranks stop at the same step)."""
        if not self.enabled:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable values only)."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


def setup(device: str, strategy: str = "ddp", timeout_s: float = 1800.0) -> DistContext:
    """Join the process group torchrun describes, or return the single-process context.

    ``device`` is the resolved trainer device (``cpu``, ``cuda``, ...): it picks the
    backend, and on CUDA each rank uses ``cuda:LOCAL_RANK``. ``strategy`` is checked here
    so that a bad value fails before the group is joined.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"trainer.strategy={strategy!r} is not one of {list(STRATEGIES)}")
    world = env_world_size()
    if world <= 1:
        return DistContext(strategy=strategy)
    import torch
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    ctx = DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend, strategy=strategy)
    if not ctx.is_main:  # rank 0 alone reports progress; warnings and errors still show
        for name in ("", "apt"):
            logging.getLogger(name).setLevel(logging.WARNING)
    log.info("distributed: %d processes, backend %s, strategy %s", world, backend, strategy)
    return ctx


def teardown(ctx: DistContext, *, finished: bool = False) -> None:
    """Leave the process group.

    After a run that ``finished``, every rank waits at a barrier first, so no rank leaves
    while a peer is still in a collective. A process that ends right after the run
    (:func:`leave_by_exit`, set by train.py under torchrun) stops there: it keeps the group
    and :func:`exit_worker` ends it, so no C++ teardown runs at all (see there why). Otherwise
    the group is destroyed, so a library caller can start another. A rank leaving on an
    exception skips the barrier and exits at once (so torchrun stops the others) instead of
    waiting for peers that are blocked in another collective.
    """
    import torch.distributed as dist

    if ctx.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
            if _LEAVE_BY_EXIT:
                return
        dist.destroy_process_group()


def leave_by_exit(enabled: bool = True) -> None:
    """Declare that this process ends when its run finishes (train.py under torchrun).

    :func:`teardown` then leaves the process group to :func:`exit_worker` after the final
    barrier instead of destroying it.
    """
    global _LEAVE_BY_EXIT
    _LEAVE_BY_EXIT = enabled


def exit_worker(status: int = 0) -> NoReturn:
    """End a torchrun worker whose run is complete, skipping the interpreter's finalization.

    Python's ``atexit`` handlers run (trackers, Hydra), logging and the standard streams are
    flushed and closed, then ``os._exit``: no C++ static destructors and no garbage
    collection of torch's process-group objects. That teardown, after a run whose outputs
    were all written, was seen to abort a rank now and then in CI ("terminate called without
    an active exception", SIGABRT, with a barrier before ``destroy_process_group``), and
    torchrun then reports the whole launch as failed. Every collective has completed at the
    final barrier, so nothing a peer waits for is lost by leaving this way.
    """
    import atexit

    try:
        atexit._run_exitfuncs()
        logging.shutdown()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)


class ParallelModel:
    """Callable forward module for ``model`` under DDP, rebuilt when its parameters change.

    The trainer and its plugins keep the plain ``model`` (``trainer.model``): state dicts
    have no ``module.`` prefix, so checkpoints load in a single process, and a plugin that
    swaps layers (``moe`` upcycling) edits the real module. DDP registers its gradient
    hooks on the parameters it saw when built, so a changed parameter set (checked on
    every call, a cheap walk over the parameters) builds a new wrapper, which also
    broadcasts rank 0's weights. ``compile`` applies ``torch.compile`` over the wrapper.
    """

    def __init__(self, model: nn.Module, ctx: DistContext, *, compile: bool = False) -> None:
        self.model = model
        self.ctx = ctx
        self.compile = compile
        self._key: tuple[int, ...] | None = None
        self._ddp: nn.Module | None = None
        self._forward: Any = None
        self.rebuilds = 0

    def wrapped(self) -> Any:
        """The current forward module (built, or rebuilt after a layout change)."""
        key = tuple(id(p) for p in self.model.parameters() if p.requires_grad)
        if key != self._key:
            import torch
            from torch.nn.parallel import DistributedDataParallel as DDP

            if self._key is not None:
                log.info("model parameters changed: rebuilding the DDP wrapper")
            device = next(self.model.parameters()).device
            from apt.modeling.auxiliary import has_unused_parameters

            self._ddp = DDP(self.model, device_ids=[device.index] if device.type == "cuda" else None,
                            forward_sync_buffers=False, find_unused_parameters=has_unused_parameters(self.model))
            self._forward = torch.compile(self._ddp) if self.compile else self._ddp
            self._key = key
            self.rebuilds += 1
        return self._forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.wrapped()(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate gradients locally (no all-reduce) for a non-final micro-batch."""
        self.wrapped()
        assert self._ddp is not None
        with self._ddp.no_sync():
            yield


class ShardedModel:
    """Callable forward module for ``model`` sharded in place with FSDP2 (``fully_shard``).

    Each transformer block is one FSDP unit (all-gathered just before it runs), the rest of
    the model the root unit. Sharding replaces every parameter by a ``DTensor`` shard, so
    ``optimizer`` (built from the plain parameters, no step taken yet) is pointed at the
    shards in place, with its groups unchanged. Build it after ``on_model_init``: parameters
    a plugin adds later are not sharded. Checkpoints go through :meth:`full_state_dict` and
    :meth:`load_full_state_dict`, in the single-process format (they load without FSDP).
    """

    def __init__(self, model: nn.Module, ctx: DistContext, optimizer: Any, *, compile: bool = False) -> None:
        import torch
        from torch.distributed.fsdp import fully_shard

        if optimizer.state:
            raise RuntimeError("ShardedModel: shard the model before the first optimizer step")
        names = {id(p): n for n, p in model.named_parameters()}
        for block in getattr(model, "blocks", []):
            fully_shard(block)
        fully_shard(model)
        sharded = dict(model.named_parameters())
        for group in optimizer.param_groups:
            group["params"] = [sharded[names[id(p)]] for p in group["params"]]
        self.model, self.ctx = model, ctx
        self._forward = torch.compile(model) if compile else model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._forward(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Keep this micro-batch's gradients unsharded and unreduced (accumulation)."""
        self.model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.model.set_requires_gradient_sync(True)

    def _fqns(self, optimizer: Any) -> list[str]:
        """Names of the optimizer's parameters in its own order (index i <-> name)."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]

    def full_state_dict(self, optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Full model and optimizer state dicts on rank 0 (empty elsewhere). Every rank must call.

        The optimizer state comes back keyed by parameter index, as ``optimizer.state_dict()``
        of a single-process run, so the checkpoint resumes with or without FSDP.
        """
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd = get_model_state_dict(self.model, options=options)
        optim_sd = get_optimizer_state_dict(self.model, optimizer, options=options)
        if not self.ctx.is_main:
            return {}, {}
        index = {n: i for i, n in enumerate(self._fqns(optimizer))}
        return model_sd, {
            "state": {index[n]: v for n, v in optim_sd["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in optim_sd["param_groups"]],
        }

    def load_full_state_dict(self, optimizer: Any, model_sd: dict[str, Any], optim_sd: dict[str, Any]) -> None:
        """Load full (single-process format) state dicts into the shards; every rank passes them."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, model_sd, options=options)
        names = self._fqns(optimizer)
        by_name = {
            "state": {names[int(i)]: v for i, v in optim_sd["state"].items()},
            "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in optim_sd["param_groups"]],
        }
        set_optimizer_state_dict(self.model, optimizer, by_name, options=options)


def no_sync(forward_model: Any, skip: bool) -> Any:
    """``forward_model.no_sync()`` when ``skip`` and it has one, else a null context."""
    if skip and hasattr(forward_model, "no_sync"):
        return forward_model.no_sync()
    return contextlib.nullcontext()
