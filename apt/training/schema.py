"""Structured-config schemas for the core config groups, registered in Hydra's ConfigStore.

Each YAML option of the ``model``, ``trainer``, ``data`` and ``optim`` groups starts from
one of these dataclasses (``defaults: [/schema/<group>@_here_, _self_]``), so a typo'd key
or ``trainer.max_steps=abc`` fails when Hydra composes, before anything runs. Value
*ranges* and cross-field rules are checked later by :mod:`apt.checks`.
Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PLUGIN_ERROR_POLICIES",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainerConfig",
    "register_configs",
    "trainer_config",
]

#: ``trainer.on_plugin_error``: what a plugin hook disabled by repeated failures does to the run.
PLUGIN_ERROR_POLICIES = ("fail", "warn")


@dataclass
class ModelConfig:
    """Transformer shape; provider choice lives in the ``provider/*`` groups."""

    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 4
    d_ff: int | None = None  # None: 4 * d_model
    dropout: float = 0.0
    norm: str = "layernorm"  # layernorm | rmsnorm
    position: str = "learned"  # learned | rope
    rope_base: float = 10000.0
    bias: bool = False
    max_seq_len: int | None = None  # None: data.block_size


@dataclass
class DataConfig:
    """One schema for every dataset; options a dataset does not use are ignored by it."""

    name: str = "stdlib"  # stdlib | text | synthetic | tokens
    batch_size: int = 12
    block_size: int = 64
    val_fraction: float = 0.1  # tokens: fixed when the directory was prepared
    test_fraction: float = 0.0  # the last ids of the stream; 0: no test split
    tokenizer: str = "byte"  # text, stdlib: char | byte | bpe | <path>/tokenizer.json | tiktoken:<name>
    cache_dir: str | None = None  # None: $APT_CACHE_DIR or ~/.cache/apt/tokens
    path: str | None = None  # text: a UTF-8 file
    dir: str | None = None  # tokens: a directory written by python -m apt.data.prepare
    max_bytes: int = 2_000_000  # stdlib: size cap of the corpus
    task: str = "copy"  # synthetic: copy | cycle | markov
    num_tokens: int = 20000  # synthetic
    vocab_size: int | None = None  # synthetic: the id range (16); tokenizer=bpe: the BPE vocabulary
    period: int = 8  # synthetic
    seed: int = 0  # synthetic


@dataclass
class TrainerConfig:
    max_steps: int | None = 1000  # optimizer steps; None: run max_epochs
    max_epochs: int | None = None  # None: as many as max_steps needs
    steps_per_epoch: int | None = None  # None: one pass over the training tokens
    grad_accum: int = 1
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    eval_every: int | None = 200  # steps; also at the end of every epoch and of training; None: only those
    eval_tokens: Any = "all"  # final evaluation: "all" (whole val split) or a token budget
    eval_batches: int | None = 20  # periodic evaluations: batches of fixed val windows; None: eval_tokens
    eval_test: bool = False  # also score the test split (data.test_fraction > 0) after training
    eval_on_epoch_end: bool = True  # also evaluate when an epoch ends (for on_epoch_end metrics)
    log_every: int = 50  # steps between progress/metrics.csv rows
    checkpoint_every: int | None = None  # steps; None: only at the end (and on SIGINT/SIGTERM)
    keep_last: int = 2
    resume: bool = False  # continue from the newest checkpoint in checkpoint_dir
    checkpoint_dir: str | None = None  # None: <run dir>/checkpoints
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16 autocast on CUDA) | fp32 | bf16
    compile: bool = False  # torch.compile the model (compile time counts in wall time)
    threads: int | None = None  # torch intra-op threads; None: torch's default
    progress: bool = True  # tqdm bar
    plot: bool = True  # loss-curve PNG at the end
    strict_hooks: bool = False  # re-raise exceptions from plugin hooks
    on_plugin_error: str = "fail"  # a hook disabled by repeated failures: fail (stop, exit 1) | warn (train on)
    deterministic: bool = False  # torch.use_deterministic_algorithms (CPU runs are already)
    strategy: str = "ddp"  # under torchrun: ddp | fsdp (docs/distributed.md)
    on_nonfinite: str = "stop"  # a non-finite loss: stop (exit 1) | skip the step | ignore


@dataclass
class OptimConfig:
    """``optimizer`` is a ``_partial_`` target called with the parameter groups."""

    optimizer: Any = field(default_factory=lambda: {"_target_": "torch.optim.AdamW", "_partial_": True})
    weight_decay: float = 0.1  # applied to matrices (>= 2-D), never to norms/biases
    fused: bool | None = None  # None: fused kernels where torch has them for the device
    warmup_steps: int = 100
    decay: str = "cosine"  # cosine | linear | constant | wsd
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio
    cooldown_fraction: float | None = None  # wsd: share of the steps spent decaying; None: 0.2
    # more optimizers: name -> {params: <selector>, optimizer: <_partial_ target>, weight_decay}
    parts: Any = field(default_factory=dict)


def trainer_config(config: Any) -> TrainerConfig:
    """A :class:`TrainerConfig` from a mapping (defaults filled in; an unknown key is an error)."""
    from dataclasses import asdict, fields

    from apt.core.config import to_plain

    if isinstance(config, TrainerConfig):
        return config
    data = dict(to_plain(config) or {})
    known = {f.name for f in fields(TrainerConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown trainer option(s) {unknown}; valid: {sorted(known)}")
    return TrainerConfig(**{**asdict(TrainerConfig()), **data})


def register_configs() -> None:
    """Store the schemas as ``schema/<group>`` (idempotent; call before composing)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="schema", name="model", node=ModelConfig)
    cs.store(group="schema", name="data", node=DataConfig)
    cs.store(group="schema", name="trainer", node=TrainerConfig)
    cs.store(group="schema", name="optim", node=OptimConfig)
