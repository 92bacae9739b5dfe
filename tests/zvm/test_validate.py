"""zvm.api.validate on the jsonschema library: OpenAPI's nullable, the first failure in reading order, the
API's messages, and no schema keyword left unchecked."""

from __future__ import annotations

import pytest

from zvm.api.validate import check, unchecked_keywords
from zvm.errors import ValidationError

COMPONENTS = {"Nic": {"type": "object", "properties": {"Ip": {"type": "string", "pattern": r"^\d+\.\d+\.\d+\.\d+$"}},
                      "required": ["Ip"], "additionalProperties": False}}
BODY = {
    "type": "object",
    "properties": {
        "Name": {"type": "string", "minLength": 1},
        "Size": {"type": "integer", "minimum": 1, "nullable": True},
        "Kind": {"type": "string", "enum": ["A", "B"], "nullable": True},
        "Nics": {"type": "array", "items": {"$ref": "#/components/schemas/Nic"}, "maxItems": 2},
        "At": {"type": "string", "format": "date-time"},
    },
    "required": ["Name"],
    "additionalProperties": False,
}


def refusal(value, schema=BODY) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as err:
        check(value, schema, components=COMPONENTS)
    return str(err.value), err.value.field


def test_valid_bodies_pass_with_integers_as_int() -> None:
    out = check({"Name": "x", "Size": 2.0, "Kind": None, "Nics": [{"Ip": "10.0.0.1"}], "At": "2024-05-01T12:00:00Z"},
                BODY, components=COMPONENTS)
    assert out["Size"] == 2 and isinstance(out["Size"], int)
    assert check({"Name": "x", "Size": None}, BODY, components=COMPONENTS)["Size"] is None


def test_refusals_name_the_field_in_reading_order() -> None:
    assert refusal([]) == ("the body must be an object", "")
    assert refusal({}) == ("Name is required", "Name")
    assert refusal({"Name": "x", "Zzz": 1, "Aaa": 2})[1] == "Aaa"  # the first unknown field, by name
    assert refusal({"Name": "", "Size": 0}) == ("Name must be at least 1 character(s) long", "Name")
    assert refusal({"Name": "x", "Size": 0}) == ("Size must be at least 1", "Size")
    assert refusal({"Name": "x", "Size": True}) == ("Size must be an integer", "Size")
    assert refusal({"Name": "x", "Kind": "C"}) == ("Kind must be one of 'A', 'B'", "Kind")
    assert refusal({"Name": None}) == ("Name must not be null: give a value", "Name")
    assert refusal({"Name": "x", "Nics": [{"Ip": "10.0.0.1"}, {}]}) == ("Nics[1].Ip is required", "Nics[1].Ip")
    assert refusal({"Name": "x", "Nics": [{"Ip": "x"}]}) == (r"Nics[0].Ip must match ^\d+\.\d+\.\d+\.\d+$",
                                                             "Nics[0].Ip")
    assert refusal({"Name": "x", "Nics": [{"Ip": "1.1.1.1"}] * 3}) == ("Nics takes at most 2 items", "Nics")
    assert refusal({"Name": "x", "At": "May 1st"}) == (
        "At must be a date and time like 2024-05-01T12:00:00Z (or 2024-05-01, or 2024-05-01T12:00Z)", "At")


def test_keywords_the_old_subset_ignored_are_checked_now() -> None:
    schema = {"oneOf": [{"type": "integer"}, {"type": "string"}]}
    assert check(3, schema) == 3
    with pytest.raises(ValidationError, match="is not valid"):
        check([], schema)


def test_a_keyword_nothing_checks_is_refused_when_the_schema_is_used() -> None:
    schema = {"type": "object", "properties": {"A": {"type": "string", "maxLenght": 3}}}
    assert unchecked_keywords(schema) == ["#/properties/A/maxLenght"]
    with pytest.raises(ValueError, match="maxLenght"):
        check({"A": "x"}, schema)


def test_every_schema_the_api_publishes_is_checked_whole() -> None:
    from zvm.api import blueprints, schemas

    found = [w for name, s in schemas.COMPONENTS.items() for w in unchecked_keywords(s, f"#/components/{name}")]
    for bp in blueprints():
        for op in bp.operations:
            for schema in [op.body, op.response] + [p.schema for p in op.query]:
                found += unchecked_keywords(schema or {}, f"{op.method} {op.path}")
    assert found == []
