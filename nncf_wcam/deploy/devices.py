"""OpenVINO devices: which names exist, which this machine has, and the one-line refusal for the rest.

`device` (where an IR is compiled and checked) must be on this machine; a target device (where the IR
will run) may be absent. MYRIAD/VPU get a note that OpenVINO removed them and that NPU succeeds them.
"""

import openvino as ov

from nncf_wcam.errors import ExportError

SUPPORTED_DEVICES = ("CPU", "GPU", "NPU", "AUTO")
# Device names of plugins OpenVINO no longer ships.
REMOVED_DEVICES = ("MYRIAD", "VPU", "HDDL", "VPUX")


class UnsupportedDeviceError(ExportError, ValueError):
    """The requested OpenVINO device is unknown, removed from OpenVINO, or absent on this machine."""

    exit_code = 2


def device_base(name: str) -> str:
    """"GPU" of "GPU.1", "NPU" of "NPU:..."."""
    return name.split(":")[0].split(".")[0]


def device_present(name: str) -> bool:
    """Whether OpenVINO sees `name` (e.g. "NPU", "GPU.1") on this machine; AUTO always is."""
    base = device_base(name)
    available = ov.Core().available_devices
    if base == "AUTO":
        return True
    return name in available if name != base else any(d == base or d.startswith(base + ".") for d in available)


def check_device(device: str, must_be_present: bool = True) -> str:
    """Returns the normalized device name, or raises `UnsupportedDeviceError` naming the devices this machine has.

    `must_be_present=False` only checks that the name is a device OpenVINO supports (a target to export
    for, which may live on another machine).
    """
    name = device.strip().upper()
    base = device_base(name)
    available = ov.Core().available_devices
    if base in REMOVED_DEVICES:
        msg = (
            f"Device '{device}': the MYRIAD/VPU (and HDDL) plugins were removed from OpenVINO in 2023.0; "
            f"Intel's NPU plugin is their successor (device 'NPU', static shapes only). "
            f"Devices on this machine: {', '.join(available) or 'none'}."
        )
        raise UnsupportedDeviceError(msg)
    if base not in SUPPORTED_DEVICES:
        msg = (
            f"Unknown device '{device}'. Export targets: {', '.join(SUPPORTED_DEVICES)}. "
            f"Devices on this machine: {', '.join(available) or 'none'}."
        )
        raise UnsupportedDeviceError(msg)
    if base == "AUTO" or not must_be_present:
        return name  # AUTO picks among the available devices at compile time
    if not device_present(name):
        msg = (
            f"Device '{device}' is not available on this machine; OpenVINO sees: {', '.join(available) or 'none'}. "
            "Export for one of those, or run the export where the device is installed."
        )
        raise UnsupportedDeviceError(msg)
    return name
