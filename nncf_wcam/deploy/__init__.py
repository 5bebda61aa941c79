"""OpenVINO deployment: devices, compiling and running IRs, the export folder and its manifest, the parity
check, physical filter removal and FakeQuantize ranges. Every export route writes through `writer`."""

from nncf_wcam.deploy.devices import UnsupportedDeviceError
from nncf_wcam.deploy.runtime import load_compiled
from nncf_wcam.deploy.runtime import run_compiled
from nncf_wcam.deploy.writer import ExportResult
from nncf_wcam.errors import ExportError

__all__ = ["ExportError", "ExportResult", "UnsupportedDeviceError", "load_compiled", "run_compiled"]
