"""The blocks nncf-wcam adds to a compression config: their JSON schemas and defaults, and the one validator."""

from nncf_wcam.schema.validation import AlgorithmConfigError

__all__ = ["AlgorithmConfigError"]
