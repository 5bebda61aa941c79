"""The fine-tuning loop of NNCF 3.x quantization-aware training: the user's own loop, with extra loss terms.

NNCF 3.x has no compression controller and no compression loss: the quantized (or pruned) model is an
ordinary nn.Module whose quantizer scales are parameters. Extra terms (`matcher.loss`, a saliency-guided
`regularizer.loss`, NNCF's `RBLoss`) are called after each training forward and added to the task loss.
"""

from typing import Callable
from typing import List
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.core.logits import select_logits
from nncf_wcam.evaluation.accuracy import accuracy  # noqa: F401  (re-exported by nncf_wcam.nncf3)


def fine_tune(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    extra_losses: Sequence[Callable[[], torch.Tensor]] = (),
    epochs: int = 1,
    logits_output: LogitsSelector = None,
) -> List[dict]:
    """Trains `model` on task loss + the extra terms; returns per-epoch means of each part."""
    history = []
    model.train()
    for _ in range(epochs):
        task_sum = extra_sum = 0.0
        steps = 0
        for x, y in loader:
            optimizer.zero_grad()
            task = F.cross_entropy(select_logits(model(x), logits_output), y)
            extra = sum((term() for term in extra_losses), torch.zeros([]))
            (task + extra).backward()
            optimizer.step()
            task_sum += float(task.detach())
            extra_sum += float(extra.detach())
            steps += 1
        history.append({"task_loss": task_sum / max(steps, 1), "extra_loss": extra_sum / max(steps, 1), "steps": steps})
    return history

