"""The pure-torch core: differentiable maps, capture hooks, layer resolution, the matcher, the saliency-guided
loss and the training pieces every adapter shares. Nothing here imports NNCF."""

from nncf_wcam.core.layers import LayerNameError
from nncf_wcam.core.logits import LogitsOutputError
from nncf_wcam.core.logits import select_logits
from nncf_wcam.core.matcher import AttributionMatcher
from nncf_wcam.core.matcher import frozen_copy
from nncf_wcam.core.saliency import SaliencyGuidedRegularizer

__all__ = ["AttributionMatcher", "LayerNameError", "LogitsOutputError", "SaliencyGuidedRegularizer", "frozen_copy", "select_logits"]
