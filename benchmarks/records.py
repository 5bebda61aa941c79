"""What the benchmarks' committed result files say about paths: repository-relative, never a machine's folder."""

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def portable(value) -> str:
    """A path inside the repository as repository-relative text; any other value as text."""
    if isinstance(value, Path):
        try:
            return str(value.resolve().relative_to(REPOSITORY))
        except ValueError:
            return str(value)
    return str(value)


def settings_record(args) -> dict:
    """The command line's settings, as the results' JSON keeps them."""
    return {key: portable(value) for key, value in vars(args).items()}
