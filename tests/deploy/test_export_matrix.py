"""IR export across architectures and algorithms: every cell exports, matches PyTorch, and pruned IRs shrink.

Architectures: a VGG-style CNN, a ResNet (residual joins) and a MobileNet-style network (inverted
residuals, depthwise convolutions, dict output). Algorithms: int8, int4, filter pruning, int8 +
pruning, int4 + pruning, magnitude sparsity. Real NNCF compression (untrained: export faithfulness
does not depend on training), real OpenVINO; tiny models on 16x16 digits to keep the suite fast.
"""

import copy
import logging

import pytest
import torch
from nncf import NNCFConfig
from nncf.torch import create_compressed_model
from nncf.torch import register_default_init_args
from torch.utils.data import DataLoader
from torch.utils.data import TensorDataset

import nncf_wcam  # noqa: F401  (must precede nncf.torch)
from nncf_wcam.core.training import train_teacher
from nncf_wcam.nncf2.export import export_ir
from nncf_wcam.zoo.datasets import load_digits
from nncf_wcam.zoo.models import MobileNetStyle
from nncf_wcam.zoo.models import SmallCNN
from nncf_wcam.zoo.models import tiny_resnet

from conftest import ir_against_model

INIT = {"range": {"num_init_samples": 16, "type": "mean_min_max"}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}
INT8 = {"algorithm": "quantization", "initializer": INIT}
# The workaround the README gives for pruning + int8 on depthwise networks (see test below).
INT8_PER_TENSOR_ACTIVATIONS = {**INT8, "activations": {"per_channel": False}}
INT4 = {"algorithm": "quantization", "weights": {"bits": 4}, "activations": {"bits": 4}, "initializer": INIT}
PRUNING = {
    "algorithm": "filter_pruning",
    "pruning_init": 0.5,
    "params": {"schedule": "exponential", "pruning_target": 0.5, "pruning_steps": 1},
}
SPARSITY = {
    "algorithm": "magnitude_sparsity",
    "sparsity_init": 0.5,
    "params": {"schedule": "multistep", "multistep_steps": [], "multistep_sparsity_levels": [0.5]},
}
ALGORITHMS = {
    "int8": [INT8],
    "int4": [INT4],
    "filter_pruning": [PRUNING],
    "int8_pruning": [PRUNING, INT8_PER_TENSOR_ACTIVATIONS],
    "int4_pruning": [PRUNING, INT4],
    "sparsity": [SPARSITY],
}
MODELS = {
    "small_cnn": (lambda: SmallCNN(width=8), None),
    "resnet": (lambda: tiny_resnet(width=16), None),  # width 8 leaves NNCF nothing to prune
    # three inverted residuals (one strided, two with skips) keep it fast and every feature in
    "mobilenet_style": (lambda: MobileNetStyle(width=8, blocks=((1, 1), (2, 2), (2, 1))), "logits"),
}
SAMPLES = 64


@pytest.fixture(scope="module")
def digits():
    return load_digits(image_size=16)


@pytest.fixture(scope="module")
def trained(digits):
    """Each architecture briefly trained (16 steps): untrained logits are near ties, which a parity check cannot judge."""
    subset = TensorDataset(*(tensor[:512] for tensor in digits.train.tensors))
    models = {}
    for name, (make_model, logits_output) in MODELS.items():
        torch.manual_seed(0)
        models[name] = train_teacher(make_model(), subset, epochs=1, lr=3e-3, batch_size=32, logits_output=logits_output)
    return models


def compress(digits, tmp_path, model, compression, logits_output):
    torch.manual_seed(0)
    config = {"input_info": {"sample_size": [1, 1, 16, 16]}, "compression": copy.deepcopy(compression), "log_dir": str(tmp_path)}
    if logits_output is not None:
        config["logits_output"] = logits_output
    if any(block.get("weights", {}).get("bits") == 4 for block in compression):
        config["target_device"] = "TRIAL"  # NNCF accepts 4-bit quantizers only without a hardware config
    loader = DataLoader(digits.train, batch_size=16)
    ctrl, model = create_compressed_model(copy.deepcopy(model), register_default_init_args(NNCFConfig.from_dict(config), loader))
    return ctrl, model, config


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_export_matrix(digits, trained, tmp_path, model_name, algorithm):
    logits_output = MODELS[model_name][1]
    ctrl, model, config = compress(digits, tmp_path, trained[model_name], ALGORITHMS[algorithm], logits_output)
    # logits_output comes from the config: it is not passed again
    result = export_ir(ctrl, model, tmp_path / "ir", digits.test.tensors[0][:SAMPLES], config=config)
    manifest = result.manifest
    agreement, diff = ir_against_model(result.output_dir, model, digits.test.tensors[0][:SAMPLES], logits_output)
    assert agreement >= 0.99 and diff < 0.25, (agreement, diff)
    assert manifest["notes"] == []
    if "pruning" in algorithm:
        nncf_count = ctrl.statistics().filter_pruning.model_statistics.current_params_num
        assert manifest["pruning_transformation_applied"]
        assert manifest["ir"]["weight_values"] < manifest["ir_before_pruning_transformation"]["weight_values"]
        assert manifest["ir"]["weight_values"] == nncf_count == manifest["nncf_pruned_weight_values"]
        assert manifest["ir"]["flops"] < manifest["ir_before_pruning_transformation"]["flops"]
    if algorithm.startswith("int4"):
        assert manifest["compression"]["quantization"]["num_wq_per_bitwidth"].keys() == {"4"}
    if algorithm == "sparsity":
        assert manifest["ir"]["zero_fraction"] > 0.3


def test_pruning_with_per_channel_activation_quantizers_exports_zeroed_filters(digits, trained, tmp_path, caplog):
    """NNCF's CPU default quantizes depthwise-conv inputs per channel; OpenVINO cannot prune through that."""
    ctrl, model, config = compress(digits, tmp_path, trained["mobilenet_style"], [PRUNING, INT8], "logits")
    with caplog.at_level(logging.WARNING, logger="nncf_wcam"):
        result = export_ir(ctrl, model, tmp_path / "ir", digits.test.tensors[0][:SAMPLES], config=config)
    manifest = result.manifest
    assert not manifest["pruning_transformation_applied"]
    assert manifest["ir"]["weight_values"] == manifest["ir_before_pruning_transformation"]["weight_values"]
    assert manifest["ir"]["zero_fraction"] > 0.3  # the pruned filters are there, as zeros
    assert len(manifest["notes"]) == 1 and '"per_channel": false' in manifest["notes"][0]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == manifest["notes"]
    assert manifest["parity"]["top1_agreement"] >= 0.99
