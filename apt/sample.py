"""Generate text from a checkpoint: ``python -m apt.sample ckpt=<path> [key=value ...]``.

Options (``key=value``): ``ckpt`` (required), ``prompt`` (default: a newline),
``max_new_tokens`` (500), ``temperature`` (0.8; 0 = greedy), ``top_k`` (null), ``num_samples``
(1), ``seed`` (1337), ``device`` (auto). ``prompt`` is taken literally (``prompt=ROMEO:`` is
the text ``ROMEO:``, not YAML); numbers are numbers and ``null`` is none. ``--help`` prints
the usage.

Options and the checkpoint's header are checked before torch is imported or any weight is
read (a mistake is one ``error:`` line, exit status 2; so is a checkpoint that cannot be
loaded, e.g. weights that do not fit its model config). ``python -m apt sample`` is the same
command. The checkpoint carries the model
config, the tokenizer and the run config, so nothing else is needed (see
:func:`apt.loading.load_model`, shared with ``apt.evaluate``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from apt.core.errors import (
    CONFIG_ERROR_EXIT,
    ConfigProblems,
    did_you_mean,
    ends_in_one_line,
    report,
)
from apt.loading import load_model

__all__ = ["USAGE", "check_args", "load_model", "main", "parse_args", "sample"]

DEFAULTS = {"ckpt": None, "prompt": "\n", "max_new_tokens": 500, "temperature": 0.8, "top_k": None,
            "num_samples": 1, "seed": 1337, "device": "auto"}
_TEXT = ("ckpt", "prompt", "device")  # taken as written

USAGE = ("usage: python -m apt sample ckpt=<path> [prompt=TEXT] [max_new_tokens=500] [temperature=0.8] "
         "[top_k=null] [num_samples=1] [seed=1337] [device=auto]\n"
         "  Generate text from a checkpoint written by train.py. prompt is literal text (quote it for the\n"
         "  shell); temperature=0 is greedy; device: auto, cpu, cuda, cuda:N or mps.\n"
         "  python -m apt.sample is the same command.")


def sample(model: Any, tokenizer: Any, prompt: str, *, max_new_tokens: int, temperature: float,
           top_k: int | None, device: str) -> str:
    import torch

    ids = tokenizer.encode(prompt) if prompt else [0]
    idx = torch.tensor([list(map(int, ids))], dtype=torch.long, device=device)  # (1, T)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k)
    return tokenizer.decode(out[0].tolist())


def check_args(args: dict[str, Any]) -> list[str]:
    """Problems with ``apt.sample``'s options, one line each (no torch, no weights loaded)."""
    from apt.checks.paths import checkpoint_path_problem, device_problem

    unknown = sorted(set(args) - set(DEFAULTS))
    if unknown:
        return [f"unknown option {k!r}{did_you_mean(k, list(DEFAULTS))}; valid: {', '.join(DEFAULTS)}"
                for k in unknown]
    problems = []
    if not args["ckpt"]:
        problems.append("ckpt=<path> is required (a checkpoint written by train.py)")
    else:
        problems += [p.replace("ckpt_path=", "ckpt=", 1) for p in [checkpoint_path_problem(str(args["ckpt"]))] if p]
    for key in ("max_new_tokens", "num_samples"):
        if not _positive_int(args[key]):
            problems.append(f"{key} must be a positive integer, got {args[key]!r}")
    if args["top_k"] is not None and not _positive_int(args["top_k"]):
        problems.append(f"top_k must be a positive integer or null, got {args['top_k']!r}")
    t = args["temperature"]
    if not isinstance(t, int | float) or isinstance(t, bool) or t < 0:
        problems.append(f"temperature must be a number >= 0 (0: greedy), got {t!r}")
    if not isinstance(args["seed"], int) or isinstance(args["seed"], bool):
        problems.append(f"seed must be an integer, got {args['seed']!r}")
    problems += [p.replace("trainer.device", "device") for p in [device_problem(str(args["device"]))] if p]
    return problems


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """The options of ``key=value`` arguments over :data:`DEFAULTS` (no YAML: the prompt is text)."""
    args = dict(DEFAULTS)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigProblems([f"cannot parse {item!r}: options are key=value"], hint=USAGE.splitlines()[0])
        args[key] = value if key in _TEXT else _scalar(value)
    return args


def _scalar(text: str) -> Any:
    """``null`` -> None, ``true``/``false`` -> bool, numbers -> int or float, else the text."""
    lowered = text.strip().lower()
    if lowered in ("null", "none", "~"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@ends_in_one_line
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        args = parse_args(argv)
        problems = check_args(args)
        if problems:
            raise ConfigProblems(problems, hint=USAGE.splitlines()[0])
    except ConfigProblems as exc:
        report(exc)
        return CONFIG_ERROR_EXIT
    import torch

    from apt.build import resolve_device
    from apt.training.checkpoint import CheckpointError

    try:
        device = resolve_device(str(args["device"]))
    except ConfigProblems as exc:
        report(exc)
        return CONFIG_ERROR_EXIT
    torch.manual_seed(int(args["seed"]))
    try:
        model, tok, _ = load_model(str(args["ckpt"]), device)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    for i in range(int(args["num_samples"])):
        if i:
            print("-" * 40)
        print(sample(model, tok, str(args["prompt"]), max_new_tokens=int(args["max_new_tokens"]),
                     temperature=float(args["temperature"]), top_k=args["top_k"], device=device))
    return 0


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


if __name__ == "__main__":
    raise SystemExit(main())
