"""Bad input to the INC adapter ends with one line that names the problem and the fix."""

import copy

import pytest
import torch
import torch.nn.functional as F
from neural_compressor.config import QuantizationAwareTrainingConfig
from neural_compressor.config import WeightPruningConfig

import nncf_wcam.inc
from nncf_wcam.core.layers import LayerNameError
from nncf_wcam.errors import NncfWcamError
from nncf_wcam.inc import AttributionMatchingConfig
from nncf_wcam.inc import IncConfigError
from nncf_wcam.inc import IncLoopError
from nncf_wcam.inc import TeacherError
from nncf_wcam.inc import prepare_compression
from nncf_wcam.inc import versions
from nncf_wcam.schema.validation import AlgorithmConfigError


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and isinstance(error, NncfWcamError), text
    return text


def pruning() -> WeightPruningConfig:
    return WeightPruningConfig(target_sparsity=0.5, pruning_type="snip_momentum", pattern="4x1", start_step=0, end_step=4, pruning_frequency=1)


@pytest.mark.parametrize("found", ["3.8.0", "3.10.0"])
def test_inc_without_training_time_compression_is_named_with_the_route_that_remains(monkeypatch, found):
    monkeypatch.setattr(versions, "installed_inc_version", lambda: found)
    monkeypatch.delitem(nncf_wcam.inc.__dict__, "prepare_compression", raising=False)
    with pytest.raises(versions.IncVersionError) as error:
        nncf_wcam.inc.prepare_compression  # noqa: B018  (the attribute access checks the version)
    text = one_line(error.value)
    assert found in text and "3.8 removed" in text and "prepare_qat" in text


def test_no_inc_at_all_is_one_line(monkeypatch):
    monkeypatch.setattr(versions, "installed_inc_version", lambda: None)
    with pytest.raises(versions.IncVersionError, match="found none"):
        versions.require_training_api()


def test_a_layer_fused_away_by_qat_is_refused_with_the_group_output_to_match(teacher_copy):
    # features.7 is the convolution of the last Conv-BN-ReLU group: after fusion its own output no longer exists.
    manager = prepare_compression(teacher_copy, [QuantizationAwareTrainingConfig(), AttributionMatchingConfig(layers=["features.7"])])
    with pytest.raises(LayerNameError) as error:
        manager.callbacks.on_train_begin()
    text = one_line(error.value)
    assert "'features.7'" in text and "'features.9'" in text and "inside a group" in text
    manager = prepare_compression(copy.deepcopy(teacher_copy), [QuantizationAwareTrainingConfig(), AttributionMatchingConfig(layers=["features.8"])])
    with pytest.raises(LayerNameError, match="inside a group"):  # the BatchNorm inside the same group
        manager.callbacks.on_train_begin()


def test_a_missing_teacher_file_is_one_line(teacher_copy, tmp_path):
    with pytest.raises(TeacherError) as error:
        prepare_compression(teacher_copy, [pruning(), AttributionMatchingConfig(teacher=tmp_path / "teacher.pt", layers=["features.9"])])
    assert "does not exist" in one_line(error.value)


def test_a_teacher_file_of_another_model_is_one_line(teacher_copy, tmp_path):
    path = tmp_path / "teacher.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(TeacherError) as error:
        prepare_compression(teacher_copy, [pruning(), AttributionMatchingConfig(teacher=path, layers=["features.9"])])
    assert "not a state_dict of this model" in one_line(error.value)


def test_a_teacher_file_loads_into_a_copy_of_the_model(trained_cnn, teacher_copy, tmp_path):
    path = tmp_path / "teacher.pt"
    torch.save(trained_cnn.state_dict(), path)
    manager = prepare_compression(teacher_copy, [pruning(), AttributionMatchingConfig(teacher=path, layers=["features.9"])])
    manager.callbacks.on_train_begin()
    teacher = manager.callbacks.matcher.teacher
    assert torch.equal(teacher.features[0].weight, trained_cnn.features[0].weight) and not teacher.features[0].weight.requires_grad


def test_a_teacher_of_a_wrong_type_is_one_line(teacher_copy):
    with pytest.raises(TeacherError, match="give the uncompressed nn.Module"):
        prepare_compression(teacher_copy, [pruning(), AttributionMatchingConfig(teacher=42, layers=["features.9"])])


def test_auto_without_example_inputs_says_what_to_add(teacher_copy):
    with pytest.raises(LayerNameError, match="example_inputs"):
        prepare_compression(teacher_copy, [pruning(), AttributionMatchingConfig()])


def test_an_unknown_layer_lists_the_ones_that_can_be_used(teacher_copy, example):
    with pytest.raises(LayerNameError) as error:
        prepare_compression(teacher_copy, [pruning(), AttributionMatchingConfig(layers=["features.99"], example_inputs=example)])
    assert "'features.9'" in one_line(error.value)


@pytest.mark.parametrize("options, words", [({"weight": -1.0}, "weight"), ({"stochastic_drop": 1.0}, "stochastic_drop"), ({"method": "gradcam"}, "method"), ({"weight": float("nan")}, "not a finite number")])
def test_bad_values_get_the_config_block_errors(options, words):
    with pytest.raises(AlgorithmConfigError) as error:
        AttributionMatchingConfig(**options)
    assert words in one_line(error.value)


def test_two_matching_configs_or_none_of_inc_are_refused(teacher_copy):
    with pytest.raises(IncConfigError, match="give one"):
        prepare_compression(teacher_copy, [pruning(), AttributionMatchingConfig(layers=["features.9"]), AttributionMatchingConfig(layers=["features.9"])])
    with pytest.raises(IncConfigError, match="needs an INC algorithm"):
        prepare_compression(teacher_copy, [AttributionMatchingConfig(layers=["features.9"])])


def _one_step(manager, x, y, after_optimizer_step=True, train=True):
    model = manager.model.model
    model.train(train)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    manager.callbacks.on_step_begin(0)
    out = model(x)
    loss = manager.callbacks.on_after_compute_loss(x, out, F.cross_entropy(out, y))
    loss.backward()
    manager.callbacks.on_before_optimizer_step()
    optimizer.step()
    if after_optimizer_step:
        manager.callbacks.on_after_optimizer_step()
    manager.callbacks.on_step_end()


def test_a_pruning_loop_without_on_after_optimizer_step_is_stopped(teacher_copy, digits):
    manager = prepare_compression(teacher_copy, [pruning(), AttributionMatchingConfig(layers=["features.9"])])
    manager.callbacks.on_train_begin()
    x, y = digits.train.tensors[0][:16], digits.train.tensors[1][:16]
    _one_step(manager, x, y)  # the full loop passes
    with pytest.raises(IncLoopError, match="on_after_optimizer_step"):
        _one_step(manager, x, y, after_optimizer_step=False)


def test_a_student_in_eval_mode_is_stopped(teacher_copy, digits):
    manager = prepare_compression(copy.deepcopy(teacher_copy), [pruning(), AttributionMatchingConfig(layers=["features.9"])])
    manager.callbacks.on_train_begin()
    with pytest.raises(IncLoopError, match="eval mode"):
        _one_step(manager, digits.train.tensors[0][:16], digits.train.tensors[1][:16], train=False)


def test_the_loss_before_on_train_begin_is_refused(teacher_copy, digits):
    manager = prepare_compression(teacher_copy, [pruning(), AttributionMatchingConfig(layers=["features.9"])])
    out = manager.model.model(digits.train.tensors[0][:4])
    with pytest.raises(IncLoopError, match="on_train_begin"):
        manager.callbacks.on_after_compute_loss(None, out, out.sum())


def test_example_inputs_the_model_cannot_run_are_one_line(teacher_copy):
    with pytest.raises(IncConfigError) as error:
        prepare_compression(teacher_copy, [pruning(), AttributionMatchingConfig(example_inputs=torch.zeros(2, 3, 16, 16))])
    assert "example_inputs" in one_line(error.value) and "3 channels" in str(error.value)


def test_a_model_that_is_not_a_module_or_bad_student_layers_are_one_line(teacher_copy):
    with pytest.raises(IncConfigError, match="nn.Module"):
        prepare_compression("model.pt", [pruning(), AttributionMatchingConfig(layers=["features.9"])])
    with pytest.raises(nncf_wcam.inc.MatchingConfigError, match="student_layers"):
        AttributionMatchingConfig(layers=["features.9"], student_layers="features.9")
