"""NNCF 2.19 compression-aware fine-tuning: configs, `create_compressed_model` with NNCF's init args, the loop.

The fine-tuning loop is the one every NNCF 2.x project already has: task loss plus
`compression_ctrl.loss()`, with the compression scheduler stepped per batch and per epoch.
"""

import json
import os
from typing import Callable
from typing import Optional
from typing import Union

import torch
import torch.nn.functional as F
from nncf import NNCFConfig
from nncf.torch import create_compressed_model
from nncf.torch import register_default_init_args
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset
from tqdm import tqdm

from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.core.logits import select_logits
from nncf_wcam.core.training import batchnorm_frozen
from nncf_wcam.core.training import check_finite_losses
from nncf_wcam.core.training import check_finite_model
from nncf_wcam.nncf_common.extension_cache import check_extension_cache
from nncf_wcam.core.training import freeze_batchnorm_statistics
from nncf_wcam.core.training import loss_value
from nncf_wcam.core.training import make_lr_scheduler
from nncf_wcam.core.training import make_optimizer
from nncf_wcam.nncf2.attribution_matching import attribution_controller
from nncf_wcam.schema.validation import without_block


def load_config(config: Union[str, os.PathLike, dict]) -> NNCFConfig:
    """An NNCFConfig from a JSON path or a dict (validated, plugin blocks included)."""
    if isinstance(config, dict):
        return NNCFConfig.from_dict(config)
    if not os.path.isfile(config):
        msg = f"Config file not found: {config}. Pass the path of an NNCF JSON config (see configs/)."
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
    return NNCFConfig.from_dict(without_block(json.loads(json.dumps(dict(config))), algorithm))


def compress(model: nn.Module, config: NNCFConfig, train_data: Dataset, batch_size: Optional[int] = None, compression_state=None, device=None):
    """`create_compressed_model` with NNCF's default init args (range init, BN adaptation) on `train_data`.

    `device` (e.g. "cuda"): where the model is compressed, initialized and then trained (default: where it is).
    """
    check_extension_cache()  # a killed compile's lock would otherwise hang NNCF's first quantizer call
    batch_size = batch_size or config.get("batch_size", 64)
    if device is not None:
        model.to(device)
    loader = DataLoader(train_data, batch_size=batch_size, shuffle=False)
    # NNCF registers the init args on the config object itself and refuses a second registration:
    # work on a copy so that one config can build several models (e.g. with and without matching).
    config = NNCFConfig.from_dict(json.loads(json.dumps(dict(config))))
    config = register_default_init_args(config, loader, criterion=nn.CrossEntropyLoss(), device=None if device is None else str(device))
    return create_compressed_model(model, config, compression_state=compression_state)


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
        record = {"epoch": epoch, "step": step, "task_loss": float(task_loss.detach()), "compression_loss": loss_value(compression_loss)}
        if am_ctrl is not None:
            record["attribution_loss"] = loss_value(am_ctrl.loss())
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
    device=None,
) -> list:
    """Compression-aware fine-tuning in one process; returns per-step loss records.

    The optimizer block's `"schedule_type"` (e.g. "cosine") sets the LR per epoch, as in the CLI;
    each record carries the epoch's `lr`. `max_steps` caps the steps of each epoch (smoke tests and
    quick benchmarks). `freeze_bn_epochs`: BatchNorm statistics are frozen for that many last epochs
    (the config's "freeze_bn_epochs", as in the CLI; recommended for 4-bit quantization).
    `after_epoch(epoch, model)` runs after each epoch (0-based), e.g. to evaluate the model as training goes.
    `device` (e.g. "cuda"): where the batches go (the model is expected there already, as `compress(device=...)` puts it).
    """
    torch.manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = make_optimizer(model.parameters(), optimizer_spec)
    lr_scheduler = make_lr_scheduler(optimizer, optimizer_spec, epochs)
    history = []
    for epoch in range(epochs):
        lr = optimizer.param_groups[0]["lr"]
        freeze_bn = batchnorm_frozen(epoch, epochs, freeze_bn_epochs)
        records = train_epoch(compression_ctrl, model, loader, optimizer, epoch, epochs, max_steps=max_steps, logits_output=logits_output, progress=progress, device=device, freeze_bn=freeze_bn)
        history += [{**record, "lr": lr} for record in records]
        check_finite_model(model, epoch)
        if lr_scheduler is not None:
            lr_scheduler.step()
        if after_epoch is not None:
            after_epoch(epoch, model)
    return history

