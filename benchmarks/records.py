"""What the benchmarks' committed result files say about paths (repository-relative, never a machine's folder)
and about the models they measured (a fingerprint of the weights)."""

import hashlib
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


def weights_fingerprint(module) -> str:
    """The first 12 hex digits of a SHA-256 over the module's state (names and values): two result folders
    with the same fingerprint measured the same teacher, whatever machine trained it."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]
