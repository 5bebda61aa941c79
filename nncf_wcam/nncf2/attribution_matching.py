"""Builder and controller of the NNCF algorithm `attribution_matching`.

Modelled on NNCF's knowledge_distillation: the builder keeps a clean, frozen copy of the
uncompressed model as the teacher and adds no transformation; the controller's loss is the
matching loss. Unlike knowledge distillation, the teacher runs with gradients enabled
(its Grad-CAM weights need them) and in eval mode.
"""

from copy import deepcopy
from typing import Callable
from typing import Optional

from nncf import NNCFConfig
from nncf.torch.algo_selector import PT_COMPRESSION_ALGORITHMS
from nncf.torch.graph.transformations.layout import PTTransformationLayout
from nncf.torch.nncf_network import NNCFNetwork

from nncf_wcam.core.layers import choose_layers
from nncf_wcam.core.matcher import AttributionMatcher
from nncf_wcam.core.matcher import freeze
from nncf_wcam.nncf2.base import RegularizerBuilder
from nncf_wcam.nncf2.base import RegularizerController
from nncf_wcam.nncf2.base import find_controller
from nncf_wcam.schema.blocks import ATTRIBUTION_MATCHING
from nncf_wcam.schema.validation import AlgorithmConfigError
from nncf_wcam.schema.validation import plugin_block


def clean_teacher(model: NNCFNetwork) -> NNCFNetwork:
    """A frozen, uncompressed copy of the model as it is before compression (as knowledge_distillation makes it)."""
    return freeze(deepcopy(model).nncf.get_clean_shallow_copy())


def example_forward(model: NNCFNetwork) -> Optional[Callable]:
    """A forward pass on the config's `input_info`, used to find and check layers before training."""
    input_info = model.nncf.input_infos
    if not hasattr(input_info, "get_forward_inputs"):
        return None
    device = next(model.parameters()).device
    args, kwargs = input_info.get_forward_inputs(device)
    return lambda: model(*args, **kwargs)


@PT_COMPRESSION_ALGORITHMS.register(ATTRIBUTION_MATCHING)
class AttributionMatchingBuilder(RegularizerBuilder):
    def __init__(self, config: NNCFConfig, should_init: bool = True):
        # Checked before NNCF parses the block, so a bad block gets our one-line error.
        self.params = plugin_block(config, ATTRIBUTION_MATCHING)
        if "inc" in config:  # NNCF would ignore it and train the matching loss without INC's algorithms
            msg = "This config's \"inc\" section is for Intel Neural Compressor, which NNCF ignores. Fix: run it with nncf-wcam compress (or nncf_wcam.inc, docs/inc.md), or drop \"inc\" and put NNCF's algorithms in \"compression\"."
            raise AlgorithmConfigError(msg)
        super().__init__(config, should_init)
        self._teacher = None
        self._layers = None

    def _get_transformation_layout(self, target_model: NNCFNetwork) -> PTTransformationLayout:
        # Called before any algorithm transforms the model: the copy is the uncompressed model.
        self._teacher = clean_teacher(target_model)
        self._layers = choose_layers(self._teacher, self.params["layers"], example_forward(self._teacher))
        return PTTransformationLayout()

    def _build_controller(self, model: NNCFNetwork) -> "AttributionMatchingController":
        matcher = AttributionMatcher(
            self._teacher,
            model,
            self._layers,
            method=self.params["method"],
            weight=self.params["weight"],
            layer_weights=self.params["layer_weights"],
            stochastic_drop=self.params["stochastic_drop"],
            logits_output=self.params["logits_output"],
            seed=self.params["seed"],
            input_method=self.params["input_method"],
            input_weight=self.params["input_weight"],
        )
        return AttributionMatchingController(model, matcher)

    def _get_state_without_name(self) -> dict:
        return {"layers": self._layers}


class AttributionMatchingController(RegularizerController):
    """Holds the matcher; `loss` is the matching loss of the latest training forward pass.

    The per-layer losses of the last step are in `matcher.last_layer_losses`.
    """

    def __init__(self, target_model: NNCFNetwork, matcher: AttributionMatcher):
        super().__init__(target_model, matcher)
        self.matcher = matcher

    @property
    def teacher(self) -> NNCFNetwork:
        return self.matcher.teacher


def attribution_controller(compression_ctrl) -> Optional[AttributionMatchingController]:
    """The attribution_matching controller inside a (composite) compression controller, if any."""
    return find_controller(compression_ctrl, AttributionMatchingController)
