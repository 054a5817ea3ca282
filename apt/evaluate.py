"""Score a checkpoint on held-out data: ``python -m apt.evaluate ckpt=<path> [key=value ...]``.

Options: ``ckpt`` (required), ``split`` (``val`` or ``test``; default ``val``), ``eval_tokens``
(default: the run's ``trainer.eval_tokens``, normally ``all``), ``device`` (auto), and
``data.<key>=<value>`` to change the run's data config (e.g. ``data.path=other.txt``).

The checkpoint's own tokenizer and data config are used, and the evaluation is the one the
run's final evaluation did (same windows, batch size and precision), so on the same machine
the printed loss is the run's final ``val_loss``. Standard output is exactly one JSON line::

    {"loss": 1.4712, "se": 0.0061, "tokens": 111540, "bpb": 2.1225, "split": "val"}

(``se`` is null for a single window, ``bpb`` for tokenizers without text, e.g. synthetic ids.)
Problems are one ``error:`` line on stderr, exit status 2: bad options or data, or a
checkpoint that is missing, unreadable, not APT's or holds weights that do not fit its model
config. ``python -m apt evaluate`` is the same command.

Re-splitting the run's own data (another ``val_fraction`` or ``test_fraction`` on the same
source) is refused: such a split overlaps tokens the run trained on.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from apt.core.errors import ends_in_one_line
from apt.loading import load_model
from apt.training.evaluation import EvalResult

__all__ = ["USAGE", "EvaluateError", "SPLITS", "evaluate_checkpoint", "main"]

SPLITS = ("val", "test")
DEFAULTS = {"ckpt": None, "split": "val", "eval_tokens": None, "device": "auto", "data": {}}
_SPLIT_KEYS = ("val_fraction", "test_fraction")
_LOADER_KEYS = ("batch_size", "block_size", "cache_dir")  # change how, not which, tokens are read


class EvaluateError(ValueError):
    """A bad option or data config for an evaluation (one readable line)."""


def data_config(run_data: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run's data config with ``overrides`` applied; unknown keys and re-splits are errors."""
    from apt.training.schema import DataConfig

    known = {f.name: f.default for f in fields(DataConfig)}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise EvaluateError(f"unknown data option(s) {unknown}; valid: {sorted(known)}")
    run = {**known, **dict(run_data or {})}
    changed = {k for k, v in overrides.items() if run.get(k) != v}
    resplit = sorted(changed & set(_SPLIT_KEYS))
    if resplit and not changed - set(_SPLIT_KEYS) - set(_LOADER_KEYS):
        raise EvaluateError(
            f"data.{resplit[0]}={overrides[resplit[0]]} re-splits the run's own data (it used "
            f"{resplit[0]}={run[resplit[0]]}): the new split would overlap tokens the run trained on")
    return {**run, **overrides}


def evaluate_checkpoint(ckpt: str, *, split: str = "val", data: Mapping[str, Any] | None = None,
                        eval_tokens: Any = None, device: str = "cpu") -> EvalResult:
    """Loss, standard error, tokens and bits per byte of ``ckpt`` on ``split`` of its data."""
    import torch

    from apt.data import load_dataset
    from apt.training.evaluation import Evaluator, autocast_dtype, parse_eval_tokens

    if split not in SPLITS:
        raise EvaluateError(f"unknown split {split!r}; valid: {list(SPLITS)}")
    model, tokenizer, state = load_model(ckpt, device)
    run_cfg = state.get("config") or {}
    d_cfg = data_config(run_cfg.get("data"), data)
    t_cfg = run_cfg.get("trainer") or {}
    max_tokens = parse_eval_tokens(t_cfg.get("eval_tokens", "all") if eval_tokens is None else eval_tokens)
    try:
        tokens_of = load_dataset(d_cfg)
    except (ValueError, FileNotFoundError) as exc:
        raise EvaluateError(f"{exc} (the checkpoint's data config; override with data.<key>=...)") from None
    if tokens_of.tokenizer.to_dict() != tokenizer.to_dict():
        raise EvaluateError(f"the data's {tokens_of.tokenizer.kind} tokenizer differs from the checkpoint's "
                            f"{tokenizer.kind} tokenizer: its ids would mean other tokens")
    tokens = tokens_of.val if split == "val" else tokens_of.test
    if tokens is None:
        raise EvaluateError("split=test needs a test split, and the run had data.test_fraction=0 (a test "
                            "split carved now would overlap its training data); train with data.test_fraction")
    limit = getattr(model.config, "max_seq_len", None)
    if limit is not None and int(d_cfg["block_size"]) > limit:
        raise EvaluateError(f"data.block_size={d_cfg['block_size']} exceeds the model's max_seq_len={limit}")
    ev = Evaluator(tokens, block_size=d_cfg["block_size"], batch_size=d_cfg["batch_size"],
                   token_bytes=tokenizer.token_bytes(), device=device,
                   autocast=autocast_dtype(str(t_cfg.get("precision", "auto")), torch.device(device)))
    return ev.run(model, ev.windows(max_tokens)).result()


USAGE = ("usage: python -m apt evaluate ckpt=<path> [split=val|test] [eval_tokens=all|N] [device=auto] "
         "[data.<key>=<value> ...]\n"
         "  Print the loss of a checkpoint on its run's held-out data as one JSON line.\n"
         "  python -m apt.evaluate is the same command.")


@ends_in_one_line
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    from omegaconf import OmegaConf

    from apt.training.checkpoint import CheckpointError

    try:
        args = OmegaConf.to_container(OmegaConf.merge(DEFAULTS, OmegaConf.from_cli(argv)))
    except Exception as exc:  # noqa: BLE001 - omegaconf's grammar errors
        print(f"{USAGE.splitlines()[0]}\nerror: cannot parse the arguments: {str(exc).splitlines()[0]}",
              file=sys.stderr)
        return 2
    unknown = sorted(set(args) - set(DEFAULTS))
    if unknown or not args["ckpt"] or not isinstance(args["data"], dict):
        why = (f"unknown option(s) {unknown}; valid: {sorted(DEFAULTS)} and data.<key>" if unknown
               else "ckpt=<path> is required" if not args["ckpt"] else "data options are data.<key>=<value>")
        print(f"{USAGE.splitlines()[0]}\nerror: {why}", file=sys.stderr)
        return 2
    from apt.build import resolve_device
    from apt.checks.paths import checkpoint_path_problem, device_problem

    bad_ckpt = checkpoint_path_problem(str(args["ckpt"]))  # the header alone, before torch
    if bad_ckpt:
        print(f"error: {bad_ckpt.replace('ckpt_path=', 'ckpt=', 1)}", file=sys.stderr)
        return 2
    bad_device = device_problem(str(args["device"]))
    if bad_device:
        print(f"error: {bad_device.replace('trainer.device', 'device')}", file=sys.stderr)
        return 2
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON line alone
            result = evaluate_checkpoint(str(args["ckpt"]), split=str(args["split"]), data=args["data"],
                                         eval_tokens=args["eval_tokens"], device=resolve_device(str(args["device"])))
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # EvaluateError, ConfigProblems (device), a bad eval_tokens
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_dict(str(args["split"]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
