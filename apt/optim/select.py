"""Which parameters an optimizer part takes: named selectors, decided without torch.

``optim.parts.<name>.params`` names one of :data:`SELECTORS`; the config check reads the
names from here, and the optimizer factory asks :func:`selects` for each parameter of the
model (and again for parameters added mid-run, such as MoE experts and routers). A
parameter goes to the first part, in config order, whose selector takes it; what no part
takes goes to ``optim.optimizer``. Tied weights are one parameter, seen under their first
name (the token embedding, which the head shares).
"""

from __future__ import annotations

__all__ = ["COVERS", "DEFAULT_PART", "SELECTORS", "selects"]

#: The part name of ``optim.optimizer``, which takes what no part takes (reserved).
DEFAULT_PART = "default"

#: Selector name -> what it takes (shown by the config check and in the docs).
SELECTORS: dict[str, str] = {
    "hidden_matrices": "2-D weights inside the transformer blocks (attention and FFN projections, "
                       "MoE experts and routers)",
    "matrices": "every parameter of 2 or more dimensions (embeddings and head included)",
    "embeddings": "weights of embedding layers (the token embedding, which the head shares, and "
                  "learned positions)",
    "vectors": "parameters of fewer than 2 dimensions (norm gains, biases, scalars)",
}

#: Selector -> the selectors whose parameters it takes too (a part after it with one of
#: those takes nothing: a parameter goes to the first part that takes it).
COVERS: dict[str, tuple[str, ...]] = {"matrices": ("hidden_matrices", "embeddings")}


def selects(selector: str, name: str, ndim: int, *, embedding: bool) -> bool:
    """Whether ``selector`` takes the parameter called ``name`` with ``ndim`` dimensions.

    ``embedding``: the parameter is the weight of an embedding layer.
    """
    if selector == "hidden_matrices":
        return ndim == 2 and not embedding and name.startswith("blocks.")
    if selector == "matrices":
        return ndim >= 2
    if selector == "embeddings":
        return embedding
    if selector == "vectors":
        return ndim < 2
    raise ValueError(f"unknown parameter selector {selector!r}; valid: {sorted(SELECTORS)}")
