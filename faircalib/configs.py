"""The one base of every settings class (`Config`) and the value checks they share.

A settings class is a frozen dataclass that inherits `Config`:

    @dataclass(frozen=True)
    class CalibConfig(Config):
        epochs: int = 15
        def __post_init__(self) -> None:
            check_int("epochs", self.epochs, lo=0)

- `to_dict()` gives plain JSON values (nested configs become dicts, tuples lists) plus
  `format_version`; `from_dict(d)` is its inverse: nested configs are built from their dicts,
  unknown keys are refused naming the allowed ones, a newer `format_version` is refused, and every
  ConfigError keeps its field path (`probe.prior.beta: ...`), however deep it was raised.
- The checks (`check_int`, `check_float`, `check_choice`, ...) raise a one-line ConfigError
  "FIELD: expected ..., got ..." with `field` set.

Boundary: pure Python (no torch); every faircalib config and the job service's job file use it.
"""
from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass, replace
from typing import Any, ClassVar

from faircalib.errors import ConfigError


# ---------------------------------------------------------------------------------------- value checks
def fail(field: str, expected: str, value: Any) -> typing.NoReturn:
    raise ConfigError(f"{field}: expected {expected}, got {value!r}", field=field)


def _range_text(kind: str, lo: Any, hi: Any, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind


def check_int(field: str, value: Any, lo: int | None = None, hi: int | None = None, *,
              optional: bool = False) -> int | None:
    if optional and value is None:
        return None
    what = _range_text("an integer", lo, hi) + (" or null" if optional else "")
    if isinstance(value, bool) or not isinstance(value, int):
        fail(field, what, value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        fail(field, what, value)
    return value


def check_float(field: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    what = _range_text("a number", lo, hi, lo_open)
    if hi_open and hi is not None:
        what = what[:-1] + ")"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(field, what, value)
    v = float(value)
    if (math.isnan(v) or (lo is not None and (v < lo or (lo_open and v == lo)))
            or (hi is not None and (v > hi or (hi_open and v == hi)))):
        fail(field, what, value)
    return v


def check_choice(field: str, value: Any, allowed: typing.Iterable[Any]) -> Any:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{field}: {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}", field=field)
    return value


def check_str(field: str, value: Any, what: str = "a non-empty string") -> str:
    if not isinstance(value, str) or not value.strip():
        fail(field, what, value)
    return value


def check_bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        fail(field, "true or false", value)
    return value


def check_keys(path: str, data: Mapping, allowed: typing.Iterable[str]) -> None:
    allowed = list(allowed)
    for k in data:
        if k not in allowed:
            where = f"{path}.{k}" if path else str(k)
            raise ConfigError(f"{where}: unknown field; allowed: {', '.join(allowed)}", field=where)


def set_field(obj: Any, name: str, value: Any) -> None:
    """Normalise a frozen dataclass field in __post_init__."""
    object.__setattr__(obj, name, value)


# ---------------------------------------------------------------------------------------- the base
def _encode(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _config_class(hint: Any) -> type[Config] | None:
    """The Config subclass a field's type names (directly or as `X | None`), else None."""
    if isinstance(hint, type) and issubclass(hint, Config):
        return hint
    for arg in typing.get_args(hint):
        if isinstance(arg, type) and issubclass(arg, Config):
            return arg
    return None


def _is_tuple(hint: Any) -> bool:
    return hint is tuple or typing.get_origin(hint) is tuple or any(
        typing.get_origin(a) is tuple for a in typing.get_args(hint))


class Config:
    """Mixin for frozen dataclass settings: the dict round-trip with checks (see the module docstring)."""

    FORMAT_VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: _encode(getattr(self, f.name)) for f in fields(self)}
        out["format_version"] = self.FORMAT_VERSION
        return out

    @classmethod
    def from_dict(cls, data: Any, path: str = ""):
        """Build from a mapping (None = all defaults; an instance is returned as is). `path` is where the
        mapping sits in an enclosing document (e.g. "probe"); error messages name fields under it."""
        if data is None:
            data = {}
        if isinstance(data, cls):
            return data
        names = [f.name for f in fields(cls) if f.init]
        if not isinstance(data, Mapping):
            fail(path or cls.__name__, f"a mapping with fields {', '.join(names)}", data)
        data = dict(data)
        version = data.pop("format_version", cls.FORMAT_VERSION)
        if version != cls.FORMAT_VERSION:
            where = f"{path}.format_version" if path else "format_version"
            raise ConfigError(f"{where}: {cls.__name__} format {version!r} is not {cls.FORMAT_VERSION} (written by "
                              f"another faircalib version); rewrite the settings", field=where)
        check_keys(path, data, names)
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            sub = _config_class(hints.get(key))
            if sub is not None and value is None:  # an empty section (`probe:` in YAML): its defaults
                continue
            if sub is not None and not isinstance(value, sub):
                value = sub.from_dict(value, f"{path}.{key}" if path else key)
            elif _is_tuple(hints.get(key)) and isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise e.within(path) from None

    def replace(self, **changes: Any):
        return replace(self, **changes)


def is_config(obj: Any) -> bool:
    return isinstance(obj, Config) and is_dataclass(obj)


__all__ = ["Config", "check_bool", "check_choice", "check_float", "check_int", "check_keys", "check_str",
           "fail", "is_config", "set_field"]
