"""One-line, actionable errors for malformed plugin blocks, raised before any model is touched.

jsonschema's own messages (and NNCF's wrapping of them) are multi-line and do not say how to
fix the value; this names the key, what is wrong and what the schema accepts.
"""

import difflib
from typing import Any

import jsonschema


class AlgorithmConfigError(ValueError):
    """A plugin algorithm block in an NNCF config is malformed."""


def check_block(block: Any, name: str, schema: dict) -> dict:
    """Validates one `{"algorithm": name, ...}` block; returns it with the defaults filled in."""
    if not isinstance(block, dict):
        msg = f"{name}: the block must be a JSON object, got {type(block).__name__}. Fix: write {{\"algorithm\": \"{name}\", ...}}."
        raise AlgorithmConfigError(msg)
    properties = schema["properties"]
    unknown = [key for key in block if key not in properties]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), properties, n=1)
        hint = f"Did you mean '{close[0]}'? " if close else ""
        msg = f"{name}: unknown key '{key}'. {hint}Valid keys: {', '.join(properties)}."
        raise AlgorithmConfigError(msg)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(block), key=lambda e: list(e.path))
    if errors:
        raise AlgorithmConfigError(_describe(errors[0], name, properties))
    filled = {key: spec.get("default") for key, spec in properties.items() if key != "algorithm"}
    filled.update(block)
    return filled


def _describe(error: jsonschema.ValidationError, name: str, properties: dict) -> str:
    if not error.path:
        return f"{name}: {error.message}."
    key = error.path[0]
    location = ".".join(str(p) for p in error.path)
    # A oneOf failure's own message dumps the whole sub-schema; the accepted forms say it better.
    what = f"{error.instance!r} is not valid" if error.validator == "oneOf" else error.message
    return f"{name}.{location}: {what}. Fix: set '{key}' to {_accepted(properties[key])}."


def _accepted(spec: dict) -> str:
    if "enum" in spec:
        return "one of " + ", ".join(repr(v) for v in spec["enum"])
    if "oneOf" in spec:
        return " or ".join(_accepted(option) for option in spec["oneOf"])
    if "const" in spec:
        return repr(spec["const"])
    kinds = spec.get("type", "value")
    kinds = " or ".join(kinds) if isinstance(kinds, list) else kinds
    bounds = []
    if "minimum" in spec:
        bounds.append(f">= {spec['minimum']}")
    if "exclusiveMaximum" in spec:
        bounds.append(f"< {spec['exclusiveMaximum']}")
    if "minItems" in spec:
        bounds.append(f"with at least {spec['minItems']} item(s)")
    if spec.get("uniqueItems"):
        bounds.append("without duplicates")
    if "items" in spec and "type" in spec["items"]:
        bounds.append(f"of {spec['items']['type']}s")
    return f"{'a' if kinds[0] not in 'aeiou' else 'an'} {kinds}" + (" " + ", ".join(bounds) if bounds else "")
