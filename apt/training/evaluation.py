"""Held-out loss you can put in a paper: every window of a split, a standard error, bits per byte.

A split of N tokens has N - 1 targets. They are cut into non-overlapping windows of
``block_size`` targets from the start of the split (window ``w`` reads tokens
``[w*T, w*T + T]`` and predicts the last T of them); the targets left after the last full
window (fewer than T) form one shorter window scored on its own, so a whole-split
evaluation scores every target exactly once, each with the context since its window began.

Uncertainty: the loss is the mean NLL over scored tokens, ``sum_w L_w / sum_w n_w`` (``L_w``
the summed NLL of window ``w``, ``n_w`` its token count). Tokens are not independent: those of
one window are strongly correlated, and so are nearby windows (the same file or scene; on the
default data the window losses' lag-1 autocorrelation is ~0.6 and reaches 0 only after ~200
windows, docs/benchmarks.md), so a per-token or even a per-window standard error claims
several times the precision there is. The standard error is therefore a *batch-means*
estimate: the scored windows, in split order, are cut into ``SE_BLOCKS`` (20) contiguous
blocks of nearly equal size (one window each when there are fewer), and with ``L_k``, ``n_k``
a block's summed NLL and tokens, ``se^2 = K/(K-1) * sum_k (L_k - loss * n_k)^2 / (sum_k n_k)^2``
(the ratio estimator; for equal blocks ``std(block means) / sqrt(K)``). It is the sampling
error of the split as an estimate of the loss on text like it, assuming blocks 1/20 of the
split apart are nearly independent; None for a single window. Two models scored on the same
split differ by far less than their standard errors suggest (the same hard passages count
against both): compare runs paired by seed (``apt summary``), not by overlapping error bars.

A token budget smaller than the split selects ``k = budget // T`` full windows spread evenly
over the split (the same every call). Periodic evaluations during training use a smaller
evenly spread subset *of those windows*, so the final evaluation also yields the periodic
subset's value for free and the best-step bookkeeping stays comparable across steps.

Importing this module does not import torch (config checks use :func:`parse_eval_tokens`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from apt.training.distributed import DistContext

if TYPE_CHECKING:
    import torch

__all__ = ["SE_BLOCKS", "VALIDATION_METRICS", "EvalResult", "EvalWindows", "Evaluator", "RunEvaluation", "WindowLosses", "autocast_dtype",
           "describe", "eval_windows", "parse_eval_tokens"]


#: Contiguous blocks of windows the standard error is computed over (batch means).
SE_BLOCKS = 20
#: The metrics of an evaluation the trainer passes to ``on_validation_end`` (besides step,
#: epoch and final): what a plugin's ``monitor`` option may name.
VALIDATION_METRICS = ("val_loss", "val_loss_se", "val_tokens", "val_bpb", "best_val_loss")


@dataclass(frozen=True)
class EvalResult:
    """One evaluation: mean NLL per token (nats), its standard error, tokens, bits per byte."""

    loss: float
    se: float | None
    tokens: int
    windows: int
    bpb: float | None

    def as_dict(self, split: str) -> dict[str, Any]:
        """The eval-only JSON line's fields."""
        return {"loss": self.loss, "se": self.se, "tokens": self.tokens, "bpb": self.bpb, "split": split}

    def __str__(self) -> str:
        return describe(self.loss, self.se, self.tokens, self.bpb)


def describe(loss: float, se: float | None, tokens: int | None, bpb: float | None) -> str:
    """``1.2345 ± 0.0040 (199,999 tokens, 1.7812 bpb)``: how a val loss is shown in logs."""
    text = f"{loss:.4f}" + (f" ± {se:.4f}" if se is not None else "")
    extra = [f"{tokens:,} tokens"] if tokens is not None else []
    extra += [f"{bpb:.4f} bpb"] if bpb is not None else []
    return text + (f" ({', '.join(extra)})" if extra else "")


@dataclass(frozen=True)
class EvalWindows:
    """Window start positions and target counts, in scoring order; ``(W,)`` int64 each."""

    starts: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())

    def subset_index(self, k: int) -> np.ndarray | None:
        """Indices of ``k`` full windows spread evenly over these; None when that is all of them."""
        if k >= len(self):
            return None
        full = np.flatnonzero(self.lengths == self.lengths.max())
        k = max(1, min(int(k), len(full)))
        return full[(np.arange(k) * len(full)) // k]

    def take(self, index: np.ndarray | None) -> EvalWindows:
        return self if index is None else EvalWindows(self.starts[index], self.lengths[index])


def eval_windows(n_tokens: int, block_size: int, max_tokens: int | None = None) -> EvalWindows:
    """The windows scored for a split of ``n_tokens`` (see the module docstring).

    ``max_tokens`` None (or at least the split's ``n_tokens - 1`` targets): every target, the
    short last window included. Otherwise ``max(1, max_tokens // block_size)`` full windows
    spread evenly over the split.
    """
    targets = int(n_tokens) - 1
    if targets < 1:
        raise ValueError(f"a split of {n_tokens} token(s) has nothing to score (needs at least 2)")
    T = int(block_size)
    full = targets // T
    starts = np.arange(full, dtype=np.int64) * T
    lengths = np.full(full, T, dtype=np.int64)
    if max_tokens is not None and int(max_tokens) < targets and full > 0:
        k = min(full, max(1, int(max_tokens) // T))
        pick = (np.arange(k) * full) // k
        return EvalWindows(starts[pick], lengths[pick])
    if targets % T:
        starts = np.append(starts, full * T)
        lengths = np.append(lengths, targets % T)
    return EvalWindows(starts, lengths)


def parse_eval_tokens(value: Any) -> int | None:
    """``trainer.eval_tokens``: ``"all"`` -> None, a positive integer -> itself; else ValueError."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"trainer.eval_tokens must be 'all' or a positive token count, got {value!r}")
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"trainer.eval_tokens must be 'all' or a positive token count, got {value!r}") from None
    if n < 1:
        raise ValueError(f"trainer.eval_tokens must be 'all' or a positive token count, got {value!r}")
    return n


@dataclass
class WindowLosses:
    """Per-window sums of a scored split: NLL (nats, float64), target tokens and their bytes."""

    nll: np.ndarray
    tokens: np.ndarray
    bytes: np.ndarray | None

    def result(self, index: np.ndarray | None = None) -> EvalResult:
        """The loss, standard error and bpb of all windows, or of those in ``index`` (in order)."""
        nll, n = (self.nll, self.tokens) if index is None else (self.nll[index], self.tokens[index])
        total, count = float(nll.sum()), int(n.sum())
        loss = total / count
        W = len(nll)
        se = None
        if W > 1:  # batch means over SE_BLOCKS contiguous blocks (see the module docstring)
            starts = np.array([b[0] for b in np.array_split(np.arange(W), min(SE_BLOCKS, W))])
            resid = np.add.reduceat(nll, starts) - loss * np.add.reduceat(n, starts)
            K = len(starts)
            se = math.sqrt(K / (K - 1) * float(np.sum(resid * resid))) / count
        bpb = None
        if self.bytes is not None:
            nbytes = int(self.bytes.sum() if index is None else self.bytes[index].sum())
            bpb = total / math.log(2) / nbytes if nbytes else None
        return EvalResult(loss=loss, se=se, tokens=count, windows=W, bpb=bpb)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``trainer.precision`` on ``device`` (None: fp32, no autocast)."""
    import torch

    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class Evaluator:
    """Scores windows of one token split (``tokens``: 1-D ids) with a model's forward.

    ``batch_size`` windows go through the model at once. Under torchrun (``dist``) the
    batches are dealt round-robin to the ranks and the per-window sums all-reduced; every
    rank runs the same number of forwards (a rank short of a batch repeats one and discards
    it), because DDP and FSDP forwards are collective.
    """

    def __init__(self, tokens: np.ndarray, *, block_size: int, batch_size: int,
                 token_bytes: np.ndarray | None = None, device: str | torch.device = "cpu",
                 dist: DistContext | None = None, autocast: torch.dtype | None = None) -> None:
        import torch

        self.tokens = tokens
        self.block_size = int(block_size)
        self.batch_size = int(batch_size)
        self.token_bytes = None if token_bytes is None else np.asarray(token_bytes, dtype=np.int64)
        self.device = torch.device(device)
        self.dist = dist or DistContext()
        self.autocast = autocast
        self.seconds = 0.0  # time spent in run()

    def on(self, tokens: np.ndarray) -> Evaluator:
        """The same evaluator over another split (e.g. the test split)."""
        return Evaluator(tokens, block_size=self.block_size, batch_size=self.batch_size,
                         token_bytes=self.token_bytes, device=self.device, dist=self.dist, autocast=self.autocast)

    def windows(self, max_tokens: int | None = None) -> EvalWindows:
        return eval_windows(len(self.tokens), self.block_size, max_tokens)

    def run(self, forward: Callable[..., Any], windows: EvalWindows, *,
            model: torch.nn.Module | None = None) -> WindowLosses:
        """Per-window NLL sums of ``windows``; ``forward(x, y)`` returns ``(logits (B, T, V), ...)``.

        ``model`` (the module behind ``forward``) is put in eval mode for the run and back.
        """
        t0 = time.perf_counter()
        was_training = model is not None and model.training
        if model is not None:
            model.eval()
        try:
            import torch

            with torch.no_grad():
                return self._run(forward, windows)
        finally:
            if was_training:
                model.train()
            self.seconds += time.perf_counter() - t0

    def _run(self, forward: Callable[..., Any], windows: EvalWindows) -> WindowLosses:
        import torch

        full = np.flatnonzero(windows.lengths == self.block_size)
        short = np.flatnonzero(windows.lengths != self.block_size)
        batches = [full[i:i + self.batch_size] for i in range(0, len(full), self.batch_size)]
        rank, world = self.dist.rank, self.dist.world_size
        mine = batches[rank::world]
        rounds = -(-len(batches) // world)
        nll = np.zeros(len(windows), dtype=np.float64)
        for i in range(rounds):
            idx = mine[i] if i < len(mine) else batches[0]  # padding round: computed, not counted
            sums = self._score(forward, windows.starts[idx], self.block_size)
            if i < len(mine):
                nll[idx] = sums
        for j in short:  # the short last window: every rank runs it, rank 0 counts it
            sums = self._score(forward, windows.starts[j:j + 1], int(windows.lengths[j]))
            if rank == 0:
                nll[j] = sums[0]
        if self.dist.enabled:
            import torch.distributed as tdist

            t = torch.from_numpy(nll).to(self.device)
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
            nll = t.cpu().numpy()
        return WindowLosses(nll, windows.lengths.copy(), self._bytes(windows))

    def _score(self, forward: Callable[..., Any], starts: np.ndarray, length: int) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        chunk = torch.from_numpy(self.tokens[starts[:, None] + np.arange(length + 1)].astype(np.int64))
        chunk = chunk.to(self.device)  # (B, length + 1)
        x, y = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
        ctx = (torch.autocast(device_type=self.device.type, dtype=self.autocast) if self.autocast
               else contextlib.nullcontext())
        with ctx:
            logits = forward(x, y)[0]  # (B, length, V)
        nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
        return nll.view(len(starts), length).double().sum(1).cpu().numpy()

    def _bytes(self, windows: EvalWindows) -> np.ndarray | None:
        """UTF-8 bytes of each window's targets (None without ``token_bytes``)."""
        if self.token_bytes is None:
            return None
        out = np.empty(len(windows), dtype=np.int64)
        T = int(windows.lengths.max())
        offsets = np.arange(1, T + 1)
        for i in range(0, len(windows), 4096):  # bounded memory on large splits
            s, n = windows.starts[i:i + 4096], windows.lengths[i:i + 4096]
            pos = np.minimum(s[:, None] + offsets, len(self.tokens) - 1)  # (w, T)
            per = self.token_bytes[np.asarray(self.tokens[pos], dtype=np.int64)]
            out[i:i + 4096] = np.where(offsets[None, :] <= n[:, None], per, 0).sum(1)
        return out


class RunEvaluation:
    """A training run's two evaluations of the val split, as the trainer runs them.

    The final one scores ``eval_tokens`` windows (default: the whole split); periodic ones a
    fixed subset of them, ``eval_batches`` global batches spread evenly over the split (the
    same windows every time, so the curve is not sampling noise). ``loader`` is the val
    :class:`~apt.data.BatchLoader` (its tokens, block and batch size).
    """

    def __init__(self, loader: Any, *, eval_tokens: Any, eval_batches: int | None, token_bytes: np.ndarray | None,
                 device: torch.device, dist: Any, autocast: torch.dtype | None) -> None:
        self.evaluator = Evaluator(loader.tokens, block_size=loader.block_size, batch_size=loader.batch_size,
                                   token_bytes=token_bytes, device=device, dist=dist, autocast=autocast)
        self.global_batch = loader.global_batch_size
        self.final_windows = self.evaluator.windows(parse_eval_tokens(eval_tokens))
        self.periodic_index = (self.final_windows.subset_index(eval_batches * self.global_batch)
                               if eval_batches else None)

    def run(self, forward: Callable[..., Any], model: Any, *, final: bool) -> tuple[EvalResult, EvalResult]:
        """``(scored, tracked)``: the evaluation's result, and its result on the periodic
        windows (the same unless ``final``), which best-loss tracking compares."""
        losses = self.evaluator.run(forward, self.final_windows.take(None if final else self.periodic_index),
                                    model=model)
        scored = losses.result()
        return scored, losses.result(self.periodic_index) if final and self.periodic_index is not None else scored

    def subset(self, forward: Callable[..., Any], model: Any, num_batches: int | None = None) -> float:
        """Mean loss over the periodic windows, or over ``num_batches`` global batches of them."""
        index = self.periodic_index if num_batches is None else \
            self.final_windows.subset_index(int(num_batches) * self.global_batch)
        return self.evaluator.run(forward, self.final_windows.take(index), model=model).result().loss

    def split(self, forward: Callable[..., Any], model: Any, tokens: np.ndarray,
              max_tokens: int | None = None) -> EvalResult:
        """Score another split (e.g. the test split) as the final evaluation scores val."""
        other = self.evaluator.on(tokens)
        return other.run(forward, other.windows(max_tokens), model=model).result()

    @property
    def periodic_tokens(self) -> int:
        return self.final_windows.take(self.periodic_index).tokens
