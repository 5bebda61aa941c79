"""Makes NNCF 2.19 know the plugin's blocks: their JSON schemas in NNCF's config schema, the one-line block
check in front of NNCF's own validation, and (in the algorithm modules) the builders in NNCF's registry."""

from nncf import NNCFConfig
from nncf.config.schema import NNCF_CONFIG_SCHEMA
from nncf.config.schema import REF_VS_ALGO_SCHEMA

from nncf_wcam.schema.blocks import PLUGIN_SCHEMAS
from nncf_wcam.schema.validation import check_plugin_blocks


def register_algorithm_schema(name: str, schema: dict) -> None:
    """Makes NNCF's config validation accept `{"algorithm": name, ...}` blocks (idempotent).

    NNCF validates `compression` against a oneOf of `$ref`s to REF_VS_ALGO_SCHEMA, whose dict is
    also the schema's `$defs`: both need the new algorithm.
    """
    REF_VS_ALGO_SCHEMA[name] = schema
    ref = {"$ref": f"#/$defs/{name}"}
    compression = NNCF_CONFIG_SCHEMA["properties"]["compression"]
    for variant in compression["oneOf"]:
        refs = variant["oneOf"] if "oneOf" in variant else variant["items"]["oneOf"]
        if ref not in refs:
            refs.append(ref)


def check_blocks_before_nncf(config) -> None:
    """The plugin's one-line block check, knowing NNCF's own algorithm names (for "did you mean")."""
    check_plugin_blocks(config, known_algorithms=REF_VS_ALGO_SCHEMA)


def check_plugin_blocks_in_nncf_validation() -> None:
    """NNCFConfig.from_dict/from_json validate here: our blocks get one-line errors before NNCF's generic ones."""
    nncf_validate = NNCFConfig.validate
    if getattr(nncf_validate, "checks_nncf_wcam_blocks", False):
        return

    def validate(loaded_json):
        check_blocks_before_nncf(loaded_json)
        nncf_validate(loaded_json)

    validate.checks_nncf_wcam_blocks = True
    NNCFConfig.validate = staticmethod(validate)


def register_schemas() -> None:
    for name, schema in PLUGIN_SCHEMAS.items():
        register_algorithm_schema(name, schema)
    check_plugin_blocks_in_nncf_validation()
