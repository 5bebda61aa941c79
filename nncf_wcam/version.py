"""The single source of the version (pyproject.toml reads it; `nncf_wcam.__version__` re-exports it)."""

__version__ = "0.3.0"
