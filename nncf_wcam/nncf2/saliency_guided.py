"""The NNCF algorithm `saliency_guided`: saliency-guided training inside compression-aware training.

Rezabeyk et al., "Saliency Assisted Quantization for Neural Networks" (arXiv 2411.05858): at each
training step, the compressed model's own input saliency chooses the least salient input features,
which are replaced by noise, and weight * KL(f(x) || f(x~)) is added to `compression_ctrl.loss()`.
With NNCF's quantization the quantizer ranges are trainable (the learned-clipping part of the paper)
and receive gradients from this term too.

    {"algorithm": "saliency_guided", "mask_fraction": 0.5, "weight": 1.0}

The builder adds no transformation; the controller holds a `SaliencyGuidedRegularizer`
(nncf_wcam.core.saliency) whose root hooks on the compressed model capture each training forward.
"""

import contextlib
from typing import Iterator

from nncf import NNCFConfig
from nncf.torch.algo_selector import PT_COMPRESSION_ALGORITHMS
from nncf.torch.graph.transformations.layout import PTTransformationLayout
from nncf.torch.nncf_network import NNCFNetwork

from nncf_wcam.core.saliency import SaliencyGuidedRegularizer
from nncf_wcam.nncf2.base import RegularizerBuilder
from nncf_wcam.nncf2.base import RegularizerController
from nncf_wcam.nncf2.base import find_controller
from nncf_wcam.schema.blocks import SALIENCY_GUIDED
from nncf_wcam.schema.validation import plugin_block


@contextlib.contextmanager
def suspended_kd_handler(model: NNCFNetwork) -> Iterator[None]:
    """NNCF's knowledge_distillation recomputes (and replaces) its loss on every training-mode forward of the
    compressed model; the saliency and masked passes must not do that, nor run its teacher twice more."""
    nncf = getattr(model, "nncf", None)
    handler = getattr(nncf, "_kd_loss_handler", None)
    if handler is None:
        yield
        return
    nncf._kd_loss_handler = None
    try:
        yield
    finally:
        nncf._kd_loss_handler = handler


@PT_COMPRESSION_ALGORITHMS.register(SALIENCY_GUIDED)
class SaliencyGuidedBuilder(RegularizerBuilder):
    def __init__(self, config: NNCFConfig, should_init: bool = True):
        # Checked before NNCF parses the block, so a bad block gets the plugin's one-line error.
        self.params = plugin_block(config, SALIENCY_GUIDED)
        super().__init__(config, should_init)

    def _get_transformation_layout(self, target_model: NNCFNetwork) -> PTTransformationLayout:
        return PTTransformationLayout()  # no transformation: the algorithm only adds a loss

    def _build_controller(self, model: NNCFNetwork) -> "SaliencyGuidedController":
        regularizer = SaliencyGuidedRegularizer(
            model,
            mask_fraction=self.params["mask_fraction"],
            weight=self.params["weight"],
            detach_clean=self.params["detach_clean"],
            logits_output=self.params["logits_output"],
            seed=self.params["seed"],
            auxiliary_context=lambda: suspended_kd_handler(model),
        )
        return SaliencyGuidedController(model, regularizer)

    def _get_state_without_name(self) -> dict:
        return {}

    def _load_state_without_name(self, state_without_name: dict) -> None:
        pass


class SaliencyGuidedController(RegularizerController):
    """Holds the regularizer; `loss` is its KL term for the latest training forward pass (last value: `regularizer.last_kl`)."""

    def __init__(self, target_model: NNCFNetwork, regularizer: SaliencyGuidedRegularizer):
        super().__init__(target_model, regularizer)
        self.regularizer = regularizer


def saliency_guided_controller(compression_ctrl):
    """The saliency_guided controller inside a (composite) compression controller, or None."""
    return find_controller(compression_ctrl, SaliencyGuidedController)
