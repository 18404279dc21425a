"""Checked settings: the fields of a typed config and the ``SDF_*`` environment variables.

A setting that comes from a person (``sdfkit.yaml``, ``--set FIELD=VALUE``, an environment
variable) is checked once, where it enters, against the field's type hint and its limits,
and a bad one is an ``SdfError`` naming where it came from and what is accepted — before any
work starts, never a ``ValueError`` deep inside an audit.

Limits live next to the default, as dataclass field metadata::

    @dataclass
    class Config(Checked):
        where_: ClassVar[str] = "audits.ngrams"         # how errors name this config
        top_k: int = field(default=50, metadata=at_least(1))
        flag_doc_share: dict[int, float] = field(
            default_factory=dict, metadata=between(0, 1) | keys_at_least(1)
        )

``check_fields(cls, mapping, where)`` checks and converts a mapping (YAML lists become tuples
where the field is a tuple, ``"5"`` keys become ``5`` where keys are ints) and rejects unknown
keys; ``Checked`` runs the same checks on a config built directly in Python. Environment
variables: ``env_int``, ``env_float`` and ``env_choice``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from sdfkit.errors import ConfigError, SdfError


# ---------------------------------------------------------------- field limits (metadata)
def between(low: float, high: float, low_open: bool = False) -> dict[str, Any]:
    """Numbers of the field (a dict's values, a list's items) lie in [low, high]
    ((low, high] with ``low_open``)."""
    return {"min": low, "max": high, "min_open": low_open}


def at_least(low: float) -> dict[str, Any]:
    return {"min": low}


def at_most(high: float) -> dict[str, Any]:
    return {"max": high}


def one_of(*choices: str) -> dict[str, Any]:
    return {"choices": tuple(choices)}


def items_at_least(count: int, instead: str = "") -> dict[str, Any]:
    """A list field holds at least ``count`` items, a mapping field ``count`` keys (an empty
    one would switch a check off without a word); ``instead`` ends the error with what to
    write for what the empty value seemed to ask, e.g. "null turns the check off"."""
    return {"min_items": count, "min_items_instead": instead}


def sql_condition() -> dict[str, Any]:
    """A text field holding a SQL condition (an audit's ``where``): empty text is an error,
    never "every document" (leaving the setting out, or null, is that)."""
    return {"condition": True}


def keys_at_least(low: int) -> dict[str, Any]:
    """A dict field's keys are whole numbers of at least ``low`` (e.g. n-gram sizes)."""
    return {"key_min": low}


# ---------------------------------------------------------------- checking
@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def check_fields(
    cls: type, values: Mapping[str, Any], where: str, noun: str = "setting"
) -> dict[str, Any]:
    """``values`` checked against the dataclass ``cls`` and converted to its field types.

    ``where`` names the source, e.g. ``"sdfkit.yaml: audits.ngrams"``; errors read
    ``<where>.<key>: <problem>``.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: must be a mapping of settings, got {values!r}")
    fields = _fields(cls)
    hints = _hints(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields or not fields[key].init:
            known = ", ".join(sorted(n for n, f in fields.items() if f.init))
            raise ConfigError(f"{where}.{key}: unknown {noun} (known: {known})")
        out[key] = check_value(hints[key], value, f"{where}.{key}", fields[key].metadata)
    return out


class Checked:
    """Mix-in for a config dataclass: its fields are checked (and converted) on construction,
    so ``Config(top_k="ten")`` in a notebook fails as clearly as the same line in sdfkit.yaml.
    Subclasses set ``where_`` (how errors name the config) and may add cross-field checks in
    their own ``__post_init__`` after calling ``super().__post_init__()``."""

    where_: ClassVar[str] = "settings"

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            setattr(
                self,
                f.name,
                check_value(hints[f.name], value, f"{self.where_}.{f.name}", f.metadata),
            )


#: A number in exponent notation without a dot (5e-2, 1E3), which YAML 1.1 leaves as text.
_EXPONENT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def check_value(hint: Any, value: Any, where: str, limits: Mapping[str, Any] = {}) -> Any:
    """``value`` as the type ``hint`` says, within ``limits``; else a ``ConfigError``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) > 1:  # e.g. float | dict[str, float]: the arm of the value's shape
            shaped = [a for a in arms if _shape_fits(a, value)]
            arms = shaped or arms
        return check_value(arms[0], value, where, limits)
    if value is None:
        raise ConfigError(f"{where}: must be {_describe(hint)}, got null")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(
                f"{where}: must be a list of {_describe(args[0], plural=True)}, got {value!r}"
            )
        _enough(list(value), where, limits, "list", "value")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{where}: must be a list of {len(args)} values, got {value!r}")
            items = [
                check_value(a, v, f"{where}[{i}]", limits)
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            ]
        else:
            items = [check_value(args[0], v, f"{where}[{i}]", limits) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: must be a mapping, got {value!r}")
        _enough(dict(value), where, limits, "map", "key")
        key_type, value_type = args
        out = {}
        for k, v in value.items():
            key = _check_key(key_type, k, where, limits)
            out[key] = check_value(value_type, v, f"{where}.{k}", limits)
        return out
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: must be a whole number, got {value!r}")
        return _in_range(value, where, limits)
    if hint is float:
        if isinstance(value, str) and _EXPONENT.match(value.strip()):
            # YAML 1.1 (PyYAML) reads 5e-2 as text: it wants 5.0e-2
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: must be a number, got {value!r}")
        if value != value:  # NaN passes every comparison
            raise ConfigError(f"{where}: must be a number, got {value!r}")
        _in_range(value, where, limits)
        return float(value)
    if hint is str:
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be text, got {value!r}")
        if limits.get("condition") and not value.strip():
            raise ConfigError(
                f'{where}: empty; give one SQL condition, e.g. "n_tokens > 800" '
                "(or leave the setting out for every document)"
            )
        choices = limits.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{where}: must be one of {', '.join(choices)}, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise ConfigError(f"{where}: must be a file path, got {value!r}")
        return Path(value)
    return value  # a type this checker does not know: the config's own code decides


def _enough(
    value: list | dict, where: str, limits: Mapping[str, Any], verb: str, noun: str
) -> None:
    """A list or mapping with fewer items than ``items_at_least`` asks is an error."""
    fewest = limits.get("min_items", 0)
    if len(value) < fewest:
        instead = limits.get("min_items_instead")
        raise ConfigError(
            f"{where}: must {verb} at least {fewest} {noun}{'s' if fewest > 1 else ''}, "
            f"got {value!r}" + (f" ({instead})" if instead else "")
        )


def _shape_fits(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is dict:
        return isinstance(value, Mapping)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    return not isinstance(value, (Mapping, list, tuple))


def _check_key(key_type: Any, key: Any, where: str, limits: Mapping[str, Any]) -> Any:
    if key_type is int:
        try:
            number = int(key) if not isinstance(key, (bool, float)) else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            raise ConfigError(f"{where}: key {key!r} must be a whole number")
        if "key_min" in limits and number < limits["key_min"]:
            raise ConfigError(f"{where}: key {key!r} must be at least {limits['key_min']}")
        return number
    if key_type is str:
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise ConfigError(f"{where}: key {key!r} must be text")
        return str(key)
    return key


def _in_range(value: float, where: str, limits: Mapping[str, Any]) -> Any:
    low, high = limits.get("min"), limits.get("max")
    low_open = limits.get("min_open", False)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and value > high
    if below or above:
        raise ConfigError(f"{where}: must be {_range_text(low, high, low_open)}, got {value!r}")
    return value


def _range_text(low: Any, high: Any, low_open: bool = False) -> str:
    if low is not None and high is not None:
        if low_open:
            return f"above {low} and at most {high}"
        return f"between {low} and {high}"
    if low is not None:
        return f"above {low}" if low_open else f"at least {low}"
    return f"at most {high}"


def _describe(hint: Any, plural: bool = False) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(_describe(a, plural) for a in arms)
    if origin in (list, tuple):
        return "lists" if plural else "a list"
    if origin is dict:
        return "mappings" if plural else "a mapping"
    names = {
        bool: ("true or false", "true or false values"),
        int: ("a whole number", "whole numbers"),
        float: ("a number", "numbers"),
        str: ("text", "texts"),
        Path: ("a file path", "file paths"),
    }
    if hint in names:
        return names[hint][plural]
    return getattr(hint, "__name__", str(hint))


# ---------------------------------------------------------------- environment variables
def env_int(
    name: str,
    default: int,
    low: int | None = None,
    high: int | None = None,
    error: type[SdfError] = ConfigError,
) -> int:
    """``$name`` as a whole number in [low, high] (``default`` when unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    accepted = _range_text(low, high) if low is not None or high is not None else ""
    hint = f" (accepted: {accepted})" if accepted else ""
    try:
        value = int(raw)
    except ValueError:
        raise error(f"{name} must be a whole number, got {raw!r}{hint}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise error(f"{name} must be {accepted}, got {raw!r}")
    return value


def env_float(
    name: str,
    default: float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    error: type[SdfError] = ConfigError,
    accepted: str | None = None,
) -> float:
    """``$name`` as a number in [low, high] (``(low, high]`` with ``low_open``)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    accepted = accepted or _range_text(low, high, low_open)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if value != value:
        raise error(f"{name} must be a number, got {raw!r} (accepted: {accepted})")
    below = low is not None and (value <= low if low_open else value < low)
    if below or (high is not None and value > high):
        raise error(f"{name} must be {accepted}, got {raw!r}")
    return value


def env_choice(
    name: str, default: str, choices: tuple[str, ...], error: type[SdfError] = ConfigError
) -> str:
    """``$name`` as one of ``choices`` (case-insensitive; ``default`` when unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() not in choices:
        raise error(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw.lower()


def env_url(name: str, error: type[SdfError] = ConfigError) -> str | None:
    """``$name`` as an http(s) URL with a host (and a valid port), or None when unset."""
    from urllib.parse import urlsplit

    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise error(f"{name}={raw!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in raw):
        raise error(f"{name}={raw!r} is not a valid URL: use http(s)://host[:port][/path]")
    return raw


# ---------------------------------------------------------------- YAML files
def load_yaml(text: str, first_line: int = 1) -> Any:
    """``yaml.safe_load`` of a file a person wrote, refusing a key given twice in one mapping.

    PyYAML keeps the last of two equal keys without a word, so a setting written twice (say a
    universe's ``key_facts``, or a sweep's ``train``) silently lost one of them. A duplicate
    is a ``yaml.YAMLError`` with ``problem_mark`` at the second key, which every reader
    already turns into one line naming the file and line. ``first_line`` is the file line of
    the text's first line (front matter starts on line 2)."""
    import yaml

    return yaml.load(text, Loader=_unique_key_loader(first_line))  # noqa: S506 - a SafeLoader


@cache
def _unique_key_loader(first_line: int) -> type:
    import yaml

    # the pure-Python loader, as yaml.safe_load: its messages, and its RecursionError on
    # absurd nesting, which the readers name as such
    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # `<<: *anchor` merges; explicit keys may override it
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.get(key)
                        seen.setdefault(key, key_node.start_mark.line)
                    except TypeError:  # an unhashable key: the base class says so
                        continue
                    if first is not None:
                        raise yaml.constructor.ConstructorError(
                            None,
                            None,
                            f"key {key!r} is given twice (first on line {first + first_line})",
                            key_node.start_mark,
                        )
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader
