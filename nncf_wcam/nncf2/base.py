"""What the plugin's algorithms share: they add a loss to `compression_ctrl.loss()` and compress nothing.

Each wraps a plain-torch regularizer (an object with `loss()`, `get_state()` and `load_state()`):
the attribution matcher, the saliency-guided regularizer.
"""

import torch
from nncf.api.compression import CompressionLoss
from nncf.api.compression import CompressionScheduler
from nncf.api.compression import CompressionStage
from nncf.common.schedulers import BaseCompressionScheduler
from nncf.common.statistics import NNCFStatistics
from nncf.torch.compression_method_api import PTCompressionAlgorithmBuilder
from nncf.torch.compression_method_api import PTCompressionAlgorithmController
from nncf.torch.compression_method_api import PTCompressionLoss
from nncf.torch.nncf_network import NNCFNetwork


class RegularizerLoss(PTCompressionLoss):
    """The regularizer's loss for the latest training forward pass; zero in eval mode, under no_grad, or before any."""

    def __init__(self, regularizer):
        super().__init__()
        self._regularizer = regularizer  # a plain object: its models must not become submodules of the loss

    def calculate(self) -> torch.Tensor:
        return self._regularizer.loss()

    def get_state(self) -> dict:
        return self._regularizer.get_state()  # part of NNCF's compression state: a resumed run draws the same masks

    def load_state(self, state: dict) -> None:
        self._regularizer.load_state(state or {})


class RegularizerBuilder(PTCompressionAlgorithmBuilder):
    """Adds no transformation and initializes nothing."""

    def initialize(self, model: NNCFNetwork) -> None:
        pass

    def _handle_frozen_layers(self, target_model: NNCFNetwork) -> None:
        pass  # nothing is compressed here, so frozen layers are no concern


class RegularizerController(PTCompressionAlgorithmController):
    """No schedule, no compression statistics (NNCFStatistics has fixed fields for NNCF's own algorithms)."""

    def __init__(self, target_model: NNCFNetwork, regularizer):
        super().__init__(target_model)
        self._loss = RegularizerLoss(regularizer)
        self._scheduler = BaseCompressionScheduler()

    @property
    def loss(self) -> CompressionLoss:
        return self._loss

    @property
    def scheduler(self) -> CompressionScheduler:
        return self._scheduler

    def compression_stage(self) -> CompressionStage:
        return CompressionStage.FULLY_COMPRESSED

    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        return NNCFStatistics()

    def distributed(self) -> None:
        pass  # every rank keeps its own regularizer (and frozen teacher); the loss needs no synchronisation


def find_controller(compression_ctrl, controller_class):
    """The controller of one algorithm inside a (composite) compression controller, or None."""
    for ctrl in getattr(compression_ctrl, "child_ctrls", [compression_ctrl]):
        if isinstance(ctrl, controller_class):
            return ctrl
    return None
