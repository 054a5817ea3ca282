"""``python -m apt.export ckpt=<path> out=<dir> [format=hf|safetensors] [verify=true]``: see :mod:`apt.export`.

Problems are one ``error:`` line: exit status 2 for a bad command line or a checkpoint that
cannot be loaded (missing, not APT's, weights that do not fit its model config), 1 for a
model that cannot be exported (the line names what cannot be exported and why).
``python -m apt export`` is the same command.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from apt.core.errors import ends_in_one_line

__all__ = ["main"]

DEFAULTS = {"ckpt": None, "out": None, "format": "hf", "verify": True}
USAGE = ("usage: python -m apt export ckpt=<path> out=<dir> [format=hf|safetensors] [verify=true|false]\n"
         "  Write a checkpoint as a Hugging Face transformers model directory (format=hf) or bare\n"
         "  safetensors weights. python -m apt.export is the same command.")


@ends_in_one_line
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    from omegaconf import OmegaConf

    from apt.export.exporter import FORMATS

    try:
        args = OmegaConf.to_container(OmegaConf.merge(DEFAULTS, OmegaConf.from_cli(argv)))
    except Exception as exc:  # noqa: BLE001 - a malformed key=value
        print(f"{USAGE.splitlines()[0]}\nerror: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    unknown = sorted(set(args) - set(DEFAULTS))
    problem = (f"unknown option(s) {unknown}; valid: {sorted(DEFAULTS)}" if unknown
               else "ckpt=<path> and out=<dir> are required" if not args["ckpt"] or not args["out"]
               else f"format={args['format']!r} is not one of {list(FORMATS)}" if args["format"] not in FORMATS
               else f"verify={args['verify']!r} must be true or false" if not isinstance(args["verify"], bool)
               else None)
    if problem:
        print(f"{USAGE.splitlines()[0]}\nerror: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from apt.export.architectures import ExportError
    from apt.export.exporter import export_checkpoint
    from apt.training.checkpoint import CheckpointError

    try:
        written = export_checkpoint(str(args["ckpt"]), str(args["out"]), format=args["format"],
                                    verify=args["verify"])
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ExportError as exc:
        print(f"error: cannot export {args['ckpt']}: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
