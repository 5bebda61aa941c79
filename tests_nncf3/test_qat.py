"""Attribution matching through NNCF 3.4's quantizers and pruning masks: double backprop, training, IR parity."""

import copy

import nncf
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Subset

from nncf_wcam import AttributionMatcher
from nncf_wcam import frozen_copy
from nncf_wcam.core.layers import choose_layers
from nncf_wcam.core.logits import select_logits
from nncf_wcam.core.saliency import SaliencyGuidedRegularizer
from nncf_wcam.deploy.runtime import load_compiled
from nncf_wcam.deploy.runtime import run_compiled
from nncf_wcam.evaluation.agreement import compare_attributions
from nncf_wcam.nncf3.data import calibration_dataset
from nncf_wcam.nncf3.export import export_ir
from nncf_wcam.nncf3.training import fine_tune
from nncf_wcam.zoo.models import create_model

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


def _qat(teacher, digits, seed, matched):
    """One epoch of int8 QAT (Adam 1e-4, batch 64) from the same quantized start and data order, with or without the matcher."""
    torch.manual_seed(seed)
    student = quantized(teacher, digits)
    # 15.625 = 1000 in the authors' mean-over-positions reduction, on 8 x 8 maps
    losses = [AttributionMatcher(frozen_copy(teacher), student, [LAYER], weight=15.625, stochastic_drop=0.3, seed=seed).loss] if matched else []
    loader = DataLoader(digits.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed))
    history = fine_tune(student, loader, torch.optim.Adam(student.parameters(), lr=1e-4), losses, epochs=1)
    assert (history[0]["extra_loss"] > 0) == matched
    return student


def test_qat_with_the_matcher_closes_most_of_the_grad_cam_gap_on_every_seed(trained_cnn, digits):
    """Three seeds, naive and matched QAT on the same start and data: the matcher closes at least 30 % of the Grad-CAM
    gap (1 - r) naive QAT leaves, on every seed (measured: 61-65 %)."""
    samples = digits.test.tensors[0][:128]
    closed = []
    for seed in range(3):
        naive, matched = (compare_attributions(trained_cnn, _qat(trained_cnn, digits, seed, m), samples, "grad_cam", layer=LAYER)["pearson"].mean() for m in (False, True))
        closed.append((matched - naive) / (1.0 - naive))
    assert min(closed) >= 0.3, closed


def test_the_ir_of_a_qat_student_computes_what_the_student_computes(trained_cnn, digits, tmp_path):
    """The exported IR, compiled here, against the PyTorch student on 128 test images: same predictions, close logits,
    int8 convolutions on the CPU."""
    student, samples = _qat(trained_cnn, digits, 0, True), digits.test.tensors[0][:128]
    exported = export_ir(student, tmp_path / "ir", samples)
    ir_logits = run_compiled(load_compiled(exported.output_dir), samples)
    with torch.no_grad():
        torch_logits = student.eval()(samples).numpy()
    assert (ir_logits.argmax(1) == torch_logits.argmax(1)).mean() >= 0.99
    assert np.abs(ir_logits - torch_logits).max() < 0.1 * np.abs(torch_logits).max()
    assert exported.manifest["runtime_precisions"].get("Convolution:u8", 0) >= 1  # int8 on the CPU, not fp32


def test_export_checks_its_threshold(trained_cnn, digits, tmp_path):
    with pytest.raises(ValueError, match="min_top1_agreement"):
        export_ir(quantized(trained_cnn, digits), tmp_path / "ir", digits.test.tensors[0][:8], min_top1_agreement=1.5)
    assert not (tmp_path / "ir").exists()


def test_export_refuses_a_folder_it_did_not_write_and_replaces_its_own(trained_cnn, digits, tmp_path):
    """A folder that is not an earlier export (a foreign manifest.json and other files) stays untouched."""
    from nncf_wcam.io.atomic import OutputFolderError

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


@pytest.mark.parametrize("name", ["mobilenet_style", "tiny_resnet"])
def test_models_with_depthwise_residual_and_dict_outputs_train_and_export(digits, tmp_path, name):
    """Networks the matcher was not written around: a MobileNet-style net (depthwise convolutions, a dict output) and a
    residual net, quantized by nncf.quantize, trained with the matcher at "auto"'s layer, exported and checked here."""
    logits_output = "logits" if name == "mobilenet_style" else None
    torch.manual_seed(0)
    teacher = create_model(name, 1, 10)
    loader = DataLoader(Subset(digits.train, range(512)), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    fine_tune(teacher, loader, torch.optim.Adam(teacher.parameters(), lr=3e-3), epochs=4, logits_output=logits_output)
    teacher.eval()
    sample = digits.train.tensors[0][:2]
    layer = choose_layers(teacher, "auto", lambda: teacher(sample))
    student = quantized(teacher, digits).train()
    matcher = AttributionMatcher(frozen_copy(teacher), student, layer, logits_output=logits_output, stochastic_drop=0.3)
    history = fine_tune(student, loader, torch.optim.Adam(student.parameters(), lr=1e-4), [matcher.loss], epochs=1, logits_output=logits_output)
    assert history[0]["extra_loss"] > 0
    samples = digits.test.tensors[0][:128]  # enough that one near-tie flipping between PyTorch and the IR stays under 1 %
    exported = export_ir(student, tmp_path / "ir", samples, logits_output=logits_output, matched_layers=layer)
    ir_logits = run_compiled(load_compiled(exported.output_dir), samples)
    with torch.no_grad():
        torch_logits = select_logits(student.eval()(samples), logits_output).numpy()
    assert (ir_logits.argmax(1) == torch_logits.argmax(1)).mean() >= 0.95
    assert exported.manifest["matched_layers"] == layer and exported.manifest["logits_output"] == logits_output


class _TupleOutput(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x), x.mean()


@pytest.mark.parametrize(
    "case",
    ["wrong-channels", "empty-batch", "a-list", "tuple-output-without-logits_output", "nan-weights"],
)
def test_bad_export_inputs_are_one_line_errors_and_write_nothing(trained_cnn, digits, tmp_path, case):
    from nncf_wcam.errors import ExportError

    student, samples = quantized(trained_cnn, digits), digits.test.tensors[0][:8]
    model, inputs, words = student, samples, None
    if case == "wrong-channels":
        inputs, words = samples.repeat(1, 3, 1, 1), "failed on sample_inputs"
    elif case == "empty-batch":
        inputs, words = samples[:0], "non-empty batch"
    elif case == "a-list":
        inputs, words = list(samples), "torch tensor or numpy array"
    elif case == "tuple-output-without-logits_output":
        model, words = _TupleOutput(student), "not a tensor of logits"
    else:
        with torch.no_grad():
            student.classifier.weight[0, 0] = float("nan")
        words = "NaN or infinity"
    with pytest.raises(ExportError, match=words) as error:
        export_ir(model, tmp_path / "ir", inputs)
    assert len(str(error.value).splitlines()) == 1 and not (tmp_path / "ir").exists()


def test_numpy_and_float64_samples_and_tuple_outputs_with_logits_output_export(trained_cnn, digits, tmp_path):
    student, samples = quantized(trained_cnn, digits), digits.test.tensors[0][:16]
    assert export_ir(student, tmp_path / "np", samples.double().numpy()).manifest["parity"]["top1_agreement"] > 0
    exported = export_ir(_TupleOutput(student), tmp_path / "tuple", samples, logits_output=0)
    agreement, _ = (run_compiled(load_compiled(exported.output_dir), samples).argmax(1) == student.eval()(samples).argmax(1).numpy()).mean(), None
    assert agreement >= 0.99
