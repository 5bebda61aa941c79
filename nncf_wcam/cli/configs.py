"""Config files: the shipped ones (by name), a user's (by path), read into a dict with its dataset folder resolved.

The shipped configs live in `configs/` (beside the package in a clone; inside it, as `nncf_wcam/configs/`, in an
installed wheel). A relative dataset "root" is read from the config file's folder, not from the current one; an
IDX dataset without a "root" takes `--data-root` or NNCF_WCAM_DATA_ROOT.
"""

import json
from pathlib import Path
from typing import List
from typing import Optional
from typing import Union

from nncf_wcam.cli.errors import UsageError
from nncf_wcam.errors import NncfWcamError
from nncf_wcam.zoo.datasets import IDX_DATASETS
from nncf_wcam.zoo.datasets import data_root_from_env

_PACKAGE = Path(__file__).resolve().parents[1]
# An installed wheel holds the configs inside the package; a clone keeps them beside it.
CONFIG_DIR = _PACKAGE / "configs" if (_PACKAGE / "configs").is_dir() else _PACKAGE.parent / "configs"


class ConfigNotFoundError(NncfWcamError, FileNotFoundError):
    """Neither a config file nor the name of a shipped config."""


def shipped_configs() -> List[str]:
    """Names of the shipped configs (file names without .json), sorted."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.json"))


def resolve_config(name_or_path: Union[str, Path]) -> Path:
    """A config file: the path as given if it names a file, else the shipped config of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / (path.name if path.suffix == ".json" else f"{path.name}.json")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    names = ", ".join(shipped_configs())
    msg = f"Config file not found: {name_or_path}. Pass the path of an NNCF JSON config or the name of a shipped one: {names} (nncf-wcam configs lists them)."
    raise ConfigNotFoundError(msg)


def with_dataset_root_from(config: dict, config_path: Path) -> dict:
    """The config with a relative dataset "root" made absolute against the config file's folder."""
    dataset = config.get("dataset")
    if not isinstance(dataset, dict) or not isinstance(dataset.get("root"), str):
        return config
    root = Path(dataset["root"]).expanduser()
    if root.is_absolute():
        return config
    return {**config, "dataset": {**dataset, "root": str((Path(config_path).resolve().parent / root).resolve())}}


def with_data_root(config: dict, data_root: Optional[str]) -> dict:
    """An IDX dataset's folder from `--data-root` (else NNCF_WCAM_DATA_ROOT) when the config names none.

    The folder goes into the config, so that run.json records it and a resume reads the same data.
    """
    dataset = config.get("dataset")
    if not isinstance(dataset, dict) or dataset.get("name") not in IDX_DATASETS or dataset.get("root") is not None:
        return config
    root = Path(data_root).expanduser() if data_root else data_root_from_env()
    if root is None:
        return config  # loading the dataset says what is missing, naming --data-root and the variable
    return {**config, "dataset": {**dataset, "root": str(root.resolve())}}


MAX_CONFIG_BYTES = 1024**2


def read_config(path: str, data_root: Optional[str] = None) -> dict:
    """The config JSON as a dict; a missing file or bad JSON is a UsageError."""
    try:
        config_path = resolve_config(path)  # a file, or the name of a shipped config
    except ConfigNotFoundError as e:
        raise UsageError(str(e)) from e
    try:
        with open(config_path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # a FIFO or /dev/zero as the config stops here too
        if len(raw) > MAX_CONFIG_BYTES:
            raise UsageError(f"Config {path} is larger than {MAX_CONFIG_BYTES // 1024**2} MiB (NNCF configs take a few kB; it is copied into run.json and every checkpoint). Fix: check the file.")
        data = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise UsageError(f"Config {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.") from e
    except RecursionError as e:
        raise UsageError(f"Config {path} nests too deeply to read. Fix: NNCF configs need 6 levels or fewer; check the file.") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"Cannot read config {path}: {e}.") from e
    if not isinstance(data, dict):
        raise UsageError(f"Config {path} must hold a JSON object, not a {type(data).__name__}.")
    return with_data_root(with_dataset_root_from(data, config_path), data_root)


def cmd_configs(args) -> int:
    """`nncf-wcam configs`: the shipped configs' names, one a line."""
    for name in shipped_configs():
        print(name)
    return 0
