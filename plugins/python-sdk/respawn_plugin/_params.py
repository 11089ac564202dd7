"""Params: the step's `with:` (JSON text) parsed into a dataclass, and the JSON Schema of that dataclass.

A params class is a `@dataclass` whose fields have type annotations from this set: `str`, `int`, `float`,
`bool`, `Any`, `Optional[T]` (or `T | None`), `list[T]`, `dict[str, T]`, `Literal[...]`, an `Enum` (by value)
and a nested dataclass. A field without a default is required. Unknown keys are refused, so a misspelt key is an
`invalid-input` failure instead of a silently ignored setting; every error names the field:

    params: unknown field `whom`, expected `who`
    params: missing field `who`
    params.servers[1].port: expected an integer, found "80"

A JSON key that is not a Python identifier (`from`, `dry-run`) is given with `field(metadata={"key": "from"})`;
`metadata={"description": ...}` goes into the schema.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import types
import typing
from typing import Any, Dict, List

from ._types import Failure

_MISSING = dataclasses.MISSING
_UNION_TYPES: tuple = (typing.Union,) + ((types.UnionType,) if sys.version_info >= (3, 10) else ())


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _fields(cls: type) -> List[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _found(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _quoted(names: List[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _expected(tp: Any) -> str:
    """How an error names what a type accepts."""
    origin = typing.get_origin(tp)
    if tp is str:
        return "a string"
    if tp is bool:
        return "a boolean"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is type(None):
        return "null"
    if tp is list or origin in (list, List):
        return "a list"
    if tp is dict or origin in (dict, Dict) or dataclasses.is_dataclass(tp):
        return "an object"
    if origin is typing.Literal:
        return "one of " + ", ".join(_found(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(_found(m.value) for m in tp)
    if origin in _UNION_TYPES:
        return " or ".join(_expected(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _bad(path: str, tp: Any, value: Any) -> Failure:
    return Failure.invalid_input(f"{path}: expected {_expected(tp)}, found {_found(value)}")


def convert(value: Any, tp: Any, path: str) -> Any:
    """`value` (parsed JSON) as `tp`, or an `invalid-input` failure naming `path`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise _bad(path, tp, value)
        fields = _fields(tp)
        hints = _hints(tp)
        by_key = {_key(f): f for f in fields}
        for key in value:
            if key not in by_key:
                names = list(by_key)
                expected = (
                    "no fields"
                    if not names
                    else f"`{names[0]}`" if len(names) == 1 else f"one of {_quoted(names)}"
                )
                raise Failure.invalid_input(f"{path}: unknown field `{key}`, expected {expected}")
        kwargs = {}
        for key, f in by_key.items():
            if key in value:
                kwargs[f.name] = convert(value[key], hints[f.name], f"{path}.{key}")
            elif f.default is _MISSING and f.default_factory is _MISSING:
                raise Failure.invalid_input(f"{path}: missing field `{key}`")
        try:
            return tp(**kwargs)
        except Failure:
            raise
        except (TypeError, ValueError) as e:
            # A __post_init__ that checks values: its message is the explanation.
            raise Failure.invalid_input(f"{path}: {e}") from None
    if origin in _UNION_TYPES:
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, path)
            except Failure:
                continue
        raise _bad(path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _bad(path, tp, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _bad(path, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _bad(path, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _bad(path, tp, value)
    if tp is type(None):
        if value is None:
            return None
        raise _bad(path, tp, value)
    if origin is typing.Literal:
        for a in args:
            if value == a and type(value) is type(a):
                return a
        raise _bad(path, tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if member.value == value and type(member.value) is type(value):
                return member
        raise _bad(path, tp, value)
    if tp is list or origin in (list, List):
        if not isinstance(value, list):
            raise _bad(path, tp, value)
        item = args[0] if args else Any
        return [convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin in (dict, Dict):
        if not isinstance(value, dict):
            raise _bad(path, tp, value)
        item = args[1] if len(args) == 2 else Any
        return {k: convert(v, item, f"{path}.{k}") for k, v in value.items()}
    raise TypeError(f"{path}: params type {tp!r} is not supported (see respawn_plugin._params)")


def check_params_class(cls: Any) -> None:
    """Raises TypeError, when the plugin module is imported (at build time), for a params class that
    `parse_params` could not fill: not a dataclass, or a field of an unsupported type."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"params must be a @dataclass class, not {cls!r}")
    schema_of(cls)


def parse_params(raw: str | dict, cls: Any = None) -> Any:
    """The step's params (`with:` as JSON text, or an already parsed dict) as an instance of the dataclass `cls`;
    without `cls`, the JSON object as a dict. Errors are `invalid-input` failures naming the field."""
    if isinstance(raw, (str, bytes)):
        try:
            value = json.loads(raw)
        except ValueError as e:
            raise Failure.invalid_input(f"params: not JSON: {e}") from None
    else:
        value = raw
    if cls is None:
        if not isinstance(value, dict):
            raise Failure.invalid_input(f"params: expected an object, found {_found(value)}")
        return value
    return convert(value, cls, "params")


def schema_of(tp: Any) -> Dict[str, Any]:
    """The JSON Schema of a params type (a dataclass: an object that allows only its fields)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return {}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = _hints(tp)
        properties: Dict[str, Any] = {}
        required: List[str] = []
        for f in _fields(tp):
            prop = schema_of(hints[f.name])
            if "description" in f.metadata:
                prop = {"description": f.metadata["description"], **prop}
            if f.default is not _MISSING:
                default = f.default.value if isinstance(f.default, enum.Enum) else f.default
                try:
                    json.dumps(default)
                    prop["default"] = default
                except (TypeError, ValueError):
                    pass
            elif f.default_factory is _MISSING:
                required.append(_key(f))
            properties[_key(f)] = prop
        schema: Dict[str, Any] = {"type": "object"}
        if required:
            schema["required"] = required
        schema["properties"] = properties
        schema["additionalProperties"] = False
        return schema
    if origin in _UNION_TYPES:
        options = [a for a in args if a is not type(None)]
        if len(options) == 1 and len(args) == 2:
            inner = schema_of(options[0])
            return {"anyOf": [inner, {"type": "null"}]} if inner else {}
        return {"anyOf": [schema_of(a) for a in args]}
    simple = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}
    if tp in simple:
        return {"type": simple[tp]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if tp is list or origin in (list, List):
        return {"type": "array", "items": schema_of(args[0])} if args else {"type": "array"}
    if tp is dict or origin in (dict, Dict):
        if len(args) == 2:
            if args[0] is not str:
                raise TypeError(f"params type {tp!r}: JSON object keys are strings")
            return {"type": "object", "additionalProperties": schema_of(args[1])}
        return {"type": "object"}
    raise TypeError(f"params type {tp!r} is not supported (see respawn_plugin._params)")


def outputs_json(value: Any, where: str) -> str:
    """A handler's return value as the step's outputs: a dict, a dataclass instance, or None for `{}`."""
    if value is None:
        value = {}
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if not isinstance(value, dict):
        raise Failure.internal(
            f"{where}: outputs must be a dict or a dataclass (a JSON object), got {type(value).__name__}"
        )
    try:
        return json.dumps(value, allow_nan=False, default=_jsonable)
    except (TypeError, ValueError) as e:
        raise Failure.internal(f"{where}: outputs are not JSON: {e}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")

