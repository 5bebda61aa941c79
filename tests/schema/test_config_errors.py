"""Bad attribution_matching blocks fail with one clear line naming the key and the fix."""

import os
import subprocess
import sys

import pytest

from nncf_wcam import AlgorithmConfigError
from nncf_wcam import LayerNameError
from nncf_wcam.nncf2.attribution_matching import attribution_controller
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.zoo.models import SmallCNN
from nncf_wcam.zoo.models import tiny_resnet

from conftest import DictOutputCNN
from conftest import input_info


def _config(**block):
    return {"input_info": input_info(), "compression": [{"algorithm": "attribution_matching", **block}]}


@pytest.mark.parametrize(
    "block, expected",
    [
        ({"wieght": 1.0}, "unknown key 'wieght'. Did you mean 'weight'?"),
        ({"method": "wcma"}, "attribution_matching.method: 'wcma' is not one of ['wcam', 'ewa']. Fix: set 'method' to one of 'wcam', 'ewa'"),
        ({"weight": -1}, "attribution_matching.weight: -1 is less than the minimum of 0. Fix: set 'weight' to a number >= 0"),
        ({"stochastic_drop": 1.0}, "attribution_matching.stochastic_drop: 1.0 is greater than or equal to the maximum of 1"),
        ({"stochastic_drop": -0.1}, "attribution_matching.stochastic_drop"),
        ({"layers": [""]}, "attribution_matching.layers: [''] is not valid. Fix: set 'layers' to 'auto' or an array"),
        ({"input_method": "gradcam"}, "attribution_matching.input_method: 'gradcam' is not one of ['saliency', 'input_x_gradient', None]"),
        ({"input_weight": -2}, "attribution_matching.input_weight: -2 is less than the minimum of 0"),
        ({"layers": ["features.9", "features.9"]}, "attribution_matching.layers"),
        ({"weight": "high"}, "attribution_matching.weight: 'high' is not of type 'number'"),
    ],
)
def test_bad_block_is_rejected_when_the_config_is_loaded(block, expected):
    with pytest.raises(AlgorithmConfigError) as error:
        load_config(_config(**block))
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_block_appearing_twice_is_rejected():
    config = _config()
    config["compression"].append({"algorithm": "attribution_matching"})
    with pytest.raises(AlgorithmConfigError, match="appears 2 times"):
        load_config(config)


def test_errors_also_raised_by_create_compressed_model_for_edited_configs(digits):
    """A config loaded fine and edited afterwards is checked again when the builder runs."""
    config = load_config(_config())
    config["compression"][0]["weight"] = -5
    with pytest.raises(AlgorithmConfigError, match="attribution_matching.weight"):
        compress(SmallCNN(width=4), config, digits.train)


def test_layer_weights_must_match_layers():
    with pytest.raises(AlgorithmConfigError, match="1 weights for 2 layer"):
        load_config(_config(layers=["features.9", "features.5"], layer_weights=[1.0]))


def test_unknown_layer_lists_the_layers_that_exist(digits):
    config = load_config(_config(layers=["features.99"]))
    with pytest.raises(LayerNameError) as error:
        compress(SmallCNN(width=4), config, digits.train)
    message = str(error.value)
    assert "'features.99' does not exist" in message and "'features.9'" in message
    assert "classifier" not in message  # only the layers that can be matched (spatial outputs) are listed
    assert "pre_ops" not in message and "_nncf" not in message


def test_layer_without_spatial_dimensions_is_rejected(digits):
    config = load_config(_config(layers=["classifier"]))
    with pytest.raises(LayerNameError, match=r"'classifier' outputs shape \(1, 10\): no spatial dimensions"):
        compress(SmallCNN(width=4), config, digits.train)


def test_tuple_or_dict_output_without_logits_output_is_explained(digits):
    config = load_config(_config(layers=["features.9"]))
    ctrl, model = compress(DictOutputCNN(width=4), config, digits.train)
    model.train()
    model(digits.train.tensors[0][:4])
    with pytest.raises(ValueError, match='Set "logits_output"'):
        ctrl.loss()


def test_dict_output_model_with_logits_output(digits):
    config = load_config(_config(layers="auto", logits_output="logits", stochastic_drop=0.0))
    ctrl, model = compress(DictOutputCNN(width=4), config, digits.train)
    model.train()
    model(digits.train.tensors[0][:8])
    loss = ctrl.loss()
    loss.backward()
    assert loss.item() > 0 and model.classifier.weight.grad.abs().sum() > 0


def test_residual_network_auto_layer_and_named_block(digits):
    config = load_config(_config(layers="auto"))
    ctrl, model = compress(tiny_resnet(width=4), config, digits.train)
    assert ctrl.matcher.layers == ["layer2"]  # the last spatial map: the last stage, as Grad-CAM users pick
    config = {"input_info": input_info(), "compression": [
        {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 16}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}},
        {"algorithm": "attribution_matching", "layers": ["layer1.0", "layer2.0.relu2"], "layer_weights": [0.5, 1.0]}]}
    ctrl, model = compress(tiny_resnet(width=4), load_config(config), digits.train)
    model.train()
    model(digits.train.tensors[0][:8])
    am_ctrl = attribution_controller(ctrl)
    loss = am_ctrl.loss()
    loss.backward()
    assert set(am_ctrl.matcher.last_layer_losses) == {"layer1.0", "layer2.0.relu2"}
    assert loss.item() > 0 and model.fc.weight.grad.abs().sum() > 0


def test_nncf_torch_imported_first_gets_an_actionable_error():
    env = {k: v for k, v in os.environ.items() if k != "NNCF_TORCH_LEGACY_TRACING"}
    code = "import nncf.torch\nimport nncf_wcam"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "NNCFImportOrderError" in result.stderr and "put `import nncf_wcam` before" in result.stderr


def test_import_alone_makes_create_compressed_model_work():
    env = {k: v for k, v in os.environ.items() if k != "NNCF_TORCH_LEGACY_TRACING"}
    code = (
        "import nncf_wcam\n"
        "from nncf import NNCFConfig\n"
        "from nncf.torch import create_compressed_model\n"
        "from nncf_wcam.zoo.models import SmallCNN\n"
        "cfg = NNCFConfig.from_dict({'input_info': {'sample_size': [1, 1, 16, 16]}, 'compression': [{'algorithm': 'attribution_matching'}]})\n"
        "ctrl, model = create_compressed_model(SmallCNN(width=4), cfg)\n"
        "print(type(ctrl).__name__, ctrl.matcher.layers)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "AttributionMatchingController ['features']" in result.stdout
