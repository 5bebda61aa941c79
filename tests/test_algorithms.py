"""attribution_matching beside each of NNCF's training-time algorithms, alone and stacked."""

import copy
import json
from pathlib import Path

import pytest
import torch

from nncf_wcam.nncf_plugin.algo import AttributionMatchingController
from nncf_wcam.training import attribution_controller, child_controllers, compress, fine_tune, load_config

CONFIGS = sorted((Path(__file__).parents[1] / "nncf_wcam" / "configs").glob("*_wcam.json"))


def _algorithms(config):
    return [block["algorithm"] for block in config["compression"]]


def _zero_half_of_weights(model):
    """const_sparsity keeps existing zeros: give it some."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.masked_fill_(module.weight.abs() < module.weight.abs().median(), 0.0)


def _masks_from_existing_zeros(ctrl):
    """const_sparsity's masks normally come from a sparse checkpoint: take them from the zeroed weights."""
    for other in child_controllers(ctrl):
        for info in getattr(other, "sparsified_module_info", []) if type(other).__name__ == "ConstSparsityController" else []:
            info.operand.binary_mask = (info.module.weight != 0).float()


def _assert_compression_reported(ctrl, algorithms):
    stats = ctrl.statistics()
    if "quantization" in algorithms:
        assert stats.quantization is not None and stats.quantization.wq_counter.total_count > 0
    if "filter_pruning" in algorithms:
        model_stats = stats.filter_pruning.model_statistics
        assert model_stats.current_filters_num < model_stats.full_filters_num
    if "magnitude_sparsity" in algorithms:
        assert stats.magnitude_sparsity.model_statistics.sparsity_level_for_layers > 0.8
    if "const_sparsity" in algorithms:
        assert stats.const_sparsity.model_statistics.sparsity_level_for_layers > 0.4
    if "rb_sparsity" in algorithms:
        assert stats.rb_sparsity.target_sparsity_level > 0


@pytest.mark.parametrize("config_path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_trains_with_attribution_matching(config_path, trained_cnn, digits):
    config_dict = json.loads(config_path.read_text())
    algorithms = _algorithms(config_dict)
    config = load_config(config_path)  # validates, plugin block included
    model = copy.deepcopy(trained_cnn)
    if "const_sparsity" in algorithms:
        _zero_half_of_weights(model)
    teacher_weights = {k: v.clone() for k, v in model.state_dict().items()}
    ctrl, compressed = compress(model, config, digits.train, batch_size=32)
    _masks_from_existing_zeros(ctrl)
    am_ctrl = attribution_controller(ctrl)
    assert isinstance(am_ctrl, AttributionMatchingController)
    assert not any(p.requires_grad for p in am_ctrl.teacher.parameters())

    history = fine_tune(ctrl, compressed, digits.train, batch_size=32, max_steps=3, optimizer_spec=config["optimizer"])
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(h["compression_loss"])) for h in history)

    # The attribution loss alone reaches the student's compressed parameters, through its gradients:
    # the classifier lies after the matched layer, so only double backprop can give it a gradient.
    compressed.train()
    compressed.zero_grad()
    compressed(digits.train.tensors[0][:32])
    am_loss = am_ctrl.loss()
    assert torch.isfinite(am_loss) and am_loss.item() > 0
    am_loss.backward()
    assert compressed.classifier.weight.grad.abs().sum() > 0
    assert compressed.features[0].weight.grad.abs().sum() > 0

    # The other algorithms keep working.
    _assert_compression_reported(ctrl, algorithms)
    for other in child_controllers(ctrl):
        if other is not am_ctrl and type(other).__name__ in ("KnowledgeDistillationController", "RBSparsityController"):
            compressed(digits.train.tensors[0][:32])
            assert other.loss().item() != 0.0

    # The teacher is the uncompressed model, untouched by training.
    teacher_state = am_ctrl.teacher.state_dict()
    for key, value in teacher_weights.items():
        assert torch.equal(teacher_state[key], value), key


def test_eval_mode_and_no_grad_cost_nothing(trained_cnn, digits):
    config = load_config(json.loads(CONFIGS[0].read_text()))
    ctrl, compressed = compress(copy.deepcopy(trained_cnn), config, digits.train, batch_size=32)
    am_ctrl = attribution_controller(ctrl)
    x = digits.test.tensors[0][:8]
    compressed.eval()
    compressed(x)
    assert am_ctrl.loss().item() == 0.0 and am_ctrl.matcher.forward.inputs is None
    compressed.train()
    with torch.no_grad():
        compressed(x)
    assert am_ctrl.loss().item() == 0.0
    compressed(x)
    assert am_ctrl.loss().item() > 0.0
