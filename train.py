"""Train a transformer LM: `python train.py [group=option ...] [key=value ...]`.

Hydra composes conf/config.yaml with the command line; apt.app validates the result, builds
plugins, model, data and optimizer, trains, and returns the final validation loss (so
Hydra sweepers can minimise it). `python train.py --help` lists every group and option.
"""

import sys

import hydra
from omegaconf import DictConfig

from apt.app import check_overrides
from apt.app import main as run_app
from apt.training.schema import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return run_app(cfg)


if __name__ == "__main__":
    from apt.training.distributed import worker_hydra_overrides

    sys.argv += worker_hydra_overrides()  # under torchrun, rank 0 alone writes a run directory
    problems = check_overrides(sys.argv[1:])
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        sys.exit(2)
    main()
