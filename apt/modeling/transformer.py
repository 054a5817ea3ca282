"""The decoder-only transformer LM: nanoGPT's model with attention and FFN taken from providers.

The forward pass is nanoGPT's, line for line, so a training loop around it costs what
nanoGPT costs: no per-step Python beyond the block loop, no host syncs. Auxiliary losses
(an MoE router's) are *not* added to the returned loss, which stays the cross-entropy:
layers add them through :mod:`apt.modeling.auxiliary` and the trainer collects them
around the forward, so a dense model pays nothing for the bookkeeping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from apt.core.config import APTConfig
from apt.modeling.layers import make_norm

__all__ = ["Block", "TransformerLM"]


class Block(nn.Module):
    """Pre-norm residual block: ``x + attn(norm1(x))`` then ``x + ffn(norm2(x))``."""

    def __init__(
        self, d_model: int, attn: nn.Module, ffn: nn.Module, *, norm: str = "layernorm", bias: bool = False
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, d_model, bias)
        self.attn = attn
        self.norm2 = make_norm(norm, d_model, bias)
        self.ffn = ffn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, T, C)
        return x + self.ffn(self.norm2(x))


class TransformerLM(nn.Module):
    """Token embedding, ``blocks``, final norm and a head tied to the embedding.

    Build it with :class:`apt.modeling.ModelBuilder`, which makes the blocks from providers.
    Init follows GPT-2/nanoGPT: every ``nn.Linear``/``nn.Embedding`` weight ~ N(0, 0.02),
    biases zero, and residual output projections (parameters named ``*c_proj.weight``)
    ~ N(0, 0.02 / sqrt(2 * num_layers)) so the residual stream does not grow with depth.
    Targets equal to ``-1`` are ignored by the loss.
    """

    def __init__(self, config: APTConfig, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.config = config
        C = config.d_model
        self.wte = nn.Embedding(config.vocab_size, C)
        self.wpe = nn.Embedding(config.max_seq_len, C) if config.position == "learned" else None
        self.drop = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.blocks = nn.ModuleList(blocks)
        self.norm_f = make_norm(config.norm, C, config.bias)
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying
        self.apply(_init_weights)
        std = 0.02 / math.sqrt(2 * max(1, len(self.blocks)))
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``idx`` (B, T) token ids -> logits (B, T, V) and the mean cross-entropy, or None."""
        T = idx.size(1)
        if T > self.config.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len={self.config.max_seq_len}")
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, dtype=torch.long, device=idx.device))
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.norm_f(x))  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # -- reporting ----------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Statistics layers kept of their last training forward (``last_stats``, e.g. an MoE
        layer's ``moe_dropped_frac``), averaged over the layers that have them; empty if none.

        This syncs with the device, so call it when logging, not per step.
        """
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for m in self.modules():
            stats = getattr(m, "last_stats", None)
            if stats:
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                    counts[key] = counts.get(key, 0) + 1
        return {key: sums[key] / counts[key] for key in sums}

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once); ``non_embedding`` leaves out position embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.wpe is not None:
            n -= self.wpe.weight.numel()
        return n

    # -- sampling -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T); ``temperature <= 0`` is greedy."""
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.max_seq_len :]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :]  # (B, V)
            if temperature <= 0:
                idx_next = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
