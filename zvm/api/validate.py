"""Checking request bodies and query parameters against the API's schemas with the ``jsonschema`` library
(Draft 2020-12), with messages that name the field.

The schemas are OpenAPI 3.0's dialect of JSON Schema: ``nullable`` is honoured (a null passes a nullable
schema's ``type`` and ``enum``, as it does a schema without ``type``), ``$ref`` points into
``#/components/schemas``, ``format: date-time`` is RFC 3339. A schema keyword that is neither checked by the
library nor an annotation (description, example...) is refused when the schema is first used: nothing in a
schema is silently ignored. The same schemas are published in the OpenAPI document, so what is checked is
what is documented.

Of all the ways a value fails, the one reported is the first in reading order: at each level its type, then
its enum, bounds, length, pattern and format, then an array's items in order, or an object's required
fields, unknown fields and then its properties in the order the schema declares them. The library's error
is translated into the API's ``{Code, Message, Field}`` (a ``ValidationError`` whose ``field`` is the path:
``Basic.Name``, ``Vms[2].VmIdentifier``).

Pure: no Flask, no database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema import ValidationError as SchemaError

from zvm.errors import ValidationError

_ARTICLE = {"integer": "an integer", "array": "an array", "object": "an object"}
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


_type_keyword = Draft202012Validator.VALIDATORS["type"]
_enum_keyword = Draft202012Validator.VALIDATORS["enum"]


def _null_passes(schema: Mapping) -> bool:
    return bool(schema.get("nullable")) or "type" not in schema


def _type(validator, types, instance, schema):
    if instance is None and _null_passes(schema):
        return
    yield from _type_keyword(validator, types, instance, schema)


def _enum(validator, enums, instance, schema):
    if instance is None and _null_passes(schema):
        return
    yield from _enum_keyword(validator, enums, instance, schema)


def _nullable(validator, nullable, instance, schema):
    return iter(())  # read by type and enum


# Draft 2020-12 with OpenAPI 3.0's nullable
_Validator = validators.extend(Draft202012Validator, {"type": _type, "enum": _enum, "nullable": _nullable})
_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value) -> bool:
    if isinstance(value, str):
        parse_date_time(value)
    return True


# keywords that only document (the OpenAPI document shows them); every other keyword must be checked
ANNOTATIONS = frozenset({"description", "title", "example", "examples", "default", "readOnly", "writeOnly",
                         "deprecated", "$comment", "components"})
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs")
_SUBSCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")


def unchecked_keywords(schema, where: str = "#") -> list[str]:
    """Keywords of ``schema`` (and its subschemas) that nothing checks: neither the validator nor an annotation."""
    if not isinstance(schema, Mapping):
        return []
    out = [f"{where}/{key}" for key in schema if key not in _Validator.VALIDATORS and key not in ANNOTATIONS]
    for key in _SUBSCHEMA_MAPS:
        for name, sub in (schema.get(key) or {}).items():
            out += unchecked_keywords(sub, f"{where}/{key}/{name}")
    for key in _SUBSCHEMAS:
        if key in schema:
            out += unchecked_keywords(schema[key], f"{where}/{key}")
    for key in _SUBSCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key) or []):
            out += unchecked_keywords(sub, f"{where}/{key}/{i}")
    return out


_validators: dict[tuple[int, int], tuple[Mapping, Mapping, Draft202012Validator]] = {}


def _validator(schema: Mapping, components: Mapping) -> Draft202012Validator:
    key = (id(schema), id(components))
    cached = _validators.get(key)
    if cached is not None and cached[0] is schema and cached[1] is components:
        return cached[2]
    root = {**schema, "components": {"schemas": components}}  # "#/components/schemas/X" resolves here
    unknown = unchecked_keywords(schema) + [w for name, sub in components.items()
                                            for w in unchecked_keywords(sub, f"#/components/schemas/{name}")]
    if unknown:
        raise ValueError(f"schema keywords that nothing would check: {', '.join(unknown)}")
    validator = _Validator(root, format_checker=_FORMATS)
    _validators[key] = (schema, components, validator)
    return validator


# the order the checks are read in at one level (see the module docstring); children come under items
# and properties
_RANK = {"type": 0, "enum": 1, "minimum": 2, "maximum": 2, "minLength": 3, "maxLength": 3, "pattern": 4,
         "format": 5, "minItems": 6, "maxItems": 6, "items": 7, "required": 8, "additionalProperties": 9,
         "properties": 10}
_OTHER = 11


def _resolve(schema: Mapping, components: Mapping) -> Mapping:
    while isinstance(schema, Mapping) and "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _order(error: SchemaError, schema: Mapping, components: Mapping) -> tuple:
    """Where the error comes in reading order: the steps down to its value, then its keyword."""
    key: list[tuple] = []
    for step in error.absolute_path:
        schema = _resolve(schema, components)
        if isinstance(step, int):
            key.append((_RANK["items"], step))
            schema = schema.get("items", {}) if isinstance(schema, Mapping) else {}
        else:
            props = list((schema.get("properties") or {}) if isinstance(schema, Mapping) else {})
            key.append((_RANK["properties"], props.index(step)) if step in props else (_OTHER, str(step)))
            schema = (schema.get("properties") or {}).get(step, {}) if isinstance(schema, Mapping) else {}
    key.append((_RANK.get(error.validator, _OTHER), 0))
    return tuple(key)


def _at(path: str, steps) -> str:
    for step in steps:
        path = f"{path}[{step}]" if isinstance(step, int) else (f"{path}.{step}" if path else str(step))
    return path


def _translated(error: SchemaError, path: str) -> ValidationError:
    """The library's error as the API says it."""
    where = _at(path, error.absolute_path)
    schema, value, keyword = error.schema, error.instance, error.validator
    if keyword == "type":
        if value is None:
            return ValidationError(f"{_where(where)} must not be null: give a value", field=where)
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        kind = next((t for t in types if t != "null"), types[0])
        return ValidationError(f"{_where(where)} must be {_ARTICLE.get(kind, 'a ' + kind)}", field=where)
    if keyword == "enum":
        choices = ", ".join(repr(c) for c in schema["enum"])
        return ValidationError(f"{_where(where)} must be one of {choices}", field=where)
    if keyword in ("required", "additionalProperties") and isinstance(value, dict):
        if keyword == "required":
            name = next(n for n in schema["required"] if n not in value)
            text = "is required"
        else:
            props = schema.get("properties") or {}
            name = sorted(set(value) - set(props))[0]
            text = f"is not a known field (known: {', '.join(props) or 'none'})"
        field = f"{where}.{name}" if where else name
        return ValidationError(f"{field} {text}", field=field)
    messages = {
        "minimum": f"must be at least {schema.get('minimum')}",
        "maximum": f"must be at most {schema.get('maximum')}",
        "minLength": f"must be at least {schema.get('minLength')} character(s) long",
        "maxLength": f"must be at most {schema.get('maxLength')} characters long",
        "pattern": f"must match {schema.get('pattern')}",
        "format": "must be a date and time like 2024-05-01T12:00:00Z",
        "minItems": f"needs at least {schema.get('minItems')} item(s)",
        "maxItems": f"takes at most {schema.get('maxItems')} items",
    }
    text = messages.get(keyword) if keyword != "format" or schema.get("format") == "date-time" else None
    return ValidationError(f"{_where(where)} {text or 'is not valid: ' + error.message}", field=where)


def _integers(value, schema: Mapping, components: Mapping):
    """JSON numbers that are integers (2.0) as ``int`` where the schema says integer."""
    schema = _resolve(schema, components)
    if not isinstance(schema, Mapping):
        return value
    if schema.get("type") == "integer" and isinstance(value, float):
        return int(value)
    if isinstance(value, list) and "items" in schema:
        return [_integers(v, schema["items"], components) for v in value]
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        return {k: _integers(v, props[k], components) if k in props else v for k, v in value.items()}
    return value


def check(value, schema: Mapping, path: str = "", components: Mapping | None = None):
    """Raise ValidationError (with ``field`` = path) if ``value`` does not match ``schema``.

    Returns the value with JSON numbers that are integers turned into ``int`` where the schema says integer.
    """
    components = components or {}
    errors = list(_validator(schema, components).iter_errors(value))
    if errors:
        first = min(errors, key=lambda e: _order(e, schema, components))
        raise _translated(first, path)
    return _integers(value, schema, components)


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
