"""Where `compress` trains and where its IR is checked, from one `--device`.

`cuda` or `cuda:N` trains the teacher and the students on that CUDA GPU (evaluation and the IR's parity check
then run on OpenVINO's CPU). CPU, GPU, NPU and AUTO are OpenVINO devices for the IR; training then runs on the
CPU (or, under torchrun with NCCL, on cuda:LOCAL_RANK).
"""

from typing import Optional

import torch

from nncf_wcam.cli import distributed
from nncf_wcam.cli.errors import UsageError
from nncf_wcam.deploy.devices import check_device


def is_cuda(name: Optional[str]) -> bool:
    return name is not None and name.strip().lower().split(":")[0] == "cuda"


def check_run_device(name: str) -> str:
    """The normalized name; a CUDA device PyTorch does not see, or an OpenVINO device this machine lacks, is one line."""
    if not is_cuda(name):
        return check_device(name)
    device = name.strip().lower()
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.split(":")[1]) if ":" in device and device.split(":")[1].isdigit() else 0
    if ":" in device and not device.split(":")[1].isdigit():
        raise UsageError(f"--device {name}: not a CUDA device name. Fix: cuda or cuda:N.")
    if index >= count:
        raise UsageError(f"--device {name}: PyTorch sees {count} CUDA device(s) here. Fix: train on the CPU (--device CPU) or on an existing GPU.")
    return device


def training_device(name: str) -> torch.device:
    return torch.device(name.strip().lower()) if is_cuda(name) else distributed.device()


def openvino_device(name: str) -> str:
    return "CPU" if is_cuda(name) else check_device(name)
