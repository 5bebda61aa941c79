"""Top-1 accuracy of a model (any generation's student, or the teacher) on a dataset."""

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset

from nncf_wcam.core.hooks import model_device
from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.core.logits import select_logits


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset, logits_output: LogitsSelector = None, batch_size: int = 256) -> float:
    """Share of `data`'s (image, label) pairs the model classifies right, in eval mode, on the model's device."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    correct = total = 0
    for x, y in DataLoader(data, batch_size=batch_size):
        correct += (select_logits(model(x.to(device)), logits_output).argmax(1).cpu() == y).sum().item()
        total += len(y)
    model.train(was_training)
    return correct / max(total, 1)
