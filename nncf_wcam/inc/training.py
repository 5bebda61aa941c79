"""INC 3.7's documented training loop, every callback in its place, as one function (the command line and the
benchmarks use it; users may copy it). The optimizer is built after `on_train_begin`, because FX
quantization-aware training replaces the model there.
"""

import copy
from typing import List
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset
from tqdm import tqdm

from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.core.logits import select_logits
from nncf_wcam.core.training import batchnorm_frozen
from nncf_wcam.core.training import check_finite_losses
from nncf_wcam.core.training import check_finite_model
from nncf_wcam.core.training import freeze_batchnorm_statistics
from nncf_wcam.core.training import make_lr_scheduler
from nncf_wcam.core.training import make_optimizer
from nncf_wcam.inc.framework import CompressionManager
from nncf_wcam.inc.fusion import student_layer_name


def _total_loss(manager: CompressionManager, x, output, task_loss):
    loss = manager.callbacks.on_after_compute_loss(x, output, task_loss)
    return task_loss if isinstance(loss, list) else loss  # [] when no algorithm adds a loss (pruning, QAT)


def fine_tune(
    manager: CompressionManager,
    data: Dataset,
    epochs: int = 1,
    optimizer_spec: Optional[dict] = None,
    batch_size: int = 64,
    seed: int = 0,
    max_steps: Optional[int] = None,
    logits_output: LogitsSelector = None,
    end: bool = True,
    progress: bool = False,
    bar: Optional[tqdm] = None,
    freeze_bn_epochs: int = 0,
) -> List[dict]:
    """Fine-tunes `manager.model` with INC's callbacks and the optimizer of an NNCF-sample-style block
    (`{"type": "Adam", "base_lr": 1e-3, "schedule_type": "cosine"}`, the schedule stepped per epoch, as the
    NNCF 2.19 route does; default Adam 1e-3, constant).

    `end=False` leaves `on_train_end` (which converts a QAT model to int8) to the caller, who may still want the
    fake-quantized model (for Grad-CAM). `bar`: a caller's progress bar advanced once per step (instead of one
    bar per epoch with `progress`). `freeze_bn_epochs`: BatchNorm statistics frozen for that many last epochs
    (the config's "freeze_bn_epochs"; torch.ao's `freeze_bn_stats` for fused QAT modules). Returns per-epoch means
    of the task loss and of the total loss.
    """
    torch.manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    callbacks = manager.callbacks
    callbacks.on_train_begin(loader)
    model = manager.model.model
    optimizer = make_optimizer(model.parameters(), optimizer_spec)
    schedule = make_lr_scheduler(optimizer, optimizer_spec, epochs)
    steps_per_epoch = min(len(loader), max_steps) if max_steps else len(loader)
    history = []
    for epoch in range(epochs):
        model.train()
        if batchnorm_frozen(epoch, epochs, freeze_bn_epochs):
            freeze_batchnorm_statistics(model)
            model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)  # fused Conv-BN modules keep a flag of their own
        callbacks.on_epoch_begin(epoch)
        task_sum = total_sum = 0.0
        batches = tqdm(loader, total=steps_per_epoch, desc=f"INC epoch {epoch + 1}/{epochs}", disable=not progress or bar is not None, leave=False)
        for step, (x, y) in enumerate(batches):
            if step >= steps_per_epoch:
                break
            callbacks.on_step_begin(step)
            optimizer.zero_grad()
            output = model(x)
            task = F.cross_entropy(select_logits(output, logits_output), y)
            total = _total_loss(manager, x, output, task)
            check_finite_losses(task, total - task, epoch, step)
            total.backward()
            callbacks.on_before_optimizer_step()
            optimizer.step()
            callbacks.on_after_optimizer_step()
            callbacks.on_step_end()
            if bar is not None:
                bar.update(1)
            task_sum, total_sum = task_sum + float(task.detach()), total_sum + float(total.detach())
        callbacks.on_epoch_end()
        if schedule is not None:
            schedule.step()
        check_finite_model(model, epoch)
        history.append({"task_loss": task_sum / steps_per_epoch, "loss": total_sum / steps_per_epoch, "steps": steps_per_epoch})
    if end:
        callbacks.on_train_end()
    return history


def end_training(manager: CompressionManager, teacher: nn.Module, layer: str) -> tuple:
    """Ends INC's training and keeps what attributions need: (measured model, its name of the teacher's `layer`,
    delivered model).

    `on_train_end` converts a QAT model to int8 modules, which have no gradients: the measured model is then a
    copy of the fake-quantized model taken just before (a pruned model is measured as delivered). The matcher's
    hooks are removed first (they hold a step's tensors, which a deepcopy cannot copy).
    """
    trained = manager.model.model
    name = student_layer_name(teacher, trained, layer)
    matcher = getattr(manager.callbacks, "matcher", None)
    if matcher is not None:
        matcher.remove()
    fake_quantized = any(isinstance(m, torch.ao.quantization.FakeQuantizeBase) for m in trained.modules())
    measured = copy.deepcopy(trained).eval() if fake_quantized else trained
    manager.callbacks.on_train_end()
    return measured, name, manager.model.model.eval()
