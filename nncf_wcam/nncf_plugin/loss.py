"""The compression loss of `attribution_matching`: the matcher's loss for the latest training forward."""

import torch

from nncf.torch.compression_method_api import PTCompressionLoss
from nncf_wcam.matching import AttributionMatcher


class AttributionMatchingLoss(PTCompressionLoss):
    """Zero (and free) in eval mode, under no_grad, or before any training forward pass."""

    def __init__(self, matcher: AttributionMatcher):
        super().__init__()
        self._matcher = matcher  # a plain object: the teacher must not become a submodule of anything

    def calculate(self) -> torch.Tensor:
        return self._matcher.loss()

    def get_state(self) -> dict:
        return self._matcher.get_state()

    def load_state(self, state: dict) -> None:
        self._matcher.load_state(state or {})
