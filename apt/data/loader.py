"""Deterministic batches over a 1-D token stream.

An epoch is one pass over the training tokens: a random offset, then the non-overlapping
``block_size + 1`` windows from it in a random order. Everything about epoch ``e`` is a
pure function of ``(seed, e)``, so a resumed run needs only the epoch and the batch index
to see exactly the batches an uninterrupted run would have seen.

Streams of up to :data:`EAGER_WINDOWS` windows draw each pass's order whole with numpy's
permutation (the order of every run before token shards existed). Longer streams (a
prepared corpus of any size) use a keyed bijection of the window indices, evaluated only
for the rows a step asks for: start-up and memory do not grow with the corpus.

Under data-parallel training every rank builds the same loader with its ``rank`` and
``world_size``: batches are drawn for the *global* batch (``batch_size * world_size``
rows) and each rank takes its own ``batch_size`` columns, so the ranks see disjoint data
and together exactly the batches of a single-process run with the global batch size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from apt.data.tokens import read_windows

__all__ = ["EAGER_WINDOWS", "BatchLoader", "permute"]

#: Passes of at most this many windows are permuted whole (8 MB of int64 starts).
EAGER_WINDOWS = 1 << 20
LAZY_BLOCK = 256  # rows of the lazy order computed at once
_ROUNDS = 6
_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-mixed 64-bit hash (uint64 arithmetic wraps)."""
    z = z * _M1
    z = (z ^ (z >> np.uint64(30))) * _M2
    z = (z ^ (z >> np.uint64(27))) * _M3
    return z ^ (z >> np.uint64(31))


def permute(index: np.ndarray, n: int, keys: np.ndarray) -> np.ndarray:
    """A keyed bijection of ``[0, n)`` evaluated at ``index`` (int array, any shape).

    A balanced Feistel network over the smallest even-bit domain holding ``n`` (under
    ``4 n``), with cycle walking back into ``[0, n)``: each key gives one permutation,
    computed per element in O(1) memory.
    """
    half = max(1, (max(int(n) - 1, 1).bit_length() + 1) // 2)
    mask, shift = np.uint64((1 << half) - 1), np.uint64(half)

    def feistel(x: np.ndarray) -> np.ndarray:
        left, right = x >> shift, x & mask
        for key in keys:
            left, right = right, left ^ (_mix(right ^ key) & mask)
        return (left << shift) | right

    out = feistel(np.asarray(index, dtype=np.uint64))
    outside = out >= np.uint64(n)
    while outside.any():
        out[outside] = feistel(out[outside])
        outside = out >= np.uint64(n)
    return out.astype(np.int64)


class BatchLoader:
    """``(x, y)`` int64 batches of shape ``(B, T)``; ``y`` is ``x`` shifted by one token.

    ``B`` is ``batch_size``, this rank's share of the ``batch_size * world_size`` global batch.
    ``tokens`` is any 1-D id sequence that supports ``len`` and integer-array indexing (an
    array, a memmap); :class:`~apt.data.tokens.TokenFile` and ``ShardedTokens`` read their
    windows with positioned reads.
    """

    def __init__(self, tokens: Any, *, batch_size: int, block_size: int, seed: int = 0,
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
        self.eager = (len(tokens) - 1) // self.block_size <= EAGER_WINDOWS
        self._memo: tuple[Any, Any] = (None, None)  # (epoch, batches_per_epoch) -> eager starts or passes
        self._block: tuple[Any, Any] = (None, None)  # lazy: the last block of rows

    def epoch_rows(self, epoch: int, first: int, count: int) -> np.ndarray:
        """Window starts of batches ``first .. first+count-1`` of ``epoch`` on this rank: ``(count, B)``."""
        if self.eager:
            return self._eager_starts(epoch)[first:first + count, self._columns]
        blocks = range(first // LAZY_BLOCK, (first + count - 1) // LAZY_BLOCK + 1)
        rows = np.concatenate([self._lazy_block(epoch, b) for b in blocks])  # (rows, global batch)
        at = first - blocks[0] * LAZY_BLOCK
        return rows[at:at + count, self._columns]

    def epoch_starts(self, epoch: int) -> np.ndarray:
        """Window starts for every batch of ``epoch`` on this rank: ``(batches, B)``."""
        return self.epoch_rows(epoch, 0, self.batches_per_epoch)

    def _memoised(self, epoch: int, build: Any) -> Any:
        key = (int(epoch), self.batches_per_epoch)  # the trainer may set batches_per_epoch later
        if self._memo[0] != key:
            self._memo = (key, build())
        return self._memo[1]

    def _eager_starts(self, epoch: int) -> np.ndarray:
        def build() -> np.ndarray:
            rng = np.random.default_rng([self.seed, int(epoch)])
            need = self.batches_per_epoch * self.global_batch_size
            chunks, have = [], 0
            while have < need:  # more batches than one pass holds: concatenate fresh passes
                offset = int(rng.integers(0, self.block_size))
                n = (len(self.tokens) - 1 - offset) // self.block_size
                chunks.append(offset + self.block_size * rng.permutation(n))
                have += n
            return np.concatenate(chunks)[:need].reshape(self.batches_per_epoch, self.global_batch_size)

        return self._memoised(epoch, build)

    def _lazy_block(self, epoch: int, block: int) -> np.ndarray:
        """Global starts of rows ``block * LAZY_BLOCK ...`` (computed together: the bijection's
        numpy overhead is per call, not per element); the last block is kept."""
        key = (int(epoch), self.batches_per_epoch, block)
        if self._block[0] != key:
            g = self.global_batch_size
            rows = np.arange(block * LAZY_BLOCK, min((block + 1) * LAZY_BLOCK, self.batches_per_epoch))
            self._block = (key, self._lazy_starts(epoch, rows[:, None] * g + np.arange(g)))
        return self._block[1]

    def _lazy_starts(self, epoch: int, pos: np.ndarray) -> np.ndarray:
        def build() -> tuple[np.ndarray, list[tuple[int, int, np.ndarray]]]:
            rng = np.random.default_rng([self.seed, int(epoch), 1])
            need = self.batches_per_epoch * self.global_batch_size
            passes, have = [], 0
            while have < need:  # (offset, windows, keys) of each pass the epoch needs
                offset = int(rng.integers(0, self.block_size))
                n = (len(self.tokens) - 1 - offset) // self.block_size
                passes.append((offset, n, rng.integers(0, 2**63, size=_ROUNDS, dtype=np.int64).astype(np.uint64)))
                have += n
            return np.cumsum([n for _, n, _ in passes]), passes

        ends, passes = self._memoised(epoch, build)
        which = np.searchsorted(ends, pos, side="right")  # pass of each position
        out = np.empty(pos.shape, dtype=np.int64)
        for k in np.unique(which):
            offset, n, keys = passes[k]
            mask = which == k
            out[mask] = offset + self.block_size * permute(pos[mask] - (ends[k] - n), n, keys)
        return out

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
        chunk = torch.from_numpy(read_windows(self.tokens, starts, self.block_size + 1).astype(np.int64))  # (B, T+1)
        if self._pin:
            chunk = chunk.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            chunk = chunk.to(self.device)
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start, start+1, ...`` of ``epoch``."""
        for i in range(start, self.batches_per_epoch):
            yield self.batch(self.epoch_rows(epoch, i, 1)[0])
