"""One-line, actionable errors for malformed plugin blocks, raised before any model is touched.

jsonschema's own messages (and NNCF's wrapping of them) are multi-line and do not say how to
fix the value; this names the key, what is wrong and what the schema accepts.
"""

import difflib
import math
import numbers
import reprlib
from typing import Any, Optional

import jsonschema


def one_line(text: str) -> str:
    """Line breaks (from the reprs of user objects, numpy arrays, ...) shown as a visible '\\n'."""
    return "\\n".join(text.splitlines())


class AlgorithmConfigError(ValueError):
    """A plugin algorithm block in an NNCF config is malformed. The message is always one line."""

    def __init__(self, message: Any = "", *args: Any):
        super().__init__(one_line(str(message)), *args)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 8
_REPR.maxlevel = 3


def short_repr(value: Any) -> str:
    """repr() of a config value on one line, at most about a hundred characters (hostile values can be huge)."""
    try:
        return one_line(_REPR.repr(value))
    except Exception:  # a user object whose __repr__ fails must not hide the config error
        return f"<{type(value).__name__}>"


def check_block(block: Any, name: str, schema: dict) -> dict:
    """Validates one `{"algorithm": name, ...}` block; returns it with the defaults filled in."""
    if not isinstance(block, dict):
        msg = f"{name}: the block must be a JSON object, got {type(block).__name__}. Fix: write {{\"algorithm\": \"{name}\", ...}}."
        raise AlgorithmConfigError(msg)
    properties = schema["properties"]
    unknown = [key for key in block if key not in properties]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, properties, n=1) if isinstance(key, str) else []
        hint = f"Did you mean '{close[0]}'? " if close else ""
        msg = f"{name}: unknown key {short_repr(key)}. {hint}Valid keys: {', '.join(properties)}."
        raise AlgorithmConfigError(msg)
    for key, value in block.items():
        found = _first_non_finite(value, [key])
        if found is not None:
            location, number = found
            msg = (
                f"{name}.{'.'.join(str(p) for p in location)}: {short_repr(number)} is not a finite number. "
                f"Fix: set '{key}' to {_accepted(properties[key])}."
            )
            raise AlgorithmConfigError(msg)
    errors = sorted(_schema_errors(block, name, schema), key=lambda e: list(e.path))
    if errors:
        raise AlgorithmConfigError(_describe(errors[0], name, properties))
    filled = {key: spec.get("default") for key, spec in properties.items() if key != "algorithm"}
    filled.update(block)
    return filled


def _first_non_finite(value: Any, path: list) -> Optional[tuple]:
    """(path, number) of the first NaN, infinity or number that is no real float (1e400, complex) in a value."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Number):
        try:
            finite = math.isfinite(float(value))
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            finite = False
        return None if finite else (path, value)
    if isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    else:
        return None
    for index, item in items:
        found = _first_non_finite(item, [*path, index])
        if found is not None:
            return found
    return None


def _schema_errors(block: dict, name: str, schema: dict) -> list:
    try:
        return list(jsonschema.Draft7Validator(schema).iter_errors(block))
    except Exception as error:  # values that are not JSON (Decimal, sets of odd objects, ...) can break jsonschema itself
        for key, value in block.items():
            try:
                list(jsonschema.Draft7Validator(schema["properties"][key]).iter_errors(value))
            except Exception:
                msg = (
                    f"{name}.{key}: {short_repr(value)} is not a JSON value ({type(error).__name__}). "
                    f"Fix: set '{key}' to {_accepted(schema['properties'][key])}."
                )
                raise AlgorithmConfigError(msg) from error
        msg = f"{name}: the block cannot be checked ({type(error).__name__}: {error}). Fix: use JSON values only."
        raise AlgorithmConfigError(msg) from error


def _describe(error: jsonschema.ValidationError, name: str, properties: dict) -> str:
    if not error.path:
        return f"{name}: {error.message}."
    key = error.path[0]
    location = ".".join(str(p) for p in error.path)
    # A oneOf failure's own message dumps the whole sub-schema; the accepted forms say it better.
    # jsonschema's messages repr the whole value: a huge value gets a shortened repr instead.
    if error.validator == "oneOf" or len(error.message) > 200:
        what = f"{short_repr(error.instance)} is not valid"
    else:
        what = error.message
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
    if "maximum" in spec:
        bounds.append(f"<= {spec['maximum']}")
    if "exclusiveMaximum" in spec:
        bounds.append(f"< {spec['exclusiveMaximum']}")
    if "minItems" in spec:
        bounds.append(f"with at least {spec['minItems']} item(s)")
    if spec.get("uniqueItems"):
        bounds.append("without duplicates")
    if "items" in spec and "type" in spec["items"]:
        bounds.append(f"of {spec['items']['type']}s")
    return f"{'a' if kinds[0] not in 'aeiou' else 'an'} {kinds}" + (" " + ", ".join(bounds) if bounds else "")
