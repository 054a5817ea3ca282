"""Train a transformer LM: `python train.py [group=option ...] [key=value ...]`.

Hydra composes conf/config.yaml with the command line; apt.app validates the result, builds
plugins, model, data and optimizer, trains, and returns the final validation loss (so
Hydra sweepers can minimise it). `python train.py --help` lists every group and option.
The same entry point is `python -m apt train` for an installed APT (apt/cli/train.py).
"""

from apt.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
