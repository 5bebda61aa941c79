"""On a real task, the block keeps the compressed model's Grad-CAM maps closer to the teacher's."""

import copy

import torch.nn.functional as F
from captum.attr import LayerGradCam

from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import fine_tune
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.zoo.models import SmallCNN

from conftest import input_info

LAYER = SmallCNN.LAST_CONV_BLOCK
PRUNING = {"algorithm": "filter_pruning", "pruning_init": 0.5, "params": {"schedule": "exponential", "pruning_target": 0.5, "pruning_steps": 1}}
MATCHING = {"algorithm": "attribution_matching"}  # the default block: what a user gets without tuning


def _gradcam(model, x, target):
    model.eval()
    return LayerGradCam(model, model.get_submodule(LAYER)).attribute(x, target=target, relu_attributions=True).flatten(1).detach()


def map_distance(teacher_maps, student_maps):
    """Mean squared distance of L2-normalized maps (0 = identical up to scale, 2 = orthogonal... at most 2)."""
    return (F.normalize(teacher_maps, dim=1) - F.normalize(student_maps, dim=1)).pow(2).sum(1).mean().item()


def _fine_tuned(teacher, blocks, digits):
    config = load_config({"input_info": input_info(), "compression": blocks})
    ctrl, model = compress(copy.deepcopy(teacher), config, digits.train, batch_size=32)
    fine_tune(ctrl, model, digits.train, epochs=2, batch_size=32, seed=1)
    return model


def test_attribution_matching_keeps_gradcam_closer_to_the_teacher(trained_cnn, digits):
    x = digits.test.tensors[0][:256]
    target = trained_cnn.eval()(x).argmax(1)
    teacher_maps = _gradcam(trained_cnn, x, target)
    naive = _fine_tuned(trained_cnn, [PRUNING], digits)
    matched = _fine_tuned(trained_cnn, [PRUNING, MATCHING], digits)
    naive_distance = map_distance(teacher_maps, _gradcam(naive, x, target))
    matched_distance = map_distance(teacher_maps, _gradcam(matched, x, target))
    print(f"\nGrad-CAM map distance to the teacher at {LAYER} (filter pruning 50 %): naive {naive_distance:.4f}, with attribution_matching {matched_distance:.4f}")
    assert naive_distance > 0.01  # compression did deform the maps
    assert matched_distance < 0.9 * naive_distance  # measured here: 0.231 -> 0.165
