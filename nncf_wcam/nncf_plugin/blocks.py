"""Finding and checking the plugin's blocks in an NNCF config (dict or NNCFConfig)."""

from typing import Any

from nncf_wcam.nncf_plugin.config_check import AlgorithmConfigError
from nncf_wcam.nncf_plugin.config_check import check_block

# name -> JSON schema of every algorithm this plugin registers.
PLUGIN_SCHEMAS = {}


def compression_blocks(config: Any) -> list:
    section = config.get("compression", []) if hasattr(config, "get") else []
    return [section] if isinstance(section, dict) else list(section or [])


def plugin_block(config: Any, name: str) -> dict:
    """The single `name` block of the config, checked, with defaults filled in."""
    matches = [b for b in compression_blocks(config) if isinstance(b, dict) and b.get("algorithm") == name]
    if len(matches) > 1:
        msg = f"{name} appears {len(matches)} times in \"compression\". Fix: keep one {name} block (it accepts several layers)."
        raise AlgorithmConfigError(msg)
    if not matches:
        msg = f"No {name} block in the config's \"compression\" section."
        raise AlgorithmConfigError(msg)
    return check_block(matches[0], name, PLUGIN_SCHEMAS[name])


def check_plugin_blocks(config: Any) -> None:
    """Checks every plugin block of a config; NNCF's own blocks are left to NNCF's validation."""
    names = {b.get("algorithm") for b in compression_blocks(config) if isinstance(b, dict)}
    for name in names & set(PLUGIN_SCHEMAS):
        plugin_block(config, name)
