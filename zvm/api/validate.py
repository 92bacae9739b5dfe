"""A small JSON Schema checker for the subset the API's schemas use, with messages that name the field.

Supported: ``type`` (string, integer, number, boolean, array, object), ``nullable`` (OpenAPI 3.0),
``enum``, ``minimum``/``maximum``, ``minLength``/``maxLength``, ``pattern``, ``format: date-time``,
``items``, ``minItems``/``maxItems``, ``properties``, ``required``, ``additionalProperties`` (bool), and
``$ref`` to ``#/components/schemas/NAME``. Anything else in a schema is documentation only. The same
schemas are published in the OpenAPI document, so what is checked is what is documented.

Pure: no Flask, no database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from zvm.errors import ValidationError

_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}
_ARTICLE = {"integer": "an integer", "array": "an array", "object": "an object"}
_pattern_cache: dict[str, re.Pattern] = {}
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_date_time(text: str) -> datetime:
    """RFC 3339 date-time -> aware datetime; raises ValueError."""
    match = _DATE_TIME.match(text)
    if not match:
        raise ValueError(text)
    text = text.replace("z", "Z").replace("Z", "+00:00").replace("t", "T").replace(" ", "T")
    if text[17:19] == "60":  # a leap second: Python's datetime has none
        text = text[:17] + "59" + text[19:]
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(text)
    return value


def timestamp_of(text: str) -> float:
    """A checked date-time -> seconds since the epoch (clamped at the ends of datetime's range)."""
    value = parse_date_time(text)
    try:
        return value.timestamp()
    except (OverflowError, ValueError):
        return -1e12 if value.year < 1970 else 1e12


def _where(path: str) -> str:
    return path or "the body"


def _is_type(value, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False  # JSON true is not 1
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def check(value, schema: Mapping, path: str = "", components: Mapping | None = None):
    """Raise ValidationError (with ``field`` = path) if ``value`` does not match ``schema``.

    Returns the value with JSON numbers that are integers turned into ``int`` where the schema says integer.
    """
    components = components or {}
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return check(value, components[name], path, components)
    if value is None:
        if schema.get("nullable") or "type" not in schema:
            return None
        raise ValidationError(f"{_where(path)} must not be null: give a value", field=path)
    kind = schema.get("type")
    if kind is not None and not _is_type(value, kind):
        raise ValidationError(f"{_where(path)} must be {_ARTICLE.get(kind, 'a ' + kind)}", field=path)
    if kind == "integer" and isinstance(value, float):
        value = int(value)
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(repr(c) for c in schema["enum"])
        raise ValidationError(f"{_where(path)} must be one of {choices}", field=path)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise ValidationError(f"{_where(path)} must be at least {schema['minimum']}", field=path)
        if "maximum" in schema and value > schema["maximum"]:
            raise ValidationError(f"{_where(path)} must be at most {schema['maximum']}", field=path)
    if isinstance(value, str):
        _check_string(value, schema, path)
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise ValidationError(f"{_where(path)} needs at least {schema['minItems']} item(s)", field=path)
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise ValidationError(f"{_where(path)} takes at most {schema['maxItems']} items", field=path)
        if "items" in schema:
            value = [check(v, schema["items"], f"{path}[{i}]", components) for i, v in enumerate(value)]
    if isinstance(value, dict):
        value = _check_object(value, schema, path, components)
    return value


def _check_string(value: str, schema: Mapping, path: str) -> None:
    # JSON Schema counts code points, as Python's len does.
    if "minLength" in schema and len(value) < schema["minLength"]:
        raise ValidationError(f"{_where(path)} must be at least {schema['minLength']} character(s) long",
                              field=path)
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise ValidationError(f"{_where(path)} must be at most {schema['maxLength']} characters long",
                              field=path)
    if "pattern" in schema:
        pattern = _pattern_cache.get(schema["pattern"])
        if pattern is None:
            pattern = _pattern_cache[schema["pattern"]] = re.compile(schema["pattern"])
        if not pattern.search(value):
            raise ValidationError(f"{_where(path)} must match {schema['pattern']}", field=path)
    if schema.get("format") == "date-time":
        try:
            parse_date_time(value)
        except ValueError:
            raise ValidationError(f"{_where(path)} must be a date and time like 2024-05-01T12:00:00Z",
                                  field=path) from None


def _check_object(value: dict, schema: Mapping, path: str, components: Mapping) -> dict:
    props = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            where = f"{path}.{name}" if path else name
            raise ValidationError(f"{where} is required", field=where)
    if schema.get("additionalProperties") is False:
        extra = sorted(set(value) - set(props))
        if extra:
            where = f"{path}.{extra[0]}" if path else extra[0]
            known = ", ".join(props) or "none"
            raise ValidationError(f"{where} is not a known field (known: {known})", field=where)
    out = dict(value)
    for name, sub in props.items():
        if name in value:
            out[name] = check(value[name], sub, f"{path}.{name}" if path else name, components)
    return out


def coerce_query(raw: str, schema: Mapping, name: str):
    """A query-string value -> the schema's type, then checked. Raises ValidationError naming the param."""
    kind = schema.get("type", "string")
    value: object = raw
    try:
        if kind == "integer":
            if not re.fullmatch(r"[+-]?\d+", raw.strip()):
                raise ValueError(raw)
            value = int(raw)
        elif kind == "number":
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(raw)
        elif kind == "boolean":
            if raw.lower() not in ("true", "false"):
                raise ValueError(raw)
            value = raw.lower() == "true"
    except ValueError:
        raise ValidationError(f"query parameter {name} must be {_ARTICLE.get(kind, 'a ' + kind)}, "
                              f"not {raw!r}", field=name) from None
    return check(value, schema, f"query parameter {name}")
