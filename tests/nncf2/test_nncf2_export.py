"""Export of real NNCF-compressed models to OpenVINO IR: parity, manifest, devices, atomic writes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nncf import NNCFConfig
from nncf.torch import create_compressed_model
from nncf.torch import register_default_init_args
from torch.utils.data import DataLoader

import nncf_wcam  # noqa: F401  (must precede nncf.torch: sets NNCF_TORCH_LEGACY_TRACING)
from nncf_wcam.deploy import writer
from nncf_wcam.deploy.devices import UnsupportedDeviceError
from nncf_wcam.deploy.devices import check_device
from nncf_wcam.deploy.runtime import load_compiled
from nncf_wcam.deploy.runtime import run_compiled
from nncf_wcam.deploy.runtime import runtime_precisions
from nncf_wcam.errors import ExportError
from nncf_wcam.io.atomic import atomic_directory
from nncf_wcam.nncf2.export import export_ir
from nncf_wcam.zoo.datasets import load_digits
from nncf_wcam.zoo.models import SmallCNN

from conftest import DictOutputCNN
from conftest import ir_against_model

INPUT_SHAPE = [1, 1, 16, 16]
INIT_NO_BN = {"batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}
INT8 = {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 64}, **INIT_NO_BN}}
INT4 = {
    "algorithm": "quantization",
    "weights": {"bits": 4},
    "activations": {"bits": 4},
    "initializer": {"range": {"num_init_samples": 64, "type": "mean_min_max"}, **INIT_NO_BN},
}
FILTER_PRUNING = {
    "algorithm": "filter_pruning",
    "pruning_init": 0.5,
    "params": {"schedule": "exponential", "pruning_target": 0.5, "pruning_steps": 1},
}
MAGNITUDE_SPARSITY = {
    "algorithm": "magnitude_sparsity",
    "sparsity_init": 0.8,
    "params": {"schedule": "multistep", "multistep_steps": [], "multistep_sparsity_levels": [0.8]},
}


@pytest.fixture(scope="module")
def digits():
    return load_digits(image_size=16)


@pytest.fixture(scope="module")
def samples(digits):
    return digits.test.tensors[0][:32]


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    """NNCF writes its graph dumps (*.dot) into the config's log_dir, the working directory by default."""
    return str(tmp_path_factory.mktemp("nncf_log"))


def compress(digits, log_dir, compression, model_cls=SmallCNN, target_device=None):
    """A real NNCF-compressed SmallCNN(width=8); returns (ctrl, compressed model, config dict)."""
    torch.manual_seed(0)
    config = {"input_info": {"sample_size": INPUT_SHAPE}, "compression": compression, "log_dir": log_dir}
    if target_device:
        config["target_device"] = target_device
    nncf_config = register_default_init_args(NNCFConfig.from_dict(config), DataLoader(digits.train, batch_size=32))
    ctrl, model = create_compressed_model(model_cls(width=8), nncf_config)
    return ctrl, model, config


def torch_logits(model, inputs):
    model.eval()
    with torch.no_grad():
        return model(inputs).numpy()


def read_bytes(folder: Path) -> dict:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def int8(digits, log_dir):
    return compress(digits, log_dir, INT8)


@pytest.fixture(scope="module")
def int8_export(int8, samples, tmp_path_factory):
    ctrl, model, config = int8
    return export_ir(ctrl, model, tmp_path_factory.mktemp("int8") / "ir", samples, config=config)


def test_int8_export_matches_pytorch_and_runs_int8_kernels(int8_export):
    parity = int8_export.manifest["parity"]
    assert parity["top1_agreement"] == 1.0
    assert parity["max_abs_diff"] < 1e-3
    assert sorted(p.name for p in int8_export.output_dir.iterdir()) == ["manifest.json", "model.bin", "model.xml"]
    convolutions = [layer for layer in runtime_precisions(load_compiled(int8_export.output_dir)) if layer["layer_type"] == "Convolution"]
    assert len(convolutions) == 3
    assert {layer["precision"] for layer in convolutions} <= {"u8", "i8"}


def test_manifest_records_config_statistics_shapes_and_versions(int8_export, int8):
    manifest = json.loads(int8_export.manifest_path.read_text())
    assert manifest == json.loads(json.dumps(int8_export.manifest))
    assert manifest["config"] == int8[2]
    assert manifest["algorithms"] == ["quantization"]
    assert manifest["precision"] == "int8"
    assert manifest["input_shape"] == [-1, 1, 16, 16]
    assert manifest["compression"]["quantization"]["num_wq_per_bitwidth"] == {"8": 4}
    assert manifest["compression"]["quantization"]["num_aq_per_bitwidth"] == {"8": 5}
    assert manifest["runtime_precisions"]["Convolution:u8"] == 3
    assert manifest["ir"]["weight_values"] == manifest["source_weight_values"] == 8 * 9 + 16 * 8 * 9 + 32 * 16 * 9 + 32 * 10
    # MACs at batch 1: three 3x3 convs at 16x16, 16x16, 8x8 and the 32 -> 10 linear layer
    assert manifest["ir"]["macs"] == 8 * 256 * 9 + 16 * 256 * 72 + 32 * 64 * 144 + 320
    assert set(manifest["versions"]) == {"nncf", "openvino", "torch", "nncf_wcam"}
    assert manifest["versions"]["nncf"].startswith("2.19")


def test_dynamic_batch_compiles_once_and_runs_batch_1_and_5(int8_export, int8, samples):
    compiled = load_compiled(int8_export.xml_path)
    expected = torch_logits(int8[1], samples[:5])
    np.testing.assert_allclose(run_compiled(compiled, samples[:1]), expected[:1], atol=1e-3)
    np.testing.assert_allclose(run_compiled(compiled, samples[:5]), expected, atol=1e-3)


def test_static_shape_export(int8, samples, tmp_path):
    ctrl, model, config = int8
    result = export_ir(ctrl, model, tmp_path / "ir", samples, config=config, dynamic_batch=False)
    assert result.manifest["input_shape"] == [1, 1, 16, 16]
    compiled = load_compiled(result.output_dir)
    assert compiled.input(0).get_partial_shape().is_static
    # a static batch of 1 runs a batch of 5 sample by sample
    np.testing.assert_allclose(run_compiled(compiled, samples[:5]), torch_logits(model, samples[:5]), atol=1e-3)


def test_4bit_quantization_exports_through_fake_quantize(digits, log_dir, samples, tmp_path):
    ctrl, model, config = compress(digits, log_dir, INT4, target_device="TRIAL")
    result = export_ir(ctrl, model, tmp_path / "ir", samples, config=config)
    assert result.manifest["precision"] == "int4"
    assert result.manifest["compression"]["quantization"]["num_wq_per_bitwidth"] == {"4": 4}
    agreement, diff = ir_against_model(result.output_dir, model, samples)
    assert agreement >= 0.99 and diff < 0.1, (agreement, diff)


def test_filter_pruning_removes_filters_from_the_ir(digits, log_dir, samples, tmp_path):
    ctrl, model, config = compress(digits, log_dir, FILTER_PRUNING)
    pruning = ctrl.statistics().filter_pruning.model_statistics
    assert pruning.filter_pruning_level > 0.3

    result = export_ir(ctrl, model, tmp_path / "pruned", samples, config=config)
    manifest = result.manifest
    assert manifest["pruning_transformation_applied"]
    assert manifest["ir_before_pruning_transformation"]["weight_values"] == manifest["source_weight_values"]
    assert manifest["ir"]["weight_values"] < manifest["source_weight_values"]
    # the IR now holds what NNCF's statistics say remains
    assert manifest["ir"]["weight_values"] == pruning.current_params_num
    assert manifest["ir_before_pruning_transformation"]["flops"] == pruning.full_flops
    assert manifest["ir"]["flops"] == pruning.current_flops
    assert manifest["parity"]["top1_agreement"] == 1.0

    kept = export_ir(ctrl, model, tmp_path / "zeroed", samples, apply_pruning=False).manifest
    assert not kept["pruning_transformation_applied"]
    assert kept["ir"]["weight_values"] == manifest["source_weight_values"]
    assert kept["ir"]["zero_fraction"] > 0.3


def test_magnitude_sparsity_zero_fraction_matches_nncf(digits, log_dir, samples, tmp_path):
    ctrl, model, config = compress(digits, log_dir, MAGNITUDE_SPARSITY)
    level = ctrl.statistics().magnitude_sparsity.model_statistics.sparsity_level
    result = export_ir(ctrl, model, tmp_path / "ir", samples, config=config)
    assert result.manifest["compression"]["magnitude_sparsity"]["model_statistics"]["sparsity_level"] == pytest.approx(level)
    assert result.manifest["ir"]["zero_fraction"] == pytest.approx(level, abs=0.01)
    assert result.manifest["precision"] == "fp32"
    assert result.manifest["parity"]["top1_agreement"] == 1.0


def test_dict_output_selects_logits_by_key(digits, log_dir, samples, tmp_path):
    ctrl, model, _ = compress(digits, log_dir, MAGNITUDE_SPARSITY, model_cls=DictOutputCNN)
    with pytest.raises(ExportError, match="logits_output"):
        export_ir(ctrl, model, tmp_path / "no_key", samples)
    result = export_ir(ctrl, model, tmp_path / "ir", samples, logits_output="logits")
    assert result.manifest["logits_output_index"] == 1  # dict order: embedding, logits
    model.eval()
    with torch.no_grad():
        expected = model(samples)["logits"].numpy()
    np.testing.assert_allclose(run_compiled(load_compiled(result.output_dir), samples), expected, atol=1e-4)
    assert not (tmp_path / "no_key").exists()


def test_device_checks():
    assert check_device("cpu") == "CPU"
    with pytest.raises(UnsupportedDeviceError, match="CPU") as absent:
        check_device("NPU")
    assert "not available" in str(absent.value)
    for removed in ("MYRIAD", "VPU"):
        with pytest.raises(UnsupportedDeviceError, match="2023.0") as error:
            check_device(removed)
        assert "NPU" in str(error.value)
    with pytest.raises(UnsupportedDeviceError, match="Unknown device"):
        check_device("TPU")
    assert isinstance(UnsupportedDeviceError("x"), ValueError)


def test_export_for_absent_device_writes_nothing(int8, samples, tmp_path):
    ctrl, model, _ = int8
    with pytest.raises(UnsupportedDeviceError, match="CPU"):
        export_ir(ctrl, model, tmp_path / "npu", samples, device="NPU")
    assert list(tmp_path.iterdir()) == []


def test_failed_exports_keep_the_earlier_ir(int8, int8_export, samples, tmp_path, monkeypatch):
    ctrl, model, config = int8
    output_dir = tmp_path / "ir"
    export_ir(ctrl, model, output_dir, samples, config=config)
    good = read_bytes(output_dir)

    def broken_save(*args, **kwargs):
        raise OSError("disk full (injected)")

    with monkeypatch.context() as patch:
        patch.setattr(writer.ov, "save_model", broken_save)
        with pytest.raises(OSError, match="injected"):
            export_ir(ctrl, model, output_dir, samples, config=config)
        with pytest.raises(OSError, match="injected"):
            export_ir(ctrl, model, tmp_path / "fresh", samples)

    real_run = writer.run_compiled
    with monkeypatch.context() as patch:  # an IR whose predictions disagree with PyTorch
        patch.setattr(writer, "run_compiled", lambda compiled, inputs: -real_run(compiled, inputs))
        with pytest.raises(ExportError, match="parity"):
            export_ir(ctrl, model, output_dir, samples, config=config)

    assert read_bytes(output_dir) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir"]  # no staging leftovers, no "fresh"


def test_refuses_to_replace_a_folder_that_is_not_an_export(int8, samples, tmp_path):
    ctrl, model, _ = int8
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an earlier export"):
        export_ir(ctrl, model, tmp_path, samples)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(target) as staging:
            (staging / "a.txt").write_text("partial")
            raise KeyboardInterrupt
    assert read_bytes(target) == {"a.txt": b"first"}
    with atomic_directory(target) as staging:
        (staging / "b.txt").write_text("second")
    assert read_bytes(target) == {"b.txt": b"second"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_rejects_impossible_threshold(int8, samples, tmp_path):
    ctrl, model, _ = int8
    with pytest.raises(ValueError, match="min_top1_agreement"):
        export_ir(ctrl, model, tmp_path / "ir", samples, min_top1_agreement=1.5)
