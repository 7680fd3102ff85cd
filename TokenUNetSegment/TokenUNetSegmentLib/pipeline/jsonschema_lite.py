"""A small JSON-schema validator (the subset our schemas use), so the pipeline needs no extra package.

Supported keywords: type, properties, required, additionalProperties (bool or schema), items,
minItems, maxItems, enum, const, minimum, maximum, exclusiveMinimum, minLength, maxLength, pattern (``$`` at its
end matches only the end of the string, as in JSON schema, not before a final newline), oneOf, anyOf,
$ref to ``#/definitions/...`` or ``#/$defs/...``. Unknown keywords are ignored, as in JSON schema.
"""

from __future__ import annotations

import re
from typing import Any

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


def pattern_matches(pattern: str, text: str) -> bool:
    """JSON schema's ``pattern``: a search, where a final ``$`` is the end of the string (Python's ``$`` would also
    match before a final newline, letting ``"id\\n"`` pass ``^[a-z]+$``)."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.search(pattern, text) is not None


def validation_errors(instance: Any, schema: dict, root: dict | None = None, path: str = "$") -> list[str]:
    """Every violation of ``schema`` by ``instance``, each as ``"<json path>: <problem>"`` (empty: valid)."""
    root = schema if root is None else root
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref are supported, got {ref!r}")
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        return validation_errors(instance, target, root, path)
    errors: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_TYPES[k](instance) for k in kinds):
            return [f"{path}: expected {' or '.join(kinds)}, got {type(instance).__name__}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: must be {schema['const']!r}")
    if _TYPES["number"](instance):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{path}: {instance} is below the minimum {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{path}: {instance} is above the maximum {schema['maximum']}")
        if "exclusiveMinimum" in schema and instance <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: {instance} must be greater than {schema['exclusiveMinimum']}")
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            errors.append(f"{path}: string is shorter than {schema['minLength']}")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append(f"{path}: string is longer than {schema['maxLength']}")
        if "pattern" in schema and not pattern_matches(schema["pattern"], instance):
            errors.append(f"{path}: {instance[:80]!r} does not match {schema['pattern']!r}")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            errors.append(f"{path}: needs at least {_items(schema['minItems'])}")
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errors.append(f"{path}: allows at most {_items(schema['maxItems'])}")
        if "items" in schema:
            for i, item in enumerate(instance):
                errors += validation_errors(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{path}: missing required key '{key}'")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if key in properties:
                errors += validation_errors(value, properties[key], root, f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: unexpected key '{key}'")
            elif isinstance(extra, dict):
                errors += validation_errors(value, extra, root, f"{path}.{key}")
    for keyword, needed in (("anyOf", 1), ("oneOf", 1)):
        if keyword in schema:
            matches = sum(not validation_errors(instance, sub, root, path) for sub in schema[keyword])
            if matches < needed or (keyword == "oneOf" and matches > 1):
                errors.append(
                    f"{path}: must match {'exactly one' if keyword == 'oneOf' else 'at least one'} "
                    f"of the allowed forms ({matches} matched)"
                )
    return errors


def _items(count: int) -> str:
    """``count`` items, in words that agree with it ("1 item", "2 items")."""
    return f"{count} item{'' if count == 1 else 's'}"
