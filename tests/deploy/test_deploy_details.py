"""Export details beyond the matrix: NNCF's quantization grid in the IR, NPU targets, one-line errors."""

import numpy as np
import openvino as ov
import pytest
import torch
from nncf import NNCFConfig
from nncf.torch import create_compressed_model
from nncf.torch import register_default_init_args
from nncf.torch.quantization.quantize_functions import TuneRange
from nncf.torch.quantization.quantize_functions import asymmetric_quantize
from openvino import opset13 as ops
from torch.utils.data import DataLoader

import nncf_wcam  # noqa: F401  (must precede nncf.torch)
from nncf_wcam.deploy.quantizer_ranges import align_fake_quantize_ranges
from nncf_wcam.deploy.runtime import load_compiled
from nncf_wcam.errors import ExportError
from nncf_wcam.nncf2.export import export_ir
from nncf_wcam.zoo.datasets import load_digits
from nncf_wcam.zoo.models import SmallCNN

LEVELS = 16


def nncf_fake_quantize(x: np.ndarray, input_low: float, input_range: float) -> np.ndarray:
    """NNCF's own asymmetric quantizer (TuneRange + the CPU kernel used in training)."""
    args = (LEVELS, 0, LEVELS - 1, torch.tensor([input_low]), torch.tensor([input_range]), 1e-16)
    return asymmetric_quantize(torch.from_numpy(x), *args).numpy()


def exported_fake_quantize(input_low: float, input_range: float) -> ov.Model:
    """The FakeQuantize NNCF's ONNX export writes: input and output range = the tuned range."""
    tuned_low, tuned_range = (t.item() for t in TuneRange.apply(torch.tensor([input_low]), torch.tensor([input_range]), LEVELS))
    low, high = ops.constant(np.float32(tuned_low)), ops.constant(np.float32(tuned_low + tuned_range))
    parameter = ops.parameter([1000], np.float32)
    return ov.Model([ops.fake_quantize(parameter, low, high, low, high, LEVELS)], [parameter])


def run(model: ov.Model, x: np.ndarray) -> np.ndarray:
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]


@pytest.mark.parametrize("input_low", [-0.004, -0.02, 0.0, 0.05])
def test_aligned_fake_quantize_equals_nncf_quantizer(input_low):
    """input_low a fraction of a step below 0 (after a ReLU): the raw export is shifted by input_low; aligned it is exact."""
    x = np.linspace(-0.1, 0.5, 1000, dtype=np.float32)
    expected = nncf_fake_quantize(x, input_low, 0.3)
    model = exported_fake_quantize(input_low, 0.3)
    raw = run(model, x)
    changed = align_fake_quantize_ranges(model)
    np.testing.assert_allclose(run(model, x), expected, atol=1e-6)
    if input_low == -0.004:  # -input_low * scale = 0.2 < 0.5: NNCF's TuneRange keeps input_low off the grid
        assert len(changed) == 1
        assert np.abs(raw - expected).max() == pytest.approx(0.004, rel=1e-3)
    if input_low >= 0:  # already on the grid: left alone
        assert changed == []


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    digits = load_digits(image_size=16)
    config = {
        "input_info": {"sample_size": [1, 1, 16, 16]},
        "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 16}}},
        "log_dir": str(tmp_path_factory.mktemp("nncf_log")),
    }
    torch.manual_seed(0)
    nncf_config = register_default_init_args(NNCFConfig.from_dict(config), DataLoader(digits.train, batch_size=16))
    ctrl, model = create_compressed_model(SmallCNN(width=8), nncf_config)
    return ctrl, model, config, digits.test.tensors[0][:32]


@pytest.mark.skipif("NPU" in ov.Core().available_devices, reason="checks the export on a machine without an NPU")
def test_npu_target_exported_on_a_machine_without_npu(int8, tmp_path):
    ctrl, model, config, samples = int8
    result = export_ir(ctrl, model, tmp_path / "npu", samples, config=config, target_device="NPU")
    manifest = result.manifest
    assert manifest["target_device"] == "NPU" and manifest["device"] == "CPU"
    assert manifest["target_compile_checked"] is False
    assert manifest["input_shape"] == [1, 1, 16, 16] and not manifest["dynamic_batch"]
    assert manifest["input_layout"] == "[N,C,H,W]"
    assert manifest["parity"]["top1_agreement"] == 1.0  # checked on CPU
    assert load_compiled(result.output_dir).input(0).get_partial_shape().is_static
    with pytest.raises(ExportError, match="Unknown device"):
        export_ir(ctrl, model, tmp_path / "tpu", samples, target_device="TPU")


def test_nncf_export_failure_is_one_line_export_error(int8, tmp_path, monkeypatch):
    ctrl, model, config, samples = int8

    def broken(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::foo' to ONNX opset version 13 is not supported.\nmore")

    monkeypatch.setattr(ctrl, "export_model", broken)
    with pytest.raises(ExportError) as error:
        export_ir(ctrl, model, tmp_path / "ir", samples, config=config)
    message = str(error.value)
    assert "\n" not in message and "aten::foo" in message and "input_info" in message
    assert not (tmp_path / "ir").exists()


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    """A float model (no quantizer): where bf16 execution shows in the logits, if the CPU has it."""
    digits = load_digits(image_size=16)
    config = {"input_info": {"sample_size": [1, 1, 16, 16]}, "compression": [], "log_dir": str(tmp_path_factory.mktemp("nncf_log"))}
    torch.manual_seed(0)
    ctrl, model = create_compressed_model(SmallCNN(width=8), NNCFConfig.from_dict(config))
    return ctrl, model, config, digits.test.tensors[0][:32]


@pytest.mark.parametrize("model_kind", ["int8", "fp32"])
def test_parity_is_also_measured_at_the_devices_default_precision(model_kind, request, tmp_path):
    """The gate compiles with an f32 hint; a user's own `compile_model(xml, "CPU")` gets the CPU's default (bf16 where
    the CPU has it). Both are in the manifest, each as this test measures it itself."""
    ctrl, model, config, samples = request.getfixturevalue(model_kind)
    result = export_ir(ctrl, model, tmp_path / "ir", samples, config=config)
    checked, default = result.manifest["parity"], result.manifest["parity_at_device_default"]
    cpu_default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    assert checked["inference_precision"] == "f32" and default["inference_precision"] == cpu_default
    model.eval()
    with torch.no_grad():
        expected = model(samples).numpy()
    for record, hint in ((checked, "f32"), (default, None)):
        ir_logits = load_compiled(result.output_dir, inference_precision=hint)(samples.numpy())[0]
        assert record["max_abs_diff"] == pytest.approx(float(np.abs(ir_logits - expected).max()), rel=1e-5, abs=1e-9)
        assert record["top1_agreement"] == pytest.approx(float((ir_logits.argmax(1) == expected.argmax(1)).mean()))
    print(f"\n[parity {model_kind}] f32 {checked['max_abs_diff']:.2e}, device default {cpu_default} {default['max_abs_diff']:.2e}")
