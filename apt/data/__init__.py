"""Datasets, tokenizers and batch loading.

``load_dataset`` and the tokenizers are numpy-only; :class:`BatchLoader` needs torch and is
imported on first use so that config checks never import torch.
"""

from __future__ import annotations

from typing import Any

from apt.data.dataset import DATASETS, TokenData, default_cache_dir, load_dataset
from apt.data.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    IdTokenizer,
    Tokenizer,
    build_tokenizer,
    tokenizer_from_dict,
)

__all__ = [
    "DATASETS",
    "BatchLoader",
    "ByteTokenizer",
    "CharTokenizer",
    "IdTokenizer",
    "TokenData",
    "Tokenizer",
    "build_tokenizer",
    "default_cache_dir",
    "load_dataset",
    "tokenizer_from_dict",
]


def __getattr__(name: str) -> Any:
    if name == "BatchLoader":
        from apt.data.loader import BatchLoader

        return BatchLoader
    raise AttributeError(f"module 'apt.data' has no attribute {name!r}")
