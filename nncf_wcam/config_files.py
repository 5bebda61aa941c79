"""The configs shipped inside the package (nncf_wcam/configs/*.json): list them, find one by name or path,
and read a config's relative dataset "root" from the config file's folder, not from the current one."""

from pathlib import Path
from typing import List, Union

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigNotFoundError(FileNotFoundError):
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
