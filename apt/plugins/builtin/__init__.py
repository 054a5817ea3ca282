"""APT's built-in plugins, one module each, named by import path.

Every :class:`~apt.plugins.PluginManager` knows these names; the class is imported only
when the plugin is loaded, so listing or validating plugin names stays cheap. To add a
built-in plugin, add one ``name: "module:Class"`` entry here.
"""

__all__ = ["BUILTIN_PLUGINS"]

#: plugin name -> "module:Class"
BUILTIN_PLUGINS: dict[str, str] = {
    "logging": "apt.plugins.builtin.file_logging:LoggingPlugin",
    "early_stopping": "apt.plugins.builtin.early_stopping:EarlyStoppingPlugin",
    "gradient_clipping": "apt.plugins.builtin.gradient_clipping:GradientClippingPlugin",
    "moe": "apt.plugins.builtin.moe:MoEPlugin",
    "align": "apt.plugins.builtin.align:AlignPlugin",
    "lr_monitor": "apt.plugins.builtin.lr_monitor:LRMonitorPlugin",
    "throughput": "apt.plugins.builtin.throughput:ThroughputPlugin",
    "tensorboard": "apt.plugins.builtin.tensorboard:TensorBoardPlugin",
    "csv": "apt.plugins.builtin.csv_logger:CSVLoggerPlugin",
    "mlflow": "apt.plugins.builtin.mlflow_logger:MLflowPlugin",
    "wandb": "apt.plugins.builtin.wandb_logger:WandbPlugin",
    "checkpoint": "apt.plugins.builtin.checkpoint:CheckpointPlugin",
    "nan_guard": "apt.plugins.builtin.nan_guard:NaNGuardPlugin",
}
