"""Registers the plugin's algorithms with NNCF 2.x: config schema, config checks, builder registry."""

from nncf_wcam import require_nncf_generation

require_nncf_generation(2, "nncf_wcam.nncf_plugin (the attribution_matching config block and the nncf-wcam CLI)")

from nncf import NNCFConfig
from nncf_wcam.nncf_plugin.blocks import PLUGIN_SCHEMAS
from nncf_wcam.nncf_plugin.blocks import check_plugin_blocks
from nncf_wcam.nncf_plugin.config_check import AlgorithmConfigError
from nncf_wcam.nncf_plugin.schema import ATTRIBUTION_MATCHING
from nncf_wcam.nncf_plugin.schema import ATTRIBUTION_MATCHING_SCHEMA
from nncf_wcam.nncf_plugin.schema import register_algorithm_schema


def register(name: str, schema: dict) -> None:
    PLUGIN_SCHEMAS[name] = schema
    register_algorithm_schema(name, schema)


def _check_plugin_blocks_before_nncf() -> None:
    """NNCFConfig.from_dict/from_json validate here: our blocks get one-line errors before NNCF's generic ones."""
    nncf_validate = NNCFConfig.validate
    if getattr(nncf_validate, "checks_nncf_wcam_blocks", False):
        return

    def validate(loaded_json):
        check_plugin_blocks(loaded_json)
        nncf_validate(loaded_json)

    validate.checks_nncf_wcam_blocks = True
    NNCFConfig.validate = staticmethod(validate)


register(ATTRIBUTION_MATCHING, ATTRIBUTION_MATCHING_SCHEMA)
_check_plugin_blocks_before_nncf()

from nncf_wcam.nncf_plugin import algo  # noqa: E402  (registers the builder)

__all__ = ["AlgorithmConfigError", "algo", "register"]
from nncf_wcam.nncf_plugin import saliency_guided  # noqa: E402,F401  (registers saliency_guided)
