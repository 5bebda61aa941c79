"""Evaluation: metrics on hand-made maps with known answers, captum maps on real digits,
Grad-CAM against CAM computed by hand, and occlusion through a real OpenVINO IR."""

import copy

import numpy as np
import pytest
import torch

import nncf_wcam  # noqa: F401  (sets NNCF's legacy tracing before anything imports nncf)
from nncf_wcam.evaluation.agreement import compare_attributions
from nncf_wcam.evaluation.agreement import map_agreement
from nncf_wcam.evaluation.agreement import summarize
from nncf_wcam.evaluation.attributions import METHODS
from nncf_wcam.evaluation.attributions import attribution_maps
from nncf_wcam.evaluation.figures import plot_map_grid
from nncf_wcam.evaluation.ir_attributions import OpenVINOForward
from nncf_wcam.evaluation.ir_attributions import compare_ir_occlusion
from nncf_wcam.evaluation.ir_attributions import ir_occlusion_maps
from nncf_wcam.evaluation.localization import localization_scores
from nncf_wcam.zoo.datasets import load_digits
from nncf_wcam.zoo.models import SmallCNN
from nncf_wcam.zoo.models import tiny_resnet

from conftest import DictOutputCNN

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits().test.tensors
    return images[:6], labels[:6]


def _seeded(model_class, **kwargs):
    torch.manual_seed(0)
    model = model_class(**kwargs)
    # Non-trivial BatchNorm statistics, so eval mode differs visibly from train mode.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def small_cnn():
    return _seeded(SmallCNN)


# ----------------------------------------------------------------------------- agreement metrics


def test_identical_maps_agree_perfectly():
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    scores = map_agreement(maps, maps.clone(), top_k=0.2)
    for name in ("pearson", "spearman", "cosine", "iou"):
        np.testing.assert_allclose(scores[name], 1.0, atol=1e-12)


def test_reversed_ramp_has_disjoint_top_k_and_negated_map_anticorrelates():
    ramp = np.arange(100.0).reshape(1, 10, 10)
    reversed_scores = map_agreement(ramp, ramp[:, ::-1, ::-1], top_k=0.1)
    assert reversed_scores["iou"][0] == 0.0  # top 10 pixels: 90..99 against 0..9
    negated = map_agreement(ramp, -ramp, top_k=0.1)
    assert negated["pearson"][0] == pytest.approx(-1.0)
    assert negated["spearman"][0] == pytest.approx(-1.0)
    assert negated["cosine"][0] == pytest.approx(-1.0)
    # A positive affine change keeps Pearson and the ranks, not the cosine.
    shifted = map_agreement(ramp, 3 * ramp + 50, top_k=0.1)
    assert shifted["pearson"][0] == pytest.approx(1.0) and shifted["spearman"][0] == pytest.approx(1.0)
    a, b = ramp.ravel(), 3 * ramp.ravel() + 50
    assert shifted["iou"][0] == 1.0
    expected_cosine = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    assert expected_cosine < 0.999 and shifted["cosine"][0] == pytest.approx(expected_cosine)


def test_top_k_iou_counts_overlap():
    a = np.zeros((1, 10, 10))
    b = np.zeros((1, 10, 10))
    a[0, 0, :10] = np.arange(1, 11)  # a's top 10 %: row 0
    b[0, 0, :5] = np.arange(1, 6) + 10  # b's top 10 %: half of row 0 and five pixels of row 1
    b[0, 1, :5] = np.arange(1, 6)
    assert map_agreement(a, b, top_k=0.1)["iou"][0] == pytest.approx(5 / 15)


def test_constant_maps_follow_the_convention_and_never_give_nan():
    rng = np.random.default_rng(0)
    varied = rng.random((1, 6, 6))
    zeros, ones, twos = np.zeros((1, 6, 6)), np.ones((1, 6, 6)), np.full((1, 6, 6), 2.0)
    for name, value in map_agreement(zeros, zeros).items():
        assert value[0] == 1.0, name
    for name in ("pearson", "spearman", "iou"):
        assert map_agreement(ones, twos)[name][0] == 1.0  # both constant: same (empty) spatial information
        assert map_agreement(varied, ones)[name][0] == 0.0  # one constant: no agreement
        assert map_agreement(ones, varied)[name][0] == 0.0
    assert map_agreement(zeros, varied)["cosine"][0] == 0.0
    assert map_agreement(ones, twos)["cosine"][0] == pytest.approx(1.0)  # defined for nonzero constant maps
    for scores in (map_agreement(zeros, varied), map_agreement(ones, varied), map_agreement(zeros, ones)):
        assert all(np.isfinite(v).all() for v in scores.values())


def test_agreement_rejects_mismatched_shapes_and_bad_top_k():
    with pytest.raises(ValueError, match="shape"):
        map_agreement(np.zeros((2, 4, 4)), np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="top_k"):
        map_agreement(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), top_k=10)


# ----------------------------------------------------------------------------- localization metrics


def _square_mask(size=8, rows=slice(2, 5), cols=slice(2, 5)):
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, rows, cols] = True
    return mask


def test_pointing_game_hits_inside_misses_outside():
    mask = _square_mask()
    inside = torch.zeros(1, 8, 8)
    inside[0, 3, 3] = 1.0
    outside = torch.zeros(1, 8, 8)
    outside[0, 7, 0] = 1.0
    assert localization_scores(inside, mask)["pointing_game"][0] == 1.0
    assert localization_scores(outside, mask)["pointing_game"][0] == 0.0
    # A low-resolution map is upsampled to the mask: a peak in the top-left quarter of a 2x2 map
    # lands in the top-left of the 8x8 mask.
    low_res = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert localization_scores(low_res, _square_mask(rows=slice(0, 3), cols=slice(0, 3)))["pointing_game"][0] == 1.0
    assert localization_scores(low_res, _square_mask(rows=slice(5, 8), cols=slice(5, 8)))["pointing_game"][0] == 0.0


def test_pointing_game_tolerance_constant_map_and_empty_mask():
    mask = _square_mask()
    next_to_mask = torch.zeros(1, 8, 8)
    next_to_mask[0, 5, 3] = 1.0  # one row below the mask
    assert localization_scores(next_to_mask, mask)["pointing_game"][0] == 0.0
    assert localization_scores(next_to_mask, mask, tolerance=1)["pointing_game"][0] == 1.0
    assert localization_scores(torch.ones(1, 8, 8), mask)["pointing_game"][0] == 0.0  # no peak: a miss
    empty = torch.zeros(1, 8, 8, dtype=torch.bool)
    assert np.isnan(localization_scores(next_to_mask, empty)["pointing_game"][0])


def test_roc_auc_of_mask_inverse_constant_and_degenerate():
    mask = _square_mask()
    assert localization_scores(mask.float(), mask)["roc_auc"][0] == pytest.approx(1.0)
    assert localization_scores(1.0 - mask.float(), mask)["roc_auc"][0] == pytest.approx(0.0)
    assert localization_scores(torch.full((1, 8, 8), 3.0), mask)["roc_auc"][0] == pytest.approx(0.5)
    full = torch.ones(1, 8, 8, dtype=torch.bool)
    assert np.isnan(localization_scores(mask.float(), full)["roc_auc"][0])


def test_summarize_skips_undefined_samples():
    summary = summarize({"roc_auc": np.array([1.0, np.nan, 0.5]), "none": np.array([np.nan])})
    assert summary["roc_auc"] == pytest.approx(0.75)
    assert np.isnan(summary["none"])


# ----------------------------------------------------------------------------- captum attribution maps


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_gives_one_finite_map_per_sample(small_cnn, digits, method):
    images, _ = digits
    options = {"layer": "features.9"} if method == "grad_cam" else {}
    if method == "integrated_gradients":
        options["n_steps"] = 8
    if method == "occlusion":
        options.update(window=4, stride=4, perturbations_per_eval=4)
    maps = attribution_maps(small_cnn, images, method, **options)
    expected = (len(images), 8, 8) if method == "grad_cam" else (len(images), 16, 16)
    assert maps.shape == expected
    assert torch.isfinite(maps).all()
    assert (maps.flatten(1).std(dim=1) > 0).all()  # real maps, not constants
    assert not maps.requires_grad


def test_grad_cam_upsampled_to_input_is_nonnegative(small_cnn, digits):
    images, _ = digits
    maps = attribution_maps(small_cnn, images, "grad_cam", layer="features.9", upsample_to_input=True)
    assert maps.shape == (len(images), 16, 16)
    assert (maps >= 0).all()


def _cam(model, features_of, classifier, images, target):
    """CAM by hand: the target class's classifier weights times the last feature maps, ReLU'd."""
    with torch.no_grad():
        features = features_of(images)  # B x C x h x w
        weights = classifier.weight[target]  # B x C
        return torch.relu(torch.einsum("bc,bchw->bhw", weights, features))


@pytest.mark.parametrize("use_top1", [True, False])
def test_grad_cam_equals_cam_for_gap_linear_head(small_cnn, digits, use_top1):
    images, _ = digits
    logits = small_cnn(images)
    # The least likely class has negative evidence somewhere: that is where the ReLU matters.
    target = None if use_top1 else logits.argmin(1)
    grad_cam = attribution_maps(small_cnn, images, "grad_cam", target=target, layer="features.9")
    chosen = logits.argmax(1) if use_top1 else target
    cam = _cam(small_cnn, small_cnn.features, small_cnn.classifier, images, chosen)
    assert cam.flatten(1).amax(1).gt(0).all()
    if not use_top1:
        raw = torch.einsum("bc,bchw->bhw", small_cnn.classifier.weight[chosen], small_cnn.features(images))
        assert (raw < 0).any()
    # Global average pooling spreads dy/dA evenly: Grad-CAM = CAM / (h * w), a positive scale.
    height, width = cam.shape[-2:]
    torch.testing.assert_close(grad_cam * height * width, cam, rtol=1e-4, atol=1e-5)


def test_grad_cam_equals_cam_on_a_resnet(digits):
    images, _ = digits
    model = _seeded(tiny_resnet)
    grad_cam = attribution_maps(model, images, "grad_cam", layer="layer2")

    def features_of(x):
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        return model.layer2(model.layer1(x))

    cam = _cam(model, features_of, model.fc, images, model(images).argmax(1))
    height, width = cam.shape[-2:]
    torch.testing.assert_close(grad_cam * height * width, cam, rtol=1e-4, atol=1e-5)


def test_bad_layer_name_lists_the_valid_names(small_cnn, digits):
    images, _ = digits
    with pytest.raises(ValueError, match=r"features\.99.*Layers that do:.*features\.9") as error:
        attribution_maps(small_cnn, images, "grad_cam", layer="features.99")
    assert "classifier" in str(error.value)
    with pytest.raises(ValueError, match="needs a `layer`"):
        attribution_maps(small_cnn, images, "grad_cam")


def test_unknown_method_and_option_are_rejected(small_cnn, digits):
    images, _ = digits
    with pytest.raises(ValueError, match="grad_cam"):
        attribution_maps(small_cnn, images, "lrp")
    with pytest.raises(ValueError, match="window"):
        attribution_maps(small_cnn, images, "occlusion", n_steps=4)
    with pytest.raises(ValueError, match="channel_reduction"):
        attribution_maps(small_cnn, images, "saliency", channel_reduction="max")


def test_default_target_is_top1_and_explicit_targets_change_the_map(small_cnn, digits):
    images, _ = digits
    top1 = small_cnn(images).argmax(1)
    default = attribution_maps(small_cnn, images, "saliency")
    torch.testing.assert_close(default, attribution_maps(small_cnn, images, "saliency", target=top1))
    other = attribution_maps(small_cnn, images, "saliency", target=(top1 + 1) % 10)
    assert not torch.allclose(default, other)
    with pytest.raises(ValueError, match="one class per sample"):
        attribution_maps(small_cnn, images, "saliency", target=top1[:2])


def test_signed_channel_sum_differs_from_magnitude(small_cnn, digits):
    images, _ = digits
    magnitude = attribution_maps(small_cnn, images, "input_x_gradient")
    signed = attribution_maps(small_cnn, images, "input_x_gradient", channel_reduction="sum")
    torch.testing.assert_close(magnitude, signed.abs())  # one input channel: |sum| = sum |.|
    assert (signed < 0).any()


def test_dict_output_model_matches_plain_model(small_cnn, digits):
    images, _ = digits
    dict_model = DictOutputCNN().eval()
    dict_model.load_state_dict(small_cnn.state_dict())
    for method, options in (("grad_cam", {"layer": "features.9"}), ("saliency", {})):
        expected = attribution_maps(small_cnn, images, method, **options)
        got = attribution_maps(dict_model, images, method, logits_output="logits", **options)
        torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="embedding"):
        attribution_maps(dict_model, images, "saliency", logits_output="scores")
    with pytest.raises(ValueError, match="it is a single tensor"):
        attribution_maps(small_cnn, images, "saliency", logits_output=0)


def test_attribution_runs_in_eval_mode_and_restores_modes(digits):
    images, _ = digits
    model = _seeded(SmallCNN).train()
    model.classifier.eval()  # mixed modes must come back as they were
    running_mean = model.features[1].running_mean.clone()
    maps = attribution_maps(model, images, "grad_cam", layer="features.9")
    assert model.training and model.features[1].training and not model.classifier.training
    torch.testing.assert_close(model.features[1].running_mean, running_mean)  # no batch statistics used
    torch.testing.assert_close(maps, attribution_maps(_seeded(SmallCNN), images, "grad_cam", layer="features.9"))


def test_compare_attributions_teacher_with_itself_and_a_perturbed_student(small_cnn, digits):
    images, _ = digits
    same = compare_attributions(small_cnn, copy.deepcopy(small_cnn), images, "grad_cam", layer="features.9")
    for name, values in same.items():
        np.testing.assert_allclose(values, 1.0, atol=1e-6, err_msg=name)
    student = copy.deepcopy(small_cnn)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for parameter in student.parameters():
            parameter.add_(0.5 * parameter.std() * torch.randn(parameter.shape, generator=generator))
    perturbed = summarize(compare_attributions(small_cnn, student, images, "grad_cam", layer="features.9"))
    assert all(-1.0 <= value < 0.999 for value in perturbed.values()), perturbed


# ----------------------------------------------------------------------------- OpenVINO IR occlusion


F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # the IR alone, without the CPU's default bf16 execution
OCCLUSION = dict(window=4, stride=2, perturbations_per_eval=4)


@pytest.fixture(scope="module")
def ir_paths(small_cnn, digits, tmp_path_factory):
    """FP32 IRs of the small CNN with a static batch of 1, a dynamic batch and a static batch of 4."""
    import openvino as ov

    images, _ = digits
    folder = tmp_path_factory.mktemp("ir")
    model = ov.convert_model(small_cnn, example_input=images[:1])  # dynamic shapes
    paths = {}
    for name, batch in (("dynamic", None), ("static1", 1), ("static4", 4)):
        if batch is not None:
            model.reshape([batch, *images.shape[1:]])
        paths[name] = folder / f"{name}.xml"
        ov.save_model(model, paths[name], compress_to_fp16=False)  # save_model stores FP16 weights by default
    return paths


def test_ir_occlusion_agrees_with_torch_occlusion(small_cnn, digits, ir_paths):
    import openvino as ov

    images, _ = digits
    images = images[:3]
    core = ov.Core()
    static_ir = core.compile_model(core.read_model(ir_paths["static1"]), "CPU", F32)  # a compiled model
    dynamic_ir = OpenVINOForward(ir_paths["dynamic"], inference_precision="f32")  # from a path
    assert OpenVINOForward(static_ir).static_batch == 1 and OpenVINOForward(static_ir).inference_precision == "f32"
    assert dynamic_ir.static_batch is None
    torch_maps = attribution_maps(small_cnn, images, "occlusion", **OCCLUSION)
    target = small_cnn(images).argmax(1)
    for ir in (static_ir, dynamic_ir):
        ir_maps = ir_occlusion_maps(ir, images, target=target, **OCCLUSION)
        assert ir_maps.shape == torch_maps.shape
        scores = map_agreement(torch_maps, ir_maps)
        assert scores["pearson"].min() > 0.999 and scores["iou"].min() > 0.9


def test_ir_occlusion_at_the_devices_default_precision(small_cnn, digits, ir_paths):
    """The deployed default (bf16 on CPUs that support it) still agrees, less tightly than f32."""
    images, _ = digits
    forward = OpenVINOForward(ir_paths["static1"])
    assert forward.inference_precision in ("f32", "bf16", "f16")
    scores = compare_ir_occlusion(small_cnn, forward, images[:3], **OCCLUSION)
    assert scores["pearson"].min() > 0.95


def test_ir_logits_match_torch_for_every_batch_layout(small_cnn, digits, ir_paths):
    images, _ = digits  # 6 images: with a static batch of 4, one full chunk and one zero-padded chunk
    expected = small_cnn(images).detach()
    for name, static_batch in (("static1", 1), ("dynamic", None), ("static4", 4)):
        forward = OpenVINOForward(ir_paths[name], inference_precision="f32")
        assert forward.static_batch == static_batch
        torch.testing.assert_close(forward(images), expected, rtol=1e-4, atol=1e-5)


def test_missing_ir_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.xml"):
        OpenVINOForward(tmp_path / "missing.xml")


# ----------------------------------------------------------------------------- figures


def test_plot_map_grid_writes_a_png_atomically(small_cnn, digits, tmp_path):
    images, labels = digits
    rows = {
        "teacher Grad-CAM": attribution_maps(small_cnn, images, "grad_cam", layer="features.9"),
        "saliency": attribution_maps(small_cnn, images, "saliency"),
    }
    path = plot_map_grid(images, rows, tmp_path / "figures" / "maps.png", titles=[f"label {int(l)}" for l in labels])
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert [p.name for p in path.parent.iterdir()] == ["maps.png"]  # no temporary file left behind
