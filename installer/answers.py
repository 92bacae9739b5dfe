"""Answer files: the silent mode's input and what ``--write-answers`` saves.

An answer file is TOML (``.toml``) or YAML (``.yaml``/``.yml``) with one table per section, keyed as the
questions are (``[vcenter] address = ...`` is ``vcenter.address``). It is checked first against a JSON
schema made from the questions (unknown keys and wrong types are refused, naming the key), then walked
question by question with the same checks the wizard makes. Secrets are written only when asked
(``--with-secrets``); without them, the file is a template to complete, or to feed with the secrets in
``ZVM_INSTALL_*`` environment variables (``ZVM_INSTALL_VCENTER_PASSWORD`` for ``vcenter.password``).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from installer.errors import AnswerError, Invalid
from installer.questions import BY_KEY, QUESTIONS, SECRET_KEYS, Context

_TYPES = {"text": "string", "secret": "string", "int": "integer", "bool": "boolean", "choice": "string"}


def schema() -> dict:
    sections: dict[str, dict] = {}
    for q in QUESTIONS:
        section, name = q.key.split(".")
        prop: dict[str, Any] = {"type": _TYPES[q.kind]}
        if q.kind == "choice":
            prop["enum"] = list(q.choices)
        sections.setdefault(section, {"type": "object", "properties": {}, "additionalProperties": False})
        sections[section]["properties"][name] = prop
    return {"type": "object", "properties": sections, "additionalProperties": False}


def env_name(key: str) -> str:
    return "ZVM_INSTALL_" + key.replace(".", "_").upper()


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The answer file as flat keys, after the schema check."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise AnswerError("--answers", f"{path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text.decode())
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AnswerError("--answers", f"{path} is not valid {'YAML' if path.suffix != '.toml' else 'TOML'}: "
                          f"{exc}") from None
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        error = errors[0]
        where = ".".join(str(p) for p in error.path)
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            where = ".".join([*map(str, error.path), extra[0]]) if extra else where
            known = ", ".join(q.key for q in QUESTIONS)
            raise AnswerError(where or "(top)", f"unknown key in {path}; the keys are: {known}")
        raise AnswerError(where or "(top)", f"{error.message} (in {path})")
    return {f"{section}.{name}": value for section, table in data.items() for name, value in table.items()}


def walk(given: Mapping[str, Any], ctx: Context, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The silent mode: every question that applies, answered from ``given`` (or the environment for
    secrets, or its default), checked as the wizard would; the first wrong answer stops it, named."""
    env = os.environ if env is None else env
    for q in QUESTIONS:
        if not q.when(ctx):
            continue
        if q.key in given:
            value = given[q.key]
        elif q.kind == "secret" and env_name(q.key) in env:
            value = env[env_name(q.key)]
        elif q.key in ctx.previous or (q.kind == "secret" and ctx.stored_secret(q.key) is not None):
            value = ctx.previous.get(q.key, "")
        elif q.default is not None and q.silent_default:
            value = q.default(ctx)
        elif q.key == "vcenter.thumbprint" and "vcenter.ca_bundle" in given:
            value = ""
        else:
            raise AnswerError(q.key, _missing(q, ctx))
        try:
            ctx.answers[q.key] = q.accept(value, ctx)
        except Invalid as exc:
            raise AnswerError(exc.key or q.key, exc.message) from None
    unused = sorted(set(given) - set(ctx.answers))
    if unused:
        raise AnswerError(unused[0], "not used with the other answers (e.g. tls.certificate needs tls.mode = "
                          "\"files\"): remove it")
    return ctx.answers


def _missing(q, ctx: Context) -> str:
    if q.key == "vcenter.thumbprint":
        from installer.checks import colon_hex

        shown = ctx.facts.get("vcenter_fingerprint")
        return ("missing: vCenter presents a certificate with SHA-256 fingerprint "
                f"{colon_hex(shown) if shown else '?'}; check it against your vCenter and put it here, or "
                "give vcenter.ca_bundle")
    extra = f" (or set {env_name(q.key)})" if q.kind == "secret" else ""
    return f"missing: {q.help}{extra}"


def write(path: str | os.PathLike, answers: Mapping[str, Any], with_secrets: bool = False) -> None:
    """Save answers as TOML or YAML (by the file's suffix); secrets only ``with_secrets`` (then 0600)."""
    path = Path(path)
    tables: dict[str, dict] = {}
    for key, value in answers.items():
        if key not in BY_KEY or (key in SECRET_KEYS and not with_secrets):
            continue
        if key == "admin.password" and not value:
            continue
        section, name = key.split(".")
        tables.setdefault(section, {})[name] = value
    if path.suffix.lower() in (".yaml", ".yml"):
        text = yaml.safe_dump(tables, sort_keys=False)
    else:
        text = _toml(tables)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if with_secrets else 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _toml(tables: dict[str, dict]) -> str:
    lines = []
    for section, table in tables.items():
        lines.append(f"[{section}]")
        lines += [f"{name} = {toml_value(value)}" for name, value in table.items()]
        lines.append("")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # JSON's string escapes are TOML's basic-string escapes
