"""Top-1 accuracy of a model (any generation's student, or the teacher) on a dataset."""

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset

from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.core.logits import select_logits


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset, logits_output: LogitsSelector = None, batch_size: int = 256) -> float:
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in DataLoader(data, batch_size=batch_size):
        correct += (select_logits(model(x), logits_output).argmax(1) == y).sum().item()
        total += len(y)
    model.train(was_training)
    return correct / max(total, 1)
