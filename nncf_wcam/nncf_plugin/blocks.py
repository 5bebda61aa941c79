"""Finding and checking the plugin's blocks in an NNCF config (dict or NNCFConfig)."""

import difflib
from typing import Any

from nncf.config.schema import REF_VS_ALGO_SCHEMA
from nncf_wcam.nncf_plugin.config_check import AlgorithmConfigError
from nncf_wcam.nncf_plugin.config_check import check_block
from nncf_wcam.nncf_plugin.config_check import short_repr

# name -> JSON schema of every algorithm this plugin registers.
PLUGIN_SCHEMAS = {}


def compression_blocks(config: Any) -> list:
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
    return check_block(matches[0], name, PLUGIN_SCHEMAS[name])


def check_plugin_blocks(config: Any) -> None:
    """Checks every plugin block of a config; NNCF's own blocks are left to NNCF's validation."""
    _check_misshapen_plugin_blocks(config)
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


def _check_misshapen_plugin_blocks(config: Any) -> None:
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
        if algorithm not in PLUGIN_SCHEMAS and algorithm not in REF_VS_ALGO_SCHEMA:
            close = difflib.get_close_matches(algorithm.lower(), list(PLUGIN_SCHEMAS), n=1, cutoff=0.8)
            if close:
                msg = f"{where}.algorithm: unknown algorithm {short_repr(algorithm)}. Fix: did you mean \"{close[0]}\"?"
                raise AlgorithmConfigError(msg)
