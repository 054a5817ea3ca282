"""Compose a run's config exactly as train.py does, and explain a failure in one line.

Step one of a run (compose -> check -> build -> train). :func:`compose` builds the config
``python train.py <overrides>`` gets: APT's ``conf/`` (found by :func:`conf_dir`, the one
place that knows where it is), a ``--config-dir`` *added* to the search path as Hydra's own
flag does, the structured schemas of :mod:`apt.training.schema`, then the overrides.

Hydra's composition errors are several lines each and often omit the valid choices; every
one is turned into a :class:`~apt.core.errors.ConfigProblems` with one line naming the bad
key, option or file and the valid choices (with "did you mean" for near misses). Nothing
here imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from apt.core.errors import ConfigProblems, did_you_mean

__all__ = ["CONFIG_NAME", "compose", "conf_dir", "config_dir_argv", "config_groups", "help_text", "hydra_args",
           "sweep_variants"]

#: The primary config of train.py and ``python -m apt``.
CONFIG_NAME = "config"


def conf_dir() -> Path:
    """APT's own config directory; every lookup of ``conf/`` goes through this function.

    There is one ``conf/`` tree, at the top of the repository beside ``apt/``: a clone or an
    editable install reads it in place, and a wheel ships it inside the package as
    ``apt/conf`` (pyproject.toml), so a non-editable install trains from any directory.
    """
    package = Path(__file__).resolve().parent
    candidates = (package / "conf", package.parent / "conf")
    for cand in candidates:
        if (cand / f"{CONFIG_NAME}.yaml").is_file():
            return cand
    raise FileNotFoundError(f"APT's configs are missing: no {CONFIG_NAME}.yaml in {[str(c) for c in candidates]}; "
                            "reinstall APT (the wheel ships them as apt/conf)")


@contextlib.contextmanager
def _hydra(config_dir: str | os.PathLike[str] | None) -> Iterator[Any]:
    """Hydra initialised with train.py's search path: ``config_dir`` in front of APT's conf.

    Hydra's own ``--config-dir`` searches the directory *after* the primary config path, so a
    user's ``config.yaml`` or ``trainer/debug.yaml`` would lose to APT's; APT puts it first
    (train.py does the same through :func:`config_dir_argv`).
    """
    # Hydra's internal search-path API (hydra-core 1.3): the public initialize_config_dir
    # cannot add a second directory the way `--config-dir` does for @hydra.main.
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    from apt.training.schema import register_configs

    register_configs()
    search_path = create_config_search_path(f"file://{conf_dir()}")
    if config_dir is not None:
        extra = Path(config_dir).expanduser().resolve()
        if not extra.is_dir():
            raise ConfigProblems([f"--config-dir {str(config_dir)!r} is not a directory"])
        search_path.prepend(provider="command-line", path=f"file://{extra}",
                            anchor=SearchPathQuery(provider="main"))
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(task_name="apt", config_search_path=search_path)
    try:
        yield hydra
    finally:
        GlobalHydra.instance().clear()


def compose(overrides: Sequence[str] = (), config_dir: str | os.PathLike[str] | None = None, *,
            with_hydra: bool = False) -> DictConfig:
    """The config ``python train.py [--config-dir DIR] <overrides>`` composes.

    ``with_hydra`` keeps the ``hydra`` node (run directory, mode). Raises ConfigProblems.
    """
    from hydra.types import RunMode

    with _hydra(config_dir) as hydra:
        _refuse_repeated_choices(overrides, hydra)
        try:
            cfg = hydra.compose_config(CONFIG_NAME, list(overrides), run_mode=RunMode.RUN,
                                       with_log_configuration=False)
        except ConfigProblems:
            raise
        except Exception as exc:  # noqa: BLE001 - Hydra, OmegaConf and YAML errors; others re-raise
            problems = _explain(exc, list(overrides), hydra)
            if problems is None:
                raise
            raise problems from None
    return cfg if with_hydra else _strip_hydra(cfg)


def _refuse_repeated_choices(overrides: Sequence[str], hydra: Any) -> None:
    """``plugin=[moe,moe]``: Hydra would quietly take one ``moe``; a repeated option in a
    group's list is a mistake (a typo for another plugin?), so it is an error naming it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for text in overrides:
        try:
            o = parser.parse_override(text)
        except HydraException:
            continue  # compose explains it
        value = o.value() if not o.is_sweep_override() else None
        if not isinstance(value, list) or not hydra.config_loader.repository.group_exists(o.key_or_group):
            continue
        names = [str(v) for v in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            what = "plugin" if o.key_or_group == "plugin" else "option"
            raise ConfigProblems([f"{text} names {', '.join(map(repr, twice))} more than once; "
                                  f"list each {what} once"])


def _strip_hydra(cfg: DictConfig) -> DictConfig:
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def config_groups(config_dir: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """``{group: [options]}`` of APT's conf/ and ``config_dir`` (Hydra's own groups left out).

    Read from the directories: Hydra's ``--help`` asks its config loader once per group and
    takes seconds; this takes milliseconds.
    """
    roots = [conf_dir()] + ([Path(config_dir).expanduser().resolve()] if config_dir is not None else [])
    groups: dict[str, set[str]] = {}
    for root in roots:
        for path in root.rglob("*.yaml"):
            group = path.parent.relative_to(root).as_posix()
            if group != "." and group.split("/")[0] != "hydra":
                groups.setdefault(group, set()).add(path.stem)
    return {g: sorted(groups[g]) for g in sorted(groups)}


def help_text(overrides: Sequence[str] = (), config_dir: str | os.PathLike[str] | None = None) -> str:
    """train.py's ``--help``: the config groups and their options, then the composed config."""
    from omegaconf import OmegaConf

    groups = "\n".join(f"{g}: {', '.join(o)}" for g, o in config_groups(config_dir).items())
    config = OmegaConf.to_yaml(compose(overrides, config_dir))
    return ("usage: python train.py | python -m apt train [group=option ...] [key=value ...]\n"
            "  (-m: a sweep; --config-dir DIR: your configs; --hydra-help: Hydra's flags)\n\n"
            "== Configuration groups ==\nCompose your configuration from those groups (group=option)\n\n"
            f"{groups}\n\n== Config ==\nOverride anything in the config (foo.bar=value)\n\n{config}\n"
            f"Check a configuration without running it: python -m apt check [overrides]\n")


# -- train.py's command line ---------------------------------------------------------------
def hydra_args(argv: Sequence[str]) -> argparse.Namespace:
    """train.py's arguments as @hydra.main reads them (overrides, --config-dir, -m, --cfg, ...)."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(list(argv))


def config_dir_argv(argv: Sequence[str], scratch: Path) -> list[str]:
    """train.py's command line for Hydra, with ``--config-dir DIR`` searched in front of APT's conf.

    Hydra appends ``--config-dir`` after the primary config path, where APT's ``config.yaml``
    and groups would win. Here DIR is the primary config path when it has a ``config.yaml``;
    otherwise ``scratch`` is, holding only a copy of APT's ``config.yaml`` (Hydra looks for
    the primary config there alone). The other directories follow through
    ``hydra.searchpath``: DIR, then APT's conf, the order :func:`compose` (``apt check``) uses.
    """
    import shutil

    ns = hydra_args(argv)
    if ns.config_dir is None:
        return list(argv)
    if any(str(a).startswith("hydra.searchpath=") for a in ns.overrides):
        raise ConfigProblems(["--config-dir and hydra.searchpath=... both add config directories; "
                              "give your directories with one of them"])
    out: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg in ("--config-dir", "-cd"):
            next(rest, None)
        elif not arg.startswith("--config-dir="):
            out.append(arg)
    mine = Path(ns.config_dir).expanduser().resolve()
    later = [conf_dir()]
    if (mine / f"{CONFIG_NAME}.yaml").is_file():
        primary = mine
    else:
        primary, later = scratch, [mine, *later]
        shutil.copyfile(conf_dir() / f"{CONFIG_NAME}.yaml", scratch / f"{CONFIG_NAME}.yaml")
    paths = ", ".join("'file://{}'".format(str(p).replace("\\", "\\\\").replace("'", "\\'")) for p in later)
    # argparse reads the overrides as one run of positionals: the new one goes right after them
    at = max((i + 1 for i, a in enumerate(out) if a in ns.overrides), default=len(out))
    out.insert(at, f"hydra.searchpath=[{paths}]")
    return ["--config-path", str(primary), *out]


def sweep_variants(overrides: Sequence[str]) -> list[list[str]]:
    """Override lists that together try every value of every sweep (``-m a=1,2 b=x,y``).

    Not the cartesian product: each swept value once, the other sweeps at their first
    value, so a typo in any value is found with few compositions. Sweeps that cannot be
    enumerated (``interval(...)`` for Optuna, globs) are left to the sweeper.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    fixed: list[str] = []
    sweeps: list[tuple[str, list[str]]] = []
    for text in overrides:
        try:
            o = parser.parse_override(text)
        except HydraException as exc:
            raise _parse_problem(text, exc) from None
        if not o.is_sweep_override():
            fixed.append(text)
        elif o.is_discrete_sweep() and o.value_type.name != "GLOB_CHOICE_SWEEP":
            sweeps.append((o.get_key_element(), list(o.sweep_string_iterator())))
    first = [f"{key}={values[0]}" for key, values in sweeps]
    variants = [fixed + first]
    for i, (key, values) in enumerate(sweeps):
        for value in values[1:]:
            variants.append(fixed + first[:i] + [f"{key}={value}"] + first[i + 1:])
    return variants


# -- explaining Hydra's errors ------------------------------------------------------------------
_MISSING_OPTION = re.compile(r"Could not (?:find|load) '(?P<path>[^']*)'")
_IN_FILE = re.compile(r"^In '(?P<file>[^']+)'")
_NOT_IN_TYPE = re.compile(r"Key '(?P<key>[^']+)' not in '(?P<type>\w+)'\s+full_key: (?P<full>\S+)")


def _explain(exc: BaseException, overrides: list[str], hydra: Any) -> ConfigProblems | None:
    """One ConfigProblems line for a composition failure, or None for an unknown kind."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError
    from yaml import YAMLError

    msg = str(exc)
    cause = exc.__cause__
    if isinstance(exc, OverrideParseException):
        bad = next((o for o in overrides if _unparsable(o)), " ".join(overrides))
        return _parse_problem(bad, exc)
    if isinstance(exc, MissingConfigException) and (m := _MISSING_OPTION.search(msg)):
        group, _, name = m["path"].rpartition("/")
        if not group:
            return ConfigProblems([f"config {name!r} not found in {conf_dir()}"])
        options = hydra.config_loader.get_group_options(group)
        what = "plugin" if group == "plugin" else group
        where = f" (in {m2['file']}.yaml)" if (m2 := _IN_FILE.search(msg)) and m2["file"] != CONFIG_NAME else ""
        return ConfigProblems([f"unknown {what} {name!r}{where}{did_you_mean(name, options)}; "
                               f"valid: {', '.join(options)}"])
    if isinstance(exc, YAMLError):
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "a config file"
        problem = getattr(exc, "problem", None) or msg.splitlines()[0]
        return ConfigProblems([f"cannot parse {where}: {problem}"])
    if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        return ConfigProblems([_type_problem(cause)])
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and getattr(cause, "full_key", None):
        return _unknown_key(cause.full_key, cause.parent_node, overrides)
    if isinstance(exc, ConfigCompositionException):
        if m := _NOT_IN_TYPE.search(msg):  # a config file with a key its schema lacks
            file = f" in {m2['file']}.yaml" if (m2 := _IN_FILE.search(msg)) else ""
            valid = _schema_keys(m["type"])
            return ConfigProblems([f"unknown key {m['full']}{file}{did_you_mean(m['key'], valid)}; "
                                   f"valid keys: {', '.join(valid)}"])
        if m := re.search(r"An item is already at '([^']+)'", msg):
            return ConfigProblems([f"+{m[1]}: {m[1]} is already in the config; set it without '+'"])
        if m := re.search(r"Could not delete from config. '([^']+)' does not exist", msg):
            return ConfigProblems([f"~{m[1]}: there is no {m[1]} to delete"])
        return ConfigProblems([msg.strip().splitlines()[0]])
    return None


def _unparsable(text: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        OverridesParser.create().parse_override(text)
    except HydraException:  # parse_override raises the base class, parse_overrides a subclass
        return True
    return False


def _parse_problem(text: str, exc: BaseException) -> ConfigProblems:
    reason = str(exc).strip().splitlines()[0]
    return ConfigProblems([f"cannot parse override {text!r}: {reason}"],
                          hint="quote values with spaces, brackets or braces, e.g. 'key=[a, b]'")


def _unknown_key(full_key: str, parent: Any, overrides: list[str]) -> ConfigProblems:
    key = full_key.rpartition(".")[2]
    valid = sorted(str(k) for k in parent.keys()) if parent is not None and hasattr(parent, "keys") else []
    section = full_key.rpartition(".")[0] or "the config"
    typed = getattr(parent, "_metadata", None) is not None and dataclasses.is_dataclass(
        parent._metadata.object_type)
    line = (f"unknown key {full_key}{did_you_mean(key, valid)}; valid keys of {section}: "
            f"{', '.join(valid)}")
    given = next((o for o in overrides if o.split("=", 1)[0] == full_key), None)
    hint = None
    if given and not did_you_mean(key, valid) and not typed:
        hint = f"to add a key that is not in the config, prefix it with '+': +{given}"
    return ConfigProblems([line], hint=hint)


def _type_problem(err: Any) -> str:
    """``trainer.max_steps must be an integer or null, got 'abc'`` from OmegaConf's ValidationError."""
    from apt.plugins.options import type_name

    owner, key = getattr(err, "object_type", None), getattr(err, "key", None)
    expected = None
    if owner is not None and dataclasses.is_dataclass(owner):
        import typing

        hint = typing.get_type_hints(owner).get(str(key))
        with contextlib.suppress(TypeError):
            expected = type_name(hint) if hint is not None else None
    reason = f"must be {expected}" if expected else str(err.msg).splitlines()[0]
    return f"{err.full_key} {reason}, got {err.value!r}"


def _schema_keys(type_name_: str) -> list[str]:
    from apt.training import schema

    cls = getattr(schema, type_name_, None)
    return sorted(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else []
