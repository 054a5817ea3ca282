"""Datasets, tokenizers and batch loading.

``load_dataset``, the token directories and the tokenizers are numpy-only (the subword
tokenizers import their libraries when used); :class:`BatchLoader` needs torch and is
imported on first use so that config checks never import torch.
"""

from __future__ import annotations

from apt.core.lazy import lazy_attributes
from apt.data.dataset import DATASETS, TokenData, default_cache_dir, load_dataset
from apt.data.errors import DataError
from apt.data.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    IdTokenizer,
    Tokenizer,
    build_tokenizer,
    tokenizer_from_dict,
)
from apt.data.tokens import ShardedTokens, TokenFile, check_tokens_dir, open_tokens_dir

__all__ = [
    "DATASETS",
    "BatchLoader",
    "ByteTokenizer",
    "CharTokenizer",
    "DataError",
    "IdTokenizer",
    "ShardedTokens",
    "TokenData",
    "TokenFile",
    "Tokenizer",
    "build_tokenizer",
    "check_tokens_dir",
    "default_cache_dir",
    "load_dataset",
    "open_tokens_dir",
    "tokenizer_from_dict",
]


__getattr__ = lazy_attributes(__name__, {"BatchLoader": "apt.data.loader"})
