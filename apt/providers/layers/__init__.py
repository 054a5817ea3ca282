"""The ``nn.Module`` layers the built-in providers build (these modules import torch).

The provider classes themselves (:mod:`apt.providers.attention`, :mod:`apt.providers.ffn`,
:mod:`apt.providers.flash`) import no torch, so checking a config (option names and types,
``validate_config``) stays fast; they import their layer module on the first
``create_layer``.
"""
