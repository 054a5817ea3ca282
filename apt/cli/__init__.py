"""``python -m apt``: APT's commands, one family with one error style.

    python -m apt train model=tiny trainer.max_steps=200   # as train.py, from any directory
    python -m apt check model=tiny provider/attention=naive
    python -m apt sample ckpt=outputs/.../checkpoints/step-00000200.pt prompt=ROMEO:
    python -m apt evaluate ckpt=... split=test
    python -m apt export ckpt=... out=hf/
    python -m apt prepare input=corpus.txt out=tokens/ tokenizer=bpe vocab_size=8192
    python -m apt summary multirun/2026-01-01/12-00-00
    python -m apt hooks plugin=[early_stopping,gradient_clipping]
    python -m apt schedule schedule=moe_align plugin=[moe,align] trainer.max_epochs=4
    python -m apt list providers            # every provider, its default and origin
    python -m apt --version

Overrides are exactly ``train.py``'s. ``sample``, ``evaluate``, ``export`` and ``prepare`` are
:mod:`apt.sample`, :mod:`apt.evaluate`, :mod:`apt.export` and :mod:`apt.data.prepare`
(``python -m apt.sample ...`` is the same command): the rest of the command line goes to
that module's ``main``. Every command answers ``--help`` (exit status 0), and every mistake
is one ``error:`` line (exit status 2; ``APT_DEBUG=1`` shows its traceback instead); an
interrupt or a full disk ends a command in one line too (:func:`apt.core.errors.ends_in_one_line`).
Each command imports only what it needs, so ``list``, ``check`` and ``--help`` answer
without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import NoReturn

from apt.core.errors import CONFIG_ERROR_EXIT, did_you_mean, ends_in_one_line

__all__ = ["FORWARDED", "build_parser", "main", "version"]

_EPILOG = "Overrides are the same as train.py's, e.g. model=tiny plugin=[early_stopping]."

#: Commands whose whole command line (``--help`` too) goes to a module's ``main(argv)``:
#: command -> (module, help line).
FORWARDED = {
    "train": ("apt.cli.train", "train: Hydra overrides and flags as for train.py (train --help: the config groups)"),
    "sample": ("apt.sample", "generate text from a checkpoint (also: python -m apt.sample)"),
    "evaluate": ("apt.evaluate", "score a checkpoint on held-out data (also: python -m apt.evaluate)"),
    "export": ("apt.export.__main__", "export a checkpoint for Hugging Face transformers (also: python -m apt.export)"),
    "prepare": ("apt.data.prepare", "tokenise a corpus into token shards (also: python -m apt.data.prepare)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with APT's error style: the usage, then one ``error:`` line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(CONFIG_ERROR_EXIT, f"error: {message}\n")


def version() -> str:
    """The installed package's version (the source tree's when APT runs from a clone)."""
    from importlib import metadata

    try:
        return metadata.version("apt")
    except metadata.PackageNotFoundError:
        from apt import __version__

        return __version__


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                   help="Hydra overrides, as for train.py (group=option, key=value)")
    p.add_argument("--config-dir", default=None,
                   help="a directory of your config files, searched in front of APT's conf/ (as train.py's --config-dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m apt",
        description="Train, sample, evaluate, export, prepare data; inspect APT configurations, plugins, "
                    "providers and sweeps.",
        epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"apt {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, line) in FORWARDED.items():  # listed here; their own main parses the rest
        sub.add_parser(name, help=line, add_help=False)

    p_list = sub.add_parser("list", help="list providers or plugins")
    p_list.add_argument("what", choices=["providers", "plugins"])
    p_list.add_argument("--kind", default=None, help="providers of one kind only (attention, ffn, router)")
    p_list.add_argument("--json", action="store_true", help="machine-readable output")

    p_hooks = sub.add_parser("hooks", help="each event's hooks in firing order for a config",
                             epilog=_EPILOG)
    _add_config_args(p_hooks)
    p_hooks.add_argument("--all", action="store_true", help="also list events that have no hooks")
    p_hooks.add_argument("--json", action="store_true", help="machine-readable output")

    p_sched = sub.add_parser("schedule", help="plugin enablement and scheduled values per epoch",
                             epilog=_EPILOG)
    _add_config_args(p_sched)
    p_sched.add_argument("--by", choices=["epoch", "step"], default="epoch",
                         help="timeline axis (default: epoch)")
    p_sched.add_argument("--epochs", type=int, default=None,
                         help="horizon in epochs when trainer.max_epochs is not set")
    p_sched.add_argument("--png", default=None, metavar="PATH", help="also plot the timeline")

    p_check = sub.add_parser("check", help="validate a config as train.py does, without training",
                             epilog=_EPILOG)
    _add_config_args(p_check)

    p_sum = sub.add_parser("summary", help="(re)write a sweep's summaries and plot; print its configurations")
    p_sum.add_argument("sweep_dir", help="a multirun directory (holds multirun.yaml)")
    p_sum.add_argument("--no-plot", action="store_true", help="skip val_loss.png")
    p_sum.add_argument("--baseline", default=None, metavar="OVERRIDES",
                       help="configuration to compare with, e.g. 'provider/attention=sdpa' (default: the first)")
    return parser


def _cmd_list(args: argparse.Namespace) -> int:
    from apt.cli.listing import format_table, plugin_infos, provider_infos

    if args.what == "providers":
        rows = [asdict(p) for p in provider_infos(args.kind)]
        if args.kind is not None and not rows:
            from apt.core.registry import registry

            print(f"error: no providers of kind {args.kind!r}; kinds: {registry.kinds()}",
                  file=sys.stderr)
            return 2
        cols = ["kind", "name", "default", "origin", "description"]
        for r in rows:
            r["default"] = "default" if r["default"] else ""
    else:
        rows = [p.as_dict() for p in plugin_infos()]
        cols = ["name", "version", "origin", "description"]
    print(json.dumps(rows, indent=2) if args.json else format_table(rows, cols))
    return 0


def _cmd_hooks(args: argparse.Namespace) -> int:
    from apt.cli.inspect import format_hooks, hook_table

    table = hook_table(args.overrides, args.config_dir, all_events=args.all)
    print(json.dumps(table, indent=2) if args.json else format_hooks(table))
    return 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    from apt.cli.inspect import schedule_report

    print(schedule_report(args.overrides, args.config_dir, by=args.by, epochs=args.epochs,
                          png=args.png))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from apt.app import check_config

    for line in check_config(args.overrides, args.config_dir):  # raises ConfigProblems
        print(f"warning: {line}", file=sys.stderr)
    print("config OK")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from pathlib import Path

    from apt.sweeps import collect_records, grouped_markdown, sweep_groups, write_summary

    root = Path(args.sweep_dir)
    if not root.is_dir():
        print(f"error: {root} is not a directory", file=sys.stderr)
        return 2
    try:
        paths = write_summary(root, final=True, plot=not args.no_plot, baseline=args.baseline)
    except ValueError as exc:  # a baseline that matches no configuration
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(grouped_markdown(sweep_groups(collect_records(root, final=True), args.baseline)), end="")
    print(f"\nper job: {paths['csv']}; per configuration: {paths['grouped']}; report: {paths['md']}")
    return 0


_COMMANDS = {"list": _cmd_list, "hooks": _cmd_hooks, "schedule": _cmd_schedule,
             "check": _cmd_check, "summary": _cmd_summary}


@ends_in_one_line
def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (2: usage or config error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # everything after it is Hydra's (--help, -m, --cfg, overrides)
        from apt.cli.train import main as train

        return train(argv[1:], prog="python -m apt train")
    if argv[:1] and argv[0] in FORWARDED:
        return importlib.import_module(FORWARDED[argv[0]][0]).main(argv[1:])
    parser = build_parser()
    if argv[:1] and not argv[0].startswith("-") and argv[0] not in _COMMANDS:
        names = [*FORWARDED, *_COMMANDS]
        parser.error(f"unknown command {argv[0]!r}{did_you_mean(argv[0], names)}; valid: {', '.join(names)}")
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except BrokenPipeError:  # `python -m apt list plugins | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - report config errors as one clear line
        from apt.cli.inspect import is_config_error
        from apt.core.errors import ConfigProblems, report

        if not is_config_error(exc) or os.environ.get("APT_DEBUG"):
            raise
        report(exc if isinstance(exc, ConfigProblems) else ConfigProblems([str(exc)]))
        return CONFIG_ERROR_EXIT
