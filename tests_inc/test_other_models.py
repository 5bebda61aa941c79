"""Networks the adapter was not designed on: a residual network and a MobileNet-style one (depthwise convolutions,
a dict output), through INC's QAT (FX fusion renames their layers) and pruning, with the default block."""

import pytest
import torch
from neural_compressor.config import QuantizationAwareTrainingConfig
from neural_compressor.config import WeightPruningConfig

from conftest import small_subset
from nncf_wcam.core.training import train_teacher
from nncf_wcam.inc import AttributionMatchingConfig
from nncf_wcam.inc import attribution_matcher
from nncf_wcam.inc import export_ir
from nncf_wcam.inc import fine_tune
from nncf_wcam.inc import prepare_compression
from nncf_wcam.zoo.models import MobileNetStyle
from nncf_wcam.zoo.models import tiny_resnet

MODELS = {"tiny_resnet": (tiny_resnet, None), "mobilenet_style": (MobileNetStyle, "logits")}


@pytest.fixture(scope="module", params=list(MODELS))
def trained(request, digits):
    make, logits_output = MODELS[request.param]
    torch.manual_seed(0)
    return train_teacher(make(), small_subset(digits.train, 512), epochs=2, logits_output=logits_output), logits_output


@pytest.mark.parametrize("algorithm", ["qat", "pruning"])
def test_other_networks_train_with_the_default_block_and_export(trained, algorithm, digits, tmp_path):
    import copy

    teacher, logits_output = trained
    inc_config = QuantizationAwareTrainingConfig() if algorithm == "qat" else WeightPruningConfig(target_sparsity=0.5, pruning_type="snip_momentum", pattern="4x1", start_step=0, end_step=4, pruning_frequency=1)
    example = digits.test.tensors[0][:4]
    matching = AttributionMatchingConfig(example_inputs=example, logits_output=logits_output)
    manager = prepare_compression(copy.deepcopy(teacher), [inc_config, matching])
    history = fine_tune(manager, small_subset(digits.train, 128), epochs=1, batch_size=32, max_steps=3, logits_output=logits_output)
    matcher = attribution_matcher(manager)
    assert history[-1]["loss"] > history[-1]["task_loss"], "no matching loss was added"
    assert all(loss > 0 for loss in matcher.last_layer_losses.values())
    result = export_ir(manager.model, tmp_path / "ir", digits.test.tensors[0][:16], logits_output=logits_output)
    assert result.manifest["parity"]["top1_agreement"] >= 0.9
