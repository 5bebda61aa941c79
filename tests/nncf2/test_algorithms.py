"""attribution_matching beside each of NNCF's training-time algorithms, alone and stacked."""

import copy
import json

import pytest
import torch

from nncf_wcam.core.training import batchnorm_frozen
from nncf_wcam.nncf2.attribution_matching import AttributionMatchingController
from nncf_wcam.nncf2.attribution_matching import attribution_controller
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import fine_tune
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.schema.validation import AlgorithmConfigError
from nncf_wcam.zoo.models import SmallCNN

from conftest import ROOT

# The NNCF configs (inc_*: Intel Neural Compressor's, tested in tests_inc).
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*_wcam.json") if not p.name.startswith("inc_"))


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
    for other in ctrl.child_ctrls:
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

    masks = {name: p.detach().clone() for name, p in compressed.named_parameters() if name.endswith("._mask")}
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
    for other in ctrl.child_ctrls:
        if other is not am_ctrl and type(other).__name__ in ("KnowledgeDistillationController", "RBSparsityController"):
            compressed(digits.train.tensors[0][:32])
            assert other.loss().item() != 0.0
    if "rb_sparsity" in algorithms:  # its trainable masks trained beside the matching loss, and its own loss reaches them
        assert masks and all(not torch.equal(masks[name], p.detach()) for name, p in compressed.named_parameters() if name in masks)
        compressed.zero_grad()
        rb_ctrl = next(c for c in ctrl.child_ctrls if type(c).__name__ == "RBSparsityController")
        rb_ctrl.loss().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for name, p in compressed.named_parameters() if name in masks)

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


def test_batchnorm_frozen_counts_the_last_epochs():
    assert [batchnorm_frozen(e, 4, 2) for e in range(4)] == [False, False, True, True]
    assert not any(batchnorm_frozen(e, 4, 0) for e in range(4))
    assert all(batchnorm_frozen(e, 4, 9) for e in range(4))


@pytest.mark.parametrize("freeze_bn_epochs", [0, 2])
def test_fine_tune_freezes_batchnorm_statistics_in_the_last_epochs(trained_cnn, digits, freeze_bn_epochs):
    """With "freeze_bn_epochs" the running statistics stay as they were while the weights still train (and the reverse without)."""
    config = load_config(json.loads((CONFIGS[0].parent / "quantization_int4_wcam.json").read_text()))
    ctrl, compressed = compress(copy.deepcopy(trained_cnn), config, digits.train, batch_size=32)
    bns = [m for m in compressed.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats_before = [(bn.running_mean.clone(), bn.num_batches_tracked.clone()) for bn in bns]
    weights_before = [bn.weight.detach().clone() for bn in bns]
    fine_tune(ctrl, compressed, digits.train, epochs=2, batch_size=32, max_steps=2, freeze_bn_epochs=freeze_bn_epochs)
    stats_kept = [torch.equal(bn.running_mean, mean) and torch.equal(bn.num_batches_tracked, n) for bn, (mean, n) in zip(bns, stats_before)]
    assert all(stats_kept) if freeze_bn_epochs == 2 else not any(stats_kept)
    assert not all(torch.equal(bn.weight, w) for bn, w in zip(bns, weights_before))  # the weights trained either way


def test_an_inc_config_is_refused_by_nncf_rather_than_run_without_its_algorithms(digits):
    """NNCF ignores the "inc" section: it would train the matching loss alone, without INC's pruning."""
    config = load_config(json.loads((ROOT / "configs" / "inc_pruning_wcam.json").read_text()))
    with pytest.raises(AlgorithmConfigError, match="Intel Neural Compressor"):
        compress(SmallCNN(width=4), config, digits.train)
