"""An export folder and its manifest: what it holds, who wrote it, and when it may be replaced.

The folder holds exactly `model.xml`, `model.bin` and `manifest.json`, and is replaced as a whole. An
existing folder is replaced only when it provably is an earlier export of ours (its manifest says
`"producer": "nncf_wcam"` and it holds nothing else); anything else is refused, untouched.
"""

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import openvino as ov
import torch

from nncf_wcam.deploy.runtime import XML_NAME
from nncf_wcam.generation import installed_nncf_version
from nncf_wcam.io.atomic import OutputFolderError
from nncf_wcam.io.atomic import followed
from nncf_wcam.version import __version__

BIN_NAME = "model.bin"
MANIFEST_NAME = "manifest.json"
EXPORT_FILES = (XML_NAME, BIN_NAME, MANIFEST_NAME)  # all an export folder ever holds
# What every manifest says about itself: an export folder is replaced only when its manifest says this.
MANIFEST_PRODUCER = "nncf_wcam"
MANIFEST_VERSION = 1


def versions() -> dict:
    """The versions a manifest records (NNCF's from its metadata: deploy/ imports no NNCF)."""
    return {
        "nncf": installed_nncf_version(),
        "openvino": ov.get_version(),
        "torch": torch.__version__,
        "nncf_wcam": __version__,
    }


def manifest_header() -> dict:
    """The keys every manifest starts with: who wrote it, in which format, and the files beside it."""
    return {
        "producer": MANIFEST_PRODUCER,
        "manifest_version": MANIFEST_VERSION,
        "format": "openvino_ir",
        "files": {"xml": XML_NAME, "bin": BIN_NAME},
    }


def _not_ours(output_dir: Path) -> Optional[str]:
    """Why a non-empty folder is not an earlier export of ours (None if it provably is one)."""
    manifest_path = output_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return f"it holds no {MANIFEST_NAME}"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return f"its {MANIFEST_NAME} is not readable JSON"
    if not isinstance(manifest, dict):
        return f"its {MANIFEST_NAME} was not written by nncf-wcam"
    ours = manifest.get("producer") == MANIFEST_PRODUCER and isinstance(manifest.get("manifest_version"), int)
    # Manifests without the producer key: the IR format tag and our version entry.
    unversioned = manifest.get("format") == "openvino_ir" and isinstance(manifest.get("versions"), dict) and "nncf_wcam" in manifest["versions"]
    if not (ours or unversioned):
        return f"its {MANIFEST_NAME} was not written by nncf-wcam"
    others = sorted(entry.name for entry in output_dir.iterdir() if entry.name not in EXPORT_FILES or not entry.is_file())
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        return f"it also holds {shown}, which an export does not write"
    return None


def check_replaceable(output_dir: Path) -> None:
    """The output folder is replaced as a whole: refuse to do that to a folder that is not an earlier export of ours."""
    output_dir = followed(Path(output_dir))
    if not output_dir.exists():
        return
    if os.path.ismount(output_dir):
        msg = (
            f"Output folder {output_dir} is a mount point: exporting replaces the folder as a whole, which a mount "
            f"point cannot be. Fix: name a folder inside it, e.g. {output_dir / 'ir'}."
        )
        raise OutputFolderError(msg)
    if not output_dir.is_dir():
        raise OutputFolderError(f"Output path {output_dir} exists and is not a folder. Fix: name a folder for the IR.")
    try:
        empty = not any(output_dir.iterdir())
    except OSError as e:
        raise OutputFolderError(f"Cannot list output folder {output_dir}: {e.strerror or e}. Fix: name a folder you can read and write.") from e
    if empty:
        return
    reason = _not_ours(output_dir)
    if reason is not None:
        msg = (
            f"Output folder {output_dir} is not an earlier export by nncf-wcam ({reason}); exporting replaces the "
            "folder as a whole, so nothing was touched. Fix: name a new or empty folder."
        )
        raise OutputFolderError(msg)


def save_model(model: ov.Model, xml_path: Path) -> None:
    """ov.save_model, with a full disk said as one: OpenVINO reports it as "basic_ios::clear: iostream error"."""
    try:
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
    except RuntimeError as e:
        weights = sum(op.get_byte_size() for op in model.get_ops() if op.get_type_name() == "Constant")
        if shutil.disk_usage(xml_path.parent).free < 2 * weights + (1 << 20):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from e  # the caller names the output folder
        raise
