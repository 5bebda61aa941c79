"""Training loops: the uncompressed teacher, and NNCF compression-aware fine-tuning.

The fine-tuning loop is the one every NNCF 2.x project already has: task loss plus
`compression_ctrl.loss()`, with the compression scheduler stepped per batch and per epoch.
"""

import json
import math
import os
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset
from tqdm import tqdm

import nncf_wcam  # noqa: F401  (legacy tracing and plugin registration before nncf.torch)
from nncf import NNCFConfig
from nncf.torch import create_compressed_model
from nncf.torch import register_default_init_args
from nncf_wcam.attribution import LogitsSelector
from nncf_wcam.attribution import select_logits
from nncf_wcam.evaluation import accuracy  # noqa: F401  (pure torch: shared with the NNCF 3.x adapter)
from nncf_wcam.nncf_plugin.algo import AttributionMatchingController
from nncf_wcam.nncf_plugin.base import find_controller


def load_config(config: Union[str, os.PathLike, dict]) -> NNCFConfig:
    """An NNCFConfig from a JSON path or a dict (validated, plugin blocks included)."""
    if isinstance(config, dict):
        return NNCFConfig.from_dict(config)
    if not os.path.isfile(config):
        msg = f"Config file not found: {config}. Pass the path of an NNCF JSON config (see nncf_wcam/configs/)."
        raise FileNotFoundError(msg)
    with open(config, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            msg = f"Config {config} is not valid JSON: {e}."
            raise ValueError(msg) from e
    return NNCFConfig.from_dict(data)


def without_algorithm(config: NNCFConfig, algorithm: str) -> NNCFConfig:
    """The same config without one algorithm's block (e.g. the naive baseline without attribution_matching)."""
    data = json.loads(json.dumps(dict(config)))
    section = data.get("compression", [])
    section = [section] if isinstance(section, dict) else section
    data["compression"] = [block for block in section if block.get("algorithm") != algorithm]
    return NNCFConfig.from_dict(data)


def compress(model: nn.Module, config: NNCFConfig, train_data: Dataset, batch_size: Optional[int] = None, compression_state=None):
    """`create_compressed_model` with NNCF's default init args (range init, BN adaptation) on `train_data`."""
    batch_size = batch_size or config.get("batch_size", 64)
    loader = DataLoader(train_data, batch_size=batch_size, shuffle=False)
    # NNCF registers the init args on the config object itself and refuses a second registration:
    # work on a copy so that one config can build several models (e.g. with and without matching).
    config = NNCFConfig.from_dict(json.loads(json.dumps(dict(config))))
    config = register_default_init_args(config, loader, criterion=nn.CrossEntropyLoss())
    return create_compressed_model(model, config, compression_state=compression_state)


def child_controllers(compression_ctrl) -> list:
    return list(getattr(compression_ctrl, "child_ctrls", [compression_ctrl]))


def attribution_controller(compression_ctrl) -> Optional[AttributionMatchingController]:
    """The attribution_matching controller inside a (composite) compression controller, if any."""
    return find_controller(compression_ctrl, AttributionMatchingController)


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
) -> nn.Module:
    """Plain supervised training of the uncompressed model (the teacher).

    `bar`: a caller's progress bar advanced once per step (one bar for the whole stage), instead of one per epoch.
    """
    torch.manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # Cosine decay to zero: the last steps are small, so the BatchNorm running statistics that
    # eval mode uses match the final weights (a constant LR left eval accuracy erratic).
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(loader)))
    model.train()
    for epoch in range(epochs):
        for x, y in tqdm(loader, desc=f"teacher epoch {epoch + 1}/{epochs}", disable=not progress or bar is not None, leave=False):
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


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or infinite: training stopped before that step changed any weight."""


def check_finite_losses(task_loss, compression_loss, epoch: int, step: int) -> None:
    """Stops at the first NaN or infinite loss, naming the step and which loss, so no NaN weights are saved."""
    for name, loss in (("task", task_loss), ("compression", compression_loss)):
        value = _value(loss)
        if not math.isfinite(value):
            fix = "lower the weights of the compression algorithms or the learning rate" if name == "compression" else "lower the learning rate"
            msg = (
                f"The {name} loss is {value} at step {step + 1} of epoch {epoch + 1}: training stopped there, and the "
                f"last checkpoint (from the last completed epoch) is kept. Fix: {fix}, or check the data."
            )
            raise NonFiniteLossError(msg)


def _value(loss) -> float:
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


def train_epoch(
    compression_ctrl,
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    epochs: int,
    max_steps: Optional[int] = None,
    logits_output: LogitsSelector = None,
    progress: bool = False,
    device: Optional[torch.device] = None,
    desc: str = "compress",
    bar: Optional[tqdm] = None,
    freeze_bn: bool = False,
) -> list:
    """One epoch of compression-aware training (epoch is 0-based); returns per-step loss records.

    `model` may be the compressed model or its DistributedDataParallel wrapper. The loader's sampler
    gets `set_epoch(epoch)`, so with a seeded sampler (`distributed.make_sampler`) the data order is a
    function of (seed, epoch) alone: what makes a resumed run equal an uninterrupted one.
    `max_steps` caps the steps of this epoch (smoke tests). `bar`: a caller's progress bar advanced once
    per step (one bar across epochs), instead of a bar of this epoch. `freeze_bn`: BatchNorm statistics
    stay frozen this epoch (`freeze_batchnorm_statistics`).
    """
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    am_ctrl = attribution_controller(compression_ctrl)
    compression_ctrl.scheduler.epoch_step()
    model.train()
    if freeze_bn:
        freeze_batchnorm_statistics(model)
    records = []
    total = len(loader) if max_steps is None else min(len(loader), max_steps)
    epoch_bar = tqdm(loader, total=total, desc=f"{desc} epoch {epoch + 1}/{epochs}", disable=not progress or bar is not None, leave=False)
    bar = bar if bar is not None else epoch_bar
    for step, (x, y) in enumerate(epoch_bar):
        if max_steps is not None and step >= max_steps:
            break
        if device is not None:
            x, y = x.to(device), y.to(device)
        compression_ctrl.scheduler.step()
        optimizer.zero_grad()
        task_loss = F.cross_entropy(select_logits(model(x), logits_output), y)
        compression_loss = compression_ctrl.loss()
        check_finite_losses(task_loss, compression_loss, epoch, step)  # before the step spoils the weights
        (task_loss + compression_loss).backward()
        optimizer.step()
        record = {"epoch": epoch, "step": step, "task_loss": float(task_loss.detach()), "compression_loss": _value(compression_loss)}
        if am_ctrl is not None:
            record["attribution_loss"] = _value(am_ctrl.loss())
        records.append(record)
        if bar is not epoch_bar:
            bar.update(1)
        bar.set_postfix(task=f"{record['task_loss']:.3f}", compression=f"{record['compression_loss']:.3f}")
    epoch_bar.close()
    return records


def fine_tune(
    compression_ctrl,
    model: nn.Module,
    data: Dataset,
    epochs: int = 1,
    optimizer_spec: Optional[dict] = None,
    batch_size: int = 64,
    seed: int = 0,
    max_steps: Optional[int] = None,
    logits_output: LogitsSelector = None,
    progress: bool = False,
    freeze_bn_epochs: int = 0,
    after_epoch: Optional[Callable[[int, nn.Module], None]] = None,
) -> list:
    """Compression-aware fine-tuning in one process; returns per-step loss records.

    The optimizer block's `"schedule_type"` (e.g. "cosine") sets the LR per epoch, as in the CLI;
    each record carries the epoch's `lr`. `max_steps` caps the steps of each epoch (smoke tests and
    quick benchmarks). `freeze_bn_epochs`: BatchNorm statistics are frozen for that many last epochs
    (the config's "freeze_bn_epochs", as in the CLI; recommended for 4-bit quantization).
    `after_epoch(epoch, model)` runs after each epoch (0-based), e.g. to evaluate the model as training goes.
    """
    torch.manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = make_optimizer(model.parameters(), optimizer_spec)
    lr_scheduler = make_lr_scheduler(optimizer, optimizer_spec, epochs)
    history = []
    for epoch in range(epochs):
        lr = optimizer.param_groups[0]["lr"]
        freeze_bn = batchnorm_frozen(epoch, epochs, freeze_bn_epochs)
        records = train_epoch(compression_ctrl, model, loader, optimizer, epoch, epochs, max_steps=max_steps, logits_output=logits_output, progress=progress, freeze_bn=freeze_bn)
        history += [{**record, "lr": lr} for record in records]
        if lr_scheduler is not None:
            lr_scheduler.step()
        if after_epoch is not None:
            after_epoch(epoch, model)
    return history

