"""Fused kernels (Triton), each module layered kernel -> launcher -> autograd op -> torch reference.

Import from the module itself (``from apt.kernels.flash_attention import flash_attention``):
this package re-exports nothing, so importing it stays free of torch and triton and the
submodule is never shadowed by a function of the same name.
"""
