"""Deterministic batches over a 1-D token stream.

An epoch is one pass over the training tokens: a random offset, then the non-overlapping
``block_size + 1`` windows from it in a random order. Everything about epoch ``e`` is a
pure function of ``(seed, e)``, so a resumed run needs only the epoch and the batch index
to see exactly the batches an uninterrupted run would have seen.

Under data-parallel training every rank builds the same loader with its ``rank`` and
``world_size``: batches are drawn for the *global* batch (``batch_size * world_size``
rows) and each rank takes its own ``batch_size`` columns, so the ranks see disjoint data
and together exactly the batches of a single-process run with the global batch size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["BatchLoader"]


class BatchLoader:
    """``(x, y)`` int64 batches of shape ``(B, T)``; ``y`` is ``x`` shifted by one token.

    ``B`` is ``batch_size``, this rank's share of the ``batch_size * world_size`` global batch.
    """

    def __init__(self, tokens: np.ndarray, *, batch_size: int, block_size: int, seed: int = 0,
                 device: str | torch.device = "cpu", batches_per_epoch: int | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        self.tokens = tokens
        self.batch_size = int(batch_size)
        self.block_size = int(block_size)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.rank, self.world_size = int(rank), int(world_size)
        self.global_batch_size = self.batch_size * self.world_size
        self._columns = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        self._pin = self.device.type == "cuda"
        windows = (len(tokens) - 1) // self.block_size - 1  # worst case after the offset
        if windows < self.global_batch_size:
            need = f"batch_size={self.batch_size}" + (
                f" * {self.world_size} processes" if self.world_size > 1 else "")
            raise ValueError(
                f"{len(tokens):,} tokens give only {max(windows, 0)} windows of block_size="
                f"{self.block_size}; need at least {need}"
            )
        self.batches_per_epoch = int(batches_per_epoch or windows // self.global_batch_size)
        self._arange = np.arange(self.block_size + 1)

    def epoch_starts(self, epoch: int) -> np.ndarray:
        """Window start positions for every batch of ``epoch`` on this rank: ``(batches, B)``."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        need = self.batches_per_epoch * self.global_batch_size
        chunks, have = [], 0
        while have < need:  # more batches than one pass holds: concatenate fresh passes
            offset = int(rng.integers(0, self.block_size))
            n = (len(self.tokens) - 1 - offset) // self.block_size
            chunks.append(offset + self.block_size * rng.permutation(n))
            have += n
        starts = np.concatenate(chunks)[:need]
        return starts.reshape(self.batches_per_epoch, self.global_batch_size)[:, self._columns]

    def fixed_starts(self, num_batches: int, seed: int = 0) -> np.ndarray:
        """``(num_batches, B)`` uniformly drawn starts, the same every call for a ``seed``.

        Drawn for the global batch, this rank's columns returned (as :meth:`epoch_starts`).
        The trainer evaluates whole splits (:mod:`apt.training.evaluation`); these random
        windows were its estimate before, and scripts/bench_eval.py measures their noise.
        """
        rng = np.random.default_rng([int(seed), 0x5EED])
        high = len(self.tokens) - self.block_size - 1
        return rng.integers(0, high + 1, size=(int(num_batches), self.global_batch_size))[:, self._columns]

    def batch(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch for one row of starts (``(B,)``)."""
        chunk = torch.from_numpy(self.tokens[starts[:, None] + self._arange].astype(np.int64))  # (B, T+1)
        if self._pin:
            chunk = chunk.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            chunk = chunk.to(self.device)
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start, start+1, ...`` of ``epoch``."""
        for row in self.epoch_starts(epoch)[start:]:
            yield self.batch(row)
