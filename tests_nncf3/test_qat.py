"""Attribution matching through NNCF 3.4's quantizers and pruning masks: double backprop, training, IR parity."""

import copy

import nncf
import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Subset

from nncf_wcam import AttributionMatcher
from nncf_wcam import frozen_copy
from nncf_wcam.evaluation import compare_attributions
from nncf_wcam.nncf3 import calibration_dataset
from nncf_wcam.nncf3 import export_ir
from nncf_wcam.nncf3 import fine_tune
from nncf_wcam.saliency import SaliencyGuidedRegularizer

LAYER = "features.9"


def quantized(teacher, digits):
    loader = DataLoader(Subset(digits.train, range(128)), batch_size=32)
    return nncf.quantize(copy.deepcopy(teacher), calibration_dataset(loader), subset_size=len(loader))


def pruned(teacher, digits):
    example = digits.train.tensors[0][:1]
    return nncf.prune(copy.deepcopy(teacher), mode=nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL, ratio=0.6, examples_inputs=example)


def _quantizer_modules(model):
    return [name for name, _ in model.named_modules() if name.startswith("__nncf_hooks") and name.count(".") == 2]


@pytest.mark.parametrize("compress", [quantized, pruned], ids=["int8", "magnitude_pruning"])
def test_matching_loss_alone_trains_the_layers_after_the_matched_one(teacher_copy, digits, compress):
    """The classifier after features.9 reaches the loss only through the student's own gradients dy/dA:
    non-zero gradients there prove double backprop through NNCF 3.x's quantizers (or pruning masks)."""
    student = compress(teacher_copy, digits).train()
    if compress is quantized:
        assert len(_quantizer_modules(student)) >= 5  # weights and activations are really fake-quantized
    matcher = AttributionMatcher(frozen_copy(teacher_copy), student, [LAYER], weight=1.0)
    student(digits.train.tensors[0][:32])
    loss = matcher.loss()
    assert loss.item() > 0
    loss.backward()
    assert student.classifier.weight.grad is not None and student.classifier.weight.grad.abs().sum() > 0
    assert student.features[7].weight.grad.abs().sum() > 0


def test_saliency_guided_regularizer_trains_a_quantized_model(teacher_copy, digits):
    student = quantized(teacher_copy, digits).train()
    regularizer = SaliencyGuidedRegularizer(student, mask_fraction=0.5, weight=1.0)
    student(digits.train.tensors[0][:32])
    loss = regularizer.loss()
    loss.backward()
    assert loss.item() > 0 and student.classifier.weight.grad.abs().sum() > 0


def test_qat_with_the_matcher_keeps_grad_cam_closer_and_the_ir_passes_parity(trained_cnn, digits, tmp_path):
    """Same seed, same data order: one epoch of int8 QAT with and without the matcher; both IRs pass parity."""
    samples = digits.test.tensors[0][:128]
    agreement = {}
    for variant in ("naive", "wcam"):
        torch.manual_seed(0)
        student = quantized(trained_cnn, digits)
        # 15.625 = 1000 in the old mean-over-positions reduction, on 8 x 8 maps
        losses = [AttributionMatcher(frozen_copy(trained_cnn), student, [LAYER], weight=15.625, stochastic_drop=0.3).loss] if variant == "wcam" else []
        loader = DataLoader(digits.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
        history = fine_tune(student, loader, torch.optim.Adam(student.parameters(), lr=1e-4), losses, epochs=1)
        assert (history[0]["extra_loss"] > 0) == (variant == "wcam")
        agreement[variant] = compare_attributions(trained_cnn, student, samples, "grad_cam", layer=LAYER)["pearson"].mean()
        exported = export_ir(student, tmp_path / variant, samples)
        assert exported.xml_path.is_file() and exported.manifest["parity"]["top1_agreement"] >= 0.99
        assert exported.manifest["runtime_precisions"].get("Convolution:u8", 0) >= 1  # int8 on the CPU, not fp32
    assert agreement["wcam"] > agreement["naive"]


def test_export_checks_its_threshold(trained_cnn, digits, tmp_path):
    with pytest.raises(ValueError, match="min_top1_agreement"):
        export_ir(quantized(trained_cnn, digits), tmp_path / "ir", digits.test.tensors[0][:8], min_top1_agreement=1.5)
    assert not (tmp_path / "ir").exists()


def test_export_refuses_a_folder_it_did_not_write_and_replaces_its_own(trained_cnn, digits, tmp_path):
    """The data-loss case of issue 13 on the NNCF 3.x route: a foreign manifest.json and other files stay untouched."""
    from nncf_wcam.export import OutputFolderError

    student, samples = quantized(trained_cnn, digits), digits.test.tensors[0][:8]
    foreign = tmp_path / "foreign"
    (foreign / "sub").mkdir(parents=True)
    (foreign / "manifest.json").write_text('{"name": "x"}')
    (foreign / "important.txt").write_text("keep me")
    (foreign / "sub" / "data.csv").write_text("1,2")
    with pytest.raises(OutputFolderError, match="not an earlier export by nncf-wcam"):
        export_ir(student, foreign, samples)
    assert sorted(str(p.relative_to(foreign)) for p in foreign.rglob("*")) == ["important.txt", "manifest.json", "sub", "sub/data.csv"]
    first = export_ir(student, tmp_path / "ir", samples)
    assert first.manifest["producer"] == "nncf_wcam"
    assert export_ir(student, tmp_path / "ir", samples).xml_path.is_file()  # its own earlier export is replaced
