"""Generate text from a checkpoint: ``python -m apt.sample ckpt=<path> [key=value ...]``.

Options (Hydra-style ``key=value``): ``ckpt`` (required), ``prompt`` (default: a newline),
``max_new_tokens`` (500), ``temperature`` (0.8; 0 = greedy), ``top_k`` (null), ``num_samples``
(1), ``seed`` (1337), ``device`` (auto).

The checkpoint carries the model config, the tokenizer and the run config, so nothing
else is needed (see :func:`apt.loading.load_model`, shared with ``apt.evaluate``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from apt.loading import load_model

__all__ = ["load_model", "main", "sample"]

DEFAULTS = {"ckpt": None, "prompt": "\n", "max_new_tokens": 500, "temperature": 0.8, "top_k": None,
            "num_samples": 1, "seed": 1337, "device": "auto"}


def sample(model: Any, tokenizer: Any, prompt: str, *, max_new_tokens: int, temperature: float,
           top_k: int | None, device: str) -> str:
    import torch

    ids = tokenizer.encode(prompt) if prompt else [0]
    idx = torch.tensor([list(map(int, ids))], dtype=torch.long, device=device)  # (1, T)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k)
    return tokenizer.decode(out[0].tolist())


def main(argv: Sequence[str] | None = None) -> int:
    from omegaconf import OmegaConf

    args = OmegaConf.to_container(OmegaConf.merge(DEFAULTS, OmegaConf.from_cli(list(argv or sys.argv[1:]))))
    unknown = sorted(set(args) - set(DEFAULTS))
    if unknown or not args["ckpt"]:
        print(f"usage: python -m apt.sample ckpt=<path> [{' '.join(f'{k}=' for k in DEFAULTS if k != 'ckpt')}]"
              + (f"\nerror: unknown option(s) {unknown}" if unknown else "\nerror: ckpt=<path> is required"),
              file=sys.stderr)
        return 2
    import torch

    from apt.app import resolve_device
    from apt.training.checkpoint import CheckpointError

    device = resolve_device(str(args["device"]))
    torch.manual_seed(int(args["seed"]))
    try:
        model, tok, _ = load_model(str(args["ckpt"]), device)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for i in range(int(args["num_samples"])):
        if i:
            print("-" * 40)
        print(sample(model, tok, str(args["prompt"]), max_new_tokens=int(args["max_new_tokens"]),
                     temperature=float(args["temperature"]), top_k=args["top_k"], device=device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
