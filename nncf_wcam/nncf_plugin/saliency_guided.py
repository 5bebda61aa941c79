"""The NNCF algorithm `saliency_guided`: saliency-guided training inside compression-aware training.

Rezabeyk et al., "Saliency Assisted Quantization for Neural Networks" (arXiv 2411.05858): at each
training step, the compressed model's own input saliency chooses the least salient input features,
which are replaced by noise, and weight * KL(f(x) || f(x~)) is added to `compression_ctrl.loss()`.
With NNCF's quantization the quantizer ranges are trainable (the learned-clipping part of the paper)
and receive gradients from this term too.

    {"algorithm": "saliency_guided", "mask_fraction": 0.5, "weight": 1.0}

The builder adds no transformation; the controller holds a `SaliencyGuidedRegularizer`
(nncf_wcam.saliency) whose root hooks on the compressed model capture each training forward.
"""

import contextlib
from typing import Iterator

from nncf import NNCFConfig
from nncf.torch.algo_selector import PT_COMPRESSION_ALGORITHMS
from nncf.torch.graph.transformations.layout import PTTransformationLayout
from nncf.torch.nncf_network import NNCFNetwork
from nncf_wcam.nncf_plugin import register
from nncf_wcam.nncf_plugin.base import RegularizerBuilder
from nncf_wcam.nncf_plugin.base import RegularizerController
from nncf_wcam.nncf_plugin.base import find_controller
from nncf_wcam.nncf_plugin.blocks import plugin_block
from nncf_wcam.nncf_plugin.schema import FLOAT32_MAX
from nncf_wcam.nncf_plugin.schema import MAX_SEED
from nncf_wcam.saliency import SaliencyGuidedRegularizer

SALIENCY_GUIDED = "saliency_guided"

SALIENCY_GUIDED_DEFAULTS = {
    "mask_fraction": 0.5,
    "weight": 1.0,
    "detach_clean": False,
    "logits_output": None,
    "seed": 0,
}

SALIENCY_GUIDED_SCHEMA = {
    "type": "object",
    "description": "Saliency-guided training (Ismail et al., NeurIPS 2021; used for quantization by Rezabeyk et al., "
    "arXiv 2411.05858): each training step, replaces the least salient input features (by |dy_k/dx| for the "
    "model's own top-1 class k) with noise drawn uniformly from each sample's [min, max], and adds "
    "weight * KL(f(x) || f(x_masked)) to compression_ctrl.loss(). Works beside any other NNCF algorithm.",
    "properties": {
        "algorithm": {"const": SALIENCY_GUIDED},
        "mask_fraction": {
            "type": "number",
            "minimum": 0,
            "exclusiveMaximum": 1,
            "default": SALIENCY_GUIDED_DEFAULTS["mask_fraction"],
            "description": "Fraction in [0, 1) of each sample's input features (least salient first) replaced "
            "with noise each step (the authors used 0.5).",
        },
        "weight": {
            "type": "number",
            "minimum": 0,
            "maximum": FLOAT32_MAX,
            "default": SALIENCY_GUIDED_DEFAULTS["weight"],
            "description": "lambda, the multiplier of the KL term (the authors used 1.0).",
        },
        "detach_clean": {
            "type": "boolean",
            "default": SALIENCY_GUIDED_DEFAULTS["detach_clean"],
            "description": "Detach f(x) in KL(f(x) || f(x_masked)): the term then only trains the masked pass "
            "(self-distillation). false (the paper's joint objective) also trains through the clean pass.",
        },
        "logits_output": {
            "type": ["integer", "string", "null"],
            "minimum": 0,
            "default": SALIENCY_GUIDED_DEFAULTS["logits_output"],
            "description": "For models whose forward returns a tuple or dict: the index or key of the logits. "
            "null when the forward returns the logits tensor itself.",
        },
        "seed": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_SEED,
            "default": SALIENCY_GUIDED_DEFAULTS["seed"],
            "description": "Seed of the algorithm's own random generator for the replacement noise "
            "(the global RNG is left untouched).",
        },
    },
    "required": ["algorithm"],
    "additionalProperties": False,
}

register(SALIENCY_GUIDED, SALIENCY_GUIDED_SCHEMA)


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
