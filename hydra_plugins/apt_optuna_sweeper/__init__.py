"""APT's Optuna sweeper for Hydra (``hydra/sweeper=optuna``), found through the ``hydra_plugins``
namespace package like every Hydra plugin. The study logic is :mod:`apt.sweeps.optuna_study`."""
