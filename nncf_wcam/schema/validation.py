"""The one validator of the blocks nncf-wcam adds to a compression config (`attribution_matching`,
`saliency_guided`): every caller (NNCF's config loading, the NNCF builders, the command line's run check)
goes through `plugin_block` / `check_plugin_blocks`, which fill in the defaults and raise one-line errors.

jsonschema's own messages (and NNCF's wrapping of them) are multi-line and do not say how to fix the
value; these name the key, what is wrong and what the schema accepts. Pure JSON: no NNCF import.
"""

import difflib
import math
import numbers
from typing import Any
from typing import Collection
from typing import Optional

import jsonschema

from nncf_wcam.core.layers import AUTO
from nncf_wcam.core.layers import requested_layers
from nncf_wcam.errors import NncfWcamError
from nncf_wcam.errors import short_repr
from nncf_wcam.schema.blocks import ATTRIBUTION_MATCHING
from nncf_wcam.schema.blocks import PLUGIN_SCHEMAS
from nncf_wcam.schema.blocks import SALIENCY_GUIDED


class AlgorithmConfigError(NncfWcamError, ValueError):
    """A plugin algorithm block in a compression config is malformed. The message is always one line."""


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


def compression_blocks(config: Any) -> list:
    """The blocks of a config's "compression" section as a list (one block may stand alone, as NNCF allows)."""
    section = config.get("compression", []) if hasattr(config, "get") else []
    if isinstance(section, dict):
        return [section]
    if isinstance(section, (list, tuple)):
        return list(section)
    return []  # not a list of blocks (a number, a string, null): NNCF's validation rejects it


def plugin_block(config: Any, name: str) -> dict:
    """The single `name` block of the config, checked, with defaults filled in."""
    matches = [b for b in compression_blocks(config) if isinstance(b, dict) and b.get("algorithm") == name]
    if len(matches) > 1:
        several = " (it accepts several layers)" if "layers" in PLUGIN_SCHEMAS[name]["properties"] else ""
        msg = f"{name} appears {len(matches)} times in \"compression\". Fix: keep one {name} block{several}."
        raise AlgorithmConfigError(msg)
    if not matches:
        msg = f"No {name} block in the config's \"compression\" section."
        raise AlgorithmConfigError(msg)
    block = check_block(matches[0], name, PLUGIN_SCHEMAS[name])
    if name == ATTRIBUTION_MATCHING:
        _check_layer_keys(block)
    return block


def _check_layer_keys(block: dict) -> None:
    """What the schema cannot say: one weight per layer, and something to match."""
    layers = requested_layers(block["layers"])
    count = 1 if layers == AUTO else len(layers)
    if block["layer_weights"] is not None and len(block["layer_weights"]) != count:
        msg = f"{ATTRIBUTION_MATCHING}.layer_weights: {len(block['layer_weights'])} weights for {count} layer(s). Fix: give one weight per layer."
        raise AlgorithmConfigError(msg)
    if layers == [] and block["input_method"] is None:
        msg = f"{ATTRIBUTION_MATCHING}.layers: [] matches nothing. Fix: name a layer, use \"auto\", or set \"input_method\"."
        raise AlgorithmConfigError(msg)


def check_plugin_blocks(config: Any, known_algorithms: Collection[str] = ()) -> None:
    """Checks every plugin block of a config; the framework's own blocks are left to its validation.

    `known_algorithms`: the framework's own algorithm names (a near miss of a plugin name among the
    unknown ones gets a "did you mean").
    """
    _check_misshapen_plugin_blocks(config, known_algorithms)
    names = {b.get("algorithm") for b in compression_blocks(config) if isinstance(b, dict) and isinstance(b.get("algorithm"), str)}
    for name in [n for n in PLUGIN_SCHEMAS if n in names]:
        plugin_block(config, name)


def _named_plugin(value: Any) -> Any:
    """The plugin algorithm a non-block value names (a string, or a list holding one), else None."""
    candidates = value if isinstance(value, (list, tuple)) else [value]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate in PLUGIN_SCHEMAS:
            return candidate
    return None


def _check_misshapen_plugin_blocks(config: Any, known_algorithms: Collection[str]) -> None:
    """Blocks meant for a plugin algorithm but not shaped as one get a one-line error, not NNCF's schema dump.

    Entries that name no plugin algorithm are left to NNCF's own validation.
    """
    section = config.get("compression") if hasattr(config, "get") else None
    if isinstance(section, str) and section in PLUGIN_SCHEMAS:
        msg = f"\"compression\": {short_repr(section)} is a name, not a block. Fix: write [{{\"algorithm\": \"{section}\", ...}}]."
        raise AlgorithmConfigError(msg)
    for index, block in enumerate(compression_blocks(config)):
        where = f"compression[{index}]"
        if not isinstance(block, dict):
            name = _named_plugin(block)
            if name is not None:
                msg = f"{where}: {short_repr(block)} is a {type(block).__name__}, not a block. Fix: write {{\"algorithm\": \"{name}\", ...}}."
                raise AlgorithmConfigError(msg)
            continue
        if "algorithm" not in block:
            name = next((key for key in block if isinstance(key, str) and key in PLUGIN_SCHEMAS), None)
            if name is not None:
                msg = f"{where}: the block has no \"algorithm\" key. Fix: write {{\"algorithm\": \"{name}\", ...}} with the options beside \"algorithm\", not nested under \"{name}\"."
                raise AlgorithmConfigError(msg)
            continue
        algorithm = block["algorithm"]
        if not isinstance(algorithm, str):
            name = _named_plugin(algorithm)
            if name is not None:
                msg = f"{where}.algorithm: {short_repr(algorithm)} is not a string. Fix: set \"algorithm\" to \"{name}\"."
                raise AlgorithmConfigError(msg)
            continue
        if algorithm not in PLUGIN_SCHEMAS and algorithm not in known_algorithms:
            close = difflib.get_close_matches(algorithm.lower(), list(PLUGIN_SCHEMAS), n=1, cutoff=0.8)
            if close:
                msg = f"{where}.algorithm: unknown algorithm {short_repr(algorithm)}. Fix: did you mean \"{close[0]}\"?"
                raise AlgorithmConfigError(msg)


def plugin_blocks(config: Any) -> dict:
    """{name: checked block with defaults} for every plugin block the config holds."""
    names = {b.get("algorithm") for b in compression_blocks(config) if isinstance(b, dict)}
    return {name: plugin_block(config, name) for name in PLUGIN_SCHEMAS if name in names}


def logits_output_of(config: Any):
    """The logits selector of the plugin blocks (attribution_matching first, then saliency_guided), or None."""
    blocks = plugin_blocks(config)
    for name in (ATTRIBUTION_MATCHING, SALIENCY_GUIDED):
        if blocks.get(name, {}).get("logits_output") is not None:
            return blocks[name]["logits_output"]
    return None


def without_block(config: dict, algorithm: str) -> dict:
    """A copy of the config without one algorithm's block (e.g. the naive baseline without attribution_matching)."""
    return {**config, "compression": [b for b in compression_blocks(config) if not (isinstance(b, dict) and b.get("algorithm") == algorithm)]}
