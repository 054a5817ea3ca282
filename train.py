"""Train a transformer LM: `python train.py [group=option ...] [key=value ...]`.

The run is compose -> check -> build -> train (apt.compose, apt.checks, apt.build,
apt.training). Before Hydra creates a run directory, apt.app.preflight composes and checks
the command line as `python -m apt check` does: a mistake is one `error:` line and exit
status 2. Hydra then composes the run and apt.app.main checks, builds and trains it, and
returns the final validation loss (so Hydra sweepers can minimise it).
`python train.py --help` lists every group and option (`--hydra-help`: Hydra's flags).
"""

import sys

import hydra
from omegaconf import DictConfig

from apt.app import main as run_app
from apt.app import preflight
from apt.compose import CONFIG_NAME, conf_dir
from apt.core.errors import CONFIG_ERROR_EXIT, ConfigProblems, report
from apt.training.schema import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> float:
    return run_app(cfg)


if __name__ == "__main__":
    from apt.training.distributed import worker_hydra_overrides

    sys.argv += worker_hydra_overrides()  # under torchrun, rank 0 alone writes a run directory
    try:
        answered = preflight(sys.argv[1:])  # --help is answered here
    except ConfigProblems as exc:
        report(exc)
        sys.exit(CONFIG_ERROR_EXIT)
    if not answered:
        main()
