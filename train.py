"""Train a transformer LM: `python train.py [group=option ...] [key=value ...]`.

The run is compose -> check -> build -> train (apt.compose, apt.checks, apt.build,
apt.training); apt/cli/train.py is the entry point, the same as `python -m apt train` for an
installed APT. A mistake on the command line is one `error:` line and exit status 2, before
Hydra creates a run directory. `python train.py --help` lists every group and option.
"""

from apt.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
