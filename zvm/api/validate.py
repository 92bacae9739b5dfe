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

from zvm.enums import TABLES
from zvm.errors import ValidationError

_ARTICLE = {"integer": "an integer", "array": "an array", "object": "an object"}
_DATE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[Tt ](\d{2}:\d{2})(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?)?$")


def parse_date_time(text: str) -> datetime:
    """A date and time as people and Zerto's clients write them -> aware datetime; raises ValueError.

    RFC 3339 (``2026-12-05T06:49:10.5Z``), without seconds (``2026-12-05T06:49Z``), without a zone (UTC, as
    Zerto's API takes it: ``2026-12-05T06:49:10``) or a date alone (``2026-12-05``: midnight UTC)."""
    match = _DATE_TIME.match(text)
    if not match:
        raise ValueError(text)
    day, hm, seconds, _, zone = match.groups()
    seconds = (seconds or ":00")[1:]
    if seconds[:2] == "60":  # a leap second: Python's datetime has none
        seconds = "59" + seconds[2:]
    zone = (zone or "Z").upper().replace("Z", "+00:00")
    if len(zone) == 5:  # +0100
        zone = zone[:3] + ":" + zone[3:]
    return datetime.fromisoformat(f"{day}T{hm or '00:00'}:{seconds}{zone}")


def is_date_only(text: str) -> bool:
    match = _DATE_TIME.match(text)
    return bool(match) and match.group(2) is None


def timestamp_of(text: str, *, end: bool = False) -> float:
    """A checked date-time -> seconds since the epoch (clamped at the ends of datetime's range). With ``end``,
    a date alone means the end of that day (an end date includes its day)."""
    value = parse_date_time(text)
    try:
        stamp = value.timestamp()
    except (OverflowError, ValueError):
        return -1e12 if value.year < 1970 else 1e12
    return stamp + 86400 - 1e-6 if end and is_date_only(text) else stamp


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


def _zvr_enum(validator, name, instance, schema):
    """A Zerto enumeration (zvm/enums.py): its number or its name in any case."""
    if instance is None and schema.get("nullable"):
        return
    try:
        TABLES[name].parse(instance)
    except ValueError as exc:
        yield SchemaError(str(exc))


ENUM_KEYWORD = "x-zvr-enum"
# Draft 2020-12 with OpenAPI 3.0's nullable, and the Zerto enumerations
_Validator = validators.extend(Draft202012Validator, {"type": _type, "enum": _enum, "nullable": _nullable,
                                                             ENUM_KEYWORD: _zvr_enum})
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
_RANK = {"type": 0, "enum": 1, ENUM_KEYWORD: 1, "minimum": 2, "maximum": 2, "minLength": 3, "maxLength": 3, "pattern": 4,
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
    if keyword == ENUM_KEYWORD:
        return ValidationError(f"{_where(where)} must be {error.message}", field=where)
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
        "format": "must be a date and time like 2024-05-01T12:00:00Z (or 2024-05-01, or 2024-05-01T12:00Z)",
        "minItems": f"needs at least {schema.get('minItems')} item(s)",
        "maxItems": f"takes at most {schema.get('maxItems')} items",
    }
    text = messages.get(keyword) if keyword != "format" or schema.get("format") == "date-time" else None
    return ValidationError(f"{_where(where)} {text or 'is not valid: ' + error.message}", field=where)


def _typed(value, schema: Mapping, components: Mapping):
    """JSON numbers that are integers (2.0) as ``int`` where the schema says integer, and enumerations as
    their members (zvm/enums.py)."""
    schema = _resolve(schema, components)
    if not isinstance(schema, Mapping):
        return value
    if schema.get("type") == "integer" and isinstance(value, float):
        return int(value)
    if ENUM_KEYWORD in schema and value is not None:
        return TABLES[schema[ENUM_KEYWORD]].parse(value)
    if isinstance(value, list) and "items" in schema:
        return [_typed(v, schema["items"], components) for v in value]
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        return {k: _typed(v, props[k], components) if k in props else v for k, v in value.items()}
    return value


def canonical_keys(value, schema: Mapping, components: Mapping, path: str = ""):
    """Field names as the schema spells them: the API's JSON binding is case-insensitive on input, like
    Zerto's (``checkpointName`` is ``CheckpointName``). Two spellings of one field are refused."""
    schema = _resolve(schema, components)
    if not isinstance(schema, Mapping):
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [canonical_keys(v, schema["items"], components, f"{path}[{i}]") for i, v in enumerate(value)]
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or ():
            value = canonical_keys(value, sub, components, path)
    if not isinstance(value, dict):
        return value
    props = schema.get("properties") or {}
    spelled = {name.lower(): name for name in props}
    out: dict = {}
    for key, item in value.items():
        name = spelled.get(key.lower(), key) if isinstance(key, str) else key
        if name in out:
            field = f"{path}.{name}" if path else name
            raise ValidationError(f"{field} is given twice (field names are case-insensitive): give it once",
                                  field=field)
        sub = props.get(name)
        out[name] = canonical_keys(item, sub, components, f"{path}.{name}" if path else name) \
            if sub is not None else item
    return out


def check(value, schema: Mapping, path: str = "", components: Mapping | None = None):
    """Raise ValidationError (with ``field`` = path) if ``value`` does not match ``schema``.

    Field names are first spelled as the schema does (case-insensitive input). Returns the value with JSON
    numbers that are integers turned into ``int`` where the schema says integer, and enumerations turned
    into their members.
    """
    components = components or {}
    value = canonical_keys(value, schema, components, path)
    errors = list(_validator(schema, components).iter_errors(value))
    if errors:
        first = min(errors, key=lambda e: _order(e, schema, components))
        raise _translated(first, path)
    return _typed(value, schema, components)


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
