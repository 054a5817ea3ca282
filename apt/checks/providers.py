"""The ``provider`` section: each kind's provider found, created with its options and checked.

Config format: ``provider/<kind>/<option>.yaml`` is ``_target_`` (a provider class),
``name`` (its registry name), then that provider's options. A ``_target_`` not registered
under ``name`` is registered (origin "config"); without ``_target_`` the name must be in
the registry already (built-in, entry point, or registered by a selected plugin's
``setup``): ``provider/attention=registered provider.attention.name=my_attention``.

The router is checked only when the FFN provider routes (``uses_router``, e.g. ``moe``):
a dense model never builds one, and checking it would import the router's torch module.
A ``_target_`` is imported and checked to be a provider class of its kind before the
registry creates it (:func:`apt.core.registry.provider_class_problem`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apt.checks.plugins import dotted_target
from apt.checks.targets import target_problem
from apt.modeling.selection import KINDS

__all__ = ["provider_choices", "provider_problems"]


def provider_choices(providers: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[str]]:
    """``(names, options, problems)`` per kind from the ``provider`` section (nothing imported)."""
    names: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    problems = []
    for kind in KINDS:
        node = providers.get(kind) if isinstance(providers, Mapping) else None
        if not isinstance(node, Mapping):
            problems.append(f"provider.{kind} is missing; choose one with provider/{kind}=<option>")
            continue
        node = dict(node)
        name = node.pop("name", None)
        if not name or name == "???":
            problems.append(f"provider.{kind}.name is required (the registry name of the {kind} provider)")
            continue
        names[kind] = {"name": str(name), "target": node.pop("_target_", None)}
        options[kind] = node
    return names, options, problems


def provider_problems(registry: Any, names: Mapping[str, Any], options: Mapping[str, dict[str, Any]],
                      model: Mapping[str, Any]) -> tuple[dict[str, str | None], list[str]]:
    """Register config ``_target_``s, then check the selection as the builder will build it.

    Returns the provider name per kind (``router`` None when the FFN does not route) and
    the problems.
    """
    from apt.core.registry import RegistryError
    from apt.modeling.selection import select_providers

    problems = []
    for kind in KINDS:
        name, target = names[kind]["name"], names[kind]["target"]
        if target:
            dotted = dotted_target(str(target))
            missing = target_problem(str(target))  # from the source: a router module imports torch
            if missing:
                problems.append(f"provider.{kind}._target_={target!r} cannot be found ({missing})")
                continue
            if registry.has(kind, name) and not registry.spec(kind, name).same_target(dotted):
                problems.append(f"provider.{kind}: name {name!r} is registered to "
                                f"{registry.spec(kind, name).target!r}, not to _target_ {target!r}; "
                                "use another name or leave _target_ out")
            elif not registry.has(kind, name):
                registry.register(kind, name, dotted, origin="config")
        elif not registry.has(kind, name):
            try:
                registry.spec(kind, name)
            except RegistryError as exc:
                problems.append(str(exc))
    if problems:
        return {}, problems
    chosen = {kind: names[kind]["name"] for kind in KINDS}
    try:
        problems = [p for kind in ("attention", "ffn") for p in _target_class_problem(kind, names[kind]["target"])]
        if problems:
            return {}, problems
        routes = bool(getattr(registry.get_class("ffn", chosen["ffn"]), "uses_router", False))
        problems = _target_class_problem("router", names["router"]["target"]) if routes else []
        if problems:
            return {}, problems
        if not routes:
            chosen["router"] = None
        select_providers(model, chosen, options, registry)
    except (RegistryError, ValueError, TypeError) as exc:
        return {}, [str(exc)]
    return chosen, []


def _target_class_problem(kind: str, target: Any) -> list[str]:
    """``provider.<kind>._target_`` imported and checked to be a provider class of ``kind``
    before the registry creates it (a ``_target_`` naming a function is never called)."""
    from apt.checks.plugins import import_target
    from apt.core.registry import provider_class_problem

    if not target:
        return []
    try:
        obj = import_target(str(target))
    except Exception as exc:  # noqa: BLE001 - a user's module: whatever it raises is the answer
        return [f"provider.{kind}._target_={target!r} cannot be imported: {type(exc).__name__}: {exc}"]
    problem = provider_class_problem(kind, obj)
    return [f"provider.{kind}._target_={target!r} {problem}"] if problem else []
