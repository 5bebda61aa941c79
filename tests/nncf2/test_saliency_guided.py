"""saliency_guided: the masking, the KL term, the NNCF algorithm beside quantization and attribution_matching,
the MNIST configs, config errors, and the benchmark's quick mode."""

import copy
import json
import subprocess
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

import nncf_wcam  # noqa: F401  (must precede nncf.torch)
from nncf_wcam import AlgorithmConfigError
from nncf_wcam.cli.configs import read_config
from nncf_wcam.core.saliency import SaliencyGuidedRegularizer
from nncf_wcam.core.saliency import input_saliency
from nncf_wcam.core.saliency import kl_consistency
from nncf_wcam.core.saliency import mask_least_salient
from nncf_wcam.core.training import train_teacher
from nncf_wcam.nncf2.attribution_matching import attribution_controller
from nncf_wcam.nncf2.saliency_guided import SaliencyGuidedController
from nncf_wcam.nncf2.saliency_guided import saliency_guided_controller
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import fine_tune
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.zoo.datasets import load_dataset
from nncf_wcam.zoo.idx import DataError
from nncf_wcam.zoo.models import SmallCNN

from conftest import ROOT
from conftest import mnist_root

MNIST_CONFIGS = sorted((ROOT / "configs").glob("mnist_*.json"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """On the shared 2-core machine, more torch threads spin and run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained_cnn(one_thread, digits):
    """A SmallCNN(width=8) trained briefly on digits 16 x 16, single-threaded (conftest's is trained with
    every thread, which is slow on a shared machine). Shared read-only: copy before use."""
    torch.manual_seed(0)
    return train_teacher(SmallCNN(width=8), digits.train, epochs=6, lr=3e-3)


def _norm_buffers(model):
    return {
        name: buffer.detach().clone()
        for name, buffer in model.named_buffers()
        if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
    }


def _all_state(model):
    return {name: t.detach().clone() for name, t in list(model.named_parameters()) + list(model.named_buffers())}


# --------------------------------------------------------------------------- pure torch


def test_mask_replaces_exact_fraction_in_range_and_keeps_most_salient():
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(5, 2, 6, 6, generator=generator) * torch.arange(1, 6).view(5, 1, 1, 1) - 2.0  # per-sample ranges differ
    saliency = torch.rand(5, 2, 6, 6, generator=generator)
    rng_before = torch.get_rng_state()
    masked, mask = mask_least_salient(x, saliency, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is not used

    n = x[0].numel()
    assert mask.shape == x.shape and mask.dtype == torch.bool
    assert mask.flatten(1).sum(1).tolist() == [round(0.3 * n)] * 5
    flat_x, flat_m, flat_masked, flat_s = x.flatten(1), mask.flatten(1), masked.flatten(1), saliency.flatten(1)
    for b in range(5):
        low, high = flat_x[b].min(), flat_x[b].max()
        replaced = flat_masked[b][flat_m[b]]
        assert (replaced >= low).all() and (replaced <= high).all()
        assert not torch.equal(replaced, flat_x[b][flat_m[b]])  # really replaced by noise
        assert torch.equal(flat_masked[b][~flat_m[b]], flat_x[b][~flat_m[b]])  # the rest kept exactly
        assert flat_s[b][~flat_m[b]].min() > flat_s[b][flat_m[b]].max()  # the kept ones are the most salient

    # Same generator seed, same noise; fraction 0 masks nothing.
    again, _ = mask_least_salient(x, saliency, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(again, masked)
    untouched, none = mask_least_salient(x, saliency, 0.0, torch.Generator().manual_seed(0))
    assert not none.any() and torch.equal(untouched, x)
    with pytest.raises(ValueError, match="fraction"):
        mask_least_salient(x, saliency, 1.5)


def test_input_saliency_matches_captum(trained_cnn, digits):
    from captum.attr import Saliency

    model = copy.deepcopy(trained_cnn).eval()
    x = digits.test.tensors[0][:16]
    saliency, target = input_saliency(model, x)
    assert torch.equal(target, model(x).argmax(1))
    expected = Saliency(model).attribute(x.clone(), target=target, abs=True)
    torch.testing.assert_close(saliency, expected)
    assert all(p.grad is None for p in model.parameters())  # only the input gradient is computed


def test_kl_is_zero_when_nothing_is_masked_and_positive_otherwise(trained_cnn, digits):
    x = digits.train.tensors[0][:32]
    model = copy.deepcopy(trained_cnn).train()
    regularizer = SaliencyGuidedRegularizer(model, mask_fraction=0.0, weight=1.0)
    model(x)
    assert regularizer.loss().item() == pytest.approx(0.0, abs=1e-7)
    assert not regularizer.last_mask.any()
    regularizer.remove()

    regularizer = SaliencyGuidedRegularizer(model, mask_fraction=0.5, weight=2.0)
    model(x)
    loss = regularizer.loss()
    assert loss.item() > 1e-4
    assert loss.item() == pytest.approx(2.0 * regularizer.last_kl.item())
    assert regularizer.loss() is loss  # computed once per forward pass
    logits = torch.randn(4, 10)
    assert kl_consistency(logits, logits).item() == pytest.approx(0.0, abs=1e-7)


def test_regularizer_is_zero_and_free_in_eval_and_no_grad(trained_cnn, digits):
    model = copy.deepcopy(trained_cnn)
    regularizer = SaliencyGuidedRegularizer(model)
    x = digits.train.tensors[0][:16]
    model.eval()
    model(x)
    assert regularizer.loss().item() == 0.0 and regularizer.forward.output is None
    model.train()
    with torch.no_grad():
        model(x)
    assert regularizer.loss().item() == 0.0 and regularizer.forward.inputs is None
    model(x)
    assert regularizer.loss().item() > 0.0
    assert regularizer.forward.output is None  # freed once the loss holds the graph


# --------------------------------------------------------------------------- NNCF


def _int4_sg_am_config(image_size=16, fraction=0.5):
    return {
        "model": "small_cnn",
        "input_info": {"sample_size": [1, 1, image_size, image_size]},
        "batch_size": 32,
        "target_device": "TRIAL",
        "compression": [
            {
                "algorithm": "quantization",
                "weights": {"bits": 4, "mode": "symmetric"},
                "activations": {"bits": 4, "mode": "asymmetric"},
                "initializer": {
                    "range": {"num_init_samples": 64, "type": "percentile", "params": {"min_percentile": 0.1, "max_percentile": 99.9}},
                    "batchnorm_adaptation": {"num_bn_adaptation_samples": 0},
                },
            },
            {"algorithm": "saliency_guided", "mask_fraction": fraction, "weight": 1.0, "seed": 3},
            {"algorithm": "attribution_matching", "weight": 100.0, "layers": ["features.9"], "stochastic_drop": 0.3},
        ],
    }


def test_composes_with_int4_and_attribution_matching(trained_cnn, digits):
    ctrl, model = compress(copy.deepcopy(trained_cnn), load_config(_int4_sg_am_config()), digits.train, batch_size=32)
    sg_ctrl = saliency_guided_controller(ctrl)
    am_ctrl = attribution_controller(ctrl)
    assert isinstance(sg_ctrl, SaliencyGuidedController) and am_ctrl is not None
    x = digits.train.tensors[0][:32]
    model.train()
    drop_state = am_ctrl.matcher.generator.get_state()

    # Attribution loss alone on this batch.
    model(x)
    am_alone = am_ctrl.loss().detach().clone()

    # Same batch, with the saliency-guided passes run first: the attribution loss must not change,
    # and the extra passes must leave BatchNorm statistics, quantizers, weights and the global RNG as they were.
    model(x)
    state_after_forward = _all_state(model)
    norm_after_forward = _norm_buffers(model)
    assert norm_after_forward  # the model does have BatchNorm statistics
    rng = torch.get_rng_state()
    sg_loss = sg_ctrl.loss()
    assert torch.equal(torch.get_rng_state(), rng)
    for name, value in _all_state(model).items():
        assert torch.equal(value, state_after_forward[name]), name
    assert all(p.grad is None for p in model.parameters())  # the saliency pass accumulates no gradient
    am_ctrl.matcher.generator.set_state(drop_state)
    am_ctrl.matcher._cached_loss = None
    am_with_sg = am_ctrl.loss()
    assert sg_loss.item() > 0 and am_with_sg.item() > 0
    assert am_with_sg.item() == pytest.approx(am_alone.item(), rel=1e-6, abs=1e-9)

    # The composite loss holds both; the KL gradient reaches the weights and the trainable quantizer ranges.
    total = ctrl.loss()
    assert total.item() == pytest.approx(sg_loss.item() + am_with_sg.item(), rel=1e-5)
    sg_loss.backward()
    assert model.features[0].weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad.abs().sum() > 0
    quantizer_grads = [p.grad for n, p in model.named_parameters() if ("scale" in n or "input_low" in n or "input_range" in n)]
    assert quantizer_grads and any(g is not None and g.abs().sum() > 0 for g in quantizer_grads)


def test_bn_statistics_would_change_without_restoring(trained_cnn, digits):
    """Control for the test above: a train-mode pass of the masked input does move the running statistics."""
    model = copy.deepcopy(trained_cnn).train()
    before = _norm_buffers(model)
    with torch.no_grad():
        model(digits.train.tensors[0][:32] * 0.5)
    after = _norm_buffers(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def mnist_data_root():
    return mnist_root()


def test_mnist_configs_name_no_data_folder_and_say_how_to_give_one(monkeypatch):
    """A shipped config holds no path of anyone's machine: without --data-root or the variable, one line names both."""
    monkeypatch.delenv("NNCF_WCAM_DATA_ROOT", raising=False)
    for path in MNIST_CONFIGS:
        data = read_config(str(path))
        assert data["dataset"] == {"name": "mnist"}, path.name
        with pytest.raises(DataError, match="--data-root DIR, or set NNCF_WCAM_DATA_ROOT=DIR"):
            load_dataset(data["dataset"])


@pytest.mark.parametrize("config_path", MNIST_CONFIGS, ids=[p.stem for p in MNIST_CONFIGS])
def test_mnist_config_trains(config_path, trained_cnn, mnist_data_root):
    """Each MNIST config, read as the command line reads it (its dataset from --data-root), trains on real MNIST."""
    data = read_config(config_path.name, data_root=str(mnist_data_root))
    assert data["dataset"] == {"name": "mnist", "root": str(mnist_data_root.resolve())} and data["target_device"] == "TRIAL"
    assert data["input_info"]["sample_size"] == [1, 1, 28, 28] and data["model"] == "small_cnn"
    split = load_dataset(data["dataset"])
    assert split.name == "mnist" and split.image_shape == (1, 28, 28) and len(split.train) == 8000
    mnist_train = TensorDataset(*(t[:256] for t in split.train.tensors))
    range_init = data["compression"][0]["initializer"]["range"]
    assert range_init["type"] in ("percentile", "mean_min_max")
    range_init["num_init_samples"] = 64
    ctrl, model = compress(copy.deepcopy(trained_cnn), load_config(data), mnist_train, batch_size=32)

    weight_bits = {name.split(".pre_ops")[0]: m.num_bits for name, m in model.named_modules() if name.endswith("pre_ops.0.op")}
    bits, variant = config_path.stem.split("_", 2)[1:]
    expected = {
        "int4": dict.fromkeys(["features.0", "features.3", "features.7", "classifier"], 4),
        "int2": dict.fromkeys(["features.0", "features.3", "features.7", "classifier"], 2),
        "mixed42": {"features.0": 4, "features.3": 2, "features.7": 2, "classifier": 4},
    }[bits]
    assert weight_bits == expected

    algorithms = [b["algorithm"] for b in data["compression"]]
    assert ("saliency_guided" in algorithms) == (variant in ("sg", "sg_am")) == (saliency_guided_controller(ctrl) is not None)
    assert ("attribution_matching" in algorithms) == (variant in ("am", "sg_am")) == (attribution_controller(ctrl) is not None)
    history = fine_tune(ctrl, model, mnist_train, batch_size=32, max_steps=2, optimizer_spec=data["optimizer"])
    assert len(history) == 2
    for record in history:
        assert torch.isfinite(torch.tensor([record["task_loss"], record["compression_loss"]])).all()
        assert (record["compression_loss"] > 0) == (variant != "plain")


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"mask_fracton": 0.5}, "saliency_guided: unknown key 'mask_fracton'. Did you mean 'mask_fraction'?"),
        ({"mask_fraction": 1.0}, "saliency_guided.mask_fraction: 1.0 is greater than or equal to the maximum of 1"),
        ({"mask_fraction": -0.1}, "saliency_guided.mask_fraction: -0.1 is less than the minimum of 0"),
        ({"weight": -1}, "saliency_guided.weight: -1 is less than the minimum of 0"),
        ({"seed": 1.5}, "saliency_guided.seed: 1.5 is not of type 'integer'"),
        ({"detach_clean": "yes"}, "saliency_guided.detach_clean: 'yes' is not of type 'boolean'"),
    ],
)
def test_bad_blocks_give_one_line_errors(block, expected):
    config = _int4_sg_am_config()
    config["compression"][1] = {"algorithm": "saliency_guided", **block}
    with pytest.raises(AlgorithmConfigError) as info:
        load_config(config)
    message = str(info.value)
    assert "\n" not in message and message.startswith(expected), message
    assert "Fix:" in message or "Valid keys:" in message


def test_duplicate_block_is_an_error():
    config = _int4_sg_am_config()
    config["compression"].append({"algorithm": "saliency_guided"})
    with pytest.raises(AlgorithmConfigError, match="saliency_guided appears 2 times"):
        load_config(config)


def test_defaults_are_filled_in(trained_cnn, digits):
    config = _int4_sg_am_config()
    config["compression"][1] = {"algorithm": "saliency_guided"}
    del config["compression"][2]
    ctrl, _ = compress(copy.deepcopy(trained_cnn), load_config(config), digits.train, batch_size=32)
    regularizer = saliency_guided_controller(ctrl).regularizer
    assert (regularizer.mask_fraction, regularizer.weight, regularizer.detach_clean) == (0.5, 1.0, False)


def test_benchmark_quick_writes_its_files(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "saliency_quantization.py"), "--quick", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # NNCF writes its graph files into the working directory: never the repository
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {(r["bits"], r["variant"]): r for r in results["runs"]}
    assert ("fp32", "fp32") in rows and rows[("fp32", "fp32")]["saliency_pearson"] == pytest.approx(1.0)
    for bits in ("int4", "int2", "mixed42"):
        row = rows[(bits, "plain")]
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["deletion_auc"] <= 1.0
        assert row["export"] is not None and "ok" in row["export"]
        assert (tmp_path / f"saliency_{bits}.png").read_bytes()[:4] == b"\x89PNG"
    assert ("int4", "sg_am") in rows
    assert "| 4-bit | plain QAT |" in (tmp_path / "results.md").read_text()
    assert list(tmp_path.glob("teacher_*.pt"))
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_knowledge_distillation_loss_is_not_replaced_by_the_extra_passes(trained_cnn, digits):
    config = _int4_sg_am_config()
    config["compression"][2] = {"algorithm": "knowledge_distillation", "type": "softmax"}
    ctrl, model = compress(copy.deepcopy(trained_cnn), load_config(config), digits.train, batch_size=32)
    kd_ctrl = next(c for c in ctrl.child_ctrls if type(c).__name__ == "KnowledgeDistillationController")
    model.train()
    model(digits.train.tensors[0][:32])
    kd_before = kd_ctrl.loss().item()
    assert kd_before > 0
    assert saliency_guided_controller(ctrl).loss().item() > 0
    assert kd_ctrl.loss().item() == kd_before
