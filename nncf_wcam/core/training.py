"""Pure-torch pieces of the training loops: the teacher's training, optimizers and LR schedules from a
config's "optimizer" block, BatchNorm freezing for low-bit QAT, and the stop at the first non-finite loss.

Every adapter's loop (NNCF 2.19's compression-aware fine-tuning, the command line) builds on these.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset
from tqdm import tqdm

from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.core.logits import select_logits
from nncf_wcam.errors import NncfWcamError


def make_optimizer(params, spec: Optional[dict] = None) -> torch.optim.Optimizer:
    """An optimizer from an NNCF-sample-style `"optimizer": {"type": "Adam", "base_lr": 1e-3}` block."""
    spec = spec or {"type": "Adam", "base_lr": 1e-3}
    kind = spec.get("type", "Adam")
    lr = spec.get("base_lr", 1e-3)
    weight_decay = spec.get("weight_decay", 0.0)
    if kind.lower() == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if kind.lower() == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=spec.get("momentum", 0.9), weight_decay=weight_decay)
    msg = f"Unknown optimizer type '{kind}'. Use 'Adam' or 'SGD'."
    raise ValueError(msg)


def train_teacher(
    model: nn.Module,
    data: Dataset,
    epochs: int = 5,
    lr: float = 2e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
    logits_output: LogitsSelector = None,
    bar: Optional[tqdm] = None,
    device=None,
) -> nn.Module:
    """Plain supervised training of the uncompressed model (the teacher).

    `bar`: a caller's progress bar advanced once per step (one bar for the whole stage), instead of one per epoch.
    `device` (e.g. "cuda"): where it trains (the model is moved there and stays).
    """
    if device is not None:
        model.to(device)
    torch.manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # Cosine decay to zero: the last steps are small, so the BatchNorm running statistics that
    # eval mode uses match the final weights (a constant LR left eval accuracy erratic).
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(loader)))
    model.train()
    for epoch in range(epochs):
        for x, y in tqdm(loader, desc=f"teacher epoch {epoch + 1}/{epochs}", disable=not progress or bar is not None, leave=False):
            if device is not None:
                x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            F.cross_entropy(select_logits(model(x), logits_output), y).backward()
            optimizer.step()
            schedule.step()
            if bar is not None:
                bar.update(1)
    return model.eval()


def make_lr_scheduler(optimizer: torch.optim.Optimizer, spec: Optional[dict] = None, epochs: int = 1):
    """A per-epoch LR schedule from the optimizer block's `"schedule_type"` (NNCF samples' names), or None.

    "multistep" (`"steps": [epochs...]`, `"gamma"`), "step" (`"step"`, `"gamma"`), "cosine"
    (down to `"min_lr"` over the run's epochs), "constant" / absent: no schedule.
    """
    spec = spec or {}
    kind = str(spec.get("schedule_type", "constant")).lower()
    gamma = spec.get("gamma", 0.1)
    if kind in ("constant", "none", "fixed"):
        return None
    if kind == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(spec.get("steps", [])), gamma=gamma)
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=spec.get("step", 1), gamma=gamma)
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1), eta_min=spec.get("min_lr", 0.0))
    msg = f"Unknown schedule_type '{kind}' in the optimizer block. Use 'constant', 'multistep', 'step' or 'cosine'."
    raise ValueError(msg)


class NonFiniteLossError(NncfWcamError, RuntimeError):
    """A training loss became NaN or infinite: training stopped before that step changed any weight."""


class NonFiniteWeightsError(NonFiniteLossError):
    """A training step turned weights NaN or infinite (a finite loss whose gradient overflowed): nothing was saved."""


def check_finite_model(model: nn.Module, epoch: int) -> None:
    """Refuses a model whose parameters or buffers hold NaN or infinity, before it is saved or exported."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            msg = (
                f"After epoch {epoch + 1}, {name} holds NaN or infinite values: a training step overflowed. Nothing of this "
                "epoch was saved; the last checkpoint is kept. Fix: lower the weights of the compression algorithms or the learning rate."
            )
            raise NonFiniteWeightsError(msg)


def check_finite_losses(task_loss, compression_loss, epoch: int, step: int) -> None:
    """Stops at the first NaN or infinite loss, naming the step and which loss, so no NaN weights are saved."""
    for name, loss in (("task", task_loss), ("compression", compression_loss)):
        value = loss_value(loss)
        if not math.isfinite(value):
            fix = "lower the weights of the compression algorithms or the learning rate" if name == "compression" else "lower the learning rate"
            msg = (
                f"The {name} loss is {value} at step {step + 1} of epoch {epoch + 1}: training stopped there, and the "
                f"last checkpoint (from the last completed epoch) is kept. Fix: {fix}, or check the data."
            )
            raise NonFiniteLossError(msg)


def loss_value(loss) -> float:
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


def freeze_batchnorm_statistics(model: nn.Module) -> None:
    """Puts every BatchNorm of `model` in eval mode: it normalizes with its running statistics and stops updating them.

    Low-bit quantization-aware training needs this for its last epochs: batch and running statistics differ a
    little, and 4-bit activation quantizers turn that little into jumps of eval accuracy (benchmarks/int4_batchnorm.py).
    PyTorch's own QAT recipe does the same (`freeze_bn_stats`). With NNCF's knowledge_distillation the model also
    holds KD's teacher copy, which then distils with its running statistics too.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def batchnorm_frozen(epoch: int, epochs: int, freeze_bn_epochs: int) -> bool:
    """Whether 0-based `epoch` is one of the last `freeze_bn_epochs` of `epochs` (the config's "freeze_bn_epochs")."""
    return freeze_bn_epochs > 0 and epoch >= epochs - freeze_bn_epochs
