"""Config dataclass fields written once: help and flag as field metadata, types as annotations.

`option` declares a field with its help text (and, rarely, a flag name other than the field's).
`from_dict` is the one strict loader from JSON-like dicts (config files, a run's config.json,
the architecture in a weights file): every value must have the field's annotated type (an
integer is not a bool, "0.001" is not a float, a string is not a list), else an error naming
the field and where the value came from. `add_arguments` turns the same fields into argparse
options, with `choices` from `Literal` annotations.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any, Literal

from giftnet.errors import ConfigError, UserError


def option(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None, **kw: Any) -> Any:
    """A dataclass field carrying its command-line help (and flag, default `--field-name`)."""
    meta = {"help": help} | ({"flag": flag} if flag else {})
    return dataclasses.field(default=default, metadata=meta, **kw)


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of ({_describe(args[0])})"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    if dataclasses.is_dataclass(tp):
        return "a JSON object"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}.get(
        tp, str(tp)
    )


class _Mismatch(Exception):
    """A value that does not have the expected type (turned into the caller's error)."""


def convert(value: Any, tp: Any, name: str, where: str, error: type[UserError]) -> Any:
    """`value` as type `tp` (lists become tuples, ints become floats), else `error` naming `name`."""
    try:
        return _convert(value, tp, name, where, error)
    except _Mismatch:
        shown = json.dumps(value) if isinstance(value, (int, float, str, bool, type(None), list)) else repr(value)
        raise error(f"{where}field {name!r} must be {_describe(tp)}, got {shown}") from None


def _convert(value: Any, tp: Any, name: str, where: str, error: type[UserError]) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _Mismatch
        return from_dict(tp, value, where, error, prefix=f"{name}.")
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _convert(value, arm, name, where, error)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], name, where, error) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_convert(v, a, name, where, error) for v, a in zip(value, args, strict=True))
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # a JSON integer beyond any float
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"fields.convert: unsupported annotation {tp!r} of {name}")  # a bug in a config class


def from_dict(cls: type, data: Any, where: str = "", error: type[UserError] = ConfigError, prefix: str = "") -> Any:
    """Build dataclass `cls` from a JSON-like dict, strictly (see the module docstring).

    `where` names the source ("--config c.json"); messages start with it. Values outside a field's
    domain are refused by the class's own checks, re-raised as `error` with `where` in front.
    """
    where = f"{where}: " if where and not where.endswith(": ") else where
    if not isinstance(data, dict):
        raise error(f"{where}{prefix.rstrip('.') or cls.__name__} must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise error(f"{where}unknown field(s) {[prefix + u for u in unknown]}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kw = {k: convert(v, hints[k], prefix + k, where, error) for k, v in data.items()}
    try:
        return cls(**kw)
    except ConfigError as exc:
        if error is ConfigError and not where and not prefix:
            raise
        raise error(f"{where}{_with_flag(cls, prefix, str(exc))}") from None


def _with_flag(cls: type, prefix: str, message: str) -> str:
    """'gamma: ...' -> 'loss.gamma (--gamma): ...', so a nested field's message names its flag too."""
    name, sep, rest = message.partition(":")
    for f in dataclasses.fields(cls):
        if sep and f.name == name and "help" in f.metadata:
            return f"{prefix}{name} ({flag_of(f)}):{rest}"
    return prefix + message


def config_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """The fields of `cls` that are options (those with help), with their resolved types."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if "help" in f.metadata]


def add_arguments(group: Any, cls: type, dest_prefix: str = "") -> None:
    """One argparse option per field of `cls`; every default is SUPPRESS (absent = not given)."""
    for f, tp in config_fields(cls):
        kw: dict[str, Any] = {"dest": dest_prefix + f.name, "default": argparse.SUPPRESS, "help": f.metadata["help"]}
        arms = [a for a in typing.get_args(tp) if a is not type(None)] if _is_union(tp) else [tp]
        base = arms[0]
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is tuple:
            args = typing.get_args(base)
            item = args[0]
            kw["nargs"] = "+" if len(args) == 2 and args[1] is Ellipsis else len(args)
            kw.update(_scalar(item))
            kw["metavar"] = f.name.split("_")[-1].upper().removesuffix("S")  # gift_sites: SITE
        else:
            kw.update(_scalar(base))
            if "choices" not in kw:
                kw["metavar"] = f.name.split("_")[-1].upper()  # base_channels: CHANNELS
        group.add_argument(flag_of(f), **kw)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _scalar(tp: Any) -> dict[str, Any]:
    if typing.get_origin(tp) is Literal:
        return {"type": str, "choices": typing.get_args(tp)}
    return {"type": tp}
