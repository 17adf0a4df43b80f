"""The config's JSON Schema, for editors: completion, hover text and checking of ``config.yml``.

:func:`config_schema` derives it from the pydantic models of :mod:`dlscaffold.config.schema`, so it
follows them: every key with its type, range (minimum / maximum, the choices of a ``Literal``) and
default, and as its ``description`` the ``# comment`` lines written directly above the key's field
in that module (a class docstring describes a whole mapping). :func:`write_schema` backs
``dlscaffold schema [-o FILE]``; the template ships the result as ``config.schema.json``, which the
first line of a project's ``config.yml`` names for the YAML language server (VS Code's YAML
extension)::

    # yaml-language-server: $schema=config.schema.json

The schema accepts what the loader accepts, not only the types the models declare: numbers written
as text (``"1e-3"``), the older deep_learning tool's ``train: 1``, ``true``/``false`` as ``yes``,
``on``, ``1``, an empty key where a before-validator reads ``null`` (``init_args:``), and the
interval forms of ``val_every`` / ``save_every``. Unknown keys are refused wherever the run refuses
them (every mapping but a ``param_groups`` entry, whose other keys go to the optimizer); the names of
``info_flow`` models, losses and evals are the project's own and stay free. It is written as JSON
Schema draft-07, the newest draft editors' YAML support validates fully.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import os
import re
import textwrap
import tokenize
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import to_jsonable_python

from dlscaffold.config.numbers import INT64_MAX, saved_epoch
from dlscaffold.config.schema import Config, Interval
from dlscaffold.errors import UserError

DRAFT = "http://json-schema.org/draft-07/schema#"
TITLE = "dlscaffold config.yml"
DESCRIPTION = (
    "A dlscaffold run: dataloading_params, training_params, logging_params, and info_flow (the models "
    "to build, load or train, their inputs, losses and evals). Reference: docs/config.md."
)

# Text that pydantic reads as a number (what ``lrn_rate: "1e-3"`` or a YAML 1.1 reader gives).
_DIGITS = "[0-9](_?[0-9])*"
INT_TEXT = rf"^\s*[-+]?{_DIGITS}(\.0+)?\s*$"
FLOAT_TEXT = rf"^\s*[-+]?({_DIGITS}(\.({_DIGITS})?)?|\.{_DIGITS})([eE][-+]?{_DIGITS})?\s*$"
_BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "t", "f", "y", "n", "1", "0")
# pydantic's words for true/false, in any case (JSON Schema patterns have no case-insensitive flag)
BOOL_TEXT = "^(" + "|".join("".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in w) for w in _BOOL_WORDS) + ")$"

_STEPS = {"type": "integer", "minimum": 1, "maximum": INT64_MAX}
# Inputs of validators that replace the declared type's reading (pydantic cannot see what they accept).
_VALIDATOR_INPUTS: dict[Callable[..., Any], JsonSchemaValue] = {
    typing.get_args(Interval)[1].func: {
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": INT64_MAX},
            *(
                {"type": "object", "properties": {unit: _STEPS}, "required": [unit], "additionalProperties": False}
                for unit in ("steps", "epochs")
            ),
        ]
    },
    saved_epoch: {
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
            {"type": "string", "pattern": "^[0-9]+$"},
            {"type": "string", "enum": ["best", "last"]},
        ]
    },
}
# Values tried on a before-validator: one it converts (rather than passes on or refuses) is accepted;
# one that refuses text makes the field take none (``train``: 1 or 0, true or false, never "yes").
_PROBES: tuple[tuple[Any, str], ...] = ((None, "null"), (0, "integer"), (0.5, "number"))
_TEXT_PROBE = "text"
_TEXT_FORMS = (INT_TEXT, FLOAT_TEXT, BOOL_TEXT)
_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _with_text(number: JsonSchemaValue, pattern: str) -> JsonSchemaValue:
    """A number schema that also takes the number written as text."""
    return {"anyOf": [number, {"type": "string", "pattern": pattern}]}


def _probe(validator: Callable[..., Any], value: Any) -> str:
    """``"refused"``, ``"converted"`` or ``"passed"``: what ``validator`` does with ``value``."""
    try:
        out = validator(value)
    except Exception:  # any refusal: pydantic reports a validator's error as the key's problem
        return "refused"
    return "converted" if type(out) is not type(value) or out != value else "passed"


def _converted_types(validator: Callable[..., Any]) -> list[str]:
    """The JSON types of the :data:`_PROBES` that ``validator`` converts into something else."""
    found = [kind for value, kind in _PROBES if _probe(validator, value) == "converted"]
    return [kind for kind in found if not (kind == "integer" and "number" in found)]  # numbers include integers


def _without_text(schema: JsonSchemaValue) -> JsonSchemaValue:
    """``schema`` without the branches this module adds for numbers and true/false written as text."""
    if "anyOf" not in schema:
        return schema
    kept = [_without_text(branch) for branch in schema["anyOf"] if branch.get("pattern") not in _TEXT_FORMS]
    return {**schema, "anyOf": kept}


class _ConfigSchema(GenerateJsonSchema):
    """pydantic's JSON Schema generator, reading inputs as the config's loader reads them."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # a title made from the key ("Batch Size") says nothing the key does not

    def int_schema(self, schema: Any) -> JsonSchemaValue:
        return _with_text(super().int_schema(schema), INT_TEXT)

    def float_schema(self, schema: Any) -> JsonSchemaValue:
        return _with_text(super().float_schema(schema), FLOAT_TEXT)

    def bool_schema(self, schema: Any) -> JsonSchemaValue:
        return {"anyOf": [{"type": "boolean"}, {"enum": [0, 1]}, {"type": "string", "pattern": BOOL_TEXT}]}

    def function_before_schema(self, schema: Any) -> JsonSchemaValue:
        function = schema["function"]["function"]
        if function in _VALIDATOR_INPUTS:
            return json.loads(json.dumps(_VALIDATOR_INPUTS[function]))
        inner = super().function_before_schema(schema)
        if schema["function"]["type"] != "no-info":
            return inner  # a validator that needs pydantic's info object is not probed
        if _probe(function, _TEXT_PROBE) == "refused":
            inner = _without_text(inner)
        extra = _converted_types(function)
        return {"anyOf": [inner, *({"type": kind} for kind in extra)]} if extra else inner

    def function_plain_schema(self, schema: Any) -> JsonSchemaValue:
        function = schema["function"].get("function")
        if function in _VALIDATOR_INPUTS:
            return json.loads(json.dumps(_VALIDATOR_INPUTS[function]))
        return super().function_plain_schema(schema)

    def model_schema(self, schema: Any) -> JsonSchemaValue:
        result = super().model_schema(schema)
        cls = schema["cls"]
        if cls.model_config.get("extra") != "allow":  # dlscaffold.config.validation refuses unknown keys
            result["additionalProperties"] = False
        _describe_fields(cls, result.get("properties", {}))
        return result


def _describe_fields(cls: type[BaseModel], properties: dict[str, JsonSchemaValue]) -> None:
    """Add each field's comment as its description, and the defaults a factory makes."""
    comments = field_comments(cls)
    for name, field in cls.model_fields.items():
        prop = properties.get(name)
        if prop is None:
            continue
        if "description" not in prop and comments.get(name):
            prop["description"] = comments[name]
        if field.default_factory is not None and not field.default_factory_takes_validated_data:
            default = field.default_factory()
            if not isinstance(default, BaseModel):
                prop["default"] = to_jsonable_python(default)


def field_comments(cls: type) -> dict[str, str]:
    """``{field: text}`` of the ``# comment`` lines directly above each annotated field in ``cls``'s
    class body, and of a comment at the end of the field's own line; empty without the source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    comments = {tok.start[0]: tok for tok in tokens if tok.type == tokenize.COMMENT}
    found = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        row, above = node.lineno - 1, []
        while row in comments and not lines[row - 1][: comments[row].start[1]].strip():
            above.insert(0, comments[row].string)
            row -= 1
        beside = [comments[r].string for r in range(node.lineno, node.end_lineno + 1) if r in comments]
        text = " ".join(c.lstrip("#").strip() for c in above + beside)
        if text:
            found[node.target.id] = _prose(text)
    return found


def _prose(text: str) -> str:
    """Docstring or comment text as one paragraph of Markdown-ish prose (``x`` as `x`)."""
    return re.sub(r"\s*\n\s*", " ", text.replace("``", "`")).strip()


def _draft7(node: Any) -> Any:
    """pydantic's output made plain draft-07: refs into ``definitions``, no siblings beside a
    ``$ref`` (draft-07 ignores them), bounds under their JSON Schema names, no custom formats."""
    if isinstance(node, list):
        return [_draft7(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "definitions"):  # names -> schemas
            out[key] = {name: _draft7(schema) for name, schema in value.items()}
        elif key in ("default", "enum", "const"):  # values, kept as they are
            out[key] = value
        elif key == "$ref":
            out[key] = value.replace("#/$defs/", "#/definitions/")
        elif key == "description" and isinstance(value, str):
            out[key] = _prose(value)
        elif not (key == "format" and value == "path"):
            out[_BOUNDS.get(key, key)] = _draft7(value)
    if "$ref" in out and len(out) > 1:
        out = {"allOf": [{"$ref": out.pop("$ref")}], **out}
    if "anyOf" in out:  # an anyOf member that is only an anyOf: its members instead
        out["anyOf"] = [
            m for branch in out["anyOf"] for m in (branch["anyOf"] if list(branch) == ["anyOf"] else [branch])
        ]
    return out


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07) of ``config.yml``: a fresh dict, the same on every call."""
    generated = Config.model_json_schema(mode="validation", schema_generator=_ConfigSchema)
    definitions = generated.pop("$defs", {})
    generated.pop("title", None)
    generated.pop("description", None)
    return {
        "$schema": DRAFT,
        "title": TITLE,
        "description": DESCRIPTION,
        **_draft7(generated),
        "definitions": {name: _draft7(definitions[name]) for name in sorted(definitions)},
    }


def schema_text() -> str:
    """:func:`config_schema` as the text written to ``config.schema.json``: 2-space indent, one
    newline at the end."""
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"


def write_schema(output: Path | None, echo: Callable[..., Any]) -> None:
    """``dlscaffold schema``: print the schema through ``echo``, or write it to ``output`` (replaced
    in one step, never left half-written) and say where.

    Raises:
        UserError: ``output`` is a folder, or cannot be written.
    """
    text = schema_text()
    if output is None:
        echo(text.removesuffix("\n"))  # echo ends the line
        return
    if output.is_dir():
        raise UserError(f"{output}: found a folder; expected a file to write, e.g. {output / 'config.schema.json'}")
    tmp = output.with_name(output.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"{output}: cannot write the schema ({exc.strerror or exc}); expected a path in a writable folder"
        ) from None
    echo(f"Wrote the config's JSON Schema to {output}")
