"""THE config validation mechanism: a yaml section is read into a dataclass.

Every config of the project (training sections, model, criterion, decoding, features, stage 0
data, augmentation) is a dataclass read with ``parse_section``: a key the dataclass does not
have is an error, a value whose type does not fit the field's type hint is an error, a
required field that is missing is an error, and each names the source file, the section and
the key. Rules between fields live in the dataclass's ``check(self, fail)`` method, which
calls ``fail(key, message)`` and so reports them the same way.

Types understood (from the real type hints, never from annotation strings): ``int`` (a whole
float such as ``1.0e3`` becomes an int), ``float`` (an int is accepted), ``bool``, ``str``,
``X | None``, ``list[T]``, ``tuple[T, ...]``, ``dict[str, T]``, ``Any``, a ``Literal`` of
strings (the choices are listed in the message) and a nested dataclass (a sub-section).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class SchemaError(ValueError):
    """A config value that cannot be used; the message names the file, section and key."""


Fail = Callable[[str, str], typing.NoReturn]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true/false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(tp)[0]).removeprefix('a ')}s"
    if origin is dict:
        return f"a mapping to {_describe(typing.get_args(tp)[1]).removeprefix('a ')}s"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


_NO = object()  # "does not fit"


def _convert(value: Any, tp: Any, section: str, src: str) -> Any:
    """``value`` as type ``tp``, or ``_NO``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is type(None):
        return None if value is None else _NO
    if tp is bool:
        return value if isinstance(value, bool) else _NO
    if tp is int:
        if isinstance(value, bool):
            return _NO
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return _NO
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _NO
        return float(value)
    if tp is str:
        return value if isinstance(value, str) else _NO
    if origin is Literal:
        return value if value in typing.get_args(tp) else _NO
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            out = _convert(value, arg, section, src)
            if out is not _NO:
                return out
        return _NO
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return _NO
        item = typing.get_args(tp)[0]
        out = [_convert(v, item, section, src) for v in value]
        if any(v is _NO for v in out):
            return _NO
        return out if origin is list else tuple(out)
    if origin is dict:
        if not isinstance(value, Mapping):
            return _NO
        kt, vt = typing.get_args(tp)
        out = {
            _convert(k, kt, section, src): _convert(v, vt, section, src) for k, v in value.items()
        }
        if any(k is _NO or v is _NO for k, v in out.items()):
            return _NO
        return out
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            return _NO
        return _parse(tp, value, section, src, None)
    raise TypeError(f"schema: unsupported type {tp!r} in {section}")


def parse_section(
    cls: type[T],
    given: Any,
    section: str,
    src: str,
    aliases: Mapping[str, str] | None = None,
    error: type[ValueError] = SchemaError,
) -> T:
    """``given`` (a parsed yaml mapping, or None for "all defaults") as a ``cls`` instance.

    ``aliases`` maps other spellings to field names (both given with different values is an
    error). Errors are ``error("{src}: ...")`` (a ``SchemaError`` by default) naming
    ``section.key``."""
    try:
        return _parse(cls, given, section, src, aliases)
    except SchemaError as exc:
        if error is SchemaError:
            raise
        raise error(str(exc)) from None


def _parse(
    cls: type[T], given: Any, section: str, src: str, aliases: Mapping[str, str] | None
) -> T:
    if given is None:
        given = {}
    in_section = f" in section '{section}'" if section else ""
    if not isinstance(given, Mapping):
        what = f"section '{section}'" if section else "the top level"
        raise SchemaError(f"{src}: {what} must be a mapping, got {type(given).__name__}")
    given = dict(given)
    for alias, name in (aliases or {}).items():
        if alias in given:
            value = given.pop(alias)
            if name in given and given[name] != value:
                raise SchemaError(
                    f"{src}: '{section or src}' sets both '{alias}' and '{name}' to different "
                    "values"
                )
            given[name] = value
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in given:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise SchemaError(f"{src}: unknown key '{key}'{in_section} (known: {known})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in given:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(f"{src}: missing required key '{name}'{in_section}")
            continue
        tp = hints[name]
        sub = f"{section}.{name}" if section else name
        out = _convert(given[name], tp, sub, src)
        if out is _NO:
            raise SchemaError(f"{src}: '{sub}' must be {_describe(tp)}, got {given[name]!r}")
        values[name] = out
    try:
        obj = cls(**values)
    except SchemaError as exc:  # a rule a __post_init__ enforces for direct construction too
        msg = str(exc)  # it names its own source, which may be ``src`` already
        raise SchemaError(msg if msg.startswith(f"{src}: ") else f"{src}: {msg}") from None
    check = getattr(obj, "check", None)
    if check is not None:

        def fail(key: str, message: str) -> typing.NoReturn:
            path = f"{section}.{key}" if section and key else (key or section)
            where = f"'{path}'"
            raise SchemaError(f"{src}: {where} {message}")

        check(fail)
    return obj


def enforce_rules(obj: Any, error: type[ValueError], where: str) -> None:
    """Run ``obj.check`` raising ``error("{where}: key message")``: for a ``__post_init__``,
    so that a config built directly in code obeys the same rules as one read from a file."""

    def fail(key: str, message: str) -> typing.NoReturn:
        raise error(f"{where}: {key} {message}")

    obj.check(fail)


def to_dict(obj: Any) -> dict[str, Any]:
    """A parsed section as plain data (lists, dicts, numbers, strings) for yaml/checkpoints."""
    return dataclasses.asdict(obj)
